package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
)

// 503 and 429 are retried after the Retry-After the server asked for, and every event ends
// stored exactly once.
func TestRetryHonoursRetryAfter(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, func(n int, _ *request) action {
		return []action{unavailable, tooMany, pass}[min(n, 3)-1]
	})
	c := f.client(e, fastRetry) // backoff alone would wait at most 20 ms
	events := searches("ra", 50)
	start := time.Now()
	res, err := c.SendBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	seen := f.seen()
	if len(seen) != 3 || res.Requests != 3 {
		t.Fatalf("%d requests, want 3", len(seen))
	}
	for i := 1; i < 3; i++ {
		if gap := seen[i].at.Sub(seen[i-1].at); gap < time.Second || gap > 3*time.Second {
			t.Errorf("retry %d came %s after the answer asking for 1 s", i, gap)
		}
	}
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("took %s", took)
	}
	if res.Accepted != 50 || res.Duplicates != 0 {
		t.Errorf("counts %+v", res)
	}
	e.exactlyOnce(ids(res.Results))
}

// A Retry-After longer than the time left in the budget ends the retries at once: no sleeping
// for an hour, and the events are reported failed with the server's answer.
func TestRetryAfterBeyondTheBudgetFailsAtOnce(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(unavailable))
	f.retryAfter = "3600"
	policy := fastRetry
	policy.MaxElapsed = 5 * time.Second
	c := f.client(e, policy)
	start := time.Now()
	res, err := c.SendBatch(context.Background(), searches("budget", 3))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s", took)
	}
	if !errors.Is(err, client.ErrNotDelivered) || res.Failed != 3 || len(f.seen()) != 1 {
		t.Fatalf("%+v, %v; %d requests", res, err, len(f.seen()))
	}
	var se *client.ServerError
	if r := res.Results[0]; r.Status != client.StatusFailed || !errors.As(r.Err, &se) || se.StatusCode != 503 || se.RetryAfter != time.Hour {
		t.Errorf("result %+v", r)
	}
	if n := len(e.stored()); n != 0 {
		t.Errorf("%d stored", n)
	}
}

// An attempt the server does not answer is abandoned after AttemptTimeout and retried.
func TestHangingAttemptIsAbandonedAndRetried(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, first(hang, 1))
	policy := fastRetry
	policy.AttemptTimeout = 300 * time.Millisecond
	c := f.client(e, policy)
	start := time.Now()
	res, err := c.SendBatch(context.Background(), searches("hang", 10))
	if err != nil {
		t.Fatal(err)
	}
	seen := f.seen()
	if len(seen) != 2 || res.Requests != 2 {
		t.Fatalf("%d requests, want 2", len(seen))
	}
	// The first attempt started after start, so the retry cannot arrive before start plus the
	// attempt timeout. (The gap between the server's arrival times is no bound: on a loaded
	// machine the first arrival is noted late.)
	if gap := seen[1].at.Sub(start); gap < 300*time.Millisecond {
		t.Errorf("retried %s after the send began, before the first attempt's 300 ms timeout", gap)
	}
	e.exactlyOnce(ids(res.Results))
}

// Connections reset before the server saw the request: retried, stored once.
func TestResetBeforeForwardingIsRetried(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, first(resetBefore, 2))
	c := f.client(e, fastRetry)
	res, err := c.SendBatch(context.Background(), searches("rb", 20))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(f.seen()); n != 3 || res.Accepted != 20 || res.Duplicates != 0 {
		t.Errorf("%d requests, counts %+v", n, res)
	}
	e.exactlyOnce(ids(res.Results))
}

// A connection reset after the server stored the batch: the retry finds every event a duplicate,
// which counts as delivered, and nothing is stored twice. The same for a single event.
func TestResetAfterStoringCountsDuplicatesAsDelivered(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, func(n int, _ *request) action {
		if n == 1 || n == 3 {
			return resetAfter
		}
		return pass
	})
	c := f.client(e, fastRetry)
	res, err := c.SendBatch(context.Background(), searches("ra", 20))
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 2 || res.Accepted != 0 || res.Duplicates != 20 || res.Delivered() != 20 {
		t.Errorf("counts %+v", res)
	}
	for _, r := range res.Results {
		if r.Status != client.StatusDelivered {
			t.Errorf("result %+v", r)
		}
	}
	single, err := c.Send(context.Background(), client.Search("x", client.NewUser("u")))
	if err != nil || single.Status != client.StatusDelivered {
		t.Fatalf("Send: %+v %v", single, err)
	}
	if n := len(f.seen()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	e.exactlyOnce(append(ids(res.Results), single.EventID))
}

// A 400 is never retried: the events are reported rejected with the server's code after one
// request, batch or single.
func TestBadRequestIsNeverRetried(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(badRequest))
	f.bad = gen.Error{Code: gen.ErrorCodeInvalidJson, Message: "injected"}
	c := f.client(e, fastRetry)
	res, err := c.SendBatch(context.Background(), searches("bad", 5))
	if !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("err = %v", err)
	}
	var se *client.ServerError
	for _, r := range res.Results {
		if r.Status != client.StatusRejected || r.Code != string(gen.ErrorCodeInvalidJson) || !errors.As(r.Err, &se) || se.StatusCode != 400 {
			t.Errorf("result %+v", r)
		}
	}
	if _, err := c.Send(context.Background(), client.Search("x", client.NewUser("u"))); !errors.As(err, &se) || se.StatusCode != 400 {
		t.Errorf("Send: %v", err)
	}
	if n := len(f.seen()); n != 2 || res.Requests != 1 {
		t.Errorf("%d requests, want 2: one for the batch, one for the event", n)
	}
	if n := len(e.stored()); n != 0 {
		t.Errorf("%d stored", n)
	}
}

// A 400 naming one element rejects that event with the server's code and sends the others again
// without it; no request body is ever sent twice.
func TestBadRequestNamingAnEventSendsTheOthers(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, first(badRequest, 1))
	f.bad = gen.Error{Code: gen.ErrorCodeEventTooLarge, Message: "injected", Index: ptr(2)}
	c := f.client(e, fastRetry)
	res, err := c.SendBatch(context.Background(), searches("idx", 5))
	if !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("err = %v", err)
	}
	for i, r := range res.Results {
		want := client.StatusDelivered
		if i == 2 {
			want = client.StatusRejected
		}
		if r.Status != want || (i == 2 && r.Code != string(gen.ErrorCodeEventTooLarge)) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	seen := f.seen()
	if len(seen) != 2 || !slices.Equal(seen[1].events, []string{"idx-0", "idx-1", "idx-3", "idx-4"}) {
		t.Errorf("requests %+v", seen)
	}
	e.exactlyOnce([]string{"idx-0", "idx-1", "idx-3", "idx-4"})
}

// A payload_too_large for a batch (a server or proxy with smaller limits) splits it in halves
// until the parts go through; no part is sent twice and every event is stored once.
func TestPayloadTooLargeSplitsTheBatch(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, func(_ int, r *request) action {
		if r.size > 150000 {
			return badRequest
		}
		return pass
	})
	f.bad = gen.Error{Code: gen.ErrorCodePayloadTooLarge, Message: "injected"}
	c := f.client(e, fastRetry)
	events := make([]gen.Event, 20)
	for i := range events {
		events[i] = paddedEvent(t, fmt.Sprintf("split-%d", i), 20000)
	}
	res, err := c.SendBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	// 20 events (400 KB) refused, 2 × 10 refused, 4 × 5 (100 KB) stored.
	if n := len(f.seen()); n != 7 || res.Requests != 7 {
		t.Errorf("%d requests, want 7", n)
	}
	e.exactlyOnce(ids(res.Results))
}

// Retries end after MaxAttempts, with the events failed and the last answer as the error.
func TestRetriesAreBoundedInAttempts(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(badGateway))
	policy := fastRetry
	policy.MaxAttempts = 4
	c := f.client(e, policy)
	res, err := c.SendBatch(context.Background(), searches("502", 3))
	if !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("err = %v", err)
	}
	var se *client.ServerError
	for _, r := range res.Results {
		if r.Status != client.StatusFailed || !errors.As(r.Err, &se) || se.StatusCode != http.StatusBadGateway {
			t.Errorf("result %+v", r)
		}
	}
	if n := len(f.seen()); n != 4 || res.Failed != 3 {
		t.Errorf("%d requests, %d failed; want 4 and 3", n, res.Failed)
	}
}

// Retries end when the time budget would be overrun, whatever MaxAttempts says.
func TestRetriesAreBoundedInTime(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(badGateway))
	policy := client.RetryPolicy{MaxAttempts: 1000, MaxElapsed: 500 * time.Millisecond, BaseDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond}
	c := f.client(e, policy)
	start := time.Now()
	res, err := c.SendBatch(context.Background(), searches("time", 2))
	took := time.Since(start)
	if !errors.Is(err, client.ErrNotDelivered) || res.Failed != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	if took > 2*time.Second || len(f.seen()) < 2 || len(f.seen()) > 100 {
		t.Errorf("took %s for %d requests", took, len(f.seen()))
	}
}

// Cancelling the context stops an attempt in flight and the retries; the events are failed with
// the context's error.
func TestCancelStopsEverything(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(hang))
	c := f.client(e, fastRetry) // attempts time out after 10 s
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		f.waitFor(10 * time.Second)
		cancel()
	}()
	start := time.Now()
	res, err := c.SendBatch(ctx, searches("cancel", 3))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s after the cancel", took)
	}
	if !errors.Is(err, context.Canceled) || res.Failed != 3 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, r := range res.Results {
		if r.Status != client.StatusFailed || !errors.Is(r.Err, context.Canceled) {
			t.Errorf("result %+v", r)
		}
	}
	// A call with a context already cancelled makes no request.
	before := len(f.seen())
	if res, err := c.SendBatch(ctx, searches("late", 2)); !errors.Is(err, context.Canceled) || res.Requests != 0 {
		t.Errorf("%+v %v", res, err)
	}
	if n := len(f.seen()); n != before {
		t.Errorf("%d requests with a cancelled context", n-before)
	}
}

// The retry observer hears of every attempt that is retried, with its number, the error and the
// wait before the next one (the server's Retry-After when it gave one); not of the attempt that
// succeeds, nor of one that ends the retries. Through a Batcher too, and for a refused connection.
func TestRetryObserverReportsEachRetry(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, func(n int, _ *request) action {
		return []action{badGateway, unavailable, pass, badRequest}[min(n, 4)-1]
	})
	f.bad = gen.Error{Code: gen.ErrorCodeInvalidJson, Message: "injected"}
	var mu sync.Mutex
	var seen []client.RetryAttempt
	observe := func(a client.RetryAttempt) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, a)
	}
	reported := func() []client.RetryAttempt {
		mu.Lock()
		defer mu.Unlock()
		return append([]client.RetryAttempt(nil), seen...)
	}
	c, err := client.New(f.URL, e.Site, e.Key, client.WithLogger(quiet), client.WithRetry(fastRetry), client.WithRetryObserver(observe))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SendBatch(context.Background(), searches("obs", 5))
	if err != nil || res.Requests != 3 {
		t.Fatalf("%+v %v", res, err)
	}
	got := reported()
	var se *client.ServerError
	if len(got) != 2 {
		t.Fatalf("%d retries reported, want 2: %+v", len(got), got)
	}
	if a := got[0]; a.Attempt != 1 || !errors.As(a.Err, &se) || se.StatusCode != http.StatusBadGateway || a.Wait < 0 || a.Wait > fastRetry.MaxDelay {
		t.Errorf("first report %+v, want attempt 1, HTTP 502 and a backoff of at most %s", a, fastRetry.MaxDelay)
	}
	if a := got[1]; a.Attempt != 2 || !errors.As(a.Err, &se) || se.StatusCode != http.StatusServiceUnavailable || a.Wait != time.Second {
		t.Errorf("second report %+v, want attempt 2, HTTP 503 and the server's Retry-After of 1 s", a)
	}
	if _, err := c.SendBatch(context.Background(), searches("obs-400", 1)); !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest {
		t.Fatalf("err = %v, want the injected 400", err)
	}
	if n := len(reported()); n != 2 {
		t.Errorf("%d reports after a 400, which is never retried", n-2)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // connections are refused
	mu.Lock()
	seen = nil
	mu.Unlock()
	policy := fastRetry
	policy.MaxAttempts = 3
	c, err = client.New(down, e.Site, e.Key, client.WithLogger(quiet), client.WithRetry(policy), client.WithRetryObserver(observe))
	if err != nil {
		t.Fatal(err)
	}
	b := c.NewBatcher(client.BatcherOptions{FlushInterval: time.Millisecond, OnResult: func(client.Result) {}})
	if err := b.Enqueue(context.Background(), searches("down", 1)[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Close(context.Background()); !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("close: %v, want the event failed", err)
	}
	got = reported()
	if len(got) != 2 || b.Stats().Failed != 1 {
		t.Fatalf("%d retries reported for 3 attempts, %d failed: %+v", len(got), b.Stats().Failed, got)
	}
	for i, a := range got {
		if a.Attempt != i+1 || !errors.Is(a.Err, syscall.ECONNREFUSED) {
			t.Errorf("report %d: %+v, want attempt %d refused", i, a, i+1)
		}
	}
}

func ptr[T any](v T) *T { return &v }
