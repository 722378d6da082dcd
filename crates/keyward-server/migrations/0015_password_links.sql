-- One-time set-password links an administrator made (the admin API or console): the
-- SHA-256 of the link's token, whose account it sets the password of, and until when.
-- At most one per account (a new one replaces the old); taken when used; expired ones
-- are deleted by the housekeeping.
CREATE TABLE password_links (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX password_links_expires_at ON password_links (expires_at);
