-- What an admin registers about an IQ beyond its site and name: its model and serial
-- number (unique: one device is registered once), and the firmware it should run.
ALTER TABLE iqs ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE iqs ADD COLUMN serial TEXT;
ALTER TABLE iqs ADD COLUMN firmware INTEGER REFERENCES firmware_files (id) ON DELETE SET NULL;
CREATE UNIQUE INDEX iqs_serial ON iqs (serial);
