-- Dead letters: messages poisoned while poison.transport is postgres. Each
-- row is one poisoned message with its metadata and payload; the dlq
-- command lists, shows, replays (deleting a row only once its republish
-- was confirmed) and purges them.
CREATE TABLE hexmill_dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handler          text        NOT NULL,
    topic            text        NOT NULL,
    transport        text        NOT NULL,
    reason           text        NOT NULL,
    message_id       text        NOT NULL,
    attempts         integer     NOT NULL DEFAULT 1,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    payload          bytea       NOT NULL,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hexmill_dead_letters_handler ON hexmill_dead_letters (handler, last_failed_at);
