package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trackapi/trackapi"
)

// The sources and their keys. The rules (key format, rotation overlap, the live-key limit) belong
// to the source service; these methods keep the stored state consistent with them: every write
// that checks a rule runs in one transaction on the writer, whose BEGIN IMMEDIATE also excludes
// another process's writes, so that two rotations cannot both see room for one more key.

// CreateSource stores a new active source together with its first key, in one transaction, and
// returns both as stored, with their ids. key.SourceID is ignored; a zero key.CreatedAt means now.
// A key hash that another key already has fails with an error wrapping trackapi.ErrConflict.
func (d *DB) CreateSource(ctx context.Context, site, name string, key trackapi.SourceKey) (trackapi.Source, trackapi.SourceKey, error) {
	op := fmt.Sprintf("create source %q", name)
	now := time.Now()
	source := trackapi.Source{Site: site, Name: name, Active: true, CreatedAt: storedTime(now)}
	if key.CreatedAt.IsZero() {
		key.CreatedAt = now
	}
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO sources(site, name, active, created_at) VALUES(?, ?, 1, ?)`,
			site, name, now.UnixMilli())
		if err != nil {
			return err
		}
		if source.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		key.SourceID = source.ID
		key, err = insertKey(ctx, tx, key)
		return err
	})
	if err != nil {
		return trackapi.Source{}, trackapi.SourceKey{}, d.classify(op, err)
	}
	return source, key, nil
}

// insertKey stores key in tx and returns it as stored: with its id, and its times rounded to the
// millisecond like the columns.
func insertKey(ctx context.Context, tx *sql.Tx, key trackapi.SourceKey) (trackapi.SourceKey, error) {
	res, err := tx.ExecContext(ctx,
		`INSERT INTO source_keys(source_id, prefix, key_hash, created_at, expires_at, revoked_at, last_used_at)
VALUES(?, ?, ?, ?, ?, ?, ?)`,
		key.SourceID, key.Prefix, key.Hash, key.CreatedAt.UnixMilli(),
		nullTime(key.ExpiresAt), nullTime(key.RevokedAt), nullTime(key.LastUsedAt))
	if isUniqueConstraint(err) {
		return trackapi.SourceKey{}, fmt.Errorf("%w: another key has the same hash: %w", trackapi.ErrConflict, err)
	}
	if err != nil {
		return trackapi.SourceKey{}, err
	}
	if key.ID, err = res.LastInsertId(); err != nil {
		return trackapi.SourceKey{}, err
	}
	key.Hash = bytes.Clone(key.Hash)
	key.CreatedAt = storedTime(key.CreatedAt)
	key.ExpiresAt = storedTime(key.ExpiresAt)
	key.RevokedAt = storedTime(key.RevokedAt)
	key.LastUsedAt = storedTime(key.LastUsedAt)
	return key, nil
}

// Sources lists all sources, active or not, oldest first. The list is empty, not nil, when there
// are none.
func (d *DB) Sources(ctx context.Context) ([]trackapi.Source, error) {
	rows, err := d.reader.QueryContext(ctx, `SELECT `+sourceColumns+` FROM sources ORDER BY id`)
	if err != nil {
		return nil, d.classify("list sources", err)
	}
	defer rows.Close()
	sources := []trackapi.Source{}
	for rows.Next() {
		s, err := scanSource(rows)
		if err != nil {
			return nil, d.classify("list sources", err)
		}
		sources = append(sources, s)
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify("list sources", err)
	}
	return sources, nil
}

// Source returns one source, active or not; an unknown id wraps trackapi.ErrNotFound.
func (d *DB) Source(ctx context.Context, id int64) (trackapi.Source, error) {
	s, err := scanSource(d.reader.QueryRowContext(ctx, `SELECT `+sourceColumns+` FROM sources WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = trackapi.ErrNotFound
	}
	if err != nil {
		return trackapi.Source{}, d.classify(fmt.Sprintf("source %d", id), err)
	}
	return s, nil
}

const sourceColumns = `id, site, name, active, created_at`

// scanSource reads the sourceColumns of one row.
func scanSource(row interface{ Scan(...any) error }) (trackapi.Source, error) {
	var s trackapi.Source
	var createdAt int64
	if err := row.Scan(&s.ID, &s.Site, &s.Name, &s.Active, &createdAt); err != nil {
		return trackapi.Source{}, err
	}
	s.CreatedAt = time.UnixMilli(createdAt).UTC()
	return s, nil
}

// SetSourceActive deactivates or reactivates a source: a deactivated source's keys stop working,
// its events stay stored. Setting the state it already has is not an error; an unknown id is,
// wrapping trackapi.ErrNotFound.
func (d *DB) SetSourceActive(ctx context.Context, id int64, active bool) error {
	op := fmt.Sprintf("set source %d active=%t", id, active)
	// Changes counts the rows the UPDATE matched, also when the value was already the same.
	res, err := d.writer.ExecContext(ctx, `UPDATE sources SET active = ? WHERE id = ?`, active, id)
	if err != nil {
		return d.classify(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return d.classify(op, err)
	}
	if n == 0 {
		return d.classify(op, trackapi.ErrNotFound)
	}
	return nil
}

// RenameSource changes a source's name; an unknown id wraps trackapi.ErrNotFound.
func (d *DB) RenameSource(ctx context.Context, id int64, name string) error {
	op := fmt.Sprintf("rename source %d", id)
	res, err := d.writer.ExecContext(ctx, `UPDATE sources SET name = ? WHERE id = ?`, name, id)
	if err != nil {
		return d.classify(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return d.classify(op, err)
	}
	if n == 0 {
		return d.classify(op, trackapi.ErrNotFound)
	}
	return nil
}

// liveAt is the SQL condition for a key of source_keys that is live at the epoch milliseconds
// of the named parameter :now: trackapi.SourceKey.Live in SQL. For a time t and an expiry E
// stored in whole milliseconds, t < E exactly when t's whole milliseconds are below E.
const liveAt = `revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)`

// RotateSourceKey adds key to its source (key.SourceID) and, in the same transaction, makes
// every other key of that source that is live at now expire at previousExpireAt at the latest
// (a key that expires sooner keeps its expiry). It fails with an error wrapping
// trackapi.ErrConflict, and changes nothing, when the source would then have more than maxLive
// keys live at now, or when another key has the same hash; with trackapi.ErrNotFound for an
// unknown source. previousExpireAt must be set: the zero time would be stored as no expiry at
// all. A zero key.CreatedAt means now. It returns key as stored, with its id.
func (d *DB) RotateSourceKey(ctx context.Context, key trackapi.SourceKey, previousExpireAt time.Time, maxLive int, now time.Time) (trackapi.SourceKey, error) {
	op := fmt.Sprintf("rotate the key of source %d", key.SourceID)
	if previousExpireAt.IsZero() {
		return trackapi.SourceKey{}, fmt.Errorf("%s: no expiry given for the previous keys", op)
	}
	if key.CreatedAt.IsZero() {
		key.CreatedAt = now
	}
	nowMs := sql.Named("now", now.UnixMilli())
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		if err := sourceExists(ctx, tx, key.SourceID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE source_keys SET expires_at = :prev
WHERE source_id = :source AND `+liveAt+` AND (expires_at IS NULL OR expires_at > :prev)`,
			sql.Named("prev", previousExpireAt.UnixMilli()), sql.Named("source", key.SourceID), nowMs); err != nil {
			return err
		}
		var err error
		if key, err = insertKey(ctx, tx, key); err != nil {
			return err
		}
		var live int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM source_keys WHERE source_id = :source AND `+liveAt,
			sql.Named("source", key.SourceID), nowMs).Scan(&live); err != nil {
			return err
		}
		if live > maxLive {
			return fmt.Errorf("%w: the source would have %d live keys, at most %d are allowed", trackapi.ErrConflict, live, maxLive)
		}
		return nil
	})
	if err != nil {
		return trackapi.SourceKey{}, d.classify(op, err)
	}
	return key, nil
}

// sourceExists fails with trackapi.ErrNotFound when there is no source with this id.
func sourceExists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id int64) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM sources WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("no source %d: %w", id, trackapi.ErrNotFound)
	}
	return err
}

// SourceKeys lists a source's keys, revoked and expired ones too, oldest first. An unknown
// source wraps trackapi.ErrNotFound.
func (d *DB) SourceKeys(ctx context.Context, sourceID int64) ([]trackapi.SourceKey, error) {
	op := fmt.Sprintf("list the keys of source %d", sourceID)
	keys, err := d.queryKeys(ctx, `SELECT `+keyColumns+` FROM source_keys WHERE source_id = ? ORDER BY id`, sourceID)
	if err != nil {
		return nil, d.classify(op, err)
	}
	if len(keys) == 0 {
		// Every source is created with a key, so this is rare: look why.
		if err := sourceExists(ctx, d.reader, sourceID); err != nil {
			return nil, d.classify(op, err)
		}
	}
	return keys, nil
}

// RevokeSourceKey makes one key of a source stop working from at on; an unknown key, or a key of
// another source, wraps trackapi.ErrNotFound. Revoking a revoked key keeps its first revocation
// time. at must be set: the zero time would be stored as not revoked.
func (d *DB) RevokeSourceKey(ctx context.Context, sourceID, keyID int64, at time.Time) error {
	op := fmt.Sprintf("revoke key %d of source %d", keyID, sourceID)
	if at.IsZero() {
		return fmt.Errorf("%s: no revocation time given", op)
	}
	res, err := d.writer.ExecContext(ctx,
		`UPDATE source_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? AND source_id = ?`,
		at.UnixMilli(), keyID, sourceID)
	if err != nil {
		return d.classify(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return d.classify(op, err)
	}
	if n == 0 {
		return d.classify(op, trackapi.ErrNotFound)
	}
	return nil
}

// SourceKeyByHash finds a key, live or not, by its hash: one lookup on the unique index of
// key_hash, on a read connection, so that a key created a moment ago by another process works at
// once. An unknown hash wraps trackapi.ErrNotFound.
func (d *DB) SourceKeyByHash(ctx context.Context, hash []byte) (trackapi.SourceKey, error) {
	k, err := scanKey(d.reader.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM source_keys WHERE key_hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = trackapi.ErrNotFound
	}
	if err != nil {
		return trackapi.SourceKey{}, d.classify("find key by hash", err)
	}
	return k, nil
}

// LiveSourceKeys lists every key that is live at now (trackapi.SourceKey.Live), oldest first, for
// the authentication cache. Keys of deactivated sources are listed too: whether a source is
// active is the source's state, not the key's. The list is empty, not nil, when there are none.
func (d *DB) LiveSourceKeys(ctx context.Context, now time.Time) ([]trackapi.SourceKey, error) {
	keys, err := d.queryKeys(ctx, `SELECT `+keyColumns+` FROM source_keys WHERE `+liveAt+` ORDER BY id`,
		sql.Named("now", now.UnixMilli()))
	if err != nil {
		return nil, d.classify("list live keys", err)
	}
	return keys, nil
}

// TouchSourceKeys records when keys were last used (key id → time), in one transaction. A time
// never moves back (a late, older report does not undo a newer one), and unknown key ids are
// skipped: the report is a statistic, written in the background, and must not fail for a key
// that is gone.
func (d *DB) TouchSourceKeys(ctx context.Context, lastUsed map[int64]time.Time) error {
	return d.touchLastUsed(ctx, "source_keys", "keys", lastUsed)
}

// touchLastUsed writes last-used times (id → time) into table's last_used_at, in one transaction:
// never moving a time back, skipping unknown ids and zero times. Source keys and admin tokens
// share it.
func (d *DB) touchLastUsed(ctx context.Context, table, what string, lastUsed map[int64]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx,
			`UPDATE `+table+` SET last_used_at = :at WHERE id = :id AND (last_used_at IS NULL OR last_used_at < :at)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, at := range lastUsed {
			if at.IsZero() {
				continue // "never used" is not news
			}
			if _, err := stmt.ExecContext(ctx, sql.Named("at", at.UnixMilli()), sql.Named("id", id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return d.classify(fmt.Sprintf("record the use of %d %s", len(lastUsed), what), err)
	}
	return nil
}

const keyColumns = `id, source_id, prefix, key_hash, created_at, expires_at, revoked_at, last_used_at`

// queryKeys runs a query of keyColumns; the list is empty, not nil, when there are none.
func (d *DB) queryKeys(ctx context.Context, query string, args ...any) ([]trackapi.SourceKey, error) {
	return queryList(ctx, d, scanKey, query, args...)
}

// queryList runs a query on the reader and scans every row with scan; the list is empty, not
// nil, when there are none.
func queryList[T any](ctx context.Context, d *DB, scan func(interface{ Scan(...any) error }) (T, error), query string, args ...any) ([]T, error) {
	rows, err := d.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	list := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return list, nil
}

// scanKey reads the keyColumns of one row.
func scanKey(row interface{ Scan(...any) error }) (trackapi.SourceKey, error) {
	var k trackapi.SourceKey
	var createdAt int64
	var expiresAt, revokedAt, lastUsedAt sql.NullInt64
	if err := row.Scan(&k.ID, &k.SourceID, &k.Prefix, &k.Hash, &createdAt, &expiresAt, &revokedAt, &lastUsedAt); err != nil {
		return trackapi.SourceKey{}, err
	}
	k.CreatedAt = time.UnixMilli(createdAt).UTC()
	k.ExpiresAt = timeOf(expiresAt)
	k.RevokedAt = timeOf(revokedAt)
	k.LastUsedAt = timeOf(lastUsedAt)
	return k, nil
}

// inWriteTx runs fn in a transaction on the writer (BEGIN IMMEDIATE, so it holds the write lock
// from the start) and commits it unless fn fails.
func (d *DB) inWriteTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := d.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() // does nothing after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// nullTime is t in epoch milliseconds, or NULL for the zero time, which SourceKey uses for never.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// timeOf is the inverse of nullTime.
func timeOf(ms sql.NullInt64) time.Time {
	if !ms.Valid {
		return time.Time{}
	}
	return time.UnixMilli(ms.Int64).UTC()
}

// storedTime is t as it reads back from a column: whole milliseconds, in UTC; the zero time stays
// zero.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}
