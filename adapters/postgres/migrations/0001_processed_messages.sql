-- Idempotent handling: one row per message a handler has handled, written
-- in the handler's transaction. Rows older than the retention are deleted.
CREATE TABLE hexmill_processed_messages (
    handler      text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, message_id)
);
CREATE INDEX hexmill_processed_messages_processed_at ON hexmill_processed_messages (processed_at);
