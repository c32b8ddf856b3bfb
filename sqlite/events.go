package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/trackapi/trackapi"
)

// insertEvent stores one event unless its (source_id, event_id) is already stored; the
// statement then changes no row, which is how a duplicate is told apart. SQLite numbers the row
// max(seq)+1, which is right unless the newest events were deleted (see selectSeqState).
const insertEvent = `INSERT INTO events(source_id, site, event_id, event_name, received_at, body, warnings, body_hash)
VALUES(?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(source_id, event_id) DO NOTHING`

// insertEventAt is insertEvent with the sequence number given, its first argument.
const insertEventAt = `INSERT INTO events(seq, source_id, site, event_id, event_name, received_at, body, warnings, body_hash)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(source_id, event_id) DO NOTHING`

// selectBodyHash finds the body hash of the stored event a duplicate collided with, through the
// (source_id, event_id) index. It runs for duplicates that carry a hash only, never for a new
// event: the insert alone tells those apart.
const selectBodyHash = `SELECT body_hash FROM events WHERE source_id = ? AND event_id = ?`

// selectSeqState reads the newest event's sequence number and the floor, the newest deleted
// one's (migration 0003 explains why and how): the highest number ever handed out is the larger
// of the two. The committer reads them once at the start of each transaction, under the write
// lock, so that another process cannot hand out numbers meanwhile.
//
// Almost always the newest event is the highest, and SQLite's own choice for a new row,
// max(seq)+1, is the next number: the committer then uses insertEvent and leaves the numbering
// to SQLite, which appends at the end of the table it has just found. Giving every row its
// number (a seq column bound in every insert) costs one more value to bind and, for the rowid
// check, a search of the table's B-tree from its root: in a CPU profile of BenchmarkStoreEvents
// (on tmpfs, so without syncs) sqlite3BtreeTableMoveto went from 1% to 5% of the time, back to
// 1% this way. Only when the floor is higher (the newest events were deleted) does the
// committer store the first new row with insertEventAt and floor+1, a statement prepared on the
// spot as it is that rare; from then on max(seq) is above the floor again.
const selectSeqState = `SELECT coalesce((SELECT max(seq) FROM events), 0), coalesce((SELECT max(value) FROM seq_floor), 0)`

// request is one StoreEvents call waiting for the committer.
type request struct {
	ctx  context.Context
	rows []row
	// reply has room for the one reply, so that the committer never waits for a caller that
	// has given up.
	reply chan reply
}

// row is an event encoded for the insert. Encoding happens in the caller's goroutine so that the
// single committer only does the inserts.
type row struct {
	sourceID   int64
	site       string
	eventID    string
	eventName  string
	receivedAt int64
	body       string // the body to store: a member the server filled in may be cut out (compact.go)
	warnings   any    // the compact form ([]byte), or nil for NULL
	hash       any    // the body hash ([]byte), or nil for NULL
}

// reply is the committer's answer to one request.
type reply struct {
	outcomes []trackapi.StoreOutcome
	err      error
}

// StoreEvents commits events and syncs them to disk before it returns. stored[i] is false when
// events[i] repeats an event already stored for the same source and event id, including an
// earlier one in the same call or in a concurrent call. It is StoreEventOutcomes without telling
// a reused id from a plain duplicate.
func (d *DB) StoreEvents(ctx context.Context, events []trackapi.Event) ([]bool, error) {
	outcomes, err := d.StoreEventOutcomes(ctx, events)
	if err != nil {
		return nil, err
	}
	stored := make([]bool, len(outcomes))
	for i, o := range outcomes {
		stored[i] = o == trackapi.OutcomeStored
	}
	return stored, nil
}

// StoreEventOutcomes commits events and syncs them to disk before it returns, with what became of
// each: trackapi.OutcomeStored, or, for an event whose source and event id are already stored
// (including by an earlier event of the same call or of a concurrent call),
// trackapi.OutcomeIDReused when both have a body hash and they differ, else
// trackapi.OutcomeDuplicate.
//
// The call is committed together with the other calls waiting at the time, in one transaction.
// Errors:
//   - wrapping trackapi.ErrUnavailable when nothing was committed and a retry may work: the DB is
//     closed, too many calls are already waiting (overload), or the transaction failed for a
//     reason that may go away (disk full, database locked, I/O error; see retryable). The
//     driver's error is wrapped too;
//   - the context's error when ctx ends before the reply. The events may still be committed
//     afterwards (or may have been already), so a retry must rely on deduplication by event id;
//   - any other error is permanent: this call's events are invalid (an empty body, an unknown
//     source) and none of them was stored, the other calls in the same transaction not being
//     affected; or, rarely, the transaction itself failed for a reason a retry would not fix
//     (a corrupt file, a bug), and nothing was stored.
func (d *DB) StoreEventOutcomes(ctx context.Context, events []trackapi.Event) ([]trackapi.StoreOutcome, error) {
	req, err := d.enqueue(ctx, events)
	if err != nil {
		return nil, err
	}
	return req.wait(ctx)
}

// enqueue encodes events and puts them on the committer's queue, failing at once when the queue
// is full rather than waiting: a full queue means the disk does not keep up, and waiting longer
// would not help the caller.
func (d *DB) enqueue(ctx context.Context, events []trackapi.Event) (*request, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store events: %w", err)
	}
	rows := make([]row, len(events))
	var enc encoder
	for i, e := range events {
		if len(e.Body) == 0 {
			return nil, fmt.Errorf("store events: event %q has no body", e.EventID)
		}
		body, warnings := enc.encode(e)
		rows[i] = row{
			sourceID:   e.SourceID,
			site:       e.Site,
			eventID:    e.EventID,
			eventName:  e.EventName,
			receivedAt: e.ReceivedAt,
			// No copy: the body is bound as TEXT (a string) but stays the caller's bytes (or the
			// encoder's), which nobody changes while the call runs; a copy doubled the memory of a
			// burst of batches.
			body: unsafe.String(unsafe.SliceData(body), len(body)),
		}
		if warnings != nil {
			rows[i].warnings = warnings
		}
		if e.BodyHash != nil {
			rows[i].hash = e.BodyHash
		}
	}
	req := &request{ctx: ctx, rows: rows, reply: make(chan reply, 1)}

	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, fmt.Errorf("store events: %w: database closed", trackapi.ErrUnavailable)
	}
	select {
	case d.requests <- req:
		return req, nil
	default:
		return nil, fmt.Errorf("store events: %w: %d requests already waiting to be committed",
			trackapi.ErrUnavailable, cap(d.requests))
	}
}

// wait returns the committer's reply, or the context's error if ctx ends first.
func (r *request) wait(ctx context.Context) ([]trackapi.StoreOutcome, error) {
	select {
	case rep := <-r.reply:
		return rep.outcomes, rep.err
	case <-ctx.Done():
		return nil, fmt.Errorf("store events: waiting for commit: %w", ctx.Err())
	}
}

// commitLoop is the committer. It takes one request, adds every request already waiting (up to
// maxGroupEvents events) and commits them in one transaction: there is no waiting window, so a
// lone request is committed at once, and under load each commit's sync serves many requests. It
// returns when Close has closed the queue and every queued request has had its reply.
func (d *DB) commitLoop() {
	defer close(d.done)
	var group []*request
	var next *request // taken from the queue but too big for the group before; it starts the next
	for {
		first := next
		next = nil
		if first == nil {
			r, ok := <-d.requests
			if !ok {
				return
			}
			first = r
		}
		group = append(group[:0], first)
		events := len(first.rows)
	drain:
		for events < maxGroupEvents {
			select {
			case r, ok := <-d.requests:
				if !ok {
					break drain
				}
				if events+len(r.rows) > maxGroupEvents {
					next = r
					break drain
				}
				group = append(group, r)
				events += len(r.rows)
			default:
				break drain
			}
		}
		d.commitGroup(group)
		clear(group) // let the requests be collected while waiting for the next
	}
}

// commitGroup commits group in one transaction and replies to each request. A failed
// transaction is rolled back and every request gets its error, wrapping trackapi.ErrUnavailable
// when a retry may work; nothing carries over, so the next group starts afresh once the fault is
// gone.
func (d *DB) commitGroup(group []*request) {
	start := time.Now()
	// Callers that have given up are not waited for; skipping them saves work under overload.
	live := make([]*request, 0, len(group))
	events := 0
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.reply <- reply{err: fmt.Errorf("store events: %w", err)}
			continue
		}
		live = append(live, r)
		events += len(r.rows)
	}
	if len(live) == 0 {
		return
	}

	d.txStart.Store(start.UnixNano())
	replies, err := d.insertGroup(live)
	d.txDone.Add(1)
	d.txStart.Store(0)
	// Only a fault that may clear makes readiness probe: a permanent failure (a bug) is not the
	// store being unavailable, and a test write would pass anyway.
	d.health.record(err != nil && retryable(err))
	if d.opts.OnCommit != nil {
		d.opts.OnCommit(len(live), events, time.Since(start), err)
	}
	if err != nil {
		err = d.classify("store events", err)
	}
	for i, r := range live {
		if err != nil {
			r.reply <- reply{err: err}
			continue
		}
		r.reply <- replies[i]
	}
}

// insertGroup inserts the events of group in one transaction and commits it. A request whose
// events fail for a permanent reason (say, a constraint: an unknown source) must fail alone, not
// sink the group; but a savepoint around every request costs three statements each, as much as
// the insert of a single event. So the group is first inserted without savepoints, and only when
// that fails for a permanent reason is it rolled back and done again with one savepoint a
// request, which undoes just the bad ones. A retryable error (a full disk, a lock) fails the
// group: it is returned, and the deferred Rollback undoes everything.
//
// The transaction does not use the callers' contexts: it is shared, and one caller leaving must
// not undo the others' events.
func (d *DB) insertGroup(group []*request) ([]reply, error) {
	replies, err := d.insertGroupOnce(group, false)
	if err != nil && !retryable(err) {
		return d.insertGroupOnce(group, true)
	}
	return replies, err
}

// insertGroupOnce is one attempt of insertGroup, with or without a savepoint a request.
func (d *DB) insertGroupOnce(group []*request, savepoints bool) ([]reply, error) {
	ctx := context.Background()
	tx, err := d.writer.BeginTx(ctx, nil) // BEGIN IMMEDIATE: waits up to busy_timeout for the lock
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() // does nothing after Commit

	// One read a transaction, not one a row. next is the number the next stored row must be
	// given explicitly, or 0 when SQLite's max(seq)+1 is right (see selectSeqState).
	var newest, floor, next int64
	if err := tx.StmtContext(ctx, d.seqState).QueryRowContext(ctx).Scan(&newest, &floor); err != nil {
		return nil, fmt.Errorf("read the last sequence number: %w", err)
	}
	if floor > newest {
		next = floor + 1
	}
	if d.opts.inTransaction != nil {
		d.opts.inTransaction()
	}

	stmt := tx.StmtContext(ctx, d.insert) // the writer's one connection: prepared once, reused
	defer stmt.Close()

	replies := make([]reply, len(group))
	for i, r := range group {
		if !savepoints {
			outcomes, err := d.insertRows(ctx, tx, stmt, r.rows, &next)
			if err != nil {
				return nil, err
			}
			replies[i].outcomes = outcomes
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT request"); err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
		nextBefore := next
		outcomes, err := d.insertRows(ctx, tx, stmt, r.rows, &next)
		switch {
		case err == nil:
			replies[i].outcomes = outcomes
		case !retryable(err):
			if _, rbErr := tx.ExecContext(ctx, "ROLLBACK TO request"); rbErr != nil {
				return nil, fmt.Errorf("roll back to savepoint: %w", rbErr)
			}
			// The request's rows are undone: if one of them had lifted max(seq) above the floor,
			// the floor is above it again.
			next = nextBefore
			replies[i].err = fmt.Errorf("store events: %w", err)
		default:
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, "RELEASE request"); err != nil {
			return nil, fmt.Errorf("release savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return replies, nil
}

// insertRows inserts rows with stmt (insertEvent in tx) and reports what became of each. *next is
// the sequence number the next new row must be given explicitly, with insertEventAt, or 0 when
// SQLite's max(seq)+1 is right; once a row took it, it is 0. A duplicate, not inserted, takes no
// number; when it has a body hash, the stored event's is looked up (selectBodyHash) to tell a
// reused id, so only duplicates cost a second statement.
func (d *DB) insertRows(ctx context.Context, tx *sql.Tx, stmt *sql.Stmt, rows []row, next *int64) ([]trackapi.StoreOutcome, error) {
	outcomes := make([]trackapi.StoreOutcome, len(rows))
	var lookup *sql.Stmt
	defer func() {
		if lookup != nil {
			lookup.Close()
		}
	}()
	for i, r := range rows {
		var res sql.Result
		var err error
		if *next == 0 {
			res, err = stmt.ExecContext(ctx, r.sourceID, r.site, r.eventID, r.eventName, r.receivedAt, r.body, r.warnings, r.hash)
		} else {
			res, err = tx.ExecContext(ctx, insertEventAt, *next, r.sourceID, r.site, r.eventID, r.eventName, r.receivedAt, r.body, r.warnings, r.hash)
		}
		if err != nil {
			return nil, fmt.Errorf("insert event %q of source %d: %w", r.eventID, r.sourceID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("insert event %q of source %d: %w", r.eventID, r.sourceID, err)
		}
		if n == 1 {
			outcomes[i] = trackapi.OutcomeStored
			*next = 0
			continue
		}
		outcomes[i] = trackapi.OutcomeDuplicate
		if r.hash == nil {
			continue
		}
		if lookup == nil {
			lookup = tx.StmtContext(ctx, d.selectHash)
		}
		var stored []byte
		if err := lookup.QueryRowContext(ctx, r.sourceID, r.eventID).Scan(&stored); err != nil {
			return nil, fmt.Errorf("read the body hash of event %q of source %d: %w", r.eventID, r.sourceID, err)
		}
		if stored != nil && !bytes.Equal(stored, r.hash.([]byte)) {
			outcomes[i] = trackapi.OutcomeIDReused
		}
	}
	return outcomes, nil
}

// ReadEvents returns up to limit stored events with a sequence number above after that match
// filter, oldest first (in seq order, which is the order of commits), and the cursor to pass next
// time: the last returned event's Seq, or after when none was returned. A limit below 1 is an
// error. Warnings are an empty, non-nil slice when there are none; EventName is "" for an event
// stored without one.
//
// The page is read in one query on a read connection, so it is one consistent snapshot and does
// not hold up commits. A page shorter than limit does not mean the end of the log was reached for
// good: new events may be committed at any time.
func (d *DB) ReadEvents(ctx context.Context, after int64, filter trackapi.EventFilter, limit int) ([]trackapi.StoredEvent, int64, error) {
	if limit < 1 {
		return nil, after, fmt.Errorf("read events: limit %d, want at least 1", limit)
	}
	query, args := readEventsQuery(after, filter, limit)
	rows, err := d.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, after, d.classify("read events", err)
	}
	defer rows.Close()
	events := make([]trackapi.StoredEvent, 0, min(limit, 1024))
	next := after
	for rows.Next() {
		e, err := scanStoredEvent(rows)
		if err != nil {
			return nil, after, d.classify("read events", err)
		}
		events = append(events, e)
		next = e.Seq
	}
	if err := rows.Err(); err != nil {
		return nil, after, d.classify("read events", err)
	}
	return events, next, nil
}

// storedEventColumns are the columns scanStoredEvent reads, in its order.
const storedEventColumns = `seq, source_id, site, event_id, event_name, received_at, body, warnings`

// scanStoredEvent reads the storedEventColumns of one row: the body as it was given to
// StoreEvents and its warnings with their messages, from either form of the warnings column
// (compact.go). Warnings are an empty, non-nil slice when there are none; EventName is "" for an
// event stored without one.
func scanStoredEvent(rows *sql.Rows) (trackapi.StoredEvent, error) {
	var e trackapi.StoredEvent
	var name sql.NullString
	var body, warnings []byte
	if err := rows.Scan(&e.Seq, &e.SourceID, &e.Site, &e.EventID, &name, &e.ReceivedAt, &body, &warnings); err != nil {
		return trackapi.StoredEvent{}, err
	}
	e.EventName = name.String
	body, problems, err := decode(e.EventID, e.ReceivedAt, body, warnings)
	if err != nil {
		return trackapi.StoredEvent{}, fmt.Errorf("warnings of event %d: %w", e.Seq, err)
	}
	e.Event, e.Warnings = body, problems
	return e, nil
}

// readEventsQuery returns ReadEvents' query and its arguments. The scan walks the table in seq
// order from the cursor (a range on the rowid) and stops after limit matches, so a page costs
// what it returns plus the rows it skips, with no sort. "+source_id" keeps SQLite from using the
// (source_id, event_id) index instead, which would find a source's rows fast but need a sort by
// seq of all of them after the cursor before returning the first one. event_name has no index (it
// would cost every commit one more B-tree to write), so it needs no such hint.
func readEventsQuery(after int64, filter trackapi.EventFilter, limit int) (string, []any) {
	var query strings.Builder
	query.WriteString(`SELECT ` + storedEventColumns + ` FROM events WHERE seq > ?`)
	args := []any{after}
	if filter.SourceID != 0 {
		query.WriteString(` AND +source_id = ?`)
		args = append(args, filter.SourceID)
	}
	if filter.EventName != "" {
		query.WriteString(` AND event_name = ?`)
		args = append(args, filter.EventName)
	}
	query.WriteString(` ORDER BY seq LIMIT ?`)
	args = append(args, limit)
	return query.String(), args
}
