-- When each identity's groups were last confirmed by its provider (at a sign-in
-- through it): groups older than groups_max_age are no longer released.
ALTER TABLE identities ADD COLUMN groups_confirmed_at BIGINT NOT NULL DEFAULT 0;
UPDATE identities SET groups_confirmed_at = last_login_at;
