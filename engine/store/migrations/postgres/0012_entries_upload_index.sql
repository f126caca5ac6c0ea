-- Decisions the node takes for an IQ are logged with sequence numbers from 2^62 up, given
-- by the node itself and unique by construction; HTTP decisions have none. Only the
-- entries an IQ uploads (below 2^62) need the index that stores an upload sent twice
-- once. Indexing only those takes one B-tree insert off every other decision logged
-- (measured: about a third of the entries writer's time on SQLite).
DROP INDEX entries_iq_seq;
CREATE UNIQUE INDEX entries_iq_seq ON entries (iq, iq_seq) WHERE iq_seq < 4611686018427387904;
