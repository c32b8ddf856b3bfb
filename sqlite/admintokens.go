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

// The admin tokens of the config API (migration 0006). The rules (format, scopes, expiry) belong
// to the service in admintokens/; these methods keep the rows, which hold a token's hash, never
// the token. Each write is one statement, atomic on its own, on the writer.

// Compile-time check that DB keeps admin tokens.
var _ trackapi.AdminTokenStore = (*DB)(nil)

// CreateAdminToken stores a new token and returns it as stored: with its id, and its times in
// whole milliseconds, in UTC. token.ID is ignored; a zero token.CreatedAt means now. A hash another
// token already has wraps trackapi.ErrConflict; a scope that is not one of trackapi's, or a hash
// that is not 32 bytes (a SHA-256), is refused by the table's checks, as a permanent error.
func (d *DB) CreateAdminToken(ctx context.Context, token trackapi.AdminToken) (trackapi.AdminToken, error) {
	op := fmt.Sprintf("create admin token %q", token.Name)
	if token.CreatedAt.IsZero() {
		token.CreatedAt = time.Now()
	}
	res, err := d.writer.ExecContext(ctx,
		`INSERT INTO admin_tokens(name, scope, prefix, token_hash, created_at, expires_at, revoked_at, last_used_at)
VALUES(?, ?, ?, ?, ?, ?, ?, ?)`,
		token.Name, string(token.Scope), token.Prefix, token.Hash, token.CreatedAt.UnixMilli(),
		nullTime(token.ExpiresAt), nullTime(token.RevokedAt), nullTime(token.LastUsedAt))
	if isUniqueConstraint(err) {
		err = fmt.Errorf("%w: another admin token has the same hash: %w", trackapi.ErrConflict, err)
	}
	if err != nil {
		return trackapi.AdminToken{}, d.classify(op, err)
	}
	if token.ID, err = res.LastInsertId(); err != nil {
		return trackapi.AdminToken{}, d.classify(op, err)
	}
	token.Hash = bytes.Clone(token.Hash)
	token.CreatedAt = storedTime(token.CreatedAt)
	token.ExpiresAt = storedTime(token.ExpiresAt)
	token.RevokedAt = storedTime(token.RevokedAt)
	token.LastUsedAt = storedTime(token.LastUsedAt)
	return token, nil
}

// AdminTokens lists every token, revoked and expired ones too, oldest first. The list is empty,
// not nil, when there are none.
func (d *DB) AdminTokens(ctx context.Context) ([]trackapi.AdminToken, error) {
	tokens, err := d.queryAdminTokens(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens ORDER BY id`)
	if err != nil {
		return nil, d.classify("list admin tokens", err)
	}
	return tokens, nil
}

// AdminTokenByHash finds a token, live or not, by its hash: one lookup on the unique index of
// token_hash, on a read connection, so that a token made a moment ago by another process works
// at once. An unknown hash wraps trackapi.ErrNotFound.
func (d *DB) AdminTokenByHash(ctx context.Context, hash []byte) (trackapi.AdminToken, error) {
	t, err := scanAdminToken(d.reader.QueryRowContext(ctx,
		`SELECT `+adminTokenColumns+` FROM admin_tokens WHERE token_hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = trackapi.ErrNotFound
	}
	if err != nil {
		return trackapi.AdminToken{}, d.classify("find admin token by hash", err)
	}
	return t, nil
}

// RevokeAdminToken makes a token stop working from at on; an unknown id wraps
// trackapi.ErrNotFound. Revoking a revoked token keeps its first revocation time, so that the
// record says when it really stopped. at must be set: the zero time would be stored as not
// revoked.
func (d *DB) RevokeAdminToken(ctx context.Context, id int64, at time.Time) error {
	op := fmt.Sprintf("revoke admin token %d", id)
	if at.IsZero() {
		return fmt.Errorf("%s: no revocation time given", op)
	}
	res, err := d.writer.ExecContext(ctx,
		`UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?`, at.UnixMilli(), id)
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

// adminTokenLiveAt is trackapi.AdminToken.Live in SQL, at the epoch milliseconds of the named
// parameter :now. For a time t and an expiry E stored in whole milliseconds, t < E exactly when
// t's whole milliseconds are below E.
const adminTokenLiveAt = `revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)`

// LiveAdminTokens lists every token live at now (trackapi.AdminToken.Live), oldest first, for the
// authentication cache. The list is empty, not nil, when there are none. There are few tokens,
// so a scan of the table is as good as an index would be.
func (d *DB) LiveAdminTokens(ctx context.Context, now time.Time) ([]trackapi.AdminToken, error) {
	tokens, err := d.queryAdminTokens(ctx,
		`SELECT `+adminTokenColumns+` FROM admin_tokens WHERE `+adminTokenLiveAt+` ORDER BY id`,
		sql.Named("now", now.UnixMilli()))
	if err != nil {
		return nil, d.classify("list live admin tokens", err)
	}
	return tokens, nil
}

// TouchAdminTokens records when tokens were last used (token id → time), in one transaction. A
// time never moves back (a late, older report does not undo a newer one), and unknown ids are
// skipped: the report is a statistic, written in the background, and must not fail for a token
// that is gone.
func (d *DB) TouchAdminTokens(ctx context.Context, lastUsed map[int64]time.Time) error {
	return d.touchLastUsed(ctx, "admin_tokens", "admin tokens", lastUsed)
}

const adminTokenColumns = `id, name, scope, prefix, token_hash, created_at, expires_at, revoked_at, last_used_at`

// queryAdminTokens runs a query of adminTokenColumns; the list is empty, not nil, when there are
// none.
func (d *DB) queryAdminTokens(ctx context.Context, query string, args ...any) ([]trackapi.AdminToken, error) {
	return queryList(ctx, d, scanAdminToken, query, args...)
}

// scanAdminToken reads the adminTokenColumns of one row.
func scanAdminToken(row interface{ Scan(...any) error }) (trackapi.AdminToken, error) {
	var t trackapi.AdminToken
	var scope string
	var createdAt int64
	var expiresAt, revokedAt, lastUsedAt sql.NullInt64
	if err := row.Scan(&t.ID, &t.Name, &scope, &t.Prefix, &t.Hash, &createdAt, &expiresAt, &revokedAt, &lastUsedAt); err != nil {
		return trackapi.AdminToken{}, err
	}
	t.Scope = trackapi.AdminScope(scope)
	t.CreatedAt = time.UnixMilli(createdAt).UTC()
	t.ExpiresAt = timeOf(expiresAt)
	t.RevokedAt = timeOf(revokedAt)
	t.LastUsedAt = timeOf(lastUsedAt)
	return t, nil
}
