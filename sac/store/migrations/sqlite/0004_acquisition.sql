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
