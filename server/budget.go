package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Defaults of the body budget. Each request holds its body, the events cut from it and their
// rows until its commit, about twice its body in all; 64 MiB of bodies keeps a burst of 256
// concurrent 500 KB batches well under 300 MB while 128 of them are worked on at once.
const (
	DefaultBodyBudget = 64 << 20
	DefaultBodyWait   = 10 * time.Second
)

// errOverloaded is the 503 of a request that found no room in the body budget in time.
var errOverloaded = errors.New("overloaded")

// bodyBudget bounds the memory held by request bodies. Without it, nothing but the number of
// connections limits how many 500 KB bodies are read and held while they wait for the committer:
// a burst of large batches would grow the process without bound. A request that waits too long
// gets a deliberate, counted 503 (outcome "overloaded") with Retry-After.
//
// A request holds what it has received, not what it announced: its claim grows as its body
// arrives (see readBody), so a client that sends headers announcing 512 000 bytes and then
// nothing holds nothing but its first small buffer. Growing claims could deadlock (every
// request holding half a body and waiting for room for the other half), so a growth is granted
// only if every request in flight could still finish afterwards, one after the other, each
// taking what it may still need as the ones before it give theirs back (the banker's algorithm,
// one resource). Each claim declares the most it may ever hold (its Content-Length, or the
// limit), which makes the check possible. A growth that cannot be granted waits in line; the line
// is served by what each claim may still need, smallest first (oldest first among equals), and
// nobody passes a claim that waits for room in the whole budget, so that the requests closest to
// done finish first, as they would in arrival order, rather than every request getting a little
// further and none finishing.
//
// One client (one address, as the IP extractor sees it) may hold at most perClient bytes, so
// that a single sender that does send, slowly, cannot take the whole budget either. A claim that
// waits for its client's share does not hold up other clients' claims.
type bodyBudget struct {
	size      int64
	perClient int64
	wait      time.Duration
	observe   func(held int64) // after every change, under mu; nil: none

	mu      sync.Mutex
	held    int64 // granted to claims
	need    int64 // what open claims may still take: the sum of max-held
	claims  map[*claim]struct{}
	clients map[string]*clientHold
	waiters []*waiter
	seq     uint64
}

type clientHold struct {
	held, need int64
	claims     int
}

// claim is what one request holds of the budget.
type claim struct {
	b      *bodyBudget
	client string
	max    int64 // the most it may ever hold
	held   int64
	waited time.Duration
	open   bool // registered in b.claims
}

// waiter is a growth waiting in line.
type waiter struct {
	c       *claim
	n       int64
	seq     uint64
	granted bool
	ready   chan struct{} // closed when granted
}

func newBodyBudget(size, perClient int64, wait time.Duration) *bodyBudget {
	if size <= 0 {
		size = DefaultBodyBudget
	}
	if perClient <= 0 || perClient > size {
		perClient = size
	}
	if wait <= 0 {
		wait = DefaultBodyWait
	}
	return &bodyBudget{size: size, perClient: perClient, wait: wait,
		claims: map[*claim]struct{}{}, clients: map[string]*clientHold{}}
}

// claim opens a claim of at most max bytes for client. It holds nothing until it grows; a claim
// larger than a client's share is cut to it (a body that then outgrows it gets a 503).
func (b *bodyBudget) claim(client string, most int64) *claim {
	return &claim{b: b, client: client, max: min(most, b.perClient)}
}

// grow takes n more bytes, waiting in line while that would leave the requests in flight no order
// in which they can all finish, or go over the budget or the client's share. A claim waits at
// most the budget's wait in all its growths; then, or when it would pass its max, it gets
// errOverloaded. ctx ending (the client went away) ends the wait with ctx's error.
func (c *claim) grow(ctx context.Context, n int64) error {
	b := c.b
	if c.held+n > c.max {
		return fmt.Errorf("%w: a body of more than %d bytes cannot be held within the %d-byte budget of one client",
			errOverloaded, c.max, b.perClient)
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.grantable(c, n) == grantNow {
		b.grant(c, n)
		b.observed()
		b.mu.Unlock()
		return nil
	}
	left := b.wait - c.waited
	if left <= 0 {
		b.mu.Unlock()
		return b.overloaded(n)
	}
	b.seq++
	w := &waiter{c: c, n: n, seq: b.seq, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.schedule()
	b.mu.Unlock()

	start := time.Now()
	timer := time.NewTimer(left)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
	case <-timer.C:
		err = b.overloaded(n)
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.waited += time.Since(start)
	if err == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.granted { // just now
		return nil
	}
	b.waiters = slices.DeleteFunc(b.waiters, func(o *waiter) bool { return o == w })
	b.schedule() // it may have held up others
	return err
}

func (b *bodyBudget) overloaded(n int64) error {
	return fmt.Errorf("%w: no room for %d more bytes of body among the %d bytes of bodies in flight within %s",
		errOverloaded, n, b.size, b.wait)
}

// release gives n bytes back for good: the claim's max shrinks with them (a buffer no longer
// needed, such as a gzip body once decompressed).
func (c *claim) release(n int64) {
	n = min(n, c.held)
	if n <= 0 {
		return
	}
	c.b.update(c, func() { c.held -= n; c.max -= n })
}

// lower declares that the claim will never hold more than max after all.
func (c *claim) lower(most int64) {
	if most >= c.max {
		return
	}
	c.b.update(c, func() { c.max = max(most, c.held) })
}

// close gives everything back; the claim must not be used afterwards. A nil claim holds nothing.
func (c *claim) close() {
	if c == nil {
		return
	}
	c.b.update(c, func() { c.held, c.max = 0, 0 })
}

// update changes a claim's held or max under the lock, keeps the totals, and serves the line.
func (b *bodyBudget) update(c *claim, change func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !c.open {
		change()
		return
	}
	ch := b.clients[c.client]
	b.held -= c.held
	b.need -= c.max - c.held
	ch.held -= c.held
	ch.need -= c.max - c.held
	change()
	b.held += c.held
	b.need += c.max - c.held
	ch.held += c.held
	ch.need += c.max - c.held
	if c.max == 0 {
		delete(b.claims, c)
		c.open = false
		if ch.claims--; ch.claims == 0 {
			delete(b.clients, c.client)
		}
	}
	b.schedule()
	b.observed()
}

// schedule grants the growths waiting in line that can be granted, in the line's order: what the
// claim may still need, smallest first, then the oldest. It stops at the first that waits for room
// in the whole budget, and skips those that wait for their client's share. b.mu is held.
func (b *bodyBudget) schedule() {
	if len(b.waiters) == 0 {
		return
	}
	slices.SortFunc(b.waiters, func(x, y *waiter) int {
		if c := cmp.Compare(x.c.max-x.c.held, y.c.max-y.c.held); c != 0 {
			return c
		}
		return cmp.Compare(x.seq, y.seq)
	})
	kept := b.waiters[:0]
	blocked := false
	for _, w := range b.waiters {
		if !blocked {
			switch b.grantable(w.c, w.n) {
			case grantNow:
				b.grant(w.c, w.n)
				w.granted = true
				close(w.ready)
				continue
			case waitForBudget:
				blocked = true
			case waitForClient:
			}
		}
		kept = append(kept, w)
	}
	clear(b.waiters[len(kept):])
	b.waiters = kept
	b.observed()
}

// observed reports the bytes held. b.mu is held, so that reports come in order.
func (b *bodyBudget) observed() {
	if b.observe != nil {
		b.observe(b.held)
	}
}

// grant applies a growth that grantable allowed. b.mu is held.
func (b *bodyBudget) grant(c *claim, n int64) {
	if !c.open {
		c.open = true
		b.claims[c] = struct{}{}
		ch := b.clients[c.client]
		if ch == nil {
			ch = &clientHold{}
			b.clients[c.client] = ch
		}
		ch.claims++
		ch.need += c.max
		b.need += c.max
	}
	ch := b.clients[c.client]
	c.held += n
	b.held += n
	ch.held += n
	b.need -= n
	ch.need -= n
}

type verdict int

const (
	grantNow      verdict = iota
	waitForBudget         // no room, or no safe order, in the whole budget
	waitForClient         // the same within the client's share
)

// grantable tells whether c may take n more bytes now: the bytes are there, and afterwards the
// open claims can still all finish in some order, in the whole budget and within each client's
// share. The shares are independent resources (a claim's growth changes only the budget and its
// own client's share), so only the budget and c's client need checking. b.mu is held.
func (b *bodyBudget) grantable(c *claim, n int64) verdict {
	held, need := b.held+n, b.need-n
	clientHeld, clientNeed := n, -n
	if ch := b.clients[c.client]; ch != nil {
		clientHeld, clientNeed = ch.held+n, ch.need-n
	}
	if !c.open { // its whole max becomes a need
		need += c.max
		clientNeed += c.max
	}
	switch {
	case clientHeld > b.perClient:
		return waitForClient
	case held > b.size:
		return waitForBudget
	}
	// The usual case: room for every claim to take all it may still need at once.
	if b.perClient-clientHeld < clientNeed && !b.safe(c, n, b.perClient-clientHeld, true) {
		return waitForClient
	}
	if b.size-held < need && !b.safe(c, n, b.size-held, false) {
		return waitForBudget
	}
	return grantNow
}

// safe runs the banker's check with c holding n more and free bytes left: claims (all of them, or
// c's client's), taken by what they may still need, smallest first (which finds an order if there
// is one, for a single resource), each finish and give back what they hold; the state is safe if
// every one can. b.mu is held.
func (b *bodyBudget) safe(c *claim, n, free int64, sameClient bool) bool {
	type entry struct{ held, need int64 }
	entries := make([]entry, 0, len(b.claims)+1)
	for o := range b.claims {
		if o != c && (!sameClient || o.client == c.client) {
			entries = append(entries, entry{o.held, o.max - o.held})
		}
	}
	entries = append(entries, entry{c.held + n, c.max - c.held - n})
	slices.SortFunc(entries, func(x, y entry) int { return cmp.Compare(x.need, y.need) })
	for _, e := range entries {
		if e.need > free {
			return false
		}
		free += e.held
	}
	return true
}
