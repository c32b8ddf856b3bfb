package admintokens

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
)

// Authenticate checks a token presented to the config API (the value after "Bearer ") and
// returns the token's record. A refusal is an error wrapping one of ErrMissing, ErrMalformed,
// ErrUnknown, ErrExpired, ErrRevoked (an *AuthError: a 401); for an expired or revoked token the
// record is returned too, so that the refusal can be attributed. The error's message names a
// known token by its id and display prefix, never by the token.
//
// It answers from an in-memory copy of the live tokens, refreshed every ReloadEvery; a token the
// copy does not hold is looked up in the store once (so a token made a moment ago by another
// process works at once) and, when the store does not know it either, remembered as unknown for
// NegativeTTL, so that a flood of bad tokens is not a flood of queries. A malformed token is
// refused before any of that. Tokens are found by their SHA-256 hash, which is then compared in
// constant time, so that timing can tell something about a hash but nothing about a token.
//
// An error that is not an *AuthError means the store could not be asked; it wraps
// trackapi.ErrUnavailable, and the caller gets a 503 rather than a wrong refusal.
func (s *Service) Authenticate(ctx context.Context, token string) (trackapi.AdminToken, error) {
	if token == "" {
		return trackapi.AdminToken{}, ErrMissing
	}
	if !trackapi.IsAdminTokenShaped(token) {
		return trackapi.AdminToken{}, ErrMalformed
	}
	now := s.now()
	s.reloadIfStale(ctx, now)
	hash := trackapi.HashKey(token)
	unknown := fmt.Errorf("admin token %s: %w", trackapi.AdminTokenDisplay(token), ErrUnknown)
	stored, found := s.cache.lookup(hash)
	if !found {
		if s.unknown.Has(hash, now) {
			return trackapi.AdminToken{}, unknown
		}
		gen := s.cache.generation()
		var err error
		stored, err = s.store.AdminTokenByHash(ctx, hash)
		if errors.Is(err, trackapi.ErrNotFound) {
			s.unknown.Add(hash, now)
			return trackapi.AdminToken{}, unknown
		}
		if err != nil {
			return trackapi.AdminToken{}, fmt.Errorf("authenticate admin token: %w: %w", trackapi.ErrUnavailable, err)
		}
		s.cache.add(hash, stored, gen)
	}
	// The lookup matched the hash already; comparing it again in constant time costs nothing and
	// keeps the rule true whatever the lookup is made of.
	if subtle.ConstantTimeCompare(stored.Hash, hash) != 1 {
		return trackapi.AdminToken{}, unknown
	}
	switch {
	case !stored.RevokedAt.IsZero():
		return stored, fmt.Errorf("admin token %d (%s) was revoked at %s: %w",
			stored.ID, stored.Prefix, stored.RevokedAt.UTC().Format(time.RFC3339), ErrRevoked)
	case !stored.Live(now):
		return stored, fmt.Errorf("admin token %d (%s) expired at %s: %w",
			stored.ID, stored.Prefix, stored.ExpiresAt.UTC().Format(time.RFC3339), ErrExpired)
	}
	s.lastUsed.Used(stored.ID, now)
	return stored, nil
}

// reloadIfStale replaces the copy of the live tokens when it is older than ReloadEvery. One
// request does it while the others go on with the old copy; on failure the old copy is kept, so
// that a store hiccup does not turn every request into a refusal.
func (s *Service) reloadIfStale(ctx context.Context, now time.Time) {
	if !s.cache.stale(now, s.opts.ReloadEvery) || !s.cache.reloading.TryLock() {
		return
	}
	defer s.cache.reloading.Unlock()
	gen := s.cache.generation()
	live, err := s.store.LiveAdminTokens(ctx, now)
	if err != nil {
		s.cache.keep(now, gen)
		s.log.Error("reading admin tokens failed; keeping the previous copy", "err", err)
		return
	}
	byHash := make(map[string]trackapi.AdminToken, len(live))
	for _, t := range live {
		byHash[string(t.Hash)] = t
	}
	s.cache.replace(byHash, now, gen)
}

// tokenCache is the in-memory copy of the tokens, by hash: the live ones as of the last reload,
// and those looked up since.
//
// gen counts the revocations made by this process. A reload or a lookup that read the store
// before a revocation may return after it, with the token still live; it then leaves the copy as
// it is (add, replace and keep compare the generation they started with), so that a revocation
// applies at once in this process whatever runs beside it.
type tokenCache struct {
	reloading sync.Mutex // held by the one request that reloads

	mu       sync.RWMutex
	byHash   map[string]trackapi.AdminToken
	loadedAt time.Time
	gen      uint64
}

func (c *tokenCache) stale(now time.Time, maxAge time.Duration) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.loadedAt.IsZero() || now.Sub(c.loadedAt) >= maxAge
}

func (c *tokenCache) lookup(hash []byte) (trackapi.AdminToken, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.byHash[string(hash)]
	return t, ok
}

func (c *tokenCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// add keeps a token found in the store until the next reload, unless a revocation happened since
// the lookup started (gen).
func (c *tokenCache) add(hash []byte, t trackapi.AdminToken, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.byHash == nil {
		c.byHash = map[string]trackapi.AdminToken{}
	}
	c.byHash[string(hash)] = t
}

// replace installs a reloaded copy, unless a revocation happened since the reload started (gen):
// then the copy may predate it, and the next request reloads again.
func (c *tokenCache) replace(byHash map[string]trackapi.AdminToken, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.byHash, c.loadedAt = byHash, now
}

// keep marks the copy fresh without changing it, after a failed reload.
func (c *tokenCache) keep(now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.loadedAt = now
	}
}

// revoke applies a revocation made by this process to the copy at once, and makes the next
// request reload.
func (c *tokenCache) revoke(id int64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.loadedAt = time.Time{}
	for hash, t := range c.byHash {
		if t.ID == id && t.RevokedAt.IsZero() {
			t.RevokedAt = at
			c.byHash[hash] = t
		}
	}
}
