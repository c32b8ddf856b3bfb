-- 0003: keys of their own for sources, the event name in a column, and a sequence that is never
-- reused.
--
-- migrate runs this in its one transaction, with foreign keys enforced.

-- Deferred until COMMIT (and reset by it): dropping sources below removes, for a moment, the
-- parent rows of events; the count of broken references goes up with the drop and back to zero
-- as the same ids are inserted into the new table. COMMIT fails if any reference is still broken,
-- so a source lost on the way would undo the whole migration.
PRAGMA defer_foreign_keys = ON;

-- The event name as its own column, for filtered reads of the event log without parsing bodies.
-- Stored events always had a string event_name (the server rejects others); the checks keep a
-- row that somehow does not from failing the migration: it gets NULL. (WHERE, then CASE: SQLite
-- may evaluate the terms of an AND in any order, and json_type fails on text that is not JSON.)
-- Added before sources is dropped, while events' REFERENCES still names an existing table.
ALTER TABLE events ADD COLUMN event_name TEXT;
UPDATE events
SET event_name = CASE WHEN json_type(body, '$.event_name') = 'text' THEN json_extract(body, '$.event_name') END
WHERE json_valid(body);

-- A source now has several keys (rotation with an overlap, revocation), so keys get their own
-- table and key_hash leaves sources. SQLite cannot drop a UNIQUE column, so sources is copied
-- aside, dropped, created again without it and refilled with the same ids; events.source_id
-- REFERENCES sources(id) by name, so it refers to the new table. (ALTER TABLE ... RENAME would
-- rewrite events' REFERENCES to follow the renamed old table instead.)
CREATE TEMP TABLE sources_0002 AS SELECT id, site, name, key_hash, active, created_at FROM sources;
DROP TABLE sources;
CREATE TABLE sources (
	id         INTEGER PRIMARY KEY,
	site       TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	active     INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);
INSERT INTO sources(id, site, name, active, created_at)
SELECT id, site, name, active, created_at FROM sources_0002 ORDER BY id;

-- Times are epoch milliseconds; expires_at, revoked_at and last_used_at are NULL for never.
-- prefix is the key's first characters in clear, to tell keys apart; '' when unknown.
-- key_hash is UNIQUE: a key authenticates one source, and its index is the lookup by key.
CREATE TABLE source_keys (
	id           INTEGER PRIMARY KEY,
	source_id    INTEGER NOT NULL REFERENCES sources(id),
	prefix       TEXT    NOT NULL,
	key_hash     BLOB    NOT NULL UNIQUE,
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER,
	revoked_at   INTEGER,
	last_used_at INTEGER
);
-- A source's keys (listing, rotation), and the foreign key check when a source row changes.
CREATE INDEX source_keys_source_id ON source_keys(source_id);

-- The existing keys: only their hash was kept, so their prefix is unknown.
INSERT INTO source_keys(source_id, prefix, key_hash, created_at)
SELECT id, '', key_hash, created_at FROM sources_0002 ORDER BY id;
DROP TABLE sources_0002;

-- The sequence (events.seq) is the cursor of every reader of the event log, so a number once
-- handed out must never be handed out again, also after the newest events are deleted (say, the
-- table is emptied): a reader past it would skip the new event. seq is the rowid without
-- AUTOINCREMENT, and SQLite then gives a new row max(rowid)+1, which reuses numbers after such a
-- delete. AUTOINCREMENT would fix that, but it writes its sqlite_sequence row at every insert:
-- one more page to the log and to disk in every commit, measured as a real loss on the collect
-- path, where most commits hold a few small events.
--
-- Instead the high-water mark of deleted rows is kept here, written only by deletes (off the hot
-- path), and the committer makes sure each new row's seq is above it: at the start of every
-- transaction it reads max(seq) and seq_floor.value once (the last page of events, which the
-- inserts touch anyway, and this table's one page, read and not written). While max(seq) is the
-- higher, which is almost always, SQLite's own max(seq)+1 is the right number; when the floor is
-- higher, the committer gives the first row floor+1 itself (events.go, selectSeqState, says why
-- not every row). Both reads happen under the write lock, so two processes writing the same file
-- cannot hand out the same number. Gaps are fine: the rule is strictly increasing and never
-- reused, not gapless.
--
-- One row. It starts at the current max(seq): numbers reused before this migration cannot be
-- known any more.
CREATE TABLE seq_floor (
	value INTEGER NOT NULL
);
INSERT INTO seq_floor(value) SELECT coalesce(max(seq), 0) FROM events;

CREATE TRIGGER events_seq_floor AFTER DELETE ON events
BEGIN
	UPDATE seq_floor SET value = OLD.seq WHERE OLD.seq > value;
END;
