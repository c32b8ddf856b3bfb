package admintokens_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/sqlite"
)

// clock is a settable time for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// quiet is the logger of the tests that do not look at logs.
var quiet = slog.New(slog.DiscardHandler)

func newClock() *clock { return &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)} }

// countingStore is the real SQLite store, counting the calls whose number the service bounds.
// When afterLiveRead is set, LiveAdminTokens calls it after reading, before returning: a test
// can hold a reload there.
type countingStore struct {
	*sqlite.DB
	byHash, touches atomic.Int64
	afterLiveRead   func()
}

func (c *countingStore) AdminTokenByHash(ctx context.Context, hash []byte) (trackapi.AdminToken, error) {
	c.byHash.Add(1)
	return c.DB.AdminTokenByHash(ctx, hash)
}

func (c *countingStore) TouchAdminTokens(ctx context.Context, lastUsed map[int64]time.Time) error {
	c.touches.Add(1)
	return c.DB.TouchAdminTokens(ctx, lastUsed)
}

func (c *countingStore) LiveAdminTokens(ctx context.Context, now time.Time) ([]trackapi.AdminToken, error) {
	live, err := c.DB.LiveAdminTokens(ctx, now)
	if c.afterLiveRead != nil {
		c.afterLiveRead()
	}
	return live, err
}

func openStore(t *testing.T) *countingStore {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "trackapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &countingStore{DB: db}
}

func newService(t *testing.T, store trackapi.AdminTokenStore, c *clock) *admintokens.Service {
	t.Helper()
	svc := admintokens.New(store, admintokens.Options{Now: c.Now, Logger: quiet})
	t.Cleanup(func() {
		if err := svc.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return svc
}

func create(t *testing.T, svc *admintokens.Service, name string, scope trackapi.AdminScope, ttl time.Duration) admintokens.NewToken {
	t.Helper()
	tok, err := svc.Create(context.Background(), name, scope, ttl)
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return tok
}

// refusal authenticates token and returns the code of its refusal, "" when it was accepted. A
// refusal that is not an *AuthError fails the test: it would be a 503, not a 401.
func refusal(t *testing.T, svc *admintokens.Service, token string) string {
	t.Helper()
	_, err := svc.Authenticate(context.Background(), token)
	if err == nil {
		return ""
	}
	var ae *admintokens.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("authenticate: %v, want an *AuthError", err)
	}
	if token != "" && strings.Contains(err.Error(), token) {
		t.Fatalf("the refusal's message holds the token: %v", err)
	}
	return ae.Code
}

func TestCreateAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	svc := newService(t, openStore(t), c)
	read := create(t, svc, "dashboard", trackapi.ScopeRead, admintokens.DefaultTTL)
	write := create(t, svc, "alice", trackapi.ScopeWrite, admintokens.DefaultTTL)
	for _, tok := range []admintokens.NewToken{read, write} {
		if !trackapi.IsAdminTokenShaped(tok.Token) || tok.Stored.Prefix != tok.Token[:12] ||
			!bytes.Equal(tok.Stored.Hash, trackapi.HashKey(tok.Token)) || tok.Stored.ID == 0 {
			t.Fatalf("new token %+v", tok)
		}
		if !tok.Stored.CreatedAt.Equal(c.Now()) || !tok.Stored.ExpiresAt.Equal(c.Now().Add(90*24*time.Hour)) {
			t.Errorf("token %d: created %v, expires %v; want now and in 90 days", tok.Stored.ID, tok.Stored.CreatedAt, tok.Stored.ExpiresAt)
		}
	}
	if read.Token == write.Token {
		t.Fatal("two tokens are the same")
	}
	got, err := svc.Authenticate(ctx, read.Token)
	if err != nil || got.ID != read.Stored.ID || got.Scope != trackapi.ScopeRead || got.Name != "dashboard" {
		t.Fatalf("authenticate the read token: %+v, %v", got, err)
	}
	got, err = svc.Authenticate(ctx, write.Token)
	if err != nil || got.ID != write.Stored.ID || got.Scope != trackapi.ScopeWrite {
		t.Fatalf("authenticate the write token: %+v, %v", got, err)
	}

	// The listing holds what is stored, and nothing of the tokens but their prefixes.
	list, err := svc.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != read.Stored.ID || list[1].ID != write.Stored.ID {
		t.Fatalf("list = %+v, %v", list, err)
	}
	for _, tok := range list {
		if s := fmt.Sprintf("%+v", tok); strings.Contains(s, read.Token) || strings.Contains(s, write.Token) {
			t.Fatalf("a listed token holds a token: %s", s)
		}
	}
	if live, err := svc.HasLive(ctx); err != nil || !live {
		t.Errorf("HasLive = %t, %v; want true", live, err)
	}
}

// A token's scope: read may look, write may also change; what Allows says of the tokens that
// Authenticate returns.
func TestReadAndWriteScopes(t *testing.T) {
	ctx := context.Background()
	svc := newService(t, openStore(t), newClock())
	for _, tt := range []struct {
		scope             trackapi.AdminScope
		mayRead, mayWrite bool
	}{
		{trackapi.ScopeRead, true, false},
		{trackapi.ScopeWrite, true, true},
	} {
		tok := create(t, svc, string(tt.scope), tt.scope, time.Hour)
		got, err := svc.Authenticate(ctx, tok.Token)
		if err != nil {
			t.Fatal(err)
		}
		if admintokens.Allows(got, trackapi.ScopeRead) != tt.mayRead || admintokens.Allows(got, trackapi.ScopeWrite) != tt.mayWrite {
			t.Errorf("a %s token: may read %t, may write %t; want %t, %t", tt.scope,
				admintokens.Allows(got, trackapi.ScopeRead), admintokens.Allows(got, trackapi.ScopeWrite), tt.mayRead, tt.mayWrite)
		}
	}
	if admintokens.Allows(trackapi.AdminToken{Scope: "admin"}, trackapi.ScopeRead) {
		t.Error("a token with an unknown scope may read")
	}
}

// A token works until its expiry and stops at that very instant, whether the copy in memory or
// the store answers; a lifetime of 0 means no expiry.
func TestExpiryAtTheExactTime(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := openStore(t)
	svc := newService(t, store, c)
	tok := create(t, svc, "ci", trackapi.ScopeWrite, time.Hour)
	if want := c.Now().Add(time.Hour); !tok.Stored.ExpiresAt.Equal(want) {
		t.Fatalf("expires at %v, want %v", tok.Stored.ExpiresAt, want)
	}
	forever := create(t, svc, "forever", trackapi.ScopeRead, 0)
	if !forever.Stored.ExpiresAt.IsZero() {
		t.Fatalf("a lifetime of 0 expires at %v, want never", forever.Stored.ExpiresAt)
	}

	c.Advance(time.Hour - time.Nanosecond)
	if got := refusal(t, svc, tok.Token); got != "" {
		t.Fatalf("a nanosecond before the expiry: %s", got)
	}
	c.Advance(time.Nanosecond)
	stored, err := svc.Authenticate(ctx, tok.Token)
	if !errors.Is(err, admintokens.ErrExpired) || stored.ID != tok.Stored.ID {
		t.Fatalf("at the expiry: %+v, %v; want ErrExpired with the token's record", stored, err)
	}
	// Once the copy is reloaded it no longer holds the expired token: the store's answer is the
	// same.
	c.Advance(2 * time.Second)
	lookups := store.byHash.Load()
	if got := refusal(t, svc, tok.Token); got != "token_expired" {
		t.Fatalf("after a reload: %q, want token_expired", got)
	}
	if store.byHash.Load() != lookups+1 {
		t.Fatalf("the expired token was not looked up in the store after the reload dropped it")
	}
	// Another service (another process) that never saw the token agrees.
	other := newService(t, store.DB, c)
	if got := refusal(t, other, tok.Token); got != "token_expired" {
		t.Fatalf("in another process: %q, want token_expired", got)
	}

	c.Advance(100 * 365 * 24 * time.Hour)
	if got := refusal(t, svc, forever.Token); got != "" {
		t.Fatalf("a token without expiry, a century later: %s", got)
	}
}

// A revocation applies at once in the process that made it, and within ReloadEvery (2 s) in
// another process sharing the store; a token made by another process works at once.
func TestRevoke(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	c := newClock()
	server := newService(t, store, c)
	cli := newService(t, store.DB, c) // another process: its own copy

	tok := create(t, cli, "ci", trackapi.ScopeWrite, admintokens.DefaultTTL)
	if got := refusal(t, server, tok.Token); got != "" {
		t.Fatalf("a token made by another process: %s", got)
	}
	if got := refusal(t, cli, tok.Token); got != "" {
		t.Fatalf("in the making process: %s", got)
	}
	if err := cli.Revoke(ctx, tok.Stored.ID); err != nil {
		t.Fatal(err)
	}
	stored, err := cli.Authenticate(ctx, tok.Token)
	if !errors.Is(err, admintokens.ErrRevoked) || stored.ID != tok.Stored.ID || stored.RevokedAt.IsZero() {
		t.Fatalf("in the revoking process: %+v, %v; want ErrRevoked at once", stored, err)
	}
	c.Advance(2 * time.Second) // the default ReloadEvery
	if got := refusal(t, server, tok.Token); got != "token_revoked" {
		t.Fatalf("in the other process after 2 s: %q, want token_revoked", got)
	}
	if err := cli.Revoke(ctx, tok.Stored.ID); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if err := cli.Revoke(ctx, 12345); !errors.Is(err, trackapi.ErrNotFound) {
		t.Errorf("revoking an unknown id: %v, want ErrNotFound", err)
	}
	list, err := cli.List(ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt.IsZero() {
		t.Fatalf("a revoked token stays listed, as revoked: %+v, %v", list, err)
	}
	if live, err := cli.HasLive(ctx); err != nil || live {
		t.Errorf("HasLive with only a revoked token = %t, %v; want false", live, err)
	}
}

// A revocation made while another request reloads the copy from the store applies at once all
// the same: the reload read the store before the revocation and must not bring the token back.
func TestRevokeDuringReload(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	c := newClock()
	svc := newService(t, store, c)
	tok := create(t, svc, "ci", trackapi.ScopeWrite, admintokens.DefaultTTL)
	if got := refusal(t, svc, tok.Token); got != "" {
		t.Fatal(got)
	}

	c.Advance(2 * time.Second) // the copy is stale: the next request reloads it
	read, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	store.afterLiveRead = func() { once.Do(func() { close(read); <-release }) }
	reloaded := make(chan error, 1)
	go func() {
		_, err := svc.Authenticate(ctx, tok.Token)
		reloaded <- err
	}()
	<-read // the reload has read the token as live, and waits
	if err := svc.Revoke(ctx, tok.Stored.ID); err != nil {
		t.Fatal(err)
	}
	if got := refusal(t, svc, tok.Token); got != "token_revoked" {
		t.Errorf("while the reload is held: %q, want token_revoked", got)
	}
	close(release)
	// The request that reloaded ends after the revocation, and is refused like any other.
	if err := <-reloaded; !errors.Is(err, admintokens.ErrRevoked) {
		t.Errorf("the request that reloaded: %v, want ErrRevoked", err)
	}
	if got := refusal(t, svc, tok.Token); got != "token_revoked" {
		t.Errorf("after the stale reload finished: %q, want token_revoked", got)
	}
}

// Strings that cannot be tokens are refused as such without a store lookup; a well-formed token
// nobody has is unknown, and a flood of it costs one lookup per NegativeTTL; a flood of distinct
// ones never holds more than NegativeEntries of them.
func TestMalformedAndUnknownTokens(t *testing.T) {
	store := openStore(t)
	c := newClock()
	svc := admintokens.New(store, admintokens.Options{Now: c.Now, NegativeEntries: 100, Logger: quiet})
	real := create(t, svc, "ci", trackapi.ScopeRead, time.Hour).Token

	if got := refusal(t, svc, ""); got != "token_missing" {
		t.Errorf("no token: %q, want token_missing", got)
	}
	for _, s := range []string{
		"tka_short",
		real[:len(real)-1],
		real + "x",
		"Bearer " + real,
		" " + real,
		"7183b9d4-1031-11ee-be56-0242ac120002", // a source key
		real[:20] + "+" + real[21:],
	} {
		if got := refusal(t, svc, s); got != "token_malformed" {
			t.Errorf("%q: %q, want token_malformed", s, got)
		}
	}
	if n := store.byHash.Load(); n != 0 {
		t.Errorf("malformed tokens made %d store lookups, want none", n)
	}

	unknown := trackapi.NewAdminToken()
	for range 1000 {
		if got := refusal(t, svc, unknown); got != "token_unknown" {
			t.Fatalf("unknown token: %q", got)
		}
	}
	if n := store.byHash.Load(); n != 1 {
		t.Errorf("1000 requests with one unknown token made %d store lookups, want 1", n)
	}
	c.Advance(2 * time.Second)
	refusal(t, svc, unknown)
	if n := store.byHash.Load(); n != 2 {
		t.Errorf("after the TTL: %d lookups, want 2", n)
	}
	_, err := svc.Authenticate(context.Background(), unknown)
	if !errors.Is(err, admintokens.ErrUnknown) || !strings.Contains(err.Error(), unknown[:12]) {
		t.Errorf("unknown token: %v; want ErrUnknown naming its display prefix", err)
	}

	var tokens []string
	for range 1000 {
		tokens = append(tokens, trackapi.NewAdminToken())
		refusal(t, svc, tokens[len(tokens)-1])
	}
	if n := admintokens.NegativeCacheSize(svc); n > 100 {
		t.Errorf("the negative cache holds %d tokens, more than its 100", n)
	}
	before := store.byHash.Load()
	refusal(t, svc, tokens[999]) // recent: still remembered
	refusal(t, svc, tokens[0])   // evicted: looked up again
	if n := store.byHash.Load() - before; n != 1 {
		t.Errorf("%d lookups for one remembered and one evicted token, want 1", n)
	}
	if got := refusal(t, svc, real); got != "" {
		t.Errorf("the real token after the flood: %q", got)
	}
}

// Names, scopes and lifetimes that break the rules are refused with ErrInvalid, and nothing is
// stored.
func TestCreateRefusesBadRequests(t *testing.T) {
	ctx := context.Background()
	svc := newService(t, openStore(t), newClock())
	for _, tt := range []struct {
		name  string
		scope trackapi.AdminScope
		ttl   time.Duration
	}{
		{"", trackapi.ScopeRead, time.Hour},
		{"   ", trackapi.ScopeRead, time.Hour},
		{"two\nlines", trackapi.ScopeRead, time.Hour},
		{"tab\there", trackapi.ScopeRead, time.Hour},
		{"bad \xff utf-8", trackapi.ScopeRead, time.Hour},
		{strings.Repeat("é", admintokens.MaxNameLength+1), trackapi.ScopeRead, time.Hour},
		{"ci", "admin", time.Hour},
		{"ci", "", time.Hour},
		{"ci", trackapi.ScopeRead, -time.Second},
	} {
		if _, err := svc.Create(ctx, tt.name, tt.scope, tt.ttl); !errors.Is(err, admintokens.ErrInvalid) {
			t.Errorf("create(%q, %q, %s): %v, want ErrInvalid", tt.name, tt.scope, tt.ttl, err)
		}
	}
	if list, err := svc.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("after refused requests: %+v, %v; want no token", list, err)
	}
	if live, err := svc.HasLive(ctx); err != nil || live {
		t.Errorf("HasLive with no token = %t, %v; want false", live, err)
	}
	create(t, svc, strings.Repeat("é", admintokens.MaxNameLength), trackapi.ScopeRead, time.Hour)
}

// Last-used times are written at most once a minute a token, off the request path, and the last
// one on Close.
func TestLastUsedIsWrittenAtMostOnceAMinute(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	c := newClock()
	svc := admintokens.New(store, admintokens.Options{Now: c.Now, Logger: quiet})
	tok := create(t, svc, "ci", trackapi.ScopeRead, admintokens.DefaultTTL)
	for range 500 {
		if got := refusal(t, svc, tok.Token); got != "" {
			t.Fatal(got)
		}
		c.Advance(100 * time.Millisecond) // 50 s in all
	}
	admintokens.WaitForWrites(svc)
	if n := store.touches.Load(); n != 1 {
		t.Errorf("%d writes of last-used in 50 s of use, want 1", n)
	}
	c.Advance(10 * time.Second)
	refusal(t, svc, tok.Token)
	admintokens.WaitForWrites(svc)
	if n := store.touches.Load(); n != 2 {
		t.Errorf("%d writes after a minute, want 2", n)
	}
	c.Advance(time.Second)
	last := c.Now()
	refusal(t, svc, tok.Token)
	if err := svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := store.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !list[0].LastUsedAt.Equal(last) {
		t.Errorf("last used %v after Close, want %v", list[0].LastUsedAt, last)
	}
}

// When the store cannot be asked, Authenticate fails with an error wrapping ErrUnavailable (a
// 503), never with a refusal that would tell a caller its token is wrong.
func TestStoreFailureIsUnavailable(t *testing.T) {
	store := openStore(t)
	svc := admintokens.New(store, admintokens.Options{Logger: quiet})
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Authenticate(context.Background(), trackapi.NewAdminToken())
	var ae *admintokens.AuthError
	if !errors.Is(err, trackapi.ErrUnavailable) || errors.As(err, &ae) {
		t.Fatalf("authenticate on a closed store: %v, want ErrUnavailable and no *AuthError", err)
	}
}

// No log line holds a token, whatever happens to it: made, used, refused, revoked, its last use
// failing to be written. Logs name it by id and prefix.
func TestTokensAreNeverLogged(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := openStore(t)
	c := newClock()
	svc := admintokens.New(store, admintokens.Options{Now: c.Now, Logger: logger})
	tok, err := svc.Create(ctx, "ci", trackapi.ScopeWrite, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
	admintokens.WaitForWrites(svc)
	if err := svc.Revoke(ctx, tok.Stored.ID); err != nil {
		t.Fatal(err)
	}
	_, _ = svc.Authenticate(ctx, tok.Token)
	if err := store.Close(); err != nil { // every later store call fails, and is logged
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	other := trackapi.NewAdminToken()
	_, _ = svc.Authenticate(ctx, other)
	_ = svc.Close(ctx)

	out := logs.String()
	if strings.Contains(out, tok.Token) || strings.Contains(out, other) {
		t.Fatalf("a token in the logs:\n%s", out)
	}
	for _, want := range []string{"admin token created", "admin token revoked", "prefix=" + tok.Stored.Prefix, "reading admin tokens failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the logs:\n%s", want, out)
		}
	}
}
