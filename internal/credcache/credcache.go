// Package credcache holds what the two credential services (sources/ for source keys,
// admintokens/ for admin tokens) need to authenticate from memory: a bounded cache of hashes the
// store does not know, and a tracker that turns "used now" on every request into at most one
// store write a credential a period, off the request's path.
package credcache

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Unknown remembers hashes the store does not know, for a short time and in bounded number (when
// full, the oldest entry makes room), so that a flood of bad credentials is not a flood of
// queries. The zero value is not usable; make one with NewUnknown.
type Unknown struct {
	ttl time.Duration

	mu      sync.Mutex
	expires map[string]time.Time
	ring    []string // insertion order, for eviction
	next    int
}

// NewUnknown remembers at most max hashes, each for ttl.
func NewUnknown(ttl time.Duration, max int) *Unknown {
	return &Unknown{ttl: ttl, expires: make(map[string]time.Time), ring: make([]string, max)}
}

// Has reports whether hash was remembered as unknown and has not expired at now.
func (n *Unknown) Has(hash []byte, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.expires[string(hash)]
	return ok && now.Before(exp)
}

// Add remembers hash as unknown from now.
func (n *Unknown) Add(hash []byte, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := string(hash)
	if _, ok := n.expires[h]; ok {
		n.expires[h] = now.Add(n.ttl)
		return
	}
	if old := n.ring[n.next]; old != "" {
		delete(n.expires, old)
	}
	n.ring[n.next] = h
	n.next = (n.next + 1) % len(n.ring)
	n.expires[h] = now.Add(n.ttl)
}

// Size is the number of hashes remembered, for tests of the bound.
func (n *Unknown) Size() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.expires)
}

// LastUsed turns "this credential was used" on every request into at most one write a credential
// every period. The write runs in the background.
type LastUsed struct {
	every time.Duration
	touch func(ctx context.Context, lastUsed map[int64]time.Time) error
	what  string // "source keys", "admin tokens": for log lines and errors
	log   *slog.Logger

	mu      sync.Mutex
	pending map[int64]time.Time // used since the last write
	written map[int64]time.Time // when each credential's last-used time was last written
	running sync.WaitGroup
	busy    bool
}

// NewLastUsed writes with touch (a store's Touch... method), at most once every `every` a
// credential; what names the credentials in log lines and errors.
func NewLastUsed(every time.Duration, touch func(context.Context, map[int64]time.Time) error, what string, log *slog.Logger) *LastUsed {
	return &LastUsed{every: every, touch: touch, what: what, log: log,
		pending: map[int64]time.Time{}, written: map[int64]time.Time{}}
}

// Used records a use of credential id at now and starts a background write when one is due.
func (t *LastUsed) Used(id int64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending[id] = now
	if t.busy || now.Sub(t.written[id]) < t.every {
		return
	}
	for id := range t.pending { // the write below carries every pending credential
		t.written[id] = now
	}
	t.busy = true
	t.running.Add(1)
	go func() {
		defer t.running.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := t.Flush(ctx); err != nil {
			t.log.Warn("recording when "+t.what+" were last used failed; will try again", "err", err)
		}
		t.mu.Lock()
		t.busy = false
		t.mu.Unlock()
	}()
}

// Flush writes the pending last-used times now; on failure they are kept for the next try.
func (t *LastUsed) Flush(ctx context.Context) error {
	t.mu.Lock()
	batch := t.pending
	t.pending = map[int64]time.Time{}
	t.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := t.touch(ctx, batch); err != nil {
		t.mu.Lock()
		for id, at := range batch { // keep them for the next try, unless newer uses came in
			if _, newer := t.pending[id]; !newer {
				t.pending[id] = at
			}
		}
		t.mu.Unlock()
		return fmt.Errorf("touch %s: %w", t.what, err)
	}
	return nil
}

// Wait waits for the background writes in flight.
func (t *LastUsed) Wait() { t.running.Wait() }
