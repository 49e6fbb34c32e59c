-- The queue (accepted messages and their per-recipient delivery state) and the holds (held messages
-- and the hashes of their review tokens), shared by every gateway on this database.

-- The database's clock, in seconds since the epoch: every instance measures leases by it, so the
-- instances' own clocks may differ.
CREATE FUNCTION queue_now() RETURNS double precision
    LANGUAGE sql VOLATILE AS $$ SELECT extract(epoch FROM clock_timestamp()) $$;

-- Whether instance ``me`` may take a message: nobody's, its own, or one whose lease has run out.
CREATE FUNCTION queue_claimable(claimed_by text, lease_until double precision, me text) RETURNS boolean
    LANGUAGE sql VOLATILE AS $$ SELECT claimed_by IS NULL OR claimed_by = me OR lease_until < queue_now() $$;

-- Listing order: the states in the files queue's order, then arrival (queue ids sort by it).
CREATE FUNCTION queue_state_rank(state text) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$
        SELECT array_position(ARRAY['incoming', 'deferred', 'done', 'bounced', 'corrupt'], state)
    $$;

-- One row per queued message: its envelope, its exact bytes, the state (the files backend's folder)
-- and the delivery status (the same JSON as the files backend's status/<queue id>.json).
-- A delivering instance claims a message by writing its id in claimed_by with a lease (seconds since
-- the epoch, on the database's clock); its heartbeat renews the leases of everything it claimed, so
-- a crashed instance's messages are taken over once its leases run out.
CREATE TABLE queue_messages (
    queue_id          text PRIMARY KEY,
    state             text NOT NULL
        CHECK (state IN ('incoming', 'deferred', 'done', 'bounced', 'corrupt')),
    mail_from         text NOT NULL,
    rcpt_tos          text[] NOT NULL CHECK (cardinality(rcpt_tos) > 0),
    authenticated_as  text NOT NULL,
    received_at       double precision NOT NULL,
    client_address    text NOT NULL DEFAULT '',
    size              bigint NOT NULL,
    sha256            text NOT NULL,
    content           bytea NOT NULL,
    status            jsonb,
    next_attempt_at   double precision NOT NULL DEFAULT 0,
    committed_at      double precision NOT NULL DEFAULT queue_now(),
    finished_at       double precision,
    claimed_by        text,
    lease_until       double precision,
    problem           text NOT NULL DEFAULT ''
);

CREATE INDEX queue_messages_pending ON queue_messages (state, queue_id)
    WHERE state IN ('incoming', 'deferred');
CREATE INDEX queue_messages_finished ON queue_messages (state, finished_at)
    WHERE state IN ('done', 'bounced');
CREATE INDEX queue_messages_claims ON queue_messages (claimed_by) WHERE claimed_by IS NOT NULL;

-- One row per held message: the hold record as JSON (hashes of reply tokens, never a token), the
-- bytes the sender submitted and the bytes to relay on approval.
CREATE TABLE holds (
    reference   text PRIMARY KEY,
    status      text NOT NULL,
    record      jsonb NOT NULL,
    original    bytea NOT NULL,
    release     bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Which hold a reply token (by its hash) belongs to: a reply reaching any instance finds its hold
-- with one lookup.
CREATE TABLE hold_tokens (
    token_hash  text PRIMARY KEY,
    reference   text NOT NULL REFERENCES holds (reference) ON DELETE CASCADE
);

CREATE INDEX hold_tokens_reference ON hold_tokens (reference);
