-- 0001: sources and events.
--
-- Times are epoch milliseconds. Only the hash of a source key is kept.

CREATE TABLE sources (
	id         INTEGER PRIMARY KEY,
	site       TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	key_hash   BLOB    NOT NULL UNIQUE,
	active     INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);

-- seq is the rowid: each new row gets the largest seq plus one, so export order is arrival order.
-- It is not AUTOINCREMENT: that would write the sqlite_sequence page in every commit, one more
-- page to the log and disk per commit (most commits hold a few small events). A seq could only
-- be reused after the newest rows were deleted, and events are never deleted newest first.
-- warnings is a JSON array of trackapi.Problem, or NULL when there are none.
-- UNIQUE(source_id, event_id) is the deduplication key and its index.
CREATE TABLE events (
	seq         INTEGER PRIMARY KEY,
	source_id   INTEGER NOT NULL REFERENCES sources(id),
	site        TEXT    NOT NULL,
	event_id    TEXT    NOT NULL,
	received_at INTEGER NOT NULL,
	body        TEXT    NOT NULL,
	warnings    TEXT,
	UNIQUE (source_id, event_id)
);
