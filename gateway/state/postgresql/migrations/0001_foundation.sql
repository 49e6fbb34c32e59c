-- The foundation: which installation this database is, and which gateways use it.
-- (schema_migrations itself is made by migrate.py, so an empty database can report its status.)

CREATE TABLE installation (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO installation DEFAULT VALUES;

-- One row per running gateway process, refreshed while it runs: what `state check` and `status`
-- show (which version and which policy each instance judges under).
CREATE TABLE gateway_instances (
    instance       text PRIMARY KEY,
    hostname       text NOT NULL,
    version        text NOT NULL,
    policy_version text,
    started_at     timestamptz NOT NULL,
    seen_at        timestamptz NOT NULL
);
