-- acquisition: command priorities, every command transition with its time
ALTER TABLE commands ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE TABLE command_log (
    id INTEGER PRIMARY KEY,
    command_id INTEGER NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX command_log_command ON command_log (command_id, id);
-- polling: a meter with an address is polled every poll_interval seconds (NULL: the
-- poller's default); next_poll is claimed by one process at a time
ALTER TABLE meters ADD COLUMN poll_interval INTEGER;
ALTER TABLE meters ADD COLUMN next_poll TEXT;
ALTER TABLE meters ADD COLUMN poll_failures INTEGER NOT NULL DEFAULT 0;
CREATE INDEX meters_next_poll ON meters (next_poll) WHERE address IS NOT NULL;
