-- 0004: delivery of stored events to destinations (webhooks, Kafka, files, another collector).
--
-- The event log is the queue. A destination keeps only a cursor over it; rows are written for
-- what did not go through (retries, dead letters) and for what operators look at (per-minute
-- counters, issues), never one row per event delivered. Nothing here is touched by the collect
-- path: the committer's transactions write events (and read seq_floor) only, so delivery costs
-- collecting nothing but turns at the one writer connection.
--
-- Times are epoch milliseconds, like the rest of the schema.
--
-- Everything a destination owns hangs off destinations with ON DELETE CASCADE (foreign keys are
-- on for every connection), so deleting a destination removes its state in the same statement;
-- each child's primary key or unique index starts with destination_id, which is the index the
-- cascade needs.
--
-- No foreign key points at events.seq: every delete of an event (retention, in batches of
-- thousands) would then look up each child table by seq, which would need an index on seq in each,
-- written at every retry. Retention deletes the retry rows and dead letters of the events it
-- deletes itself, in the same transaction (DB.DeleteExpiredEvents).
--
-- Tables keyed by (destination_id, seq) or (destination_id, minute) are WITHOUT ROWID: their key
-- is the table's B-tree, so a write touches one B-tree fewer than a rowid table and its key index.

-- config is trackapi.DestinationConfig as JSON. It holds the secrets a destination needs to sign
-- or authenticate (webhook signing secrets, a forward token) in clear: unlike source keys, which
-- are only compared and so kept as hashes, these must be used. filter is the condition filter's
-- JSON as the operator gave it, NULL when there is none. consent_category is '' when unset.
CREATE TABLE destinations (
	id               INTEGER PRIMARY KEY,
	name             TEXT    NOT NULL,
	type             TEXT    NOT NULL,
	config           TEXT    NOT NULL CHECK (json_valid(config)),
	consent_category TEXT    NOT NULL,
	filter           TEXT    CHECK (filter IS NULL OR json_valid(filter)),
	batch_size       INTEGER NOT NULL CHECK (batch_size >= 0),
	status           TEXT    NOT NULL CHECK (status IN ('active', 'paused')),
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL
);

-- The sources a destination takes events from; none means every source. Sources are never
-- deleted (only deactivated), so the reference to them needs no index on source_id.
CREATE TABLE destination_sources (
	destination_id INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
	source_id      INTEGER NOT NULL REFERENCES sources(id),
	PRIMARY KEY (destination_id, source_id)
) WITHOUT ROWID;

-- Every event with a seq up to the cursor is settled for the destination. A table of its own
-- rather than a column of destinations: it is written at every settlement, the destination
-- rarely, and a small row keeps that frequent write to a small page.
CREATE TABLE delivery_cursors (
	destination_id INTEGER PRIMARY KEY REFERENCES destinations(id) ON DELETE CASCADE,
	seq            INTEGER NOT NULL
);

-- Events waiting for another attempt. The index finds the due ones (next_at <= now) without
-- reading those still backing off; being an index of a WITHOUT ROWID table it holds seq too, so
-- DueRetries picks the oldest due seqs from it alone.
CREATE TABLE delivery_retries (
	destination_id  INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
	seq             INTEGER NOT NULL,
	attempt         INTEGER NOT NULL,
	first_failed_at INTEGER NOT NULL,
	next_at         INTEGER NOT NULL,
	reason          TEXT    NOT NULL,
	error           TEXT    NOT NULL,
	PRIMARY KEY (destination_id, seq)
) WITHOUT ROWID;
CREATE INDEX delivery_retries_due ON delivery_retries(destination_id, next_at);

-- Events a destination did not take, until they are replayed or purged, or retention deletes
-- the event. event_name is kept so that listings need not read the event.
CREATE TABLE dead_letters (
	destination_id  INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
	seq             INTEGER NOT NULL,
	kind            TEXT    NOT NULL CHECK (kind IN ('rejected', 'failed')),
	reason          TEXT    NOT NULL,
	error           TEXT    NOT NULL,
	attempts        INTEGER NOT NULL,
	first_failed_at INTEGER NOT NULL,
	failed_at       INTEGER NOT NULL,
	event_name      TEXT    NOT NULL,
	PRIMARY KEY (destination_id, seq)
) WITHOUT ROWID;

-- One row a destination and minute (the minute's start) with counts, one column a field of
-- trackapi.DeliveryCounts. Settlements add into the row (an upsert), so there is one row a
-- minute however many batches the minute had; a minute with nothing to count has no row.
CREATE TABLE delivery_stats (
	destination_id        INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
	minute                INTEGER NOT NULL,
	delivered             INTEGER NOT NULL DEFAULT 0,
	delivered_after_retry INTEGER NOT NULL DEFAULT 0,
	retried               INTEGER NOT NULL DEFAULT 0,
	filtered_consent      INTEGER NOT NULL DEFAULT 0,
	filtered_condition    INTEGER NOT NULL DEFAULT 0,
	rejected              INTEGER NOT NULL DEFAULT 0,
	failed                INTEGER NOT NULL DEFAULT 0,
	expired               INTEGER NOT NULL DEFAULT 0,
	latency_millis_sum    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (destination_id, minute)
) WITHOUT ROWID;

-- Failures grouped by (destination, kind, reason): a flood of the same failure is one row with a
-- count, not a row a failure. event_names is a JSON array of a few of the event names affected
-- (at most 10). The unique index is also how a destination's issues are found.
CREATE TABLE delivery_issues (
	id             INTEGER PRIMARY KEY,
	destination_id INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
	kind           TEXT    NOT NULL,
	reason         TEXT    NOT NULL,
	count          INTEGER NOT NULL,
	first_seen     INTEGER NOT NULL,
	last_seen      INTEGER NOT NULL,
	event_names    TEXT    NOT NULL CHECK (json_valid(event_names)),
	UNIQUE (destination_id, kind, reason)
);

-- A few examples of each issue (trackapi.DeliverySample as JSON): the newest 5 are kept, and at
-- most one is added an issue a minute, so that a flood of failures is not a flood of writes. The
-- index finds an issue's samples newest first, and whether its minute already has one.
CREATE TABLE issue_samples (
	issue_id INTEGER NOT NULL REFERENCES delivery_issues(id) ON DELETE CASCADE,
	at       INTEGER NOT NULL,
	seq      INTEGER NOT NULL,
	attempt  INTEGER NOT NULL,
	sample   TEXT    NOT NULL CHECK (json_valid(sample))
);
CREATE INDEX issue_samples_issue_at ON issue_samples(issue_id, at);
