-- Whether the last poll of a device authorization came sooner than its interval, set by
-- the same UPDATE that records the poll (one trip to the store per poll).
ALTER TABLE device_codes ADD COLUMN last_poll_too_soon BOOLEAN NOT NULL DEFAULT FALSE;
