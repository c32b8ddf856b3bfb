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

-- seq is AUTOINCREMENT so that a seq is never reused, even after the newest rows are deleted:
-- export order (and any later cursor on seq) stays stable.
-- warnings is a JSON array of trackapi.Problem, or NULL when there are none.
-- UNIQUE(source_id, event_id) is the deduplication key and its index.
CREATE TABLE events (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	source_id   INTEGER NOT NULL REFERENCES sources(id),
	site        TEXT    NOT NULL,
	event_id    TEXT    NOT NULL,
	received_at INTEGER NOT NULL,
	body        TEXT    NOT NULL,
	warnings    TEXT,
	UNIQUE (source_id, event_id)
);
