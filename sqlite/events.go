package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/trackapi/trackapi"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// insertEvent stores one event unless its (source_id, event_id) is already stored; the
// statement then changes no row, which is how a duplicate is told apart.
const insertEvent = `INSERT INTO events(source_id, site, event_id, received_at, body, warnings)
VALUES(?, ?, ?, ?, ?, ?)
ON CONFLICT(source_id, event_id) DO NOTHING`

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
	receivedAt int64
	body       string
	warnings   any // JSON text, or nil for NULL
}

// reply is the committer's answer to one request.
type reply struct {
	stored []bool
	err    error
}

// StoreEvents commits events and syncs them to disk before it returns. stored[i] is false when
// events[i] repeats an event already stored for the same source and event id, including an
// earlier one in the same call or in a concurrent call.
//
// The call is committed together with the other calls waiting at the time, in one transaction.
// Errors:
//   - wrapping trackapi.ErrUnavailable when nothing was committed and a retry may work: the DB is
//     closed, too many calls are already waiting (overload), or the transaction failed (disk
//     full, database locked, I/O error);
//   - the context's error when ctx ends before the reply. The events may still be committed
//     afterwards (or may have been already), so a retry must rely on deduplication by event id;
//   - any other error means this call's events are invalid (an empty body, an unknown source)
//     and none of them was stored; the other calls in the same transaction are not affected.
func (d *DB) StoreEvents(ctx context.Context, events []trackapi.Event) ([]bool, error) {
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
	for i, e := range events {
		if len(e.Body) == 0 {
			return nil, fmt.Errorf("store events: event %q has no body", e.EventID)
		}
		rows[i] = row{
			sourceID:   e.SourceID,
			site:       e.Site,
			eventID:    e.EventID,
			receivedAt: e.ReceivedAt,
			// No copy: the body is bound as TEXT (a string) but stays the caller's bytes, which
			// nobody changes while the call runs; a copy doubled the memory of a burst of batches.
			body: unsafe.String(unsafe.SliceData(e.Body), len(e.Body)),
		}
		if len(e.Warnings) > 0 {
			w, err := json.Marshal(e.Warnings)
			if err != nil {
				return nil, fmt.Errorf("store events: encode warnings of event %q: %w", e.EventID, err)
			}
			rows[i].warnings = string(w)
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
func (r *request) wait(ctx context.Context) ([]bool, error) {
	select {
	case rep := <-r.reply:
		return rep.stored, rep.err
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
// transaction is rolled back and every request gets an error wrapping trackapi.ErrUnavailable;
// nothing carries over, so the next group starts afresh once the fault is gone.
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

	replies, err := d.insertGroup(live)
	d.commitFailing.Store(err != nil)
	if d.opts.OnCommit != nil {
		d.opts.OnCommit(len(live), events, time.Since(start), err)
	}
	for i, r := range live {
		if err != nil {
			r.reply <- reply{err: fmt.Errorf("store events: %w: %v", trackapi.ErrUnavailable, err)}
			continue
		}
		r.reply <- replies[i]
	}
}

// insertGroup inserts the events of group in one transaction and commits it. A request whose
// events break a constraint (say, an unknown source) must fail alone, not sink the group; but a
// savepoint around every request costs three statements each, as much as the insert of a single
// event. So the group is first inserted without savepoints, and only when a constraint fails is
// it rolled back and done again with one savepoint a request, which undoes just the bad ones.
// Any other error fails the group: it is returned, and the deferred Rollback undoes everything.
//
// The transaction does not use the callers' contexts: it is shared, and one caller leaving must
// not undo the others' events.
func (d *DB) insertGroup(group []*request) ([]reply, error) {
	replies, err := d.insertGroupOnce(group, false)
	if isConstraint(err) {
		return d.insertGroupOnce(group, true)
	}
	return replies, err
}

func (d *DB) insertGroupOnce(group []*request, savepoints bool) ([]reply, error) {
	ctx := context.Background()
	tx, err := d.writer.BeginTx(ctx, nil) // BEGIN IMMEDIATE: waits up to busy_timeout for the lock
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() // does nothing after Commit

	stmt := tx.StmtContext(ctx, d.insert) // the writer's one connection: prepared once, reused
	defer stmt.Close()

	replies := make([]reply, len(group))
	for i, r := range group {
		if !savepoints {
			stored, err := insertRows(ctx, stmt, r.rows)
			if err != nil {
				return nil, err
			}
			replies[i].stored = stored
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT request"); err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
		stored, err := insertRows(ctx, stmt, r.rows)
		switch {
		case err == nil:
			replies[i].stored = stored
		case isConstraint(err):
			if _, rbErr := tx.ExecContext(ctx, "ROLLBACK TO request"); rbErr != nil {
				return nil, fmt.Errorf("roll back to savepoint: %w", rbErr)
			}
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

// insertRows inserts rows with stmt and reports which were new.
func insertRows(ctx context.Context, stmt *sql.Stmt, rows []row) ([]bool, error) {
	stored := make([]bool, len(rows))
	for i, r := range rows {
		res, err := stmt.ExecContext(ctx, r.sourceID, r.site, r.eventID, r.receivedAt, r.body, r.warnings)
		if err != nil {
			return nil, fmt.Errorf("insert event %q of source %d: %w", r.eventID, r.sourceID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("insert event %q of source %d: %w", r.eventID, r.sourceID, err)
		}
		stored[i] = n == 1
	}
	return stored, nil
}

// isConstraint reports whether err is a constraint violation (SQLITE_CONSTRAINT and its extended
// codes): the statement failed because of its values, the transaction is intact, and retrying
// the same values would fail again.
func isConstraint(err error) bool {
	var e *sqlitedriver.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// ExportEvents calls fn for each stored event, oldest first: all of them when sourceID is 0,
// else those of that source. Rows are read one at a time from a read connection, so the export
// of a large file needs little memory and does not hold up commits (but the write-ahead log
// cannot be checkpointed past the export's snapshot until it ends). Warnings are an empty, non-nil
// slice when there are none. An error from fn stops the export and is returned as is.
func (d *DB) ExportEvents(ctx context.Context, sourceID int64, fn func(trackapi.StoredEvent) error) error {
	// "+source_id" keeps SQLite from using the (source_id, event_id) index, which would need a
	// sort by seq of all the source's rows before the first one is returned; the scan of the
	// table in seq order streams.
	query := `SELECT source_id, site, received_at, body, warnings FROM events ORDER BY seq`
	args := []any{}
	if sourceID != 0 {
		query = `SELECT source_id, site, received_at, body, warnings FROM events WHERE +source_id = ? ORDER BY seq`
		args = append(args, sourceID)
	}
	rows, err := d.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("export events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e trackapi.StoredEvent
		var body []byte
		var warnings sql.NullString
		if err := rows.Scan(&e.SourceID, &e.Site, &e.ReceivedAt, &body, &warnings); err != nil {
			return fmt.Errorf("export events: %w", err)
		}
		e.Event = body
		e.Warnings = []trackapi.Problem{}
		if warnings.Valid {
			if err := json.Unmarshal([]byte(warnings.String), &e.Warnings); err != nil {
				return fmt.Errorf("export events: warnings of an event of source %d: %w", e.SourceID, err)
			}
			if e.Warnings == nil { // the text "null"
				e.Warnings = []trackapi.Problem{}
			}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export events: %w", err)
	}
	return nil
}
