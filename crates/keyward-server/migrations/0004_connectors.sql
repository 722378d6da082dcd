-- Upstream identity providers ("connectors"): the identities linked to each account,
-- sign-ins at a provider in progress (and emailed links), how a login ends and how its
-- response is delivered, and what the account page shows about each session.

CREATE TABLE identities (
    connector_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL,
    email TEXT,
    email_verified BOOLEAN NOT NULL,
    name TEXT,
    username TEXT,
    group_names TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (connector_id, subject)
);
CREATE INDEX identities_user ON identities (user_id);

CREATE TABLE connector_logins (
    state_hash TEXT PRIMARY KEY,
    connector_id TEXT NOT NULL,
    auth_request_id TEXT,
    link_user_id TEXT,
    browser_hash TEXT NOT NULL,
    nonce TEXT,
    code_verifier TEXT,
    email TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX connector_logins_expires ON connector_logins (expires_at);

ALTER TABLE auth_requests ADD COLUMN kind TEXT NOT NULL DEFAULT 'authorize';
ALTER TABLE auth_requests ADD COLUMN response_mode TEXT NOT NULL DEFAULT 'query';

ALTER TABLE sessions ADD COLUMN method TEXT NOT NULL DEFAULT 'password';
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
CREATE INDEX grants_user_client ON grants (user_id, client_id);
