-- The stores pg-core moved to PostgreSQL: the audit trail (one hash chain for every gateway), the
-- thread ledger and the encrypted case registry.

-- Each entry exactly as the files backend writes its line: canonical JSON with the hash last, so
-- `audit verify` checks the same bytes. seq is given by the writer, from audit_head.
CREATE TABLE audit_entries (
    seq  bigint PRIMARY KEY CHECK (seq > 0),
    line text NOT NULL
);

-- The checkpoint and each entry's salt (NULL once forgotten: expunged).
CREATE TABLE audit_salts (
    seq  bigint PRIMARY KEY,
    hash text NOT NULL,
    salt bytea
);

-- The chain's head. Every append locks this one row (SELECT ... FOR UPDATE), computes the next
-- entry from it and moves it in the same transaction: appends from every gateway are serialised,
-- so the chain never forks.
CREATE TABLE audit_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint NOT NULL,
    hash     text NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, repeat('0', 64));

CREATE TABLE ledger_messages (
    message_id   text PRIMARY KEY,
    in_reply_to  jsonb NOT NULL,
    refs         jsonb NOT NULL,
    participants jsonb NOT NULL,   -- [[field, display name, address], ...]
    case_name    text,
    recorded_at  timestamptz NOT NULL
);
CREATE INDEX ledger_messages_case ON ledger_messages (case_name) WHERE case_name IS NOT NULL;

-- The case registry: the very bytes the files backend writes (MAGIC || nonce || AES-256-GCM(JSON)),
-- so the database never sees a case, a name or an address in clear. The key stays with each gateway.
CREATE TABLE case_registry (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version    bigint NOT NULL,
    data       bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);

-- Fingerprints of protected documents: keyed 64-bit shingle hashes (sorted, big-endian), exactly as
-- the files backend keeps them; never text, names or addresses. The BLAKE2b key stays with the
-- gateways (fingerprints.key in each state_dir, the same on every host); only a check of it is here.
CREATE TABLE fingerprint_documents (
    id        bigserial PRIMARY KEY,
    case_name text NOT NULL,
    document  text NOT NULL,
    person    text,
    source    text NOT NULL,
    learnt_at timestamptz NOT NULL,
    shingles  bytea NOT NULL,
    scheme    integer NOT NULL,
    mentions  jsonb NOT NULL DEFAULT '[]',
    UNIQUE (case_name, document)
);
CREATE TABLE fingerprint_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Committee members' accounts (the users file's lines): address, argon2 hash, aliases. Every change
-- rewrites the set under an advisory lock and moves accounts_version, which gateways poll.
CREATE TABLE accounts (
    address       text PRIMARY KEY,
    password_hash text NOT NULL,
    aliases       text[] NOT NULL DEFAULT '{}'
);
CREATE TABLE accounts_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint NOT NULL
);
INSERT INTO accounts_version (version) VALUES (0);

-- Failed logins per client address, so a client cannot spread its guesses over several gateways.
CREATE TABLE login_failures (
    id        bigserial PRIMARY KEY,
    client    text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_client ON login_failures (client, failed_at);
