package sources

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackapi/trackapi"
)

// Reason says why a request's credentials were refused. The collect API answers every one of
// them the same way (an invalid_source rejection, so that a guesser learns nothing); the reasons
// are for the operators' inspector and logs.
type Reason string

// The reasons a request is not authenticated.
const (
	ReasonMissing        Reason = "missing_credentials" // no tc_s or no key
	ReasonUnknownKey     Reason = "unknown_key"
	ReasonKeyExpired     Reason = "key_expired"
	ReasonKeyRevoked     Reason = "key_revoked"
	ReasonSourceInactive Reason = "source_inactive"
	ReasonSiteMismatch   Reason = "site_mismatch" // a real key sent with another site's tc_s
)

// Auth is the outcome of authenticating a request. Source and Key are set whenever the key is
// known, also when it is refused, so that a refusal can be attributed.
type Auth struct {
	Source trackapi.Source
	Key    trackapi.SourceKey
	Reason Reason // empty when the request is authenticated
}

// OK reports whether the request may store events.
func (a Auth) OK() bool { return a.Reason == "" }

// Authenticate checks a request's site (tc_s) and source key. It answers from an in-memory copy of
// the live keys, refreshed every ReloadEvery; a key the copy does not know is looked up in the
// store once (so a key made a moment ago by another process works at once) and, when unknown
// there too, remembered as unknown for NegativeTTL, so that a flood of bad keys does not become
// a flood of queries. Keys are found by their SHA-256 hash, so lookup timing can say something
// about a hash but nothing about a key.
//
// An error means the store could not be asked; it wraps trackapi.ErrUnavailable, and the
// request gets a 503 rather than a wrong rejection.
func (s *Service) Authenticate(ctx context.Context, site, key string) (Auth, error) {
	auth, err := s.authenticate(ctx, site, key)
	if err == nil {
		s.opts.OnAuthenticate(string(auth.Reason))
	}
	return auth, err
}

func (s *Service) authenticate(ctx context.Context, site, key string) (Auth, error) {
	if site == "" || key == "" {
		return Auth{Reason: ReasonMissing}, nil
	}
	now := s.now()
	s.reloadIfStale(ctx, now)
	hash := trackapi.HashKey(key)
	entry, found := s.cache.lookup(hash)
	if !found {
		if s.unknown.Has(hash, now) {
			return Auth{Reason: ReasonUnknownKey}, nil
		}
		var err error
		entry, err = s.fetch(ctx, hash)
		if err == nil || errors.Is(err, trackapi.ErrNotFound) {
			s.opts.OnLookup(err == nil)
		}
		if errors.Is(err, trackapi.ErrNotFound) {
			s.unknown.Add(hash, now)
			return Auth{Reason: ReasonUnknownKey}, nil
		}
		if err != nil {
			return Auth{}, fmt.Errorf("authenticate: %w: %w", trackapi.ErrUnavailable, err)
		}
		s.cache.add(hash, entry)
	}
	auth := Auth{Source: entry.source, Key: entry.key}
	switch {
	case !entry.key.RevokedAt.IsZero():
		auth.Reason = ReasonKeyRevoked
	case !entry.key.Live(now):
		auth.Reason = ReasonKeyExpired
	case !entry.source.Active:
		auth.Reason = ReasonSourceInactive
	case entry.source.Site != site:
		auth.Reason = ReasonSiteMismatch
	default:
		if sec := now.Unix(); entry.noted.Swap(sec) != sec {
			s.lastUsed.Used(entry.key.ID, now)
		}
	}
	return auth, nil
}

// fetch reads one key and its source from the store.
func (s *Service) fetch(ctx context.Context, hash []byte) (cachedKey, error) {
	key, err := s.store.SourceKeyByHash(ctx, hash)
	if err != nil {
		return cachedKey{}, err
	}
	src, err := s.store.Source(ctx, key.SourceID)
	if err != nil {
		return cachedKey{}, err
	}
	return cachedKey{key: key, source: src, noted: new(atomic.Int64)}, nil
}

// reloadIfStale replaces the copy of the live keys when it is older than ReloadEvery. One request
// does it while the others go on with the old copy; on failure the old copy is kept, so that a
// store hiccup does not turn every request into a rejection.
func (s *Service) reloadIfStale(ctx context.Context, now time.Time) {
	if !s.cache.stale(now, s.opts.ReloadEvery) || !s.cache.reloading.TryLock() {
		return
	}
	defer s.cache.reloading.Unlock()
	keys, err := s.store.LiveSourceKeys(ctx, now)
	var list []trackapi.Source
	if err == nil {
		list, err = s.store.Sources(ctx)
	}
	if err != nil {
		s.cache.keep(now)
		s.log.Error("reading source keys failed; keeping the previous copy", "err", err)
		return
	}
	byID := make(map[int64]trackapi.Source, len(list))
	for _, src := range list {
		byID[src.ID] = src
	}
	byHash := make(map[string]cachedKey, len(keys))
	for _, k := range keys {
		if src, ok := byID[k.SourceID]; ok {
			noted := new(atomic.Int64)
			if old, ok := s.cache.lookup(k.Hash); ok {
				noted = old.noted
			}
			byHash[string(k.Hash)] = cachedKey{key: k, source: src, noted: noted}
		}
	}
	s.cache.replace(byHash, now)
}

// cachedKey is a key with its source, as the cache holds them.
type cachedKey struct {
	key    trackapi.SourceKey
	source trackapi.Source
	// noted is the second (Unix time) of the last use handed to the last-used tracker, shared by
	// the copies of this entry, so that busy keys take the tracker's lock once a second rather
	// than on every request.
	noted *atomic.Int64
}

// keyCache is the in-memory copy of the keys, by hash.
type keyCache struct {
	reloading sync.Mutex // held by the one request that reloads

	mu       sync.RWMutex
	byHash   map[string]cachedKey
	loadedAt time.Time
}

func (c *keyCache) stale(now time.Time, maxAge time.Duration) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.loadedAt.IsZero() || now.Sub(c.loadedAt) >= maxAge
}

func (c *keyCache) lookup(hash []byte) (cachedKey, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.byHash[string(hash)]
	return k, ok
}

// add keeps a key found in the store until the next reload.
func (c *keyCache) add(hash []byte, k cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byHash == nil {
		c.byHash = map[string]cachedKey{}
	}
	c.byHash[string(hash)] = k
}

func (c *keyCache) replace(byHash map[string]cachedKey, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byHash, c.loadedAt = byHash, now
}

// keep marks the copy fresh without changing it, after a failed reload.
func (c *keyCache) keep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadedAt = now
}

// invalidate makes the next request reload, after a change made by this process.
func (c *keyCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadedAt = time.Time{}
}
