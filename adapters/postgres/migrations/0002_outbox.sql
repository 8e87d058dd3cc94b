-- Transactional outbox: events published in a handler's transaction wait
-- here until the relay has published them, in id order, and deletes them.
CREATE TABLE hexmill_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination   text        NOT NULL,
    topic         text        NOT NULL,
    aggregate_key text        NOT NULL DEFAULT '',
    message_id    text        NOT NULL,
    metadata      jsonb       NOT NULL DEFAULT '{}',
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
