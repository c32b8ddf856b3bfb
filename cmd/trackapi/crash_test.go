package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
)

// The load of the crash test: a few workers, each sending its own requests one after another, a
// batch every third request. Small enough for the race-built binary on two cores, large enough
// that every kill lands while requests wait for their commit.
const (
	crashSite      = "5"
	crashWorkers   = 8
	crashBatchSize = 20
	crashKills     = 3
	// crashAcksPerRound is how many events a server must acknowledge before it is stopped, so
	// that each round really runs under load; crashRoundMax bounds the wait.
	crashAcksPerRound = 1000
	crashRoundMax     = 5 * time.Second
)

// A SIGKILL at any moment loses no acknowledged event, and stores none twice: a client that
// retries its unacknowledged requests (same event ids) against the restarted server gets every
// event stored exactly once. The server is killed three times mid-load on the same data
// directory, then stopped with SIGTERM, which must drain the requests in flight and exit cleanly.
func TestCrashKeepsEveryAcknowledgedEvent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills the real binary several times under load")
	}
	began := time.Now()
	data := t.TempDir()
	// Created before the first start, so that serve does not create a source of its own.
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", crashSite, "--name", "crash"))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	load := newCrashLoad(t, key)
	p := startServer(t, data)
	load.retarget(p.URL, 1)
	load.start(ctx)
	t.Cleanup(load.abort) // runs before startServer's cleanups: no request outlives the test

	// Rounds 1..crashKills end with a SIGKILL; every event acknowledged so far, by this server or
	// an earlier one, must be on disk once the process is gone.
	for epoch := 1; epoch <= crashKills; epoch++ {
		load.waitForAcks(t, epoch, crashAcksPerRound, crashRoundMax)
		time.Sleep(rand.N(200 * time.Millisecond)) // kills land at different points of the commit cycle
		err := p.stop(t, syscall.SIGKILL)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("server %d: exit %v, want killed by SIGKILL", epoch, err)
		}
		crashCheckStored(t, data, load.ackedSoFar(), fmt.Sprintf("after SIGKILL %d", epoch))
		p = startServer(t, data)
		load.retarget(p.URL, epoch+1)
	}

	// The SIGTERM round: the server stops accepting, answers what is in flight, then exits.
	termEpoch := crashKills + 1
	load.waitForAcks(t, termEpoch, crashAcksPerRound, crashRoundMax)
	// One request is surely in flight at the signal: its headers and half its body are sent
	// before, the rest after. The server must wait for it, store it and answer 200.
	slow := startSlowRequest(t, load, p.URL, "slow-at-sigterm")
	load.markSignal()
	go func() {
		time.Sleep(300 * time.Millisecond)
		slow.finish()
	}()
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr)
	}
	if r := slow.result(); r.err != nil || r.status != http.StatusOK || r.result.Accepted != 1 {
		t.Errorf("a request half sent at SIGTERM: status %d, %+v, error %v; want 200 with the event accepted", r.status, r.result, r.err)
	} else {
		load.ack([]string{slow.id}, termEpoch)
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log after SIGTERM:\n%s", p.stderr)
	}
	drained, failed, errored, failures := load.inFlightAtSignal()
	if errored > 0 {
		t.Errorf("%d requests in flight at SIGTERM got a 5xx, want none: a graceful stop answers them", errored)
	}
	if failed > 0 {
		// A request written on a keep-alive connection just as the server closes it as idle:
		// never read, so not acknowledged, and retried.
		t.Logf("at SIGTERM %d requests in flight got no answer (retried): %q", failed, failures)
	}
	crashCheckStored(t, data, load.ackedSoFar(), "after SIGTERM")

	// A last server: the workers stop making new requests and retry those still unacknowledged,
	// so that in the end every event any worker sent is acknowledged.
	p = startServer(t, data)
	load.retarget(p.URL, termEpoch+1)
	load.finish(t, 20*time.Second)

	acked := load.ackedSoFar()
	counts := crashCheckStored(t, data, acked, "at the end")
	sent := load.sentIDs()
	if len(acked) != len(sent) {
		t.Errorf("%d events sent but %d acknowledged after the last retries", len(sent), len(acked))
	}
	for id := range counts {
		if !sent[id] {
			t.Errorf("event %s exported but never sent", id)
		}
	}
	s := load.stats()
	t.Logf("%d kills + 1 SIGTERM in %.1fs: %d events sent, %d acknowledged, %d exported; %d requests, %d answered 200, "+
		"%d connection errors, %d retries (%d answered as duplicates: stored before the crash, acknowledged only now), %d 503s; "+
		"at SIGTERM %d requests in flight were answered 200 after the signal and %d failed",
		crashKills, time.Since(began).Seconds(), len(sent), len(acked), len(counts), s.requests, s.ok,
		s.connErrors, s.retries, s.duplicateRetries, s.unavailable, drained, failed)
}

// crashCheckStored exports the data directory and fails the test unless each acknowledged event
// is there exactly once and no event is there twice. acked maps an event id to the server
// (epoch) that acknowledged it, for the message. It returns the export's counts by event id.
func crashCheckStored(t *testing.T, data string, acked map[string]int, when string) map[string]int {
	t.Helper()
	counts, _ := export(t, data) // the test's source is the only one
	missing := map[int]int{}     // epoch -> acknowledged events missing
	var examples []string
	for id, epoch := range acked {
		if counts[id] == 0 {
			missing[epoch]++
			if len(examples) < 5 {
				examples = append(examples, id)
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s: acknowledged events missing from the export, by server that acknowledged them: %v (e.g. %v)", when, missing, examples)
	}
	var twice []string
	for id, n := range counts {
		if n > 1 {
			twice = append(twice, fmt.Sprintf("%s×%d", id, n))
		}
	}
	if len(twice) > 0 {
		sort.Strings(twice)
		t.Errorf("%s: %d events exported more than once: %.10v", when, len(twice), twice)
	}
	t.Logf("%s: %d acknowledged events, all present; %d exported", when, len(acked), len(counts))
	return counts
}

// crashTarget is the server the workers send to, and which one it is (1 for the first start).
type crashTarget struct {
	url   string
	epoch int
}

// crashStats counts what the workers saw.
type crashStats struct {
	requests, ok, connErrors, retries, duplicateRetries, unavailable int
}

// crashLoad is a client that behaves as a careful real one: a request that gets no 200 (the
// server is gone or answers 503) is sent again, with the same event ids, until it is acknowledged.
// It records which server acknowledged each event.
type crashLoad struct {
	t      *testing.T
	key    string
	client *http.Client // checks every response against openapi.yaml

	target   atomic.Pointer[crashTarget]
	stopNew  atomic.Bool  // finish: no new requests, only retries of pending ones
	signalAt atomic.Int64 // unix nanoseconds of the SIGTERM, 0 before it
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu        sync.Mutex
	acked     map[string]int // event id -> epoch of the server that acknowledged it
	sent      map[string]bool
	perEpoch  map[int]int // events acknowledged by each server
	st        crashStats
	atSignal  [3]int   // requests in flight at the SIGTERM: answered 200, failed, answered 5xx
	sigErrors []string // the first errors of those that failed
	ackSignal *sync.Cond
}

func newCrashLoad(t *testing.T, key string) *crashLoad {
	l := &crashLoad{
		t: t, key: key, client: apitest.Client(t),
		acked: map[string]int{}, sent: map[string]bool{}, perEpoch: map[int]int{},
	}
	l.ackSignal = sync.NewCond(&l.mu)
	return l
}

// retarget points the workers at a newly started server.
func (l *crashLoad) retarget(url string, epoch int) {
	l.target.Store(&crashTarget{url: url, epoch: epoch})
}

func (l *crashLoad) start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	for w := range crashWorkers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.work(ctx, w)
		}()
	}
}

// abort stops the workers at once and waits for them.
func (l *crashLoad) abort() {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	l.ackSignal.Broadcast()
	l.mu.Unlock()
}

// finish lets the workers get their pending requests acknowledged, then stops them.
func (l *crashLoad) finish(t *testing.T, within time.Duration) {
	t.Helper()
	l.stopNew.Store(true)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		l.abort()
		t.Fatalf("the workers' pending requests were not acknowledged within %v", within)
	}
}

// work sends this worker's requests in turn, each until it is acknowledged.
func (l *crashLoad) work(ctx context.Context, worker int) {
	for seq := 0; !l.stopNew.Load() && ctx.Err() == nil; seq++ {
		path, ids, body := crashRequest(worker, seq)
		l.mu.Lock()
		for _, id := range ids {
			l.sent[id] = true
		}
		l.mu.Unlock()
		for attempt := 0; ; attempt++ {
			if ctx.Err() != nil {
				return
			}
			if attempt > 0 {
				l.count(func(s *crashStats) { s.retries++ })
			}
			if l.attempt(ctx, path, ids, body, attempt > 0) {
				break
			}
			// Not acknowledged: wait before the retry, longer each time (20 ms up to 320 ms), as a
			// real client does while a server restarts.
			sleepCtx(ctx, 20*time.Millisecond<<min(attempt, 4))
		}
	}
}

// attempt sends one request once and reports whether it is done: acknowledged, or refused for
// good (a test failure).
func (l *crashLoad) attempt(ctx context.Context, path string, ids []string, body []byte, retry bool) bool {
	target := l.target.Load()
	sentAt := time.Now().UnixNano()
	status, result, err := l.post(ctx, target.url+path, body)
	l.noteSignal(sentAt, status, err)
	l.count(func(s *crashStats) { s.requests++ })
	switch {
	case err != nil:
		// The server is gone or going: not acknowledged.
		l.count(func(s *crashStats) { s.connErrors++ })
		return false
	case status == http.StatusServiceUnavailable:
		l.count(func(s *crashStats) { s.unavailable++ })
		return false
	case status != http.StatusOK:
		l.t.Errorf("POST %s: status %d, want 200 or 503", path, status)
		return true // sending it again would get the same answer; the end check reports it unacknowledged
	}
	n := len(ids)
	if result.Received != n || result.Rejected != 0 || result.Accepted+result.Duplicates != n {
		l.t.Errorf("POST %s with %d events: %+v", path, n, result)
		return false
	}
	// A request is stored whole or not at all, so a retry finds all of its events or none.
	if result.Duplicates != 0 && (!retry || result.Accepted != 0) {
		l.t.Errorf("POST %s (retry %v): %d accepted and %d duplicates, want all of one kind (and no duplicate on a first attempt)",
			path, retry, result.Accepted, result.Duplicates)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.ok++
	if retry && result.Duplicates > 0 {
		l.st.duplicateRetries++
	}
	l.ackLocked(ids, target.epoch)
	return true
}

// ack records events acknowledged by the server of epoch.
func (l *crashLoad) ack(ids []string, epoch int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.sent[id] = true
	}
	l.ackLocked(ids, epoch)
}

func (l *crashLoad) ackLocked(ids []string, epoch int) {
	for _, id := range ids {
		if _, seen := l.acked[id]; !seen {
			l.acked[id] = epoch
			l.perEpoch[epoch]++
		}
	}
	l.ackSignal.Broadcast()
}

// post sends body with the source key in the Authorization header. err is set when no complete
// response came back.
func (l *crashLoad) post(ctx context.Context, url string, body []byte) (int, gen.CollectResult, error) {
	var result gen.CollectResult
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"?tc_s="+crashSite, bytes.NewReader(body))
	if err != nil {
		return 0, result, fmt.Errorf("making the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.key)
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, result, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, result, fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &result); err != nil {
			return 0, result, fmt.Errorf("decoding %.200s: %w", b, err)
		}
	}
	return resp.StatusCode, result, nil
}

// markSignal records the moment a SIGTERM is sent, so that requests in flight then are counted.
func (l *crashLoad) markSignal() { l.signalAt.Store(time.Now().UnixNano()) }

// noteSignal counts a request that was sent before the SIGTERM and ended after it.
func (l *crashLoad) noteSignal(sentAt int64, status int, err error) {
	at := l.signalAt.Load()
	if at == 0 || sentAt >= at {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		l.atSignal[1]++
		if len(l.sigErrors) < 3 {
			l.sigErrors = append(l.sigErrors, err.Error())
		}
	case status >= 500:
		l.atSignal[2]++
	case status == http.StatusOK:
		l.atSignal[0]++
	}
}

func (l *crashLoad) inFlightAtSignal() (drained, failed, errored int, failures []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.signalAt.Store(0)
	return l.atSignal[0], l.atSignal[1], l.atSignal[2], l.sigErrors
}

// waitForAcks waits until the server of epoch has acknowledged n events, or for at most max.
func (l *crashLoad) waitForAcks(t *testing.T, epoch, n int, max time.Duration) {
	t.Helper()
	timer := time.AfterFunc(max, func() {
		l.mu.Lock()
		l.ackSignal.Broadcast()
		l.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(max)
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.perEpoch[epoch] < n && time.Now().Before(deadline) {
		l.ackSignal.Wait()
	}
	if l.perEpoch[epoch] == 0 {
		t.Fatalf("server %d acknowledged no event within %v", epoch, max)
	}
}

func (l *crashLoad) ackedSoFar() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.acked))
	for id, epoch := range l.acked {
		out[id] = epoch
	}
	return out
}

func (l *crashLoad) sentIDs() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.sent))
	for id := range l.sent {
		out[id] = true
	}
	return out
}

func (l *crashLoad) count(f func(*crashStats)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.st)
}

func (l *crashLoad) stats() crashStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// crashRequest is request seq of worker: a batch every third time, else a single event. Its event
// ids are unique to the test and the same on every attempt.
func crashRequest(worker, seq int) (path string, ids []string, body []byte) {
	event := func(id string) string {
		return `{"event_name":"crash_test","user":{"consistent_anonymous_id":"u` + fmt.Sprint(worker) +
			`"},"context":{"event_id":"` + id + `","event_timestamp":1700000000000}}`
	}
	if seq%3 != 2 {
		id := fmt.Sprintf("w%d-%d", worker, seq)
		return "/events", []string{id}, []byte(event(id))
	}
	parts := make([]string, crashBatchSize)
	for i := range parts {
		id := fmt.Sprintf("w%d-%d-%d", worker, seq, i)
		ids = append(ids, id)
		parts[i] = event(id)
	}
	return "/events/batch", ids, []byte(`{"batch":[` + strings.Join(parts, ",") + `]}`)
}

// slowRequest is one event sent in two halves, so that it is in the server's hands, unfinished,
// for as long as the test wants.
type slowRequest struct {
	id     string
	rest   []byte
	pipe   *io.PipeWriter
	done   chan slowResult
	finish func()
}

type slowResult struct {
	status int
	result gen.CollectResult
	err    error
}

// startSlowRequest sends the headers and the first half of the body of a single event, and
// returns once the server has had time to read them.
func startSlowRequest(t *testing.T, l *crashLoad, url, id string) *slowRequest {
	t.Helper()
	body := []byte(`{"event_name":"crash_test","user":{"consistent_anonymous_id":"slow"},"context":{"event_id":"` + id + `","event_timestamp":1700000000000}}`)
	pr, pw := io.Pipe()
	s := &slowRequest{id: id, rest: body[len(body)/2:], pipe: pw, done: make(chan slowResult, 1)}
	s.finish = func() {
		_, _ = pw.Write(s.rest)
		_ = pw.Close()
	}
	req, err := http.NewRequest(http.MethodPost, url+"/events?tc_s="+crashSite, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.key)
	go func() {
		var r slowResult
		resp, err := l.client.Do(req)
		if err != nil {
			r.err = err
			s.done <- r
			return
		}
		defer resp.Body.Close()
		r.status = resp.StatusCode
		if b, err := io.ReadAll(resp.Body); err != nil {
			r.err = err
		} else if r.status == http.StatusOK {
			r.err = json.Unmarshal(b, &r.result)
		}
		s.done <- r
	}()
	if _, err := pw.Write(body[:len(body)/2]); err != nil {
		t.Fatalf("sending the first half of a request: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	return s
}

// result waits for the answer.
func (s *slowRequest) result() slowResult {
	select {
	case r := <-s.done:
		return r
	case <-time.After(30 * time.Second):
		return slowResult{err: errors.New("no answer within 30 s")}
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
