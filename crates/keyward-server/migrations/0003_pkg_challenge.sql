-- The Julia package-server login protocol's classic flow: a device authorization keyed
-- by the client's challenge and the server's response.
ALTER TABLE device_codes ADD COLUMN challenge_hash TEXT;
