-- Firmware downloads over HTTP: a token per IQ and firmware file, handed to the IQ over
-- the link with FIRMWARE_AVAILABLE and stored as its SHA-256. It downloads that file only
-- while the file is still the IQ's assignment, until it expires.
CREATE TABLE firmware_downloads (
    token_hash TEXT PRIMARY KEY,
    iq BIGINT NOT NULL REFERENCES iqs (id) ON DELETE CASCADE,
    firmware BIGINT NOT NULL REFERENCES firmware_files (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX firmware_downloads_iq ON firmware_downloads (iq);
