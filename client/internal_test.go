package client

import (
	"math/rand/v2"
	"testing"
	"time"
)

// fewestInOrder is the fewest batches for events of these sizes when batches keep the events'
// order, by dynamic programming: the reference the greedy pack must match.
func fewestInOrder(sizes []int, maxBytes int) int {
	best := make([]int, len(sizes)+1) // best[i]: fewest batches for the first i events
	for i := 1; i <= len(sizes); i++ {
		best[i] = len(sizes) + 1
		sum := 0
		for j := i; j >= 1; j-- { // the last batch holds events j-1 .. i-1
			sum += sizes[j-1]
			if batchBodySize(i-j+1, sum) > maxBytes {
				break
			}
			best[i] = min(best[i], best[j-1]+1)
		}
	}
	return best[len(sizes)]
}

// pack makes as few batches as any in-order packing could, each within the limits, and keeps
// every event once, in order.
func TestPackIsMinimalAndWithinLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for round := range 100 {
		n := 1 + rng.IntN(120)
		maxEvents := 0
		if round%3 == 0 {
			maxEvents = 1 + rng.IntN(50)
		}
		events := make([]encoded, n)
		sizes := make([]int, n)
		for i := range events {
			// Mostly small events, some at or near the limit.
			size := 2 + rng.IntN(3000)
			if rng.IntN(5) == 0 {
				size = MaxEventBytes - rng.IntN(100)
			}
			events[i] = encoded{index: i, raw: make([]byte, size)}
			sizes[i] = size
		}
		batches := pack(events, MaxBatchBytes, maxEvents)
		next := 0
		for _, b := range batches {
			sum := 0
			for _, e := range b {
				if e.index != next {
					t.Fatalf("round %d: event %d where %d was expected", round, e.index, next)
				}
				next++
				sum += len(e.raw)
			}
			if len(b) == 0 || batchBodySize(len(b), sum) > MaxBatchBytes || (maxEvents > 0 && len(b) > maxEvents) {
				t.Fatalf("round %d: a batch of %d events and %d bytes", round, len(b), batchBodySize(len(b), sum))
			}
			if got := len(batchBody(b)); round%10 == 0 && got != batchBodySize(len(b), sum) {
				t.Fatalf("round %d: body of %d bytes, computed %d", round, got, batchBodySize(len(b), sum))
			}
		}
		if next != n {
			t.Fatalf("round %d: %d of %d events packed", round, next, n)
		}
		if maxEvents == 0 {
			if want := fewestInOrder(sizes, MaxBatchBytes); len(batches) != want {
				t.Fatalf("round %d: %d batches, the fewest is %d", round, len(batches), want)
			}
		}
	}
}

// The backoff is full jitter under a ceiling that doubles from BaseDelay up to MaxDelay.
func TestBackoffCeilings(t *testing.T) {
	c := &Client{retry: RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second}.withDefaults()}
	c.jitter = func(n int64) int64 { return n - 1 } // the largest draw
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for i, w := range want {
		if got := c.backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("attempt %d: ceiling %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
	if got := c.backoff(200); got != 2*time.Second {
		t.Errorf("attempt 200: %s", got)
	}
	c.jitter = randInt64N
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := c.backoff(3)
		if d < 0 || d > 400*time.Millisecond {
			t.Fatalf("backoff %s outside [0, 400ms]", d)
		}
		seen[d/(40*time.Millisecond)] = true
	}
	if len(seen) < 8 {
		t.Errorf("1000 draws fell in %d of 10 buckets: not uniform", len(seen))
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{"120", 2 * time.Minute, true},
		{"Sun, 01 Jun 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Sun, 01 Jun 2025 11:00:00 GMT", 0, true},
		{"", 0, false}, {"-1", 0, false}, {"soon", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
