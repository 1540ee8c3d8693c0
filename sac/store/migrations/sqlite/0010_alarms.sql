-- alarms: each event keeps its class (severity, category: sac.eventcodes, the meter's
-- profile's own codes first), decided when it is stored; an event of severity 'alarm' is an
-- open alarm until an operator acknowledges it (who, when, note; the audit trail has it too).
-- The events stored before this migration keep NULL here: their class is computed when read
-- (sac.eventcodes.describe(code)), and they are not tracked as alarms (no back-fill: a
-- history of alarms nobody could acknowledge before would all open at once).
ALTER TABLE events ADD COLUMN severity TEXT;
ALTER TABLE events ADD COLUMN category TEXT;
ALTER TABLE events ADD COLUMN acknowledged TEXT;
ALTER TABLE events ADD COLUMN acknowledged_by TEXT;
ALTER TABLE events ADD COLUMN note TEXT;
-- the open alarms, few among the events (small indexes): newest first, of all meters, of
-- one meter, of one category
CREATE INDEX events_open_alarms ON events (occurred, id)
    WHERE severity = 'alarm' AND acknowledged IS NULL;
CREATE INDEX events_open_by_meter ON events (meter_id, occurred, id)
    WHERE severity = 'alarm' AND acknowledged IS NULL;
CREATE INDEX events_open_by_category ON events (category, occurred, id)
    WHERE severity = 'alarm' AND acknowledged IS NULL;
-- a meter's open alarms, counted on its row (the ingest adds, an acknowledgement takes
-- away), so that the meter list's "with alarms" is one indexed range of the meters: those
-- with an open alarm or a diagnostic not zero (the meter's own alarm state)
ALTER TABLE meters ADD COLUMN open_alarms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX meters_alarmed_ldn ON meters (ldn)
    WHERE open_alarms > 0 OR (diagnostic IS NOT NULL AND diagnostic <> 0);
