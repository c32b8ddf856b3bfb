package sqlite

import (
	"context"
	"sync"
	"testing"

	"github.com/trackapi/trackapi"
)

// QueueSize is the committer queue's capacity, for the overload test.
const QueueSize = queueSize

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
	return func() ([]bool, error) { return req.wait(ctx) }, nil
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
