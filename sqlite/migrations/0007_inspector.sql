-- 0006: the event inspector's entries and the data-quality counts (trackapi.InspectorStore).
--
-- Nothing here is written by the committer's transactions: the inspector's capturer writes a
-- batch of entries and the counts of about a second in a transaction of its own on the writer
-- connection (DB.AddInspectorEntries), so the collect path pays only turns at that connection.
-- Times are epoch milliseconds, like the rest of the schema.

-- One row an entry. id is AUTOINCREMENT: it is the cursor of listings and of the live stream, so
-- a number must never be handed out again, also after retention has deleted every entry. (Its
-- cost, a write of sqlite_sequence a transaction, is not on the collect path.) source_id is 0 when
-- the key was unknown or missing, so it has no foreign key. test_code is NULL when the event had
-- none, so that the partial index holds only test entries. codes and problems are JSON arrays;
-- body is valid JSON (trackapi.InspectorEntry says which): DB.AddInspectorEntries checks it before
-- its transaction, as a CHECK here would parse every body again while holding the writer (5% of
-- the time of a batch of 1 KB entries).
CREATE TABLE inspector_entries (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	at         INTEGER NOT NULL,
	source_id  INTEGER NOT NULL,
	site       TEXT    NOT NULL,
	key_prefix TEXT    NOT NULL,
	event_name TEXT    NOT NULL,
	event_id   TEXT    NOT NULL,
	outcome    TEXT    NOT NULL CHECK (outcome IN ('accepted', 'warned', 'duplicate', 'rejected', 'refused')),
	codes      TEXT    NOT NULL CHECK (json_valid(codes)),
	reason     TEXT    NOT NULL,
	test_code  TEXT,
	client_ip  TEXT    NOT NULL,
	problems   TEXT    NOT NULL CHECK (json_valid(problems)),
	body       TEXT    NOT NULL,
	batch      INTEGER NOT NULL,
	idx        INTEGER NOT NULL
);
-- A source's entries newest first (the usual listing, and the per-source cap of retention), and
-- with an event name too. Other filters (outcome, site, times) are checked on the rows these
-- find: a source holds at most 10 000 entries.
CREATE INDEX inspector_entries_source ON inspector_entries(source_id, id);
CREATE INDEX inspector_entries_source_name ON inspector_entries(source_id, event_name, id);
-- Retention by age.
CREATE INDEX inspector_entries_at ON inspector_entries(at);
-- A test code's entries; only entries with one are in it.
CREATE INDEX inspector_entries_test_code ON inspector_entries(test_code, id) WHERE test_code IS NOT NULL;

-- The filter by code: one row for each code of an entry, so that a listing walks the entries of
-- one code newest first without reading the others. The trigger keeps it in step with deletes,
-- through this table's own key (the codes are in the deleted row), so it needs no other index.
CREATE TABLE inspector_codes (
	code     TEXT    NOT NULL,
	entry_id INTEGER NOT NULL,
	PRIMARY KEY (code, entry_id)
) WITHOUT ROWID;

CREATE TRIGGER inspector_entries_codes AFTER DELETE ON inspector_entries
BEGIN
	DELETE FROM inspector_codes WHERE code IN (SELECT value FROM json_each(OLD.codes)) AND entry_id = OLD.id;
END;

-- The exact counts of one (source, event name) an hour (the hour's start). The capturer adds
-- into them (an upsert) about once a second. The key serves DataQuality (a source's hours), the
-- hour index retention.
CREATE TABLE quality_events (
	source_id     INTEGER NOT NULL,
	hour          INTEGER NOT NULL,
	event_name    TEXT    NOT NULL,
	collected     INTEGER NOT NULL DEFAULT 0,
	with_warnings INTEGER NOT NULL DEFAULT 0,
	rejected      INTEGER NOT NULL DEFAULT 0,
	duplicates    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (source_id, hour, event_name)
) WITHOUT ROWID;
CREATE INDEX quality_events_hour ON quality_events(hour);

-- The count of one problem (code, path) of one (source, event name) an hour, with the last
-- message and a sample event (up to 4 KiB, which is why this is a rowid table: WITHOUT ROWID
-- suits small rows only).
CREATE TABLE quality_anomalies (
	id         INTEGER PRIMARY KEY,
	source_id  INTEGER NOT NULL,
	hour       INTEGER NOT NULL,
	event_name TEXT    NOT NULL,
	code       TEXT    NOT NULL,
	path       TEXT    NOT NULL,
	count      INTEGER NOT NULL,
	message    TEXT    NOT NULL,
	sample     TEXT    CHECK (sample IS NULL OR json_valid(sample)),
	UNIQUE (source_id, hour, event_name, code, path)
);
CREATE INDEX quality_anomalies_hour ON quality_anomalies(hour);
