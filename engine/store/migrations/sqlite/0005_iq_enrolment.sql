-- IQ enrolment: one-time enrolment codes (stored as the SHA-256 of the normalized code,
-- never the code) and the serial of the certificate last issued to each IQ. Only that
-- serial authenticates; revoking an IQ forgets it.
CREATE TABLE iq_enrolment_codes (
    code_hash TEXT PRIMARY KEY,
    iq INTEGER NOT NULL REFERENCES iqs (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX iq_enrolment_codes_iq ON iq_enrolment_codes (iq);

CREATE TABLE iq_certificates (
    iq INTEGER PRIMARY KEY REFERENCES iqs (id) ON DELETE CASCADE,
    serial TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL
);
