package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

// QueueSize is the committer queue's capacity, for the overload test.
const QueueSize = queueSize

// Retryable and RetryableCode are the classification of store errors, for its table tests.
var (
	Retryable     = retryable
	RetryableCode = retryableCode
)

// WithInTransaction returns opts with a function that the committer calls inside each
// transaction, after reading the sequence and before the inserts: a test holds the writer in a
// transaction for as long as fn blocks.
func WithInTransaction(opts Options, fn func()) Options {
	opts.inTransaction = fn
	return opts
}

// WithStallAfter returns opts with how long a transaction of the committer may run before Ping
// reports the store unavailable.
func WithStallAfter(opts Options, d time.Duration) Options {
	opts.stallAfter = d
	return opts
}

// ReadEventsPlan returns the detail column of EXPLAIN QUERY PLAN for the query ReadEvents runs.
func ReadEventsPlan(t testing.TB, d *DB, after int64, filter trackapi.EventFilter, limit int) []string {
	t.Helper()
	query, args := readEventsQuery(after, filter, limit)
	return Plan(t, d, query, args...)
}

// InspectorEntriesPlan returns the detail column of EXPLAIN QUERY PLAN for the query
// InspectorEntries (or, when ascending, InspectorEntriesAfter) runs.
func InspectorEntriesPlan(t testing.TB, d *DB, f trackapi.InspectorFilter, cursor int64, ascending bool) []string {
	t.Helper()
	query, args := inspectorQuery(f, cursor, ascending, 10)
	return Plan(t, d, query, args...)
}

// DueRetriesPlan returns the detail column of EXPLAIN QUERY PLAN for the query DueRetries runs.
func DueRetriesPlan(t testing.TB, d *DB) []string {
	t.Helper()
	return Plan(t, d, dueRetriesQuery, sql.Named("dest", 1), sql.Named("now", 0), sql.Named("limit", 10))
}

// Plan returns the detail column of EXPLAIN QUERY PLAN for query, run on a read connection.
func Plan(t testing.TB, d *DB, query string, args ...any) []string {
	t.Helper()
	rows, err := d.reader.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatalf("explain %s: %v", query, err)
	}
	defer rows.Close()
	var details []string
	for rows.Next() {
		var id, parent, notUsed int
		var detail string
		if err := rows.Scan(&id, &parent, &notUsed, &detail); err != nil {
			t.Fatal(err)
		}
		details = append(details, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return details
}

// HoldWriter takes the writer's only connection, so that the committer blocks before its next
// transaction and requests stay queued: tests can then build a group deterministically. The
// returned function gives the connection back; it is also called when the test ends (before the
// DB is closed, if the DB was opened earlier in the test), so a failing test does not hang.
func HoldWriter(t testing.TB, d *DB) (release func()) {
	t.Helper()
	conn, err := d.writer.Conn(context.Background())
	if err != nil {
		t.Fatalf("hold writer: %v", err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := conn.Close(); err != nil {
				t.Errorf("release writer: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// Enqueue is the first half of StoreEvents: it returns once the request is on the committer's
// queue (or refused), and wait is the second half.
func Enqueue(ctx context.Context, d *DB, events []trackapi.Event) (wait func() ([]bool, error), err error) {
	req, err := d.enqueue(ctx, events)
	if err != nil {
		return nil, err
	}
	return func() ([]bool, error) {
		outcomes, err := req.wait(ctx)
		if err != nil {
			return nil, err
		}
		stored := make([]bool, len(outcomes))
		for i, o := range outcomes {
			stored[i] = o == trackapi.OutcomeStored
		}
		return stored, nil
	}, nil
}

// StopAccepting is the first half of Close: new requests are refused, queued ones still run.
func StopAccepting(d *DB) { d.stopAccepting() }

// WriterPragma runs "PRAGMA " + pragma on the writer connection, the one the committer uses, and
// returns its integer result. It is how the tests inject a fault (max_page_count).
func WriterPragma(t testing.TB, d *DB, pragma string) int64 {
	t.Helper()
	var n int64
	if err := d.writer.QueryRow("PRAGMA " + pragma).Scan(&n); err != nil {
		t.Fatalf("PRAGMA %s: %v", pragma, err)
	}
	return n
}
