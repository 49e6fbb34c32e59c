-- The committee's workflow, shared by every gateway (issue 18): override tokens, overrides with their
-- justifications, the idempotency keys of "false positive" reports, and the digest periods sent.

-- A token is stored only as its SHA-256; `message` and `reference` once it has served a message.
CREATE TABLE override_tokens (
    digest     text PRIMARY KEY,
    sender     text NOT NULL,            -- lower-cased
    rules      text NOT NULL,            -- rule names, space-separated
    expires_at timestamptz NOT NULL,
    message    text,                     -- the Message-ID (or content digest) it served
    reference  text
);
CREATE INDEX override_tokens_expiry ON override_tokens (expires_at);

-- The justification is free text a member typed (it may name a person): kept here, never in the
-- audit trail, and deleted by `case expunge` and after `overrides.retention`.
CREATE TABLE overrides (
    reference     text PRIMARY KEY,
    sender        text NOT NULL,
    rules         text NOT NULL,
    made_at       timestamptz NOT NULL,
    justification text NOT NULL,
    queue_id      text,                  -- the message it let through
    case_name     text                   -- the case of the message's thread
);
CREATE INDEX overrides_by_sender ON overrides (sender, made_at);

-- SHA-256 of the report's Message-ID and the refused message's reference: a reply retried after a
-- 451, through any gateway, is counted once.
CREATE TABLE false_positive_reports (
    digest      text PRIMARY KEY,
    reference   text NOT NULL,
    reported_at timestamptz NOT NULL
);

-- One row per digest period: the gateway that claimed it sends it (claimed_until is its lease on
-- the database's clock; a crashed gateway's claim is taken over once it has run out), and the
-- `digest` audit entry is appended in the same transaction that sets recorded_seq, so it is
-- recorded exactly once whatever restarts or races.
CREATE TABLE digest_periods (
    kind          text NOT NULL,         -- daily, weekly
    period_end    timestamptz NOT NULL,
    period_start  timestamptz NOT NULL,
    claimed_by    text,
    claimed_until timestamptz,
    recorded_seq  bigint,                -- the digest audit entry's seq, once recorded
    PRIMARY KEY (kind, period_end)
);
