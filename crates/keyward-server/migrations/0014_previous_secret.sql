-- A client's secret before its last rotation, and until when it is still accepted (the
-- grace period in which the client moves to the new one; NULL when there is none).
ALTER TABLE clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_until BIGINT;
