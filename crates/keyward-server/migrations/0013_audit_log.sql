-- What administrators did through the admin API: who (the admin client, or the person),
-- what, to which record, when (milliseconds since the epoch), and from which address.
-- Written before the action is carried out; only authenticated administrators write
-- here, so it grows with their actions alone. Kept until deleted by hand.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    address TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
