-- Delayed retries of transports that cannot delay a message themselves
-- (docs/retries.md): a message waits here until due_at; a poller then
-- claims it for lease_until, hands it to its handler again and deletes
-- it. A claim whose lease ran out (its process died) is claimed again.
CREATE TABLE hexmill_delayed_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handler     text        NOT NULL,
    due_at      timestamptz NOT NULL,
    lease_until timestamptz,
    message_id  text        NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hexmill_delayed_messages_due ON hexmill_delayed_messages (handler, due_at);
