package deliver_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
)

// fakeClock is a settable clock whose After fires when Advance passes it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// scriptedSink answers each envelope with what answer says, and records what it delivered.
type scriptedSink struct {
	mu        sync.Mutex
	answer    func(trackapi.Envelope) trackapi.DeliveryResult
	delivered map[string]int // envelope id → times delivered
	attempts  atomic.Int64
}

func newScriptedSink(answer func(trackapi.Envelope) trackapi.DeliveryResult) *scriptedSink {
	return &scriptedSink{answer: answer, delivered: map[string]int{}}
}

func (s *scriptedSink) Deliver(_ context.Context, batch []trackapi.Envelope) []trackapi.DeliveryResult {
	s.attempts.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	results := make([]trackapi.DeliveryResult, len(batch))
	for i, env := range batch {
		results[i] = s.answer(env)
		if results[i].Err == nil {
			s.delivered[env.ID]++
		}
	}
	return results
}

func (s *scriptedSink) Close() error { return nil }

func (s *scriptedSink) setAnswer(answer func(trackapi.Envelope) trackapi.DeliveryResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = answer
}

func (s *scriptedSink) ids() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.delivered))
	for k, v := range s.delivered {
		out[k] = v
	}
	return out
}

func ok(trackapi.Envelope) trackapi.DeliveryResult { return trackapi.DeliveryResult{} }

func down(trackapi.Envelope) trackapi.DeliveryResult {
	return trackapi.DeliveryResult{Err: errors.New("connection refused"), Reason: "connection_refused"}
}

// harness is a real SQLite store with sources, a destination per sink, and a running engine.
type harness struct {
	t     *testing.T
	db    *sqlite.DB
	sinks map[string]*scriptedSink // by destination name
	clock deliver.Clock
	stop  func()
	seq   atomic.Int64
}

func newHarness(t *testing.T, clock deliver.Clock) *harness {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "trackapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &harness{t: t, db: db, sinks: map[string]*scriptedSink{}, clock: clock}
}

// source makes a source through the real source service.
func (h *harness) source(site string) trackapi.Source {
	h.t.Helper()
	src, _, err := sources.New(h.db, sources.Options{}).Create(context.Background(), site, "s"+site)
	if err != nil {
		h.t.Fatal(err)
	}
	return src
}

// destination stores a destination whose sink is s.
func (h *harness) destination(name string, s *scriptedSink, edit func(*trackapi.Destination)) trackapi.Destination {
	h.t.Helper()
	d := trackapi.Destination{Name: name, Type: "scripted-" + name, Status: trackapi.DestinationActive}
	if edit != nil {
		edit(&d)
	}
	d, err := h.db.CreateDestination(context.Background(), d)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sinks[d.Type] = s
	return d
}

func (h *harness) start(policy deliver.Policy) *deliver.Engine {
	h.t.Helper()
	factories := map[string]deliver.SinkFactory{}
	for typ, s := range h.sinks {
		factories[typ] = func(trackapi.Destination) (trackapi.Sink, error) { return s, nil }
	}
	e, err := deliver.New(deliver.Config{Store: h.db, Log: h.db, Sinks: factories, Policy: policy, Clock: h.clock,
		Logger: testenv.Quiet, ReloadEvery: 50 * time.Millisecond, SettleEvery: 20 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Run(ctx)
	}()
	h.stop = func() { cancel(); <-done }
	h.t.Cleanup(h.stop)
	return e
}

// store commits events of a source: name and consent categories per event.
func (h *harness) store(src trackapi.Source, events ...string) []string {
	h.t.Helper()
	var batch []trackapi.Event
	var ids []string
	for _, spec := range events {
		n := h.seq.Add(1)
		id := fmt.Sprintf("e%d", n)
		var name, consent string
		fmt.Sscanf(spec, "%s %s", &name, &consent)
		body := fmt.Sprintf(`{"event_name":%q,"user":{"consent_categories":[%s]},"context":{"event_id":%q}}`, name, consent, id)
		batch = append(batch, trackapi.Event{SourceID: src.ID, Site: src.Site, EventID: id, EventName: name,
			ReceivedAt: time.Now().UnixMilli(), Body: []byte(body)})
		ids = append(ids, fmt.Sprintf("%d:%s", src.ID, id))
	}
	if _, err := h.db.StoreEvents(context.Background(), batch); err != nil {
		h.t.Fatal(err)
	}
	return ids
}

// waitFor polls cond (advancing a fake clock a little each time) until it holds.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not within 20 s", what)
		}
		if fc, ok := h.clock.(*fakeClock); ok {
			fc.Advance(time.Second)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) stats(d trackapi.Destination) trackapi.DeliveryCounts {
	h.t.Helper()
	rows, err := h.db.DeliveryStats(context.Background(), d.ID, time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		h.t.Fatal(err)
	}
	var sum trackapi.DeliveryCounts
	for _, r := range rows {
		sum.Delivered += r.Delivered
		sum.DeliveredAfterRetry += r.DeliveredAfterRetry
		sum.Retried += r.Retried
		sum.FilteredConsent += r.FilteredConsent
		sum.FilteredCondition += r.FilteredCondition
		sum.Rejected += r.Rejected
		sum.Failed += r.Failed
		sum.Expired += r.Expired
	}
	return sum
}

func (h *harness) state(d trackapi.Destination) trackapi.DeliveryState {
	h.t.Helper()
	s, err := h.db.DeliveryState(context.Background(), d.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Each destination gets exactly its events: the source filter, the consent filter (strings and
// numbers), and the condition filter, each counted.
func TestRoutingAndFilters(t *testing.T) {
	h := newHarness(t, nil)
	shop, blog := h.source("1"), h.source("2")
	all := newScriptedSink(ok)
	consent := newScriptedSink(ok)
	purchases := newScriptedSink(ok)
	onlyBlog := newScriptedSink(ok)
	h.destination("all", all, nil)
	dConsent := h.destination("consent", consent, func(d *trackapi.Destination) { d.ConsentCategory = "3" })
	dPurchases := h.destination("purchases", purchases, func(d *trackapi.Destination) {
		d.Filter = []byte(`{"event_names":["purchase"],"conditions":[{"path":"/user/consent_categories","op":"contains","value":"1"}]}`)
	})
	h.destination("blog", onlyBlog, func(d *trackapi.Destination) { d.Sources = []int64{blog.ID} })
	h.start(deliver.Policy{})

	a := h.store(shop, `page_view "1","3"`, `purchase 1,3`, `purchase "2"`, `page_view`)
	b := h.store(blog, `page_view 3`)
	h.waitFor("every destination caught up", func() bool {
		return len(all.ids()) == 5 && h.state(dConsent).LagEvents == 0 && h.state(dPurchases).LagEvents == 0 && len(onlyBlog.ids()) == 1
	})
	time.Sleep(100 * time.Millisecond) // let the last settlements commit
	if got, want := keys(consent.ids()), []string{a[0], a[1], b[0]}; fmt.Sprint(got) != fmt.Sprint(sorted(want)) {
		t.Errorf("consent destination got %v, want %v", got, sorted(want))
	}
	if got := keys(purchases.ids()); fmt.Sprint(got) != fmt.Sprint([]string{a[1]}) {
		t.Errorf("purchase filter got %v, want %v", got, a[1])
	}
	if got := keys(onlyBlog.ids()); fmt.Sprint(got) != fmt.Sprint(b) {
		t.Errorf("blog-only destination got %v, want %v", got, b)
	}
	if s := h.stats(dConsent); s.FilteredConsent != 2 || s.Delivered != 3 {
		t.Errorf("consent stats %+v, want 2 filtered_consent and 3 delivered", s)
	}
	if s := h.stats(dPurchases); s.FilteredCondition != 4 || s.Delivered != 1 {
		t.Errorf("filter stats %+v, want 4 filtered_condition and 1 delivered", s)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// A destination down for 10 minutes of simulated time: the circuit opens after a few failed
// attempts, so the retry table holds a few batches, not one row per event; when it comes back
// every event is delivered, and the stats show deliveries after retry.
func TestOutageHoldsTheCursorAndLosesNothing(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	h := newHarness(t, clock)
	src := h.source("1")
	sink := newScriptedSink(down)
	d := h.destination("flaky", sink, nil)
	policy := deliver.Policy{BatchSize: 20}
	h.start(policy)

	var want []string
	maxRetries := int64(0)
	for minute := 0; minute < 10; minute++ {
		for i := 0; i < 10; i++ {
			want = append(want, h.store(src, "page_view", "page_view", "page_view", "page_view", "page_view")...)
			for range 12 { // 6 s of simulated time between bursts of events
				clock.Advance(500 * time.Millisecond)
				time.Sleep(time.Millisecond)
			}
		}
		maxRetries = max(maxRetries, h.state(d).Retries)
	}
	if maxRetries > int64(5*policy.BatchSize) {
		t.Errorf("the retry table grew to %d rows during the outage, more than the %d of the attempts before the circuit opened", maxRetries, 5*policy.BatchSize)
	}
	if len(sink.ids()) != 0 {
		t.Fatalf("delivered during the outage: %v", sink.ids())
	}
	sink.setAnswer(ok)
	h.waitFor("every event delivered after the outage", func() bool {
		st := h.state(d)
		return len(sink.ids()) == len(want) && st.Retries == 0 && st.LagEvents == 0
	})
	time.Sleep(100 * time.Millisecond)
	s := h.stats(d)
	t.Logf("outage: %d events, retry table at most %d rows, stats %+v", len(want), maxRetries, s)
	if s.DeliveredAfterRetry == 0 || s.Delivered+s.DeliveredAfterRetry != int64(len(want)) || s.Failed != 0 || s.Rejected != 0 {
		t.Errorf("stats %+v for %d events", s, len(want))
	}
}

// A permanent refusal makes a dead letter at once; replay sends it again once the destination
// takes it. A retry budget spent (4 h and 3 attempts) makes a failed dead letter.
func TestDeadLettersAndReplay(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	h := newHarness(t, clock)
	src := h.source("1")
	sink := newScriptedSink(func(env trackapi.Envelope) trackapi.DeliveryResult {
		switch env.EventName {
		case "bad":
			return trackapi.DeliveryResult{Err: errors.New("HTTP 400"), Permanent: true, Reason: "http_400"}
		case "slow":
			return trackapi.DeliveryResult{Err: errors.New("HTTP 503"), Reason: "http_503"}
		}
		return trackapi.DeliveryResult{}
	})
	d := h.destination("picky", sink, nil)
	h.start(deliver.Policy{BreakerAfter: 1000})
	ids := h.store(src, "good", "bad", "good", "slow")
	h.waitFor("the rejected event is a dead letter", func() bool { return h.state(d).DeadLetters == 1 })
	h.waitFor("the failing event gives up after 4 h and 3 attempts", func() bool {
		clock.Advance(time.Minute)
		return h.state(d).DeadLetters == 2
	})
	letters, _, err := h.db.DeadLetters(context.Background(), d.ID, trackapi.DeadLetterFilter{}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 2 || letters[0].Kind != trackapi.DeadLetterRejected || letters[0].Reason != "http_400" ||
		letters[1].Kind != trackapi.DeadLetterFailed || letters[1].Attempts < 3 || letters[1].FailedAt.Sub(letters[1].FirstFailedAt) < 4*time.Hour {
		t.Fatalf("dead letters %+v", letters)
	}
	s := h.stats(d)
	if s.Rejected != 1 || s.Failed != 1 || s.Delivered != 2 {
		t.Errorf("stats %+v", s)
	}
	issues, err := h.db.DeliveryIssues(context.Background(), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, is := range issues {
		reasons[is.Kind+"/"+is.Reason] = true
	}
	if !reasons["rejected/http_400"] || !reasons["error/http_503"] {
		t.Errorf("issues %+v", issues)
	}

	sink.setAnswer(ok)
	n, err := h.db.ReplayDeadLetters(context.Background(), d.ID, trackapi.DeadLetterFilter{Reason: "rejected"}, clock.Now())
	if err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	h.waitFor("the replayed event is delivered", func() bool { return sink.ids()[ids[1]] == 1 })
	if st := h.state(d); st.DeadLetters != 1 {
		t.Errorf("%d dead letters after replaying one of two", st.DeadLetters)
	}
}
