// Package sqlite is the embedded default store: sources, their keys and events in one SQLite
// file, on the pure-Go driver modernc.org/sqlite so that the binary needs no C toolchain.
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
	// probeTimeout bounds the readiness probe's test write, waiting for the writer included, so
	// that a readiness check answers in time even while the committer retries a failing commit.
	probeTimeout = time.Second
	// lockCheckTimeout bounds Ping's check of the write lock while the committer is idle: a free
	// lock is taken in microseconds, so waiting longer would only delay the answer.
	lockCheckTimeout = 200 * time.Millisecond
	// stallGrace is how much longer than the busy timeout one transaction of the committer may run
	// before Ping stops taking a busy committer as a working one: no group of maxGroupEvents
	// takes that long on a disk that works.
	stallGrace = 10 * time.Second
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

	// inTransaction, when set, is called by the committer inside each transaction, after its
	// sequence number is read and before the inserts. Only tests set it (export_test.go), to hold
	// the writer in a transaction for as long as they need.
	inTransaction func()
	// stallAfter is how long one transaction of the committer may run before Ping reports the
	// store unavailable. Zero means BusyTimeout + stallGrace; only tests set it.
	stallAfter time.Duration
}

// DB is the SQLite store. It implements trackapi.EventStore, trackapi.EventLog,
// trackapi.SourceStore, trackapi.DeliveryStore and trackapi.AdminTokenStore and is safe for
// concurrent use. Close it to commit what is queued and release the file.
type DB struct {
	// writer has exactly one connection: SQLite allows one writer at a time anyway, and one
	// connection keeps the committer, migrations, source and delivery changes from competing for
	// it.
	writer *sql.DB
	// reader is a pool for queries; in WAL mode they run beside the writer without blocking it.
	reader *sql.DB
	opts   Options
	// insert is the insert of one event, seqState the committer's read of the sequence's state
	// and selectHash its read of a duplicate's stored body hash, all prepared once on the writer.
	insert     *sql.Stmt
	seqState   *sql.Stmt
	selectHash *sql.Stmt

	// mu guards closed and the sends on requests, so that Close can close requests without a
	// StoreEvents sending on a closed channel.
	mu       sync.RWMutex
	closed   bool
	requests chan *request
	// done is closed when the committer has replied to the last request and returned.
	done chan struct{}

	// health is what the committer's last transactions tell Ping, which answers from it rather
	// than by waiting for the writer behind the committer.
	health health
	// txStart is when the committer's current transaction started (UnixNano), 0 while it waits
	// for requests; txDone counts its transactions, committed or not.
	txStart atomic.Int64
	txDone  atomic.Uint64

	// poolsClosed is set when Close closes the connection pools: from then on database/sql fails
	// every call with an error of its own, which classify reports as unavailable.
	poolsClosed atomic.Bool
	closeOnce   sync.Once
	closeErr    error
}

// health is whether the last transaction of the committer failed for a reason a retry may fix.
type health struct {
	mu      sync.Mutex
	failing bool
	// failures counts failed transactions, so that a probe that passed can tell whether a commit
	// failed while it ran, and then leave failing set.
	failures uint64
}

// record notes the outcome of one transaction.
func (h *health) record(failed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failing = failed
	if failed {
		h.failures++
	}
}

// state returns whether the last transaction failed, and the count of failures to pass to
// recovered.
func (h *health) state() (failing bool, failures uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failing, h.failures
}

// recovered clears failing after a probe write passed, unless a transaction failed again since
// state returned failures.
func (h *health) recovered(failures uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failures == failures {
		h.failing = false
	}
}

// Compile-time checks that DB is the store the server and the command line expect.
var (
	_ trackapi.EventStore   = (*DB)(nil)
	_ trackapi.OutcomeStore = (*DB)(nil)
	_ trackapi.EventLog     = (*DB)(nil)
	_ trackapi.SourceStore  = (*DB)(nil)
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
	if opts.stallAfter <= 0 {
		opts.stallAfter = opts.BusyTimeout + stallGrace
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
	seqState, err := writer.Prepare(selectSeqState)
	if err != nil {
		insert.Close()
		writer.Close()
		reader.Close()
		return nil, fmt.Errorf("open %s: prepare sequence read: %w", path, err)
	}
	selectHash, err := writer.Prepare(selectBodyHash)
	if err != nil {
		seqState.Close()
		insert.Close()
		writer.Close()
		reader.Close()
		return nil, fmt.Errorf("open %s: prepare body hash read: %w", path, err)
	}
	d := &DB{
		insert:     insert,
		seqState:   seqState,
		selectHash: selectHash,
		writer:     writer,
		reader:     reader,
		opts:       opts,
		requests:   make(chan *request, queueSize),
		done:       make(chan struct{}),
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
	// A busy file (another process opening it in WAL mode at this moment) can refuse even this
	// read at once, without waiting; the path under the write lock below waits for it.
	if version, err := userVersion(ctx, db); err == nil && version == latest {
		return nil
	}
	var version int

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

// Ping reports whether the store can commit right now, for a readiness check. It answers from
// what the committer knows rather than by waiting for the writer connection, which the committer
// holds during every commit: under load, readiness must not queue behind the commits. It fails,
// with an error wrapping trackapi.ErrUnavailable:
//   - when the DB is closed, or the committer's queue is full (overload);
//   - when the last commit failed for a reason a retry may fix (a full disk, an I/O error, a
//     lock) and a small real write, bounded by probeTimeout, fails too. The test write is what
//     makes readiness come back by itself once the fault clears, even with no traffic;
//   - when a commit has been running for longer than the busy timeout plus stallGrace: the disk
//     hangs. A commit running for less is a store that works: Ping does not wait for it. (A
//     commit waiting for a lock another process holds counts as running until busy_timeout
//     fails it; from then on the failed commit makes Ping probe, as above);
//   - when the committer is idle and the write lock cannot be taken (BEGIN IMMEDIATE, then
//     ROLLBACK) within lockCheckTimeout, say because another process holds it or the file is
//     read-only.
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
	if failing, failures := d.health.state(); failing {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		if err := d.probeWrite(ctx); err != nil {
			return fmt.Errorf("ping: %w: the last commit failed and a test write fails too: %w", trackapi.ErrUnavailable, err)
		}
		d.health.recovered(failures)
		return nil
	}

	done := d.txDone.Load()
	if start := d.txStart.Load(); start != 0 {
		if took := time.Since(time.Unix(0, start)); took > d.opts.stallAfter {
			return fmt.Errorf("ping: %w: a commit has been running for %v", trackapi.ErrUnavailable, took.Round(time.Millisecond))
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, lockCheckTimeout)
	defer cancel()
	conn, err := d.writer.Conn(ctx)
	if err != nil {
		// The committer may have taken the writer meanwhile: then the store works as long as the
		// commits do.
		if d.txStart.Load() != 0 || d.txDone.Load() != done {
			if failing, _ := d.health.state(); !failing {
				return nil
			}
		}
		return fmt.Errorf("ping: %w: the writer connection is busy: %w", trackapi.ErrUnavailable, err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ping: %w: cannot take the write lock: %w", trackapi.ErrUnavailable, err)
	}
	if err := tx.Rollback(); err != nil {
		return fmt.Errorf("ping: %w: %w", trackapi.ErrUnavailable, err)
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
// the committer to commit every request already queued, and closes the database; every other
// method then fails with trackapi.ErrUnavailable too. It is safe to call more than once; later
// calls return the first call's result.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.stopAccepting()
		<-d.done
		// The reader first, so that the writer is the last connection: it checkpoints the log
		// into the database file and removes it.
		d.poolsClosed.Store(true)
		d.closeErr = errors.Join(d.insert.Close(), d.seqState.Close(), d.selectHash.Close(), d.reader.Close(), d.writer.Close())
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
