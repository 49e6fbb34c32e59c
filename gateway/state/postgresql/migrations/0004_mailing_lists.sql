-- Mailing list addresses the journal saw distributing mail (List-Post, List-Id), for the reply-all net
-- (the list-reply-all rule; issue 18). The SQLite ledger's mailing_lists table, shared by every gateway.
CREATE TABLE ledger_mailing_lists (
    address  text PRIMARY KEY,           -- lower-cased
    seen_at  timestamptz NOT NULL        -- last seen
);
