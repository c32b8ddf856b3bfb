package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"
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
type bodyBudget struct {
	sem  *semaphore.Weighted
	size int64
	wait time.Duration
}

func newBodyBudget(size int64, wait time.Duration) *bodyBudget {
	if size <= 0 {
		size = DefaultBodyBudget
	}
	if wait <= 0 {
		wait = DefaultBodyWait
	}
	return &bodyBudget{sem: semaphore.NewWeighted(size), size: size, wait: wait}
}

// reserve takes n bytes of the budget, waiting at most the budget's wait; release gives them back.
func (b *bodyBudget) reserve(ctx context.Context, n int64) (release func(), err error) {
	n = min(n, b.size)
	ctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if err := b.sem.Acquire(ctx, n); err != nil {
		return nil, fmt.Errorf("%w: no room for a %d-byte body among the %d bytes of bodies in flight within %s",
			errOverloaded, n, b.size, b.wait)
	}
	return func() { b.sem.Release(n) }, nil
}
