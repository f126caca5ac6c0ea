-- The door rule that ruled a decision, when one did: `name@sha256` (hex), so an entry
-- names the exact plugin binary that took part and the decision can be replayed.
ALTER TABLE entries ADD COLUMN rule TEXT;
