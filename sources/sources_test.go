package sources_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sources"
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

// countingStore is the real SQLite store, counting the calls whose number the service bounds.
type countingStore struct {
	*sqlite.DB
	byHash, touches atomic.Int64
}

func (c *countingStore) SourceKeyByHash(ctx context.Context, hash []byte) (trackapi.SourceKey, error) {
	c.byHash.Add(1)
	return c.DB.SourceKeyByHash(ctx, hash)
}

func (c *countingStore) TouchSourceKeys(ctx context.Context, lastUsed map[int64]time.Time) error {
	c.touches.Add(1)
	return c.DB.TouchSourceKeys(ctx, lastUsed)
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

func newService(t *testing.T, store trackapi.SourceStore, c *clock) *sources.Service {
	t.Helper()
	svc := sources.New(store, sources.Options{Now: c.Now})
	t.Cleanup(func() {
		if err := svc.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return svc
}

func authenticate(t *testing.T, svc *sources.Service, site, key string) sources.Reason {
	t.Helper()
	auth, err := svc.Authenticate(context.Background(), site, key)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return auth.Reason
}

func TestCreateAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	svc := newService(t, openStore(t), c)
	src, key, err := svc.Create(ctx, "29", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if key.Stored.Prefix != key.Key[:trackapi.KeyPrefixLength] || len(key.Key) != 36 {
		t.Errorf("key %q with prefix %q", key.Key, key.Stored.Prefix)
	}
	for _, tt := range []struct {
		site, key string
		want      sources.Reason
	}{
		{"29", key.Key, ""},
		{"30", key.Key, sources.ReasonSiteMismatch},
		{"29", "7183b9d4-1031-11ee-be56-0242ac120002", sources.ReasonUnknownKey},
		{"29", "", sources.ReasonMissing},
		{"", key.Key, sources.ReasonMissing},
	} {
		if got := authenticate(t, svc, tt.site, tt.key); got != tt.want {
			t.Errorf("site %q key %q: %q, want %q", tt.site, tt.key, got, tt.want)
		}
	}
	if err := svc.SetActive(ctx, src.ID, false); err != nil {
		t.Fatal(err)
	}
	if got := authenticate(t, svc, "29", key.Key); got != sources.ReasonSourceInactive {
		t.Errorf("deactivated source: %q", got)
	}
	if err := svc.SetActive(ctx, src.ID, true); err != nil {
		t.Fatal(err)
	}
	if got := authenticate(t, svc, "29", key.Key); got != "" {
		t.Errorf("reactivated source: %q", got)
	}
	if _, _, err := svc.Create(ctx, "", "no site"); err == nil {
		t.Error("a source without a site was created")
	}
}

// A rotation keeps the previous key working for the overlap, and not a moment longer.
func TestRotationOverlapAndExpiry(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	svc := newService(t, openStore(t), c)
	src, first, err := svc.Create(ctx, "29", "shop")
	if err != nil {
		t.Fatal(err)
	}
	second, err := svc.RotateKey(ctx, src.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if authenticate(t, svc, "29", first.Key) != "" || authenticate(t, svc, "29", second.Key) != "" {
		t.Fatal("both keys must work during the overlap")
	}
	c.Advance(24*time.Hour - time.Millisecond)
	if got := authenticate(t, svc, "29", first.Key); got != "" {
		t.Errorf("a millisecond before the overlap ends: %q", got)
	}
	c.Advance(time.Millisecond)
	if got := authenticate(t, svc, "29", first.Key); got != sources.ReasonKeyExpired {
		t.Errorf("when the overlap ends: %q, want key_expired", got)
	}
	if got := authenticate(t, svc, "29", second.Key); got != "" {
		t.Errorf("the new key: %q", got)
	}

	// Overlap 0: the previous key stops at once.
	third, err := svc.RotateKey(ctx, src.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := authenticate(t, svc, "29", second.Key); got != sources.ReasonKeyExpired {
		t.Errorf("previous key after a rotation with no overlap: %q", got)
	}
	if got := authenticate(t, svc, "29", third.Key); got != "" {
		t.Errorf("the newest key: %q", got)
	}
	keys, err := svc.Keys(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("%d keys listed, want 3 (expired ones too)", len(keys))
	}
	for _, overlap := range []time.Duration{-time.Second, trackapi.MaxRotationOverlap + time.Second} {
		if _, err := svc.RotateKey(ctx, src.ID, overlap); err == nil {
			t.Errorf("overlap %s accepted", overlap)
		}
	}
	if _, err := svc.RotateKey(ctx, 999, time.Hour); !errors.Is(err, trackapi.ErrNotFound) {
		t.Errorf("rotating an unknown source: %v", err)
	}
}

// At most five live keys: rotations with an overlap pile keys up until the limit refuses one;
// once old keys expire there is room again.
func TestLiveKeyLimit(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	svc := newService(t, openStore(t), c)
	src, _, err := svc.Create(ctx, "29", "shop")
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= trackapi.MaxLiveKeys; i++ {
		if _, err := svc.RotateKey(ctx, src.ID, time.Hour); err != nil {
			t.Fatalf("rotation to key %d: %v", i, err)
		}
	}
	if _, err := svc.RotateKey(ctx, src.ID, time.Hour); !errors.Is(err, trackapi.ErrConflict) {
		t.Fatalf("a sixth live key: %v, want ErrConflict", err)
	}
	c.Advance(time.Hour)
	if _, err := svc.RotateKey(ctx, src.ID, time.Hour); err != nil {
		t.Fatalf("after the old keys expired: %v", err)
	}
}

// A revocation applies at once in the process that made it, and within ReloadEvery in another
// process sharing the store; a key made by another process works at once.
func TestChangesFromAnotherProcess(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	server := newService(t, store, c)
	cli := newService(t, store.DB, c) // another process: its own cache

	src, key, err := cli.Create(ctx, "29", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if got := authenticate(t, server, "29", key.Key); got != "" {
		t.Fatalf("a key made by another process: %q", got)
	}
	if err := cli.RevokeKey(ctx, src.ID, key.Stored.ID); err != nil {
		t.Fatal(err)
	}
	if got := authenticate(t, cli, "29", key.Key); got != sources.ReasonKeyRevoked {
		t.Errorf("in the revoking process: %q", got)
	}
	c.Advance(2 * time.Second) // the default ReloadEvery
	if got := authenticate(t, server, "29", key.Key); got != sources.ReasonKeyRevoked {
		t.Errorf("in the other process after 2 s: %q, want key_revoked", got)
	}
	if err := cli.RevokeKey(ctx, src.ID, 12345); !errors.Is(err, trackapi.ErrNotFound) {
		t.Errorf("revoking an unknown key: %v", err)
	}
}

// A flood of requests with one bad key costs one store lookup per NegativeTTL, and a flood of
// distinct bad keys never holds more than NegativeEntries of them.
func TestUnknownKeysAreRememberedBriefly(t *testing.T) {
	store := openStore(t)
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	svc := sources.New(store, sources.Options{Now: c.Now, NegativeEntries: 100})
	for range 1000 {
		if got := authenticate(t, svc, "29", "bad-key"); got != sources.ReasonUnknownKey {
			t.Fatalf("bad key: %q", got)
		}
	}
	if n := store.byHash.Load(); n != 1 {
		t.Errorf("1000 requests with one bad key made %d store lookups, want 1", n)
	}
	c.Advance(2 * time.Second)
	authenticate(t, svc, "29", "bad-key")
	if n := store.byHash.Load(); n != 2 {
		t.Errorf("after the TTL: %d lookups, want 2", n)
	}

	for i := range 1000 {
		authenticate(t, svc, "29", fmt.Sprintf("random-%d", i))
	}
	if n := sources.NegativeCacheSize(svc); n > 100 {
		t.Errorf("the negative cache holds %d keys, more than its 100", n)
	}
	before := store.byHash.Load()
	authenticate(t, svc, "29", "random-999") // recent: still remembered
	authenticate(t, svc, "29", "random-0")   // evicted: looked up again
	if n := store.byHash.Load() - before; n != 1 {
		t.Errorf("%d lookups for one remembered and one evicted key, want 1", n)
	}
}

// Last-used times are written at most once a minute a key, off the request path, and the last
// one on Close.
func TestLastUsedIsWrittenAtMostOnceAMinute(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	svc := sources.New(store, sources.Options{Now: c.Now})
	src, key, err := svc.Create(ctx, "29", "shop")
	if err != nil {
		t.Fatal(err)
	}
	for range 500 {
		authenticate(t, svc, "29", key.Key)
		c.Advance(100 * time.Millisecond) // 50 s in all
	}
	sources.WaitForWrites(svc)
	if n := store.touches.Load(); n != 1 {
		t.Errorf("%d writes of last-used in 50 s of use, want 1", n)
	}
	c.Advance(10 * time.Second)
	authenticate(t, svc, "29", key.Key)
	sources.WaitForWrites(svc)
	if n := store.touches.Load(); n != 2 {
		t.Errorf("%d writes after a minute, want 2", n)
	}
	c.Advance(time.Second)
	last := c.Now()
	authenticate(t, svc, "29", key.Key)
	if err := svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := store.SourceKeys(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !keys[0].LastUsedAt.Equal(last) {
		t.Errorf("last used %v after Close, want %v", keys[0].LastUsedAt, last)
	}
}

// When the store cannot be asked, the request gets an error wrapping ErrUnavailable (a 503),
// never a rejection that would tell a sender its key is wrong.
func TestStoreFailureIsUnavailable(t *testing.T) {
	store := openStore(t)
	svc := sources.New(store, sources.Options{})
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Authenticate(context.Background(), "29", "some-key")
	if !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("authenticate on a closed store: %v, want ErrUnavailable", err)
	}
}
