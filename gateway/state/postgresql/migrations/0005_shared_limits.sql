-- Notices sent per sender (the review desk's rate limit, review.notices_per_hour), so a sender's
-- budget holds across every gateway: each gateway adds its own rows and reads the others' every few
-- seconds. Rows older than the hour are deleted by the gateways as they sync.
CREATE TABLE notices_sent (
    id      bigserial PRIMARY KEY,
    sender  text NOT NULL,            -- lower-cased committee member address
    sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notices_sent_sender ON notices_sent (sender, sent_at);
