-- Throttles with exponential back-off instead of fixed windows and hard lock-outs
-- (keys are SHA-256 hashes, so what a caller types cannot grow a row), and secrets
-- every replica shares (the key that signs cookie values and derives refresh-token
-- successors).

DROP TABLE login_failures;

CREATE TABLE throttles (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    delay BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL
);
CREATE INDEX throttles_last_at ON throttles (last_at);

CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
