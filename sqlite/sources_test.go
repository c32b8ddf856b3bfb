package sqlite_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// ms is a time in whole milliseconds, in UTC: how the store gives times back.
func ms(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// newKey returns a new key in clear and its SourceKey (prefix and hash) to store.
func newKey() (string, trackapi.SourceKey) {
	key := trackapi.NewSourceKey()
	return key, trackapi.SourceKey{Prefix: trackapi.KeyPrefix(key), Hash: trackapi.HashKey(key)}
}

func TestSources(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})

	empty, err := db.Sources(ctx)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("sources of a new file = %#v, %v; want empty non-nil", empty, err)
	}

	before := time.Now().Truncate(time.Millisecond)
	_, keyA := newKey()
	a, storedKeyA, err := db.CreateSource(ctx, "site1", "shop", keyA)
	if err != nil {
		t.Fatal(err)
	}
	_, keyB := newKey()
	keyB.SourceID = 12345 // ignored
	keyB.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.FixedZone("x", 3600))
	keyB.ExpiresAt = keyB.CreatedAt.Add(time.Hour)
	b, storedKeyB, err := db.CreateSource(ctx, "site2", "blog", keyB)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 || b.ID <= a.ID {
		t.Fatalf("ids %d, %d: want increasing, non-zero", a.ID, b.ID)
	}
	if !a.Active || a.Site != "site1" || a.Name != "shop" || a.CreatedAt.Before(before) || a.CreatedAt.After(time.Now()) ||
		a.CreatedAt.Location() != time.UTC {
		t.Fatalf("created source = %+v", a)
	}
	if storedKeyA.ID == 0 || storedKeyA.SourceID != a.ID || storedKeyA.Prefix != keyA.Prefix ||
		!reflect.DeepEqual(storedKeyA.Hash, keyA.Hash) || !storedKeyA.CreatedAt.Equal(a.CreatedAt) ||
		!storedKeyA.ExpiresAt.IsZero() || !storedKeyA.RevokedAt.IsZero() || !storedKeyA.LastUsedAt.IsZero() {
		t.Fatalf("first key of source a = %+v", storedKeyA)
	}
	if storedKeyB.SourceID != b.ID || storedKeyB.CreatedAt != ms(keyB.CreatedAt) || storedKeyB.ExpiresAt != ms(keyB.ExpiresAt) {
		t.Fatalf("first key of source b = %+v, want times %v, %v", storedKeyB, ms(keyB.CreatedAt), ms(keyB.ExpiresAt))
	}
	// What CreateSource returned is what reading gives back.
	if keys, err := db.SourceKeys(ctx, b.ID); err != nil || !reflect.DeepEqual(keys, []trackapi.SourceKey{storedKeyB}) {
		t.Fatalf("keys of b = %+v, %v; want %+v", keys, err, storedKeyB)
	}
	if got, err := db.Source(ctx, a.ID); err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("source a = %+v, %v; want %+v", got, err, a)
	}
	if _, err := db.Source(ctx, b.ID+100); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("unknown source: %v, want ErrNotFound", err)
	}

	// A second key with the same hash is a conflict, and the source is not created either.
	if _, _, err := db.CreateSource(ctx, "site3", "copy", keyA); !errors.Is(err, trackapi.ErrConflict) || errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("source with a key hash already used: %v, want ErrConflict", err)
	}

	if err := db.SetSourceActive(ctx, a.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := db.SetSourceActive(ctx, a.ID, false); err != nil {
		t.Fatalf("deactivate twice: %v", err)
	}
	if err := db.SetSourceActive(ctx, b.ID+100, false); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("deactivate unknown id: %v, want ErrNotFound", err)
	}
	got, err := db.Sources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantA := a
	wantA.Active = false
	if !reflect.DeepEqual(got, []trackapi.Source{wantA, b}) {
		t.Fatalf("sources = %+v\nwant %+v", got, []trackapi.Source{wantA, b})
	}
	if err := db.SetSourceActive(ctx, a.ID, true); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Source(ctx, a.ID); err != nil || !got.Active {
		t.Fatalf("reactivated source = %+v, %v", got, err)
	}
}

func TestSourceKeys(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	_, first := newKey()
	first.CreatedAt = now.Add(-time.Hour)
	src, firstKey, err := db.CreateSource(ctx, "site1", "shop", first)
	if err != nil {
		t.Fatal(err)
	}
	other, otherKey, err := db.CreateSource(ctx, "site2", "blog", trackapi.SourceKey{Hash: trackapi.HashKey("other")})
	if err != nil {
		t.Fatal(err)
	}

	// A rotation: the new key is live, the old one until the overlap ends.
	overlapEnd := now.Add(24 * time.Hour)
	_, second := newKey()
	second.SourceID = src.ID
	second.CreatedAt = now
	secondKey, err := db.RotateSourceKey(ctx, second, overlapEnd, trackapi.MaxLiveKeys, now)
	if err != nil {
		t.Fatal(err)
	}
	if secondKey.ID <= firstKey.ID || secondKey.SourceID != src.ID || !secondKey.ExpiresAt.IsZero() || secondKey.CreatedAt != now {
		t.Fatalf("rotated key = %+v", secondKey)
	}
	keys, err := db.SourceKeys(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantFirst := firstKey
	wantFirst.ExpiresAt = overlapEnd
	if !reflect.DeepEqual(keys, []trackapi.SourceKey{wantFirst, secondKey}) {
		t.Fatalf("keys after a rotation = %+v\nwant %+v", keys, []trackapi.SourceKey{wantFirst, secondKey})
	}

	// A key that expires sooner than the overlap keeps its expiry; a later rotation shortens the
	// overlap of every live key; keys of other sources are not touched.
	soon := now.Add(time.Hour)
	_, third := newKey()
	third.SourceID = src.ID
	third.ExpiresAt = soon
	thirdKey, err := db.RotateSourceKey(ctx, third, now.Add(2*time.Hour), trackapi.MaxLiveKeys, now)
	if err != nil {
		t.Fatal(err)
	}
	if thirdKey.ExpiresAt != soon || thirdKey.CreatedAt != now {
		t.Fatalf("third key = %+v, want it to keep its expiry %v", thirdKey, soon)
	}
	keys, _ = db.SourceKeys(ctx, src.ID)
	wantExpiry := []time.Time{now.Add(2 * time.Hour), now.Add(2 * time.Hour), soon}
	for i, k := range keys {
		if k.ExpiresAt != wantExpiry[i] {
			t.Fatalf("key %d expires at %v, want %v", i, k.ExpiresAt, wantExpiry[i])
		}
	}
	if keys, _ := db.SourceKeys(ctx, other.ID); !reflect.DeepEqual(keys, []trackapi.SourceKey{otherKey}) {
		t.Fatalf("keys of the other source = %+v, want untouched %+v", keys, otherKey)
	}

	// An expired key is not live, nor is a revoked one; neither counts towards the limit.
	later := now.Add(3 * time.Hour) // keys 1 to 3 have expired
	var live []trackapi.SourceKey
	for i := range 4 {
		_, k := newKey()
		k.SourceID = src.ID
		// The previous keys stay live for a day: the live keys pile up.
		k, err = db.RotateSourceKey(ctx, k, later.Add(24*time.Hour), 3, later)
		if i == 3 {
			if !errors.Is(err, trackapi.ErrConflict) || errors.Is(err, trackapi.ErrUnavailable) {
				t.Fatalf("rotation to a fourth live key with maxLive 3: %v, want ErrConflict", err)
			}
			break
		}
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		live = append(live, k)
	}
	// The refused rotation changed nothing: same keys, same expiries.
	keysAfter, _ := db.SourceKeys(ctx, src.ID)
	if len(keysAfter) != 6 {
		t.Fatalf("%d keys after a refused rotation, want 6", len(keysAfter))
	}
	gotLive, err := db.LiveSourceKeys(ctx, later)
	if err != nil {
		t.Fatal(err)
	}
	var liveOfSrc []int64
	for _, k := range gotLive {
		if !k.Live(later) {
			t.Fatalf("LiveSourceKeys gave %+v, not live at %v", k, later)
		}
		if k.SourceID == src.ID {
			liveOfSrc = append(liveOfSrc, k.ID)
		}
	}
	if want := []int64{live[0].ID, live[1].ID, live[2].ID}; !reflect.DeepEqual(liveOfSrc, want) {
		t.Fatalf("live keys of the source = %v, want %v", liveOfSrc, want)
	}
	if len(gotLive) != 4 { // and the other source's key
		t.Fatalf("%d live keys in all, want 4", len(gotLive))
	}

	// Revoking frees a place: the rotation refused above now passes.
	revokedAt := later.Add(time.Minute)
	if err := db.RevokeSourceKey(ctx, src.ID, live[0].ID, revokedAt); err != nil {
		t.Fatal(err)
	}
	if err := db.RevokeSourceKey(ctx, src.ID, live[0].ID, revokedAt.Add(time.Hour)); err != nil {
		t.Fatalf("revoke twice: %v", err)
	}
	k, err := db.SourceKeyByHash(ctx, live[0].Hash)
	if err != nil || k.RevokedAt != revokedAt || k.Live(revokedAt) {
		t.Fatalf("revoked key = %+v, %v; want revoked at %v (the first time)", k, err, revokedAt)
	}
	for _, c := range []struct{ source, key int64 }{{other.ID, live[1].ID}, {src.ID, 9999}} {
		if err := db.RevokeSourceKey(ctx, c.source, c.key, revokedAt); !errors.Is(err, trackapi.ErrNotFound) {
			t.Fatalf("revoke key %d of source %d: %v, want ErrNotFound", c.key, c.source, err)
		}
	}
	if err := db.RevokeSourceKey(ctx, src.ID, live[1].ID, time.Time{}); err == nil {
		t.Fatal("revoked with the zero time, which would read back as not revoked")
	}
	_, fourth := newKey()
	fourth.SourceID = src.ID
	fourthKey, err := db.RotateSourceKey(ctx, fourth, later.Add(24*time.Hour), 3, later)
	if err != nil {
		t.Fatalf("rotation after a revocation: %v", err)
	}

	// Lookups by hash find any key; an unknown hash is not found.
	if k, err := db.SourceKeyByHash(ctx, firstKey.Hash); err != nil || k.ID != firstKey.ID || k.Live(later) {
		t.Fatalf("first key by hash = %+v, %v; want it, expired", k, err)
	}
	if _, err := db.SourceKeyByHash(ctx, trackapi.HashKey("unknown")); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("unknown hash: %v, want ErrNotFound", err)
	}

	// Errors of RotateSourceKey: an unknown source, a hash in use, no expiry for the old keys.
	_, k5 := newKey()
	k5.SourceID = other.ID + 100
	if _, err := db.RotateSourceKey(ctx, k5, later, 5, later); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("rotation of an unknown source: %v, want ErrNotFound", err)
	}
	k5.SourceID = other.ID
	k5.Hash = firstKey.Hash
	if _, err := db.RotateSourceKey(ctx, k5, later, 5, later); !errors.Is(err, trackapi.ErrConflict) {
		t.Fatalf("rotation to a key hash in use: %v, want ErrConflict", err)
	}
	k5.Hash = trackapi.HashKey("k5")
	if _, err := db.RotateSourceKey(ctx, k5, time.Time{}, 5, later); err == nil {
		t.Fatal("rotation with no expiry for the previous keys: no error")
	}
	if keys, _ := db.SourceKeys(ctx, other.ID); len(keys) != 1 {
		t.Fatalf("failed rotations left %d keys on the other source, want 1", len(keys))
	}

	if _, err := db.SourceKeys(ctx, other.ID+100); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("keys of an unknown source: %v, want ErrNotFound", err)
	}
	keys, err = db.LiveSourceKeys(ctx, now.AddDate(10, 0, 0))
	if err != nil || len(keys) != 2 || keys[0].ID != otherKey.ID || keys[1].ID != fourthKey.ID {
		t.Fatalf("live keys in ten years = %+v, %v; want only the two without expiry", keys, err)
	}
}

func TestTouchSourceKeys(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	_, a := newKey()
	_, b := newKey()
	_, keyA, err := db.CreateSource(ctx, "site1", "a", a)
	if err != nil {
		t.Fatal(err)
	}
	_, keyB, err := db.CreateSource(ctx, "site2", "b", b)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	t0 := t1.Add(-time.Minute)

	if err := db.TouchSourceKeys(ctx, nil); err != nil {
		t.Fatalf("touch nothing: %v", err)
	}
	// Unknown ids are skipped; a time never moves back.
	if err := db.TouchSourceKeys(ctx, map[int64]time.Time{keyA.ID: t1, keyB.ID: t0, 9999: t1}); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchSourceKeys(ctx, map[int64]time.Time{keyA.ID: t0, keyB.ID: t1}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key  trackapi.SourceKey
		want time.Time
	}{{keyA, ms(t1)}, {keyB, ms(t1)}} {
		got, err := db.SourceKeyByHash(ctx, c.key.Hash)
		if err != nil || got.LastUsedAt != c.want {
			t.Fatalf("key %d last used at %v (%v), want %v", c.key.ID, got.LastUsedAt, err, c.want)
		}
	}
}

// TestRotateSourceKeyConcurrently checks that the live-key limit holds when rotations race: the
// count and the insert are in one write transaction, so no two rotations both see room.
func TestRotateSourceKeyConcurrently(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db1 := open(t, path, sqlite.Options{})
	db2 := open(t, path, sqlite.Options{}) // another process, in effect: its own writer
	now := time.Now()
	_, first := newKey()
	src, _, err := db1.CreateSource(ctx, "site1", "shop", first)
	if err != nil {
		t.Fatal(err)
	}
	const rotations = 20
	var wg sync.WaitGroup
	errs := make([]error, rotations)
	for i := range rotations {
		wg.Go(func() {
			_, k := newKey()
			k.SourceID = src.ID
			db := db1
			if i%2 == 1 {
				db = db2
			}
			_, errs[i] = db.RotateSourceKey(ctx, k, now.Add(time.Hour), trackapi.MaxLiveKeys, now)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, trackapi.ErrConflict):
			t.Fatalf("rotation %d: %v, want success or ErrConflict", i, err)
		}
	}
	if ok != trackapi.MaxLiveKeys-1 {
		t.Fatalf("%d rotations passed, want %d", ok, trackapi.MaxLiveKeys-1)
	}
	live, err := db1.LiveSourceKeys(ctx, now)
	if err != nil || len(live) != trackapi.MaxLiveKeys {
		t.Fatalf("%d live keys (%v), want %d", len(live), err, trackapi.MaxLiveKeys)
	}
}

func TestSourceMethodsAfterClose(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(tempPath(t))
	if err != nil {
		t.Fatal(err)
	}
	src := newSource(t, db, "site1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, key := newKey()
	_, _, errCreate := db.CreateSource(ctx, "site2", "b", key)
	_, errSources := db.Sources(ctx)
	_, errKeys := db.SourceKeys(ctx, src.ID)
	_, _, errRead := db.ReadEvents(ctx, 0, everything, 10)
	for name, err := range map[string]error{
		"CreateSource":    errCreate,
		"Sources":         errSources,
		"SetSourceActive": db.SetSourceActive(ctx, src.ID, false),
		"SourceKeys":      errKeys,
		"ReadEvents":      errRead,
	} {
		if !errors.Is(err, trackapi.ErrUnavailable) {
			t.Errorf("%s after close: %v, want ErrUnavailable", name, err)
		}
	}
}
