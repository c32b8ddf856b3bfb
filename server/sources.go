package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
)

// sourcesMaxAge is how stale the in-memory copy of the sources may get. Sources are created and
// deactivated by another process (`trackapi sources ...`); a deactivation takes effect within this
// time. A key the copy does not know is looked up in the store at once (one indexed query, no lock
// held), so a new source works immediately and a flood of bad keys costs no full reloads.
const sourcesMaxAge = 2 * time.Second

// sourceCache authenticates requests against the sources without a query on the hot path.
type sourceCache struct {
	store trackapi.SourceStore
	log   *slog.Logger

	reloading sync.Mutex // held by the one request that re-reads the sources
	mu        sync.RWMutex
	bySite    map[string][]trackapi.Source
	loadedAt  time.Time
}

func newSourceCache(store trackapi.SourceStore, log *slog.Logger) *sourceCache {
	return &sourceCache{store: store, log: log}
}

// authenticate returns the active source of site whose key is key. Keys are compared as hashes in
// constant time, so response timing says nothing about how much of a key was right. An error
// means the store could not be asked (the request then gets a 503, not a rejection).
func (c *sourceCache) authenticate(ctx context.Context, site, key string) (trackapi.Source, bool, error) {
	if site == "" || key == "" {
		return trackapi.Source{}, false, nil
	}
	c.reloadIfStale(ctx)
	hash := trackapi.HashKey(key)
	if s, found := c.find(site, hash); found {
		return s, s.Active, nil
	}
	s, err := c.store.SourceByKeyHash(ctx, hash)
	if errors.Is(err, trackapi.ErrNotFound) {
		return trackapi.Source{}, false, nil
	}
	if err != nil {
		return trackapi.Source{}, false, fmt.Errorf("%w: looking up the source: %v", trackapi.ErrUnavailable, err)
	}
	c.add(s)
	return s, s.Active && s.Site == site, nil
}

func (c *sourceCache) find(site string, hash []byte) (trackapi.Source, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, s := range c.bySite[site] {
		if subtle.ConstantTimeCompare(s.KeyHash, hash) == 1 {
			return s, true
		}
	}
	return trackapi.Source{}, false
}

func (c *sourceCache) add(s trackapi.Source) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySite == nil {
		c.bySite = map[string][]trackapi.Source{}
	}
	for _, known := range c.bySite[s.Site] {
		if known.ID == s.ID {
			return // a key sent with the wrong site is looked up again, but added once
		}
	}
	c.bySite[s.Site] = append(c.bySite[s.Site], s)
}

// reloadIfStale re-reads all sources when the copy is older than sourcesMaxAge. One request does
// it while the others go on with the old copy; on failure the old copy is kept, so a store hiccup
// does not turn every request into an invalid_source rejection.
func (c *sourceCache) reloadIfStale(ctx context.Context) {
	c.mu.RLock()
	fresh := time.Since(c.loadedAt) < sourcesMaxAge
	c.mu.RUnlock()
	if fresh || !c.reloading.TryLock() {
		return
	}
	defer c.reloading.Unlock()
	sources, err := c.store.Sources(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadedAt = time.Now()
	if err != nil {
		c.log.Error("reading sources failed; keeping the previous copy", "err", err)
		return
	}
	bySite := make(map[string][]trackapi.Source, len(sources))
	for _, s := range sources {
		bySite[s.Site] = append(bySite[s.Site], s)
	}
	c.bySite = bySite
}

// sourceKey picks the key of a request: the token query parameter wins over the Authorization
// header, as DESIGN.md §2 says.
func sourceKey(token, authorization *string) string {
	if token != nil && *token != "" {
		return *token
	}
	if authorization == nil {
		return ""
	}
	scheme, key, ok := strings.Cut(strings.TrimSpace(*authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(key)
}
