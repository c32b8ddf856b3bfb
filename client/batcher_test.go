package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
)

// results collects what OnResult reports, and signals each one.
type results struct {
	mu  sync.Mutex
	all []client.Result
	ch  chan client.Result
}

func newResults() *results { return &results{ch: make(chan client.Result, 100000)} }

func (r *results) add(res client.Result) {
	r.mu.Lock()
	r.all = append(r.all, res)
	r.mu.Unlock()
	r.ch <- res
}

func (r *results) list() []client.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Result(nil), r.all...)
}

// checkStats asserts the Stats invariant after Close: nothing pending.
func checkStats(t *testing.T, s client.Stats) {
	t.Helper()
	if s.Pending() != 0 || s.Enqueued != s.Accepted+s.Duplicates+s.Rejected+s.Failed {
		t.Errorf("stats %+v: %d pending after Close", s, s.Pending())
	}
}

// Many producers, a server that resets connections before and after storing and asks for
// retries: every event taken is delivered and stored exactly once, and reported once.
func TestBatcherDeliversEveryEventOnce(t *testing.T) {
	e := newEnv(t)
	// Each batch meets two faults (its first attempts), then gets through: a reset after the
	// server stored it (the retry finds duplicates), a reset before, or a 502.
	attempts := map[string]int{}
	f := newFaultServer(t, e.Handler, func(n int, r *request) action {
		first := r.events[0]
		attempts[first]++ // the fault server calls the script under its lock
		switch attempts[first] {
		case 1:
			return []action{resetAfter, resetBefore, badGateway}[n%3]
		case 2:
			return []action{badGateway, resetAfter, resetBefore}[n%3]
		}
		return pass
	})
	c := f.client(e, fastRetry)
	got := newResults()
	b := c.NewBatcher(client.BatcherOptions{
		MaxEvents: 100, FlushInterval: 20 * time.Millisecond, Concurrency: 4, QueueSize: 500,
		EnqueueTimeout: 10 * time.Second, OnResult: got.add,
	})
	var wg sync.WaitGroup
	var want []string
	for p := range 8 {
		for i := range 500 {
			want = append(want, fmt.Sprintf("p%d-%d", p, i))
		}
		wg.Go(func() {
			for i := range 500 {
				ev := client.Search("t-shirts", client.NewUser("u"))
				ev.Context.EventId = fmt.Sprintf("p%d-%d", p, i)
				if err := b.Enqueue(context.Background(), ev); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	undelivered, err := b.Close(ctx)
	if err != nil || len(undelivered) != 0 {
		t.Fatalf("Close: %d undelivered, %v", len(undelivered), err)
	}
	s := b.Stats()
	checkStats(t, s)
	if s.Enqueued != 4000 || s.Delivered() != 4000 || s.Duplicates == 0 {
		t.Errorf("stats %+v; want 4000 delivered, some as duplicates after the resets", s)
	}
	reported := got.list()
	indices := map[int]bool{}
	for _, r := range reported {
		if r.Status != client.StatusDelivered {
			t.Errorf("result %+v", r)
		}
		indices[r.Index] = true
	}
	if len(reported) != 4000 || len(indices) != 4000 {
		t.Errorf("%d results with %d distinct indices, want 4000", len(reported), len(indices))
	}
	e.exactlyOnce(want)
}

// A batch goes out as soon as it holds MaxEvents; the rest waits for Close.
func TestBatcherFlushesOnCount(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	b := c.NewBatcher(client.BatcherOptions{MaxEvents: 10, FlushInterval: time.Hour, Concurrency: 1})
	for _, ev := range searches("count", 25) {
		if err := b.Enqueue(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if r := f.waitFor(5 * time.Second); len(r.events) != 10 {
			t.Errorf("request %d has %d events, want 10", i, len(r.events))
		}
	}
	closed := time.Now()
	if _, err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := f.seen()
	if len(seen) != 3 || len(seen[2].events) != 5 || seen[2].at.Before(closed) {
		t.Errorf("requests %+v; want the last 5 events sent on Close", seen)
	}
	checkStats(t, b.Stats())
	e.exactlyOnce(ids(fakeResults(searches("count", 25))))
}

// fakeResults lists the ids of events as results, for exactlyOnce.
func fakeResults(events []gen.Event) []client.Result {
	out := make([]client.Result, len(events))
	for i, ev := range events {
		out[i].EventID = ev.Context.EventId
	}
	return out
}

// A batch goes out when the next event would make its body larger than MaxBytes.
func TestBatcherFlushesOnSize(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	const maxBytes = 40000 // three events of 10000 bytes fit (30014 bytes), four do not
	b := c.NewBatcher(client.BatcherOptions{MaxBytes: maxBytes, FlushInterval: time.Hour, Concurrency: 1})
	var want []string
	for i := range 9 {
		id := fmt.Sprintf("size-%d", i)
		want = append(want, id)
		if err := b.EnqueueRaw(context.Background(), paddedRaw(t, id, 10000, true)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if r := f.waitFor(5 * time.Second); len(r.events) != 3 || r.size > maxBytes {
			t.Errorf("request %d: %d events, %d bytes", i, len(r.events), r.size)
		}
	}
	if _, err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if seen := f.seen(); len(seen) != 3 || len(seen[2].events) != 3 {
		t.Errorf("requests %+v", seen)
	}
	e.exactlyOnce(want)
}

// A batch goes out FlushInterval after its first event, however small.
func TestBatcherFlushesOnInterval(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	b := c.NewBatcher(client.BatcherOptions{FlushInterval: 50 * time.Millisecond})
	defer b.Close(context.Background())
	start := time.Now()
	for _, ev := range searches("tick", 3) {
		if err := b.Enqueue(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	r := f.waitFor(5 * time.Second)
	if len(r.events) != 3 || r.at.Sub(start) < 50*time.Millisecond {
		t.Errorf("request with %d events %s after the first", len(r.events), r.at.Sub(start))
	}
}

// fillPipeline fills a Batcher with MaxEvents 1, QueueSize 5 and one sender while the server
// holds every request: one event in flight, one in a batch waiting for the sender, five queued.
// It returns their ids.
func fillPipeline(t *testing.T, b *client.Batcher, f *faultServer, prefix string) []string {
	t.Helper()
	var taken []string
	enqueue := func() {
		ev := client.Search("x", client.NewUser("u"))
		ev.Context.EventId = fmt.Sprintf("%s-%d", prefix, len(taken))
		start := time.Now()
		if err := b.Enqueue(context.Background(), ev); err != nil || time.Since(start) > time.Second {
			t.Fatalf("Enqueue %d with room: %v after %s", len(taken), err, time.Since(start))
		}
		taken = append(taken, ev.Context.EventId)
	}
	enqueue()
	f.waitFor(5 * time.Second) // in flight, held
	enqueue()
	// Taken from the queue into a batch, which waits for the busy sender.
	for deadline := time.Now().Add(5 * time.Second); b.Stats().Queued != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: the second event stays queued", b.Stats())
		}
	}
	for range 5 {
		enqueue()
	}
	if s := b.Stats(); s.Queued != 5 || s.Enqueued != 7 {
		t.Fatalf("stats %+v after filling", s)
	}
	return taken
}

// refusedAfter enqueues one more event and says how long Enqueue took to refuse it.
func refusedAfter(t *testing.T, b *client.Batcher) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	err := b.Enqueue(context.Background(), client.Search("x", client.NewUser("u")))
	return err, time.Since(start)
}

// With Drop, a full queue refuses events at once, counted; what was taken is delivered once the
// server lets requests through.
func TestBatcherDropPolicy(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(hold))
	c := f.client(e, fastRetry)
	b := c.NewBatcher(client.BatcherOptions{MaxEvents: 1, QueueSize: 5, Concurrency: 1, Overflow: client.Drop})
	taken := fillPipeline(t, b, f, "drop")
	for range 10 {
		if err, took := refusedAfter(t, b); !errors.Is(err, client.ErrQueueFull) || took > 500*time.Millisecond {
			t.Errorf("Enqueue on a full queue: %v after %s; want ErrQueueFull at once", err, took)
		}
	}
	if s := b.Stats(); s.Dropped != 10 || s.Enqueued != 7 {
		t.Errorf("stats %+v; want 10 dropped, 7 enqueued", s)
	}
	f.release()
	if _, err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkStats(t, b.Stats())
	e.exactlyOnce(taken)
}

// With Block, a full queue makes Enqueue wait for room, never longer than EnqueueTimeout nor past
// its context or Close; an Enqueue waiting when room frees up takes the event.
func TestBatcherBlockPolicyIsBounded(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(hold))
	c := f.client(e, fastRetry)
	b := c.NewBatcher(client.BatcherOptions{MaxEvents: 1, QueueSize: 5, Concurrency: 1, EnqueueTimeout: 300 * time.Millisecond})
	taken := fillPipeline(t, b, f, "block")
	if err, took := refusedAfter(t, b); !errors.Is(err, client.ErrQueueFull) || took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Enqueue on a full queue: %v after %s; want ErrQueueFull after 300 ms", err, took)
	}

	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error)
	go func() { waiting <- b.Enqueue(ctx, client.Search("x", client.NewUser("u"))) }()
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with its context cancelled: %v", err)
	}

	// An Enqueue waiting while the server holds everything gets room once it lets go.
	started := make(chan struct{})
	ev := client.Search("x", client.NewUser("u"))
	ev.Context.EventId = "block-late"
	go func() {
		close(started)
		waiting <- b.Enqueue(context.Background(), ev)
	}()
	<-started
	f.release()
	if err := <-waiting; err != nil {
		t.Errorf("Enqueue when room freed up: %v", err)
	} else {
		taken = append(taken, "block-late")
	}
	if _, err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := b.Stats()
	checkStats(t, s)
	if s.Dropped != 2 {
		t.Errorf("stats %+v; want 2 dropped (the timeout and the cancelled context)", s)
	}
	e.exactlyOnce(taken)
}

// Close while an Enqueue waits for room: the Enqueue returns ErrClosed at once rather than at its
// one-minute timeout, and the events taken but held by the server come back from Close.
func TestBatcherCloseWakesWaitingEnqueue(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(hold))
	c := f.client(e, fastRetry)
	b := c.NewBatcher(client.BatcherOptions{MaxEvents: 1, QueueSize: 1, Concurrency: 1, EnqueueTimeout: time.Minute})
	errs := make(chan error, 10)
	go func() {
		for _, ev := range searches("wake", 10) {
			errs <- b.Enqueue(context.Background(), ev)
		}
	}()
	f.waitFor(5 * time.Second)
	// Three events fill the pipeline (one in flight, one handed over, one queued); the fourth is
	// counted as soon as Enqueue starts waiting for room.
	for deadline := time.Now().Add(5 * time.Second); b.Stats().Enqueued < 4; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: the fourth Enqueue never started", b.Stats())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	undelivered, err := b.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || len(undelivered) != 3 {
		t.Errorf("Close: %d undelivered, %v; want the 3 events taken", len(undelivered), err)
	}
	for i := range 10 {
		select {
		case err := <-errs:
			if (i < 3) != (err == nil) || (i >= 3 && !errors.Is(err, client.ErrClosed)) {
				t.Errorf("Enqueue %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Enqueue %d still waiting after Close", i)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s", took)
	}
	checkStats(t, b.Stats())
}

// With the server down, Close gives up when its context ends and returns every event it could
// not deliver, failed, exactly as queued; nothing is left pending and each was reported once.
func TestBatcherCloseReturnsUndelivered(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(badGateway))
	c := f.client(e, client.RetryPolicy{MaxElapsed: time.Minute, BaseDelay: 50 * time.Millisecond, MaxDelay: 100 * time.Millisecond, MaxAttempts: 1000})
	got := newResults()
	b := c.NewBatcher(client.BatcherOptions{MaxEvents: 10, FlushInterval: time.Hour, OnResult: got.add})
	events := searches("down", 35)
	for _, ev := range events {
		if err := b.Enqueue(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	undelivered, err := b.Close(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %s with a 300 ms context", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v", err)
	}
	var gotIDs []string
	for _, r := range undelivered {
		if r.Status != client.StatusFailed || !errors.Is(r.Err, client.ErrClosed) || eventID(t, r.Event) != r.EventID {
			t.Errorf("undelivered %+v", r)
		}
		gotIDs = append(gotIDs, r.EventID)
	}
	wantIDs := ids(fakeResults(events))
	slices.Sort(gotIDs)
	slices.Sort(wantIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("Close returned %v, want %v", gotIDs, wantIDs)
	}
	s := b.Stats()
	checkStats(t, s)
	if s.Failed != 35 || len(got.list()) != 35 {
		t.Errorf("stats %+v, %d reported", s, len(got.list()))
	}
	if _, err := b.Close(context.Background()); !errors.Is(err, client.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Enqueue(context.Background(), events[0]); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Enqueue after Close: %v", err)
	}
}

// Events that fail while the Batcher runs are reported to OnResult and counted then; Close
// returns only those it could not deliver itself.
func TestBatcherReportsFailuresAsTheyHappen(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(badGateway))
	c := f.client(e, client.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	got := newResults()
	b := c.NewBatcher(client.BatcherOptions{MaxEvents: 5, OnResult: got.add})
	for _, ev := range searches("early", 5) {
		if err := b.Enqueue(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		select {
		case r := <-got.ch:
			if r.Status != client.StatusFailed {
				t.Errorf("result %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no failure reported within 5 s")
		}
	}
	if s := b.Stats(); s.Failed != 5 || s.Pending() != 0 {
		t.Errorf("stats %+v", s)
	}
	undelivered, err := b.Close(context.Background())
	if err != nil || len(undelivered) != 0 {
		t.Errorf("Close: %d, %v", len(undelivered), err)
	}
	if n := len(f.seen()); n != 2 {
		t.Errorf("%d requests, want 2 (MaxAttempts)", n)
	}
}
