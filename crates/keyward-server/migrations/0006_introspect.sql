-- Introspection is scoped: a client may introspect its own tokens; only clients
-- registered as resource servers (introspect = true) may introspect any token.
ALTER TABLE clients ADD COLUMN introspect BOOLEAN NOT NULL DEFAULT FALSE;
