package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Claims that grow as their bodies arrive, more of them than the budget could hold at once, all
// finish: a growth that would leave no order in which they can is made to wait, instead of every
// claim ending up with part of its body and waiting for the rest, which is what granting any
// growth that fits does here (8 claims of 400 in 1000 bytes, growing in steps of 50 in turn: the
// budget fills with unfinished claims, and they are refused when their wait runs out). None waits
// out the budget's wait.
func TestBudgetGrowingClaimsAllFinish(t *testing.T) {
	b := newBodyBudget(1000, 1000, 5*time.Second)
	const claims, most, step = 8, 400, 50
	var wg sync.WaitGroup
	errs := make(chan error, claims)
	start := make(chan struct{})
	for range claims {
		wg.Go(func() {
			c := b.claim("client", most)
			defer c.close()
			<-start
			for c.held < most {
				if err := c.grow(context.Background(), step); err != nil {
					errs <- err
					return
				}
				time.Sleep(time.Millisecond) // the next bytes arrive
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a claim did not finish: %v", err)
	}
	if b.held != 0 || b.need != 0 || len(b.claims) != 0 || len(b.clients) != 0 {
		t.Errorf("after every claim closed: held %d, need %d, %d claims, %d clients", b.held, b.need, len(b.claims), len(b.clients))
	}
}

// Claims that hold little and may need much (senders that announced large bodies and stalled)
// do not stop another claim from growing to its end at once: they only need room to finish one
// at a time, after it.
func TestBudgetStalledClaimsDoNotBlock(t *testing.T) {
	b := newBodyBudget(10_000, 10_000, time.Second)
	for range 500 {
		c := b.claim("stalled", 5000)
		if err := c.grow(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
	}
	c := b.claim("honest", 4000)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	for c.held < 4000 {
		if err := c.grow(ctx, 500); err != nil {
			t.Fatalf("holding %d of 4000 beside 500 stalled claims: %v", c.held, err)
		}
	}
}

// One client holds at most its share: past it, its growth waits (and then is refused as an
// overload), while another client still grows. A claim larger than the share is cut to it.
func TestBudgetPerClientShare(t *testing.T) {
	b := newBodyBudget(10_000, 4000, 50*time.Millisecond)
	greedy := b.claim("greedy", 3000)
	if err := greedy.grow(context.Background(), 3000); err != nil {
		t.Fatal(err)
	}
	more := b.claim("greedy", 3000)
	if err := more.grow(context.Background(), 1000); err != nil {
		t.Fatal(err)
	}
	if err := more.grow(context.Background(), 1000); !errors.Is(err, errOverloaded) {
		t.Fatalf("past its share, a client's growth got %v, want errOverloaded", err)
	}
	other := b.claim("other", 4000)
	if err := other.grow(context.Background(), 4000); err != nil {
		t.Fatalf("another client: %v", err)
	}
	if huge := b.claim("x", 9000); huge.max != 4000 {
		t.Errorf("a claim of 9000 with a share of 4000 may hold %d", huge.max)
	}
	// Giving bytes back wakes a waiting growth.
	done := make(chan error, 1)
	b.wait = 5 * time.Second
	go func() { done <- more.grow(context.Background(), 1000) }()
	time.Sleep(20 * time.Millisecond)
	greedy.close()
	if err := <-done; err != nil {
		t.Fatalf("after the client gave bytes back: %v", err)
	}
}

// A waiting growth ends with the context (the client went away).
func TestBudgetWaitEndsWithContext(t *testing.T) {
	b := newBodyBudget(100, 100, time.Minute)
	full := b.claim("a", 100)
	if err := full.grow(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.claim("b", 50).grow(ctx, 50) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// The line is served by what claims may still need, smallest first, and nobody passes a claim
// that waits for room in the budget: a new claim that would fit waits behind it, and is served
// after it when bytes come back.
func TestBudgetLineOrder(t *testing.T) {
	b := newBodyBudget(1000, 1000, 5*time.Second)
	done := b.claim("x", 900) // a body read, waiting for its commit
	if err := done.grow(context.Background(), 900); err != nil {
		t.Fatal(err)
	}
	near := b.claim("a", 400)
	if err := near.grow(context.Background(), 50); err != nil {
		t.Fatal(err)
	}
	granted := make(chan error, 2)
	go func() { granted <- near.grow(context.Background(), 200) }() // no room: 1150 > 1000
	waitForLine(t, b, 1)
	late := b.claim("c", 500)
	go func() { granted <- late.grow(context.Background(), 50) }() // would fit, but waits behind
	waitForLine(t, b, 2)
	held := func(c *claim) int64 {
		b.mu.Lock()
		defer b.mu.Unlock()
		return c.held
	}
	if held(late) != 0 {
		t.Fatal("a claim passed one that waits for room in the budget")
	}
	done.release(150) // room for the first in line only
	if err := <-granted; err != nil {
		t.Fatal(err)
	}
	if held(near) != 250 || held(late) != 0 {
		t.Fatalf("after 150 bytes came back: near holds %d, late %d; want 250 and 0", held(near), held(late))
	}
	done.close()
	if err := <-granted; err != nil || held(late) != 50 {
		t.Fatalf("after the rest came back: late holds %d (%v), want 50", held(late), err)
	}
}

// waitForLine waits until n growths wait in line.
func waitForLine(t *testing.T, b *bodyBudget, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		waiting := len(b.waiters)
		b.mu.Unlock()
		if waiting == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d growths in line, want %d", waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}
