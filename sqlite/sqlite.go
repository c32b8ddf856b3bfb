// Package sqlite is the embedded default store: sources and events in one SQLite file, on the
// pure-Go driver modernc.org/sqlite so that the binary needs no C toolchain.
//
// Every write of events goes through one committer goroutine that commits whatever requests are
// waiting in one transaction (group commit): each commit costs one sync of the write-ahead log, so
// sharing it between concurrent requests is what makes durable writes fast. Reads use a separate
// pool of connections, so an export does not wait behind writes, also from another process on
// the same file.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackapi/trackapi"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const (
	// queueSize is how many StoreEvents calls may wait for the committer. A full queue means the
	// disk cannot keep up; the caller is told so at once (503) rather than queueing without bound.
	queueSize = 4096
	// maxGroupEvents caps the events of one transaction, so that one commit, and the wait of the
	// callers in it, stays short. A single call with more events is committed alone.
	maxGroupEvents = 20000
	// defaultBusyTimeout is how long a connection waits for a lock held by another connection or
	// process (say, the CLI migrating the file) before it fails with SQLITE_BUSY.
	defaultBusyTimeout = 5 * time.Second
	// probeBytes is what the readiness probe writes after a failed commit: enough new pages that a
	// full disk or database makes it fail as a real commit would.
	probeBytes = 64 << 10
)

// Options are the optional settings of OpenWithOptions. The zero value is the default.
type Options struct {
	// OnCommit, when set, is called by the committer after each transaction attempt with the
	// number of requests (StoreEvents calls) and events in it, how long it took and the error
	// that made it fail (nil when it committed). It exists so that metrics can be added without
	// touching the committer. It runs on the committer goroutine before the callers get their
	// reply, so it must be quick and must not call StoreEvents (that would deadlock).
	OnCommit func(groupRequests, groupEvents int, took time.Duration, err error)
	// BusyTimeout is how long a write waits for a lock held by another connection or process
	// before failing (then the request gets a 503). Zero means 5 s.
	BusyTimeout time.Duration
}

// DB is the SQLite store. It implements trackapi.EventStore and trackapi.SourceStore and is safe
// for concurrent use. Close it to commit what is queued and release the file.
type DB struct {
	// writer has exactly one connection: SQLite allows one writer at a time anyway, and one
	// connection keeps the committer, migrations and source changes from competing for it.
	writer *sql.DB
	// reader is a pool for queries; in WAL mode they run beside the writer without blocking it.
	reader *sql.DB
	opts   Options
	// insert is the insert of one event, prepared once on the writer.
	insert *sql.Stmt

	// mu guards closed and the sends on requests, so that Close can close requests without a
	// StoreEvents sending on a closed channel.
	mu       sync.RWMutex
	closed   bool
	requests chan *request
	// done is closed when the committer has replied to the last request and returned.
	done chan struct{}

	// commitFailing is set while the last transaction failed; Ping then probes with a real write.
	commitFailing atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// Compile-time checks that DB is the store the server and the command line expect.
var (
	_ trackapi.EventStore  = (*DB)(nil)
	_ trackapi.SourceStore = (*DB)(nil)
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Open opens the database file at path, creating it when missing, and brings its schema up to
// date. It is OpenWithOptions with the default Options.
func Open(path string) (*DB, error) {
	return OpenWithOptions(path, Options{})
}

// OpenWithOptions opens the database file at path, creating it when missing, brings its schema up
// to date and starts the committer. Several processes may open the same file at once (a server
// and the CLI): migrations are serialised by SQLite's write lock.
func OpenWithOptions(path string, opts Options) (*DB, error) {
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = defaultBusyTimeout
	}
	writer, err := sql.Open("sqlite", dsn(path, opts.BusyTimeout, "_txlock=immediate"))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	// Keep the one connection for the life of the DB, so that its prepared statements and
	// per-connection settings stay.
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	if err := migrate(context.Background(), writer); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}

	// query_only: a read connection that tried to write would be a bug, and would take the write
	// lock away from the committer.
	reader, err := sql.Open("sqlite", dsn(path, opts.BusyTimeout, "_query_only=1"))
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open %s for reading: %w", path, err)
	}
	reader.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))

	insert, err := writer.Prepare(insertEvent)
	if err != nil {
		writer.Close()
		reader.Close()
		return nil, fmt.Errorf("open %s: prepare insert: %w", path, err)
	}
	d := &DB{
		insert:   insert,
		writer:   writer,
		reader:   reader,
		opts:     opts,
		requests: make(chan *request, queueSize),
		done:     make(chan struct{}),
	}
	go d.commitLoop()
	return d, nil
}

// dsn returns the data source name for path with the settings every connection needs, plus
// extra. The PRAGMAs are DSN parameters so that they apply to every connection the pool opens,
// not only to the first one:
//   - busy_timeout: wait for another connection's lock instead of failing at once;
//   - foreign_keys: SQLite does not enforce REFERENCES unless asked, per connection;
//   - journal_mode(WAL): readers do not block the writer and the writer does not block readers;
//   - synchronous(FULL): in WAL mode, the log is synced at every commit, so a committed
//     transaction survives a power cut (NORMAL would only protect against a process crash).
//
// The path is given as a "file:" URI, escaped, so that a '?' or '#' in it is part of the name.
func dsn(path string, busyTimeout time.Duration, extra string) string {
	name := strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(path)
	if strings.HasPrefix(name, "/") {
		name = "//" + name // file:///abs/path: an empty authority, so //x is not read as host x
	}
	return "file:" + name +
		"?_pragma=busy_timeout(" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) + ")" +
		"&_pragma=foreign_keys(ON)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)" +
		"&" + extra
}

// migrate applies the embedded migrations the database has not had yet, in order and in one
// transaction, and records the schema version in PRAGMA user_version. The transaction is BEGIN
// IMMEDIATE (the writer's _txlock), so a second process opening the same file waits for the
// first one's migration and then, re-reading user_version, finds nothing left to do.
func migrate(ctx context.Context, db *sql.DB) error {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql") // sorted by name
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	for i, name := range names {
		prefix, _, _ := strings.Cut(strings.TrimPrefix(name, "migrations/"), "_")
		if n, err := strconv.Atoi(prefix); err != nil || n != i+1 {
			return fmt.Errorf("migration %s: want number %04d", name, i+1)
		}
	}
	latest := len(names)

	// Fast path, without the write lock: an up-to-date file (every open but the first) lets a CLI
	// open it while a server is writing.
	version, err := userVersion(ctx, db)
	if err != nil {
		return err
	}
	if version == latest {
		return nil
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback() // does nothing after Commit

	// Read again under the write lock: another process may have migrated meanwhile.
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > latest {
		return fmt.Errorf("schema version %d is newer than this program's %d: use a newer trackapi", version, latest)
	}
	for _, name := range names[version:] {
		script, err := migrationFiles.ReadFile(name)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, string(script)); err != nil {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
	}
	// PRAGMA takes no bound parameters; latest is an int we computed.
	if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(latest)); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}

// userVersion reads the schema version outside a transaction.
func userVersion(ctx context.Context, db *sql.DB) (int, error) {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}

// Ping reports whether the store can commit right now, for a readiness check: it fails, with an
// error wrapping trackapi.ErrUnavailable, when the DB is closed, when the committer's queue is
// full, or when the write lock cannot be taken (BEGIN IMMEDIATE, then ROLLBACK), say because
// another process holds it or the file is read-only. While the last commit failed (a full disk, an
// I/O error), it also commits a small real write and removes it, so that readiness comes back by
// itself once the fault clears, even with no traffic to try real commits.
func (d *DB) Ping(ctx context.Context) error {
	d.mu.RLock()
	closed, queued := d.closed, len(d.requests)
	d.mu.RUnlock()
	if closed {
		return fmt.Errorf("ping: %w: database closed", trackapi.ErrUnavailable)
	}
	if queued == cap(d.requests) {
		return fmt.Errorf("ping: %w: %d requests waiting to be committed", trackapi.ErrUnavailable, queued)
	}
	if d.commitFailing.Load() {
		if err := d.probeWrite(ctx); err != nil {
			return fmt.Errorf("ping: %w: the last commit failed and a test write fails too: %v", trackapi.ErrUnavailable, err)
		}
		d.commitFailing.Store(false)
		return nil
	}
	tx, err := d.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ping: %w: %v", trackapi.ErrUnavailable, err)
	}
	if err := tx.Rollback(); err != nil {
		return fmt.Errorf("ping: %w: %v", trackapi.ErrUnavailable, err)
	}
	return nil
}

// probeWrite commits probeBytes into the health table, then deletes them again.
func (d *DB) probeWrite(ctx context.Context) error {
	if _, err := d.writer.ExecContext(ctx, `INSERT INTO health(at, pad) VALUES(?, zeroblob(?))`,
		time.Now().UnixMilli(), probeBytes); err != nil {
		return err
	}
	_, err := d.writer.ExecContext(ctx, `DELETE FROM health`)
	return err
}

// Close stops accepting events (StoreEvents then fails with trackapi.ErrUnavailable), waits for
// the committer to commit every request already queued, and closes the database. It is safe to
// call more than once; later calls return the first call's result.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.stopAccepting()
		<-d.done
		// The reader first, so that the writer is the last connection: it checkpoints the log
		// into the database file and removes it.
		d.closeErr = errors.Join(d.insert.Close(), d.reader.Close(), d.writer.Close())
		if d.closeErr != nil {
			d.closeErr = fmt.Errorf("close: %w", d.closeErr)
		}
	})
	return d.closeErr
}

// stopAccepting makes StoreEvents refuse new requests and lets the committer end once it has
// replied to those already queued.
func (d *DB) stopAccepting() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		close(d.requests)
	}
}
