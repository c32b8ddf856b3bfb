package inspector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// base is when the tests' requests are received, unless they move the clock.
var base = time.Date(2026, 3, 10, 12, 0, 30, 0, time.UTC)

// fakeClock is the clock of the collector, the source service and the capturer in a rig.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rig is the collect path with the inspector on, as `trackapi serve` wires it, over a real SQLite
// file, with one source (site 29) and a fake clock.
type rig struct {
	t         testing.TB
	db        *sqlite.DB
	keys      *sources.Service
	collector *ingest.Collector
	capturer  *inspector.Capturer
	clock     *fakeClock
	source    trackapi.Source
	key       string
	stopOnce  sync.Once
	cancel    context.CancelFunc
	done      chan error
}

// newRig starts the rig; cfg's Store, Now and Logger are the rig's. Its capturer writes every
// 10 ms.
func newRig(t testing.TB, cfg inspector.Config) *rig {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "trackapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, db: db, clock: &fakeClock{t: base}}
	r.keys = sources.New(db, sources.Options{Now: r.clock.Now, Logger: quiet})
	t.Cleanup(func() {
		_ = r.keys.Close(ctx)
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	src, key, err := r.keys.Create(ctx, "29", "test")
	if err != nil {
		t.Fatal(err)
	}
	r.source, r.key = src, key.Key
	cfg.Store, cfg.Now, cfg.Logger = db, r.clock.Now, quiet
	if cfg.FlushEvery == 0 {
		cfg.FlushEvery = 10 * time.Millisecond
	}
	if r.capturer, err = inspector.New(cfg); err != nil {
		t.Fatal(err)
	}
	if r.collector, err = ingest.New(ingest.Config{Store: db, Sources: r.keys, Now: r.clock.Now, Logger: quiet, Inspector: r.capturer}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.capturer.Run(runCtx) }()
	t.Cleanup(r.stop) // before the store is closed
	return r
}

// stop ends the capturer's Run, which writes what it holds.
func (r *rig) stop() {
	r.stopOnce.Do(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			r.t.Errorf("run: %v", err)
		}
	})
}

// send collects one request from 203.0.113.77.
func (r *rig) send(batch bool, site, key, body string) (gen.CollectResult, error) {
	r.t.Helper()
	return r.collector.Collect(context.Background(), ingest.Request{Batch: batch, Site: site, Key: key, Body: []byte(body), ClientIP: "203.0.113.77"})
}

// entries stops the capturer (so that everything is written) and lists every entry matching f,
// oldest first.
func (r *rig) entries(f trackapi.InspectorFilter) []trackapi.InspectorEntry {
	r.t.Helper()
	r.stop()
	list, _, err := r.db.InspectorEntriesAfter(context.Background(), f, 0, 100000)
	if err != nil {
		r.t.Fatal(err)
	}
	return list
}

const user = `"user":{"consistent_anonymous_id":"a1","consent_categories":["1"]}`

// event is a valid event named name with id id, and extra members.
// pageType and purchaseProperties are what page_view and purchase require (openapi.yaml's
// StandardEvents), for events that should get no warning.
const (
	pageType           = `"page_type":"home"`
	purchaseProperties = `"id":"o-1","type":"online","value":12.5,"revenue":10,"payment_method":"card","currency":"EUR","status":"in_progress","items":[]`
)

func event(name, id string, extra ...string) string {
	members := append([]string{fmt.Sprintf(`"event_name":%q`, name), user,
		fmt.Sprintf(`"context":{"event_id":%q,"event_timestamp":1700000000000}`, id)}, extra...)
	return "{" + strings.Join(members, ",") + "}"
}

// TestCaptureOutcomes sends one request of every kind through the collect path and checks the
// entry each event (or refused request) got: outcome, codes and paths, attribution and reason,
// the masked addresses, and that no key is kept.
func TestCaptureOutcomes(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, inspector.Config{})
	// key1 (the first) expires an hour after the rotation to key2, which is then revoked; key3 is
	// made after, and stays live.
	key2, err := r.keys.RotateKey(ctx, r.source.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.keys.RevokeKey(ctx, r.source.ID, key2.Stored.ID); err != nil {
		t.Fatal(err)
	}
	key3, err := r.keys.RotateKey(ctx, r.source.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Add(2 * time.Hour)
	live := key3.Key
	unknown := "ffffffff-1111-4222-8333-444444444444"

	type want struct {
		outcome, name, reason, site, prefix, testCode string
		sourceID                                      int64
		codes, paths                                  []string
		batch                                         bool
		index                                         int
	}
	src := r.source.ID
	requests := []struct {
		batch           bool
		site, key, body string
		refused         bool
		want            []want
	}{
		{false, "29", live, `{"event_name":"purchase","test_code":"T-42",` + purchaseProperties + `,` + user +
			`,"context":{"event_id":"p-1","event_timestamp":1700000000000,"device":{"ip":"102.3.4.56"}}}`, false,
			[]want{{outcome: "accepted", name: "purchase", testCode: "T-42", sourceID: src, site: "29", prefix: live[:8], codes: []string{}}}},
		{false, "29", live, `{"event_name":"search","search_term":5}`, false,
			[]want{{outcome: "warned", name: "search", sourceID: src, site: "29", prefix: live[:8],
				codes: []string{"event_id_generated", "timestamp_generated", "schema_violation"},
				paths: []string{"/context/event_id", "/context/event_timestamp"}}}},
		{true, "29", live, `{"batch":[` + strings.Join([]string{
			event("page_view", "pv-1", pageType),
			`{"page_type":"home","test_code":"T-42"}`,
			event("page_view", "pv-1", pageType),
			event("page_view", "pv-1", `"page_type":"other"`),
		}, ",") + `]}`, false, []want{
			{outcome: "accepted", name: "page_view", sourceID: src, site: "29", prefix: live[:8], codes: []string{}, batch: true, index: 0},
			{outcome: "rejected", name: "", testCode: "T-42", sourceID: src, site: "29", prefix: live[:8], codes: []string{"missing_event_name"},
				paths: []string{"/event_name"}, batch: true, index: 1},
			{outcome: "duplicate", name: "page_view", sourceID: src, site: "29", prefix: live[:8], codes: []string{}, batch: true, index: 2},
			{outcome: "duplicate", name: "page_view", sourceID: src, site: "29", prefix: live[:8], codes: []string{"event_id_reused"},
				paths: []string{"/context/event_id"}, batch: true, index: 3},
		}},
		{false, "29", unknown, event("login", "l-1"), false,
			[]want{{outcome: "rejected", name: "login", reason: "unknown_key", site: "29", prefix: "ffffffff", codes: []string{"invalid_source"}}}},
		{false, "29", r.key, event("login", "l-2"), false,
			[]want{{outcome: "rejected", name: "login", reason: "key_expired", sourceID: src, site: "29", prefix: r.key[:8], codes: []string{"invalid_source"}}}},
		{false, "29", key2.Key, event("login", "l-3"), false,
			[]want{{outcome: "rejected", name: "login", reason: "key_revoked", sourceID: src, site: "29", prefix: key2.Key[:8], codes: []string{"invalid_source"}}}},
		{true, "30", live, `{"batch":[` + event("login", "l-4") + `]}`, false,
			[]want{{outcome: "rejected", name: "login", reason: "site_mismatch", sourceID: src, site: "30", prefix: live[:8], codes: []string{"invalid_source"}, batch: true}}},
		{false, "29", "", event("login", "l-5"), false,
			[]want{{outcome: "rejected", name: "login", reason: "missing_credentials", site: "29", codes: []string{"invalid_source"}}}},
		{false, "29", live, `{"event_name":`, true,
			[]want{{outcome: "refused", sourceID: src, site: "29", prefix: live[:8], codes: []string{"invalid_json"}}}},
		{true, "29", unknown, `[1,2]`, true,
			[]want{{outcome: "refused", reason: "unknown_key", site: "29", prefix: "ffffffff", codes: []string{"invalid_payload"}, batch: true}}},
	}
	var all []want
	for i, req := range requests {
		_, err := r.send(req.batch, req.site, req.key, req.body)
		var refusal *ingest.Refusal
		if errors.As(err, &refusal) != req.refused || (err != nil && refusal == nil) {
			t.Fatalf("request %d: %v", i, err)
		}
		all = append(all, req.want...)
	}
	entries := r.entries(trackapi.InspectorFilter{})
	if len(entries) != len(all) {
		t.Fatalf("%d entries, want %d (one an event, one a refused request): %+v", len(entries), len(all), entries)
	}
	for i, e := range entries {
		w := all[i]
		var paths []string
		for _, p := range e.Problems {
			paths = append(paths, p.Path)
		}
		if e.Outcome != w.outcome || e.EventName != w.name || e.Reason != w.reason || e.SourceID != w.sourceID ||
			e.Site != w.site || e.KeyPrefix != w.prefix || e.TestCode != w.testCode || !slices.Equal(e.Codes, w.codes) ||
			e.Batch != w.batch || e.Index != w.index || !e.At.Equal(base.Add(2*time.Hour)) || e.ClientIP != "203.0.113.0" {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, e, w)
		}
		for _, p := range w.paths {
			if !slices.Contains(paths, p) {
				t.Errorf("entry %d (%s): no problem at %s: %+v", i, w.outcome, p, e.Problems)
			}
		}
		if !json.Valid(e.Body) {
			t.Errorf("entry %d: body %s", i, e.Body)
		}
		whole, _ := json.Marshal(e)
		for _, key := range []string{r.key, key2.Key, live, unknown} {
			if strings.Contains(string(whole), key) {
				t.Errorf("entry %d holds a key: %s", i, whole)
			}
		}
	}
	// The body as processed, with the device's address masked; the id the server assigned.
	if b := string(entries[0].Body); !strings.Contains(b, `"ip":"102.3.4.0"`) || strings.Contains(b, "102.3.4.56") || entries[0].EventID != "p-1" {
		t.Errorf("accepted entry: id %q, body %s", entries[0].EventID, b)
	}
	if e := entries[1]; e.EventID == "" || !strings.Contains(string(e.Body), e.EventID) {
		t.Errorf("warned entry: id %q not in its processed body %s", e.EventID, e.Body)
	}
	// A rejected event keeps its body as sent; a refused request the start of its body as text.
	if b := string(entries[3].Body); b != `{"page_type":"home","test_code":"T-42"}` {
		t.Errorf("rejected entry body: %s", b)
	}
	if b := string(entries[len(entries)-2].Body); b != `"{\"event_name\":"` {
		t.Errorf("refused entry body: %s", b)
	}

	// The filters find them.
	for f, n := range map[*trackapi.InspectorFilter]int{
		{Code: "invalid_source"}:                        5,
		{SourceID: src, Code: "invalid_source"}:         3,
		{Unattributed: true}:                            3,
		{TestCode: "T-42"}:                              2,
		{Outcome: "refused"}:                            2,
		{SourceID: src, EventName: "page_view"}:         3,
		{Outcome: "duplicate", Code: "event_id_reused"}: 1,
	} {
		if got, _, err := r.db.InspectorEntries(ctx, *f, 0, 100); err != nil || len(got) != n {
			t.Errorf("%+v: %d entries (err %v), want %d", *f, len(got), err, n)
		}
	}

	// The counts: events of the source by name, and the rejections without a known source
	// under source 0.
	report, err := r.db.DataQuality(ctx, src, base, base.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]trackapi.EventQuality{}
	for _, q := range report.Events {
		got[q.EventName] = trackapi.EventQuality{Collected: q.Collected, WithWarnings: q.WithWarnings, Rejected: q.Rejected, Duplicates: q.Duplicates}
	}
	wantCounts := map[string]trackapi.EventQuality{
		"purchase":  {Collected: 1},
		"search":    {Collected: 1, WithWarnings: 1},
		"page_view": {Collected: 1, Duplicates: 2},
		"":          {Rejected: 1},
		"login":     {Rejected: 3},
	}
	if fmt.Sprint(got) != fmt.Sprint(wantCounts) {
		t.Errorf("counts of the source:\n got %v\nwant %v", got, wantCounts)
	}
	anomalies := map[string]int64{}
	for _, a := range report.Anomalies {
		anomalies[a.EventName+" "+a.Code+" "+a.Path] += a.Count
		if a.Code == "missing_event_name" && string(a.Sample) != `{"page_type":"home","test_code":"T-42"}` {
			t.Errorf("sample of %s: %s", a.Code, a.Sample)
		}
	}
	for _, k := range []string{"search event_id_generated /context/event_id", "page_view event_id_reused /context/event_id",
		" missing_event_name /event_name", "login invalid_source "} {
		if anomalies[k] == 0 {
			t.Errorf("no anomaly %q in %v", k, anomalies)
		}
	}
	if anomalies["login invalid_source "] != 3 {
		t.Errorf("invalid_source of the source counted %d times, want 3", anomalies["login invalid_source "])
	}
	unattributed, err := r.db.DataQuality(ctx, 0, base, base.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(unattributed.Events) != 1 || unattributed.Events[0].EventName != "login" || unattributed.Events[0].Rejected != 2 {
		t.Errorf("counts without a source: %+v, want 2 rejected login events (refusals are not counted)", unattributed.Events)
	}
}

// TestProblemsVisibleUnderFlood: a flood of valid events of one name spends that name's budget
// but not its problems' budget: every warned and rejected event of the flood has its entry,
// while the counts stay exact.
func TestProblemsVisibleUnderFlood(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, inspector.Config{})
	n := 0
	for req := range 20 {
		events := make([]string, 0, 101)
		for range 100 {
			n++
			events = append(events, event("page_view", fmt.Sprint("pv-", n), pageType))
		}
		if req == 7 || req == 13 || req == 19 {
			events = append(events, `{"page_type":"no name"}`)
			events = append(events[:50], append([]string{`{"event_name":"page_view","context":{"event_id":"w-` + fmt.Sprint(req) + `"}}`}, events[50:]...)...)
		}
		if _, err := r.send(true, "29", r.key, `{"batch":[`+strings.Join(events, ",")+`]}`); err != nil {
			t.Fatal(err)
		}
	}
	count := func(outcome string) int {
		list := r.entries(trackapi.InspectorFilter{Outcome: outcome})
		return len(list)
	}
	if got := count(trackapi.InspectorRejected); got != 3 {
		t.Errorf("%d rejected entries, want all 3", got)
	}
	if got := count(trackapi.InspectorWarned); got != 3 {
		t.Errorf("%d warned entries, want all 3", got)
	}
	if got, want := count(trackapi.InspectorAccepted), trackapi.InspectorSamplePerMinute+trackapi.InspectorSampleBonusPerHour; got != want {
		t.Errorf("%d accepted entries of 2000, want the budget's %d", got, want)
	}
	report, err := r.db.DataQuality(ctx, r.source.ID, base.Add(-time.Hour), base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var pageView, noName trackapi.EventQuality
	for _, q := range report.Events {
		switch q.EventName {
		case "page_view":
			pageView = q
		case "":
			noName = q
		}
	}
	if pageView.Collected != 2003 || pageView.WithWarnings != 3 || noName.Rejected != 3 {
		t.Errorf("counts: page_view %+v, without a name %+v; want 2003 collected (3 with warnings), 3 rejected", pageView, noName)
	}
}

// TestWaitWakesOnWrite: a live stream's Wait returns once an entry past its cursor is written,
// and not before.
func TestWaitWakesOnWrite(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, inspector.Config{})
	woke := make(chan error, 1)
	go func() { woke <- r.capturer.Wait(ctx, 0) }()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := r.capturer.Wait(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with nothing written: %v, want the context's deadline", err)
	}
	select {
	case err := <-woke:
		t.Fatalf("Wait returned %v before anything was written", err)
	default:
	}
	if _, err := r.send(false, "29", r.key, event("page_view", "w-1", pageType)); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	list, next, err := r.db.InspectorEntriesAfter(ctx, trackapi.InspectorFilter{}, 0, 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("after the wake-up: %d entries, %v", len(list), err)
	}
	// The cursor is now the newest: Wait blocks again, and returns at once for an older one.
	if err := r.capturer.Wait(ctx, next-1); err != nil {
		t.Fatal(err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := r.capturer.Wait(short2, next); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait at the newest cursor: %v, want the context's deadline", err)
	}
}

// TestLongTextsAreCut: the texts a sender chooses freely are kept up to
// trackapi.InspectorTextLimit bytes in entries and counts; the body has them whole.
func TestLongTextsAreCut(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, inspector.Config{})
	long := strings.Repeat("é", 1000) // 2 bytes each: cut at a character boundary
	if _, err := r.send(false, "29", r.key, event(long, "id-"+long, `"test_code":"`+long+`"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.send(false, long, "", event("x", "y")); err != nil {
		t.Fatal(err)
	}
	entries := r.entries(trackapi.InspectorFilter{})
	if len(entries) != 2 {
		t.Fatalf("%d entries", len(entries))
	}
	want := long[:trackapi.InspectorTextLimit]
	if e := entries[0]; e.EventName != want || e.EventID != ("id-" + long)[:trackapi.InspectorTextLimit-1] || e.TestCode != want ||
		!strings.Contains(string(e.Body), long) {
		t.Errorf("entry: name %d bytes, id %d, test code %d; body %d bytes", len(e.EventName), len(e.EventID), len(e.TestCode), len(e.Body))
	}
	if e := entries[1]; e.Site != want {
		t.Errorf("site of %d bytes", len(e.Site))
	}
	report, err := r.db.DataQuality(ctx, r.source.ID, base.Add(-time.Hour), base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Events) != 1 || report.Events[0].EventName != want {
		t.Errorf("counts: %+v", report.Events)
	}
}
