package sqlite_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// TestRetryableCode is the classification table: the result codes for which a retry may work
// (ErrUnavailable, 503) and those for which it would fail the same way (500), with extended codes
// classified by their primary code.
func TestRetryableCode(t *testing.T) {
	for _, c := range []struct {
		name string
		code int
		want bool
	}{
		{"BUSY", sqlite3.SQLITE_BUSY, true},
		{"BUSY_SNAPSHOT", sqlite3.SQLITE_BUSY_SNAPSHOT, true},
		{"BUSY_RECOVERY", sqlite3.SQLITE_BUSY_RECOVERY, true},
		{"LOCKED", sqlite3.SQLITE_LOCKED, true},
		{"LOCKED_SHAREDCACHE", sqlite3.SQLITE_LOCKED_SHAREDCACHE, true},
		{"FULL", sqlite3.SQLITE_FULL, true},
		{"IOERR", sqlite3.SQLITE_IOERR, true},
		{"IOERR_FSYNC", sqlite3.SQLITE_IOERR_FSYNC, true},
		{"IOERR_WRITE", sqlite3.SQLITE_IOERR_WRITE, true},
		{"IOERR_NOMEM", sqlite3.SQLITE_IOERR_NOMEM, true},
		{"READONLY", sqlite3.SQLITE_READONLY, true},
		{"READONLY_DBMOVED", sqlite3.SQLITE_READONLY_DBMOVED, true},
		{"CANTOPEN", sqlite3.SQLITE_CANTOPEN, true},
		{"PERM", sqlite3.SQLITE_PERM, true},
		{"NOMEM", sqlite3.SQLITE_NOMEM, true},
		{"INTERRUPT", sqlite3.SQLITE_INTERRUPT, true},
		{"PROTOCOL", sqlite3.SQLITE_PROTOCOL, true},
		{"ABORT", sqlite3.SQLITE_ABORT, true},
		{"ABORT_ROLLBACK", sqlite3.SQLITE_ABORT_ROLLBACK, true},
		{"SCHEMA", sqlite3.SQLITE_SCHEMA, true},

		{"CONSTRAINT", sqlite3.SQLITE_CONSTRAINT, false},
		{"CONSTRAINT_FOREIGNKEY", sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, false},
		{"CONSTRAINT_UNIQUE", sqlite3.SQLITE_CONSTRAINT_UNIQUE, false},
		{"CONSTRAINT_NOTNULL", sqlite3.SQLITE_CONSTRAINT_NOTNULL, false},
		{"ERROR", sqlite3.SQLITE_ERROR, false},
		{"INTERNAL", sqlite3.SQLITE_INTERNAL, false},
		{"CORRUPT", sqlite3.SQLITE_CORRUPT, false},
		{"NOTADB", sqlite3.SQLITE_NOTADB, false},
		{"TOOBIG", sqlite3.SQLITE_TOOBIG, false},
		{"MISMATCH", sqlite3.SQLITE_MISMATCH, false},
		{"MISUSE", sqlite3.SQLITE_MISUSE, false},
		{"RANGE", sqlite3.SQLITE_RANGE, false},
		{"AUTH", sqlite3.SQLITE_AUTH, false},
		{"FORMAT", sqlite3.SQLITE_FORMAT, false},
		{"NOLFS", sqlite3.SQLITE_NOLFS, false},
	} {
		if got := sqlite.RetryableCode(c.code); got != c.want {
			t.Errorf("SQLITE_%s (%d): retryable = %t, want %t", c.name, c.code, got, c.want)
		}
	}
}

// TestRetryable classifies real errors of the driver, as they come out of database/sql and
// wrapped by callers, and errors that are not the driver's.
func TestRetryable(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(dir, "a.db")+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO t(u) VALUES('x')`); err != nil {
		t.Fatal(err)
	}
	errOf := func(query string) error {
		t.Helper()
		_, err := db.Exec(query)
		if err == nil {
			t.Fatalf("%s: no error", query)
		}
		return err
	}
	unique := errOf(`INSERT INTO t(u) VALUES('x')`)
	syntax := errOf(`SELECT * FROM no_such_table`)
	mismatch := errOf(`INSERT INTO t(id) VALUES('not a number')`)
	tooBig := errOf(`SELECT zeroblob(2000000000)`)

	readOnly := func() error {
		conn, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.ExecContext(context.Background(), `PRAGMA query_only = 1`)
		defer conn.ExecContext(context.Background(), `PRAGMA query_only = 0`)
		_, err = conn.ExecContext(context.Background(), `INSERT INTO t(u) VALUES('y')`)
		return err
	}()

	// Another connection holds the write lock, and busy_timeout is 0.
	other, err := sql.Open("sqlite", filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherConn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer otherConn.Close()
	if _, err := otherConn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	busy := errOf(`INSERT INTO t(u) VALUES('z')`)
	otherConn.ExecContext(context.Background(), `ROLLBACK`)

	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte("this is not an SQLite database, not even close to one....................................................."), 0o600); err != nil {
		t.Fatal(err)
	}
	notADB := func() error {
		g, err := sql.Open("sqlite", garbage)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		_, err = g.Exec(`SELECT * FROM sqlite_master`)
		return err
	}()
	cantOpen := func() error {
		g, err := sql.Open("sqlite", filepath.Join(dir, "no", "such", "dir", "x.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		_, err = g.Exec(`CREATE TABLE x (a)`)
		return err
	}()

	for _, c := range []struct {
		name string
		err  error
		code int // the driver's primary code, 0 for an error that is not the driver's
		want bool
	}{
		{"unique constraint", unique, sqlite3.SQLITE_CONSTRAINT, false},
		{"no such table", syntax, sqlite3.SQLITE_ERROR, false},
		{"datatype mismatch", mismatch, sqlite3.SQLITE_MISMATCH, false},
		{"too big", tooBig, sqlite3.SQLITE_TOOBIG, false},
		{"not a database", notADB, sqlite3.SQLITE_NOTADB, false},
		{"read-only", readOnly, sqlite3.SQLITE_READONLY, true},
		{"locked by another connection", busy, sqlite3.SQLITE_BUSY, true},
		{"cannot open", cantOpen, sqlite3.SQLITE_CANTOPEN, true},
		{"busy, wrapped", fmt.Errorf("insert: %w", busy), sqlite3.SQLITE_BUSY, true},
		{"bad connection", driver.ErrBadConn, 0, true},
		{"connection done", fmt.Errorf("x: %w", sql.ErrConnDone), 0, true},
		{"other error", errors.New("a bug"), 0, false},
		{"context canceled", context.Canceled, 0, false}, // its own class, see TestStoreEventsContextEnds
	} {
		if c.code != 0 {
			var e *sqlitedriver.Error
			if !errors.As(c.err, &e) || e.Code()&0xff != c.code {
				t.Errorf("%s: %v is not a driver error with code %d", c.name, c.err, c.code)
				continue
			}
		}
		if got := sqlite.Retryable(c.err); got != c.want {
			t.Errorf("%s (%v): retryable = %t, want %t", c.name, c.err, got, c.want)
		}
	}
}

// TestStoreEventsErrorClass checks the class of StoreEvents' errors end to end: ErrUnavailable
// and the driver's error for a lock held by another process, the driver's error alone for an
// unknown source (permanent), and in both cases the *sqlite.Error stays reachable. Source writes
// get the same classes.
func TestStoreEventsErrorClass(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	var c commits
	db := open(t, path, sqlite.Options{BusyTimeout: 50 * time.Millisecond, OnCommit: c.onCommit})
	src := newSource(t, db, "site1")

	_, err := db.StoreEvents(ctx, events(trackapi.Source{ID: src.ID + 100, Site: "x"}, "a"))
	var e *sqlitedriver.Error
	if err == nil || errors.Is(err, trackapi.ErrUnavailable) || !errors.As(err, &e) || e.Code() != sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
		t.Fatalf("unknown source: %v; want a permanent error wrapping the foreign key failure", err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping after a permanent failure: %v", err)
	}

	conn, err := rawDB(t, path).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	_, err = db.StoreEvents(ctx, events(src, "b"))
	if !errors.Is(err, trackapi.ErrUnavailable) || !errors.As(err, &e) || e.Code()&0xff != sqlite3.SQLITE_BUSY {
		t.Fatalf("store while another process holds the lock: %v; want ErrUnavailable wrapping SQLITE_BUSY", err)
	}
	// The other writes are classified the same way.
	_, key := newKey()
	_, _, err = db.CreateSource(ctx, "site2", "blog", key)
	if !errors.Is(err, trackapi.ErrUnavailable) || !errors.As(err, &e) || e.Code()&0xff != sqlite3.SQLITE_BUSY {
		t.Fatalf("create a source while another process holds the lock: %v; want ErrUnavailable wrapping SQLITE_BUSY", err)
	}
	if err := db.SetSourceActive(ctx, src.ID, false); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("deactivate a source while another process holds the lock: %v; want ErrUnavailable", err)
	}
	// Readiness follows, and comes back once the lock is gone, without traffic.
	if err := db.Ping(ctx); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("ping after a commit failed on the lock: %v, want ErrUnavailable", err)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping after the lock is gone: %v", err)
	}
	if stored, err := db.StoreEvents(ctx, events(src, "b")); err != nil || !stored[0] {
		t.Fatalf("store after the lock is gone: %v, %v", stored, err)
	}
}
