-- A client's `state` as the exact bytes it sent, in their form-urlencoded encoding
-- (ASCII: it holds bytes that are not UTF-8, and NUL, which PostgreSQL's TEXT cannot).
-- Rows written before keep their `state` as text, which is read when this is NULL.
ALTER TABLE auth_requests ADD COLUMN state_encoded TEXT;
