package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// newAdminToken returns a new token in clear and the AdminToken (prefix and hash) to store.
func newAdminToken(name string, scope trackapi.AdminScope) (string, trackapi.AdminToken) {
	tok := trackapi.NewAdminToken()
	return tok, trackapi.AdminToken{Name: name, Scope: scope, Prefix: trackapi.AdminTokenDisplay(tok), Hash: trackapi.HashKey(tok)}
}

func TestAdminTokens(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})

	empty, err := db.AdminTokens(ctx)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("admin tokens of a new file = %#v, %v; want empty non-nil", empty, err)
	}

	before := time.Now().Truncate(time.Millisecond)
	_, a := newAdminToken("ci", trackapi.ScopeRead)
	a.ID = 777 // ignored
	storedA, err := db.CreateAdminToken(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	_, b := newAdminToken("alice's laptop", trackapi.ScopeWrite)
	b.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.FixedZone("x", 3600))
	b.ExpiresAt = b.CreatedAt.Add(90 * 24 * time.Hour)
	storedB, err := db.CreateAdminToken(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if storedA.ID != 1 || storedB.ID != 2 {
		t.Fatalf("ids %d, %d; want 1, 2", storedA.ID, storedB.ID)
	}
	if storedA.Name != "ci" || storedA.Scope != trackapi.ScopeRead || storedA.Prefix != a.Prefix ||
		!bytes.Equal(storedA.Hash, a.Hash) || storedA.CreatedAt.Before(before) || storedA.CreatedAt.After(time.Now()) ||
		storedA.CreatedAt.Location() != time.UTC || !storedA.ExpiresAt.IsZero() || !storedA.RevokedAt.IsZero() ||
		!storedA.LastUsedAt.IsZero() {
		t.Fatalf("stored a = %+v", storedA)
	}
	if storedB.CreatedAt != ms(b.CreatedAt) || storedB.ExpiresAt != ms(b.ExpiresAt) || storedB.Scope != trackapi.ScopeWrite {
		t.Fatalf("stored b = %+v, want times %v, %v", storedB, ms(b.CreatedAt), ms(b.ExpiresAt))
	}
	// What CreateAdminToken returned is what reading gives back, by list and by hash.
	if list, err := db.AdminTokens(ctx); err != nil || !reflect.DeepEqual(list, []trackapi.AdminToken{storedA, storedB}) {
		t.Fatalf("admin tokens = %+v, %v\nwant %+v", list, err, []trackapi.AdminToken{storedA, storedB})
	}
	if got, err := db.AdminTokenByHash(ctx, b.Hash); err != nil || !reflect.DeepEqual(got, storedB) {
		t.Fatalf("b by hash = %+v, %v; want %+v", got, err, storedB)
	}
	if _, err := db.AdminTokenByHash(ctx, trackapi.HashKey("tka_unknown")); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("unknown hash: %v, want ErrNotFound", err)
	}
	// The row holds the hash and the prefix: nothing else of the token.
	var hash []byte
	var prefix string
	if err := rawDB(t, path).QueryRow(`SELECT token_hash, prefix FROM admin_tokens WHERE id = ?`, storedA.ID).Scan(&hash, &prefix); err != nil ||
		!bytes.Equal(hash, a.Hash) || prefix != a.Prefix || len(prefix) != 12 {
		t.Fatalf("row of a: hash %x, prefix %q, %v", hash, prefix, err)
	}

	// Refusals: a hash already used is a conflict; a scope that is not one, or a hash that is
	// not a SHA-256, is permanent (a bug, not worth a retry). None of them leaves a row.
	if _, err := db.CreateAdminToken(ctx, a); !errors.Is(err, trackapi.ErrConflict) || errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("a hash already used: %v, want ErrConflict", err)
	}
	_, badScope := newAdminToken("x", "admin")
	_, shortHash := newAdminToken("x", trackapi.ScopeRead)
	shortHash.Hash = shortHash.Hash[:16]
	for name, bad := range map[string]trackapi.AdminToken{"scope admin": badScope, "a 16-byte hash": shortHash} {
		if _, err := db.CreateAdminToken(ctx, bad); err == nil || errors.Is(err, trackapi.ErrUnavailable) || errors.Is(err, trackapi.ErrConflict) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	if list, err := db.AdminTokens(ctx); err != nil || len(list) != 2 {
		t.Fatalf("after refusals: %d tokens, %v; want 2", len(list), err)
	}
}

// Revocation and expiry as LiveAdminTokens sees them: a token stops at its expiry's millisecond,
// a revoked one at once, and revoking again keeps the first time.
func TestRevokeAndLiveAdminTokens(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var stored []trackapi.AdminToken
	for i, expires := range []time.Time{{}, now.Add(time.Hour), now.Add(2 * time.Hour)} {
		_, tok := newAdminToken("t", trackapi.ScopeRead)
		tok.CreatedAt, tok.ExpiresAt = now.Add(time.Duration(i)*time.Second), expires
		s, err := db.CreateAdminToken(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, s)
	}
	live := func(at time.Time) []int64 {
		t.Helper()
		list, err := db.LiveAdminTokens(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		ids := []int64{}
		for _, tok := range list {
			ids = append(ids, tok.ID)
		}
		return ids
	}
	if got := live(now.Add(time.Hour - time.Millisecond)); !reflect.DeepEqual(got, []int64{1, 2, 3}) {
		t.Errorf("a millisecond before the first expiry: %v, want 1 2 3", got)
	}
	if got := live(now.Add(time.Hour)); !reflect.DeepEqual(got, []int64{1, 3}) {
		t.Errorf("at the first expiry: %v, want 1 3", got)
	}

	revokedAt := now.Add(time.Minute + 123456*time.Nanosecond)
	if err := db.RevokeAdminToken(ctx, 3, revokedAt); err != nil {
		t.Fatal(err)
	}
	if err := db.RevokeAdminToken(ctx, 3, revokedAt.Add(time.Hour)); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if got := live(now); !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Errorf("after revoking 3: %v, want 1 2", got)
	}
	got, err := db.AdminTokenByHash(ctx, stored[2].Hash)
	if err != nil || got.RevokedAt != ms(revokedAt) {
		t.Fatalf("revoked token = %+v, %v; want revoked at %v, the first revocation", got, err, ms(revokedAt))
	}
	if err := db.RevokeAdminToken(ctx, 99, now); !errors.Is(err, trackapi.ErrNotFound) {
		t.Errorf("revoking an unknown id: %v, want ErrNotFound", err)
	}
	if err := db.RevokeAdminToken(ctx, 1, time.Time{}); err == nil {
		t.Error("revoking at the zero time was accepted: it would read back as not revoked")
	}
	if list, err := db.AdminTokens(ctx); err != nil || len(list) != 3 {
		t.Fatalf("a revoked token must stay listed: %d tokens, %v", len(list), err)
	}
}

func TestTouchAdminTokens(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	_, a := newAdminToken("a", trackapi.ScopeRead)
	_, b := newAdminToken("b", trackapi.ScopeWrite)
	a, err := db.CreateAdminToken(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	b, err = db.CreateAdminToken(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	t0 := t1.Add(-time.Minute)
	if err := db.TouchAdminTokens(ctx, nil); err != nil {
		t.Fatalf("touch nothing: %v", err)
	}
	// Unknown ids and zero times are skipped; a time never moves back.
	if err := db.TouchAdminTokens(ctx, map[int64]time.Time{a.ID: t1, b.ID: t0, 9999: t1}); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAdminTokens(ctx, map[int64]time.Time{a.ID: t0, b.ID: t1}); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAdminTokens(ctx, map[int64]time.Time{a.ID: {}}); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []trackapi.AdminToken{a, b} {
		got, err := db.AdminTokenByHash(ctx, tok.Hash)
		if err != nil || got.LastUsedAt != ms(t1) {
			t.Fatalf("token %d last used at %v (%v), want %v", tok.ID, got.LastUsedAt, err, ms(t1))
		}
	}
}

// An id names one token for ever: after the newest row is deleted (by hand, say), the next token
// does not get its id, which logs and audit trails may still mention.
func TestAdminTokenIDsAreNeverReused(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	for range 2 {
		_, tok := newAdminToken("t", trackapi.ScopeRead)
		if _, err := db.CreateAdminToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rawDB(t, path).Exec(`DELETE FROM admin_tokens WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	_, tok := newAdminToken("t", trackapi.ScopeRead)
	got, err := db.CreateAdminToken(ctx, tok)
	if err != nil || got.ID != 3 {
		t.Fatalf("token after deleting id 2: id %d, %v; want 3", got.ID, err)
	}
}

func TestAdminTokenMethodsAfterClose(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(tempPath(t))
	if err != nil {
		t.Fatal(err)
	}
	_, tok := newAdminToken("t", trackapi.ScopeRead)
	if tok, err = db.CreateAdminToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, another := newAdminToken("t", trackapi.ScopeRead)
	_, errCreate := db.CreateAdminToken(ctx, another)
	_, errList := db.AdminTokens(ctx)
	_, errByHash := db.AdminTokenByHash(ctx, tok.Hash)
	_, errLive := db.LiveAdminTokens(ctx, time.Now())
	for name, err := range map[string]error{
		"CreateAdminToken": errCreate,
		"AdminTokens":      errList,
		"AdminTokenByHash": errByHash,
		"RevokeAdminToken": db.RevokeAdminToken(ctx, tok.ID, time.Now()),
		"LiveAdminTokens":  errLive,
		"TouchAdminTokens": db.TouchAdminTokens(ctx, map[int64]time.Time{tok.ID: time.Now()}),
	} {
		if !errors.Is(err, trackapi.ErrUnavailable) {
			t.Errorf("%s after close: %v, want ErrUnavailable", name, err)
		}
	}
}

// A file of the previous schema (0005) gets an empty admin_tokens table and keeps its sources,
// keys and events.
func TestMigrateFrom0005(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	old, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(ON)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"migrations/0001_init.sql", "migrations/0002_health.sql", "migrations/0003_keys_names_seq.sql",
		"migrations/0004_delivery.sql", "migrations/0005_compact_events.sql"} {
		script, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.Exec(string(script)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	keyHash := trackapi.HashKey("shop-key")
	for _, q := range []struct {
		query string
		args  []any
	}{
		{`PRAGMA user_version = 5`, nil},
		{`INSERT INTO sources(id, site, name, active, created_at) VALUES(1, 'site1', 'shop', 1, 1700000000000)`, nil},
		{`INSERT INTO source_keys(source_id, prefix, key_hash, created_at) VALUES(1, 'abcd1234', ?, 1700000000000)`, []any{keyHash}},
		{`INSERT INTO events(seq, source_id, site, event_id, event_name, received_at, body, body_hash) VALUES
			(1, 1, 'site1', 'a', 'page_view', 1700000000001, '{"id":"a","event_name":"page_view"}', x'0102030405060708')`, nil},
	} {
		if _, err := old.Exec(q.query, q.args...); err != nil {
			t.Fatalf("%s: %v", q.query, err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db := open(t, path, sqlite.Options{})
	raw := rawDB(t, path)
	if v := queryInt(t, raw, "PRAGMA user_version"); v != schemaVersion {
		t.Fatalf("user_version = %d, want %d", v, schemaVersion)
	}
	if tokens, err := db.AdminTokens(ctx); err != nil || len(tokens) != 0 {
		t.Fatalf("admin tokens after the migration = %+v, %v; want none", tokens, err)
	}
	if k, err := db.SourceKeyByHash(ctx, keyHash); err != nil || k.SourceID != 1 || !k.Live(time.Now()) {
		t.Fatalf("the old key after the migration = %+v, %v", k, err)
	}
	if ids := storedIDs(t, db, everything); !reflect.DeepEqual(ids, []string{"a"}) {
		t.Fatalf("events after the migration = %v, want a", ids)
	}
	_, tok := newAdminToken("first", trackapi.ScopeWrite)
	if got, err := db.CreateAdminToken(ctx, tok); err != nil || got.ID != 1 {
		t.Fatalf("first admin token after the migration: %+v, %v", got, err)
	}
	var integrity string
	if err := raw.QueryRow(`PRAGMA integrity_check`).Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check = %q, %v", integrity, err)
	}
}
