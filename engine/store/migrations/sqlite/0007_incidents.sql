-- Incidents from doors and IQs (forced open, held open, tamper, low battery, IQ
-- offline): stored, listed per site, acknowledged by an admin. No foreign keys, as the
-- entries log: history outlives the doors and IQs it names.
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL,
    kind TEXT NOT NULL,
    door INTEGER,
    iq INTEGER,
    iq_seq INTEGER,
    at INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
CREATE INDEX incidents_site_id ON incidents (site, id);
-- An IQ may report an incident again (its ack was lost): stored once.
CREATE UNIQUE INDEX incidents_iq_seq ON incidents (iq, iq_seq);
CREATE INDEX entries_site_id ON entries (site, id);
