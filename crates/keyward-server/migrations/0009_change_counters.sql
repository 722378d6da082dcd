-- Counters bumped in the same transaction as a change to what replicas keep in memory
-- (the registered clients); each replica polls them and drops its copy when one moves
-- (store/cache.rs).
CREATE TABLE keyward_changes (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO keyward_changes (name, version) VALUES ('clients', 0);
