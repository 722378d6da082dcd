-- What the configuration file declared at its last start or reload (kind 'client' or
-- 'user', and the id or username), so that one taken out of the file is taken out of
-- service the next time: a client removed, a user disabled.
CREATE TABLE config_declared (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
