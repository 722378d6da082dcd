-- Device authorization (RFC 8628): pending device codes, and the link from a login in
-- progress to the device code it approves.

CREATE TABLE device_codes (
    device_code_hash TEXT PRIMARY KEY,
    user_code TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    poll_interval BIGINT NOT NULL,
    last_poll_at BIGINT,
    status TEXT NOT NULL,
    grant_id TEXT
);

ALTER TABLE auth_requests ADD COLUMN device_code_hash TEXT;
