-- Housekeeping finds expired rows by their expiry, a few hundred at a time, without
-- reading whole tables (a store with millions of grants would otherwise be scanned once
-- per batch), and deletes what names an expired grant by the grant's id.
CREATE INDEX grants_expires ON grants (expires_at);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);
CREATE INDEX auth_codes_grant ON auth_codes (grant_id);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);
CREATE INDEX device_codes_expires ON device_codes (expires_at);
CREATE INDEX device_codes_grant ON device_codes (grant_id);
-- grants_user_client (user_id, client_id) serves every lookup by user as well; one
-- index fewer to update for each grant written.
DROP INDEX grants_user;
