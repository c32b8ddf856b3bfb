package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/trackapi/trackapi"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// retryable reports whether err is a failure that a later attempt with the same values may not
// meet: the disk or the file (full, read-only, I/O error, cannot open), a lock held by another
// connection or process, memory, an interrupted statement, or a connection that went bad. The
// server answers these with a 503 and Retry-After. Anything else (a constraint such as an unknown
// source, a malformed value, a corrupt file, a bug in a query) would fail again the same way, so
// it is permanent: a 500, not retried for ever by clients.
//
// The class is the primary result code (the low byte of the extended one the driver reports), so
// that the many SQLITE_IOERR_* variants need no list of their own.
func retryable(err error) bool {
	var e *sqlitedriver.Error
	if errors.As(err, &e) {
		return retryableCode(e.Code())
	}
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)
}

// retryableCode is retryable for an SQLite result code, extended or primary.
func retryableCode(code int) bool {
	switch code & 0xff {
	case sqlite3.SQLITE_BUSY, // another connection or process holds the lock past busy_timeout
		sqlite3.SQLITE_LOCKED,    // a conflict within this process's shared cache
		sqlite3.SQLITE_FULL,      // disk full, or max_page_count reached
		sqlite3.SQLITE_IOERR,     // a read, write or sync failed
		sqlite3.SQLITE_READONLY,  // the file or its directory lost write permission, a read-only remount
		sqlite3.SQLITE_CANTOPEN,  // the file or its journal cannot be opened (yet)
		sqlite3.SQLITE_PERM,      // access denied by the file system
		sqlite3.SQLITE_NOMEM,     // out of memory
		sqlite3.SQLITE_INTERRUPT, // the statement was interrupted (a context ended)
		sqlite3.SQLITE_PROTOCOL,  // a race on the WAL's locks that SQLite gave up on
		sqlite3.SQLITE_ABORT,     // the transaction was rolled back under the statement
		sqlite3.SQLITE_SCHEMA:    // the schema changed under a prepared statement
		return true
	}
	return false
}

// isConstraint reports whether err is a constraint violation (SQLITE_CONSTRAINT and its extended
// codes): the statement failed because of its values, the transaction is intact, and retrying
// the same values would fail again.
func isConstraint(err error) bool {
	var e *sqlitedriver.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// isUniqueConstraint reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUniqueConstraint(err error) bool {
	var e *sqlitedriver.Error
	return errors.As(err, &e) &&
		(e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// classify wraps err, the failure of op, so that callers can tell whether to retry: with
// trackapi.ErrUnavailable as well when a retry may work (a retryable error, or the DB is closed,
// which database/sql reports with an error of its own), as is when it already has a class (a
// context's error, or one of trackapi's), and with the cause alone when it is permanent. The
// cause stays matchable with errors.As (a *sqlite.Error) in every case.
func (d *DB) classify(op string, err error) error {
	switch {
	case errors.Is(err, trackapi.ErrUnavailable) || errors.Is(err, trackapi.ErrNotFound) ||
		errors.Is(err, trackapi.ErrConflict) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case retryable(err) || d.poolsClosed.Load():
		return fmt.Errorf("%s: %w: %w", op, trackapi.ErrUnavailable, err)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}
