package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// schemaVersion is the number of files in migrations/.
const schemaVersion = 7

// commits records what Options.OnCommit reports.
type commits struct {
	groups      atomic.Int64
	requests    atomic.Int64
	maxRequests atomic.Int64
	failures    atomic.Int64
}

func (c *commits) onCommit(groupRequests, groupEvents int, took time.Duration, err error) {
	if err != nil {
		c.failures.Add(1)
		return
	}
	c.groups.Add(1)
	c.requests.Add(int64(groupRequests))
	for {
		m := c.maxRequests.Load()
		if int64(groupRequests) <= m || c.maxRequests.CompareAndSwap(m, int64(groupRequests)) {
			return
		}
	}
}

// open opens a DB on path and closes it at the end of the test.
func open(t testing.TB, path string, opts sqlite.Options) *sqlite.DB {
	t.Helper()
	db, err := sqlite.OpenWithOptions(path, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return db
}

func tempPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "trackapi.db")
}

func newSource(t testing.TB, db *sqlite.DB, site string) trackapi.Source {
	t.Helper()
	s, _ := newSourceWithKey(t, db, site)
	return s
}

// newSourceWithKey creates a source with a new random key, and returns the key in clear too.
func newSourceWithKey(t testing.TB, db *sqlite.DB, site string) (trackapi.Source, string) {
	t.Helper()
	key := trackapi.NewSourceKey()
	s, _, err := db.CreateSource(context.Background(), site, "source of "+site,
		trackapi.SourceKey{Prefix: trackapi.KeyPrefix(key), Hash: trackapi.HashKey(key)})
	if err != nil {
		t.Fatalf("create source: %v", err)
	}
	return s, key
}

// body is the stored JSON of an event; it carries the id, so that tests can check that the body
// stored is the one of the event.
type body struct {
	ID        string `json:"id"`
	EventName string `json:"event_name,omitempty"`
	Pad       string `json:"pad,omitempty"`
}

// eventNameOf is the event name the tests give event id: one of three, so filters have
// something to select.
func eventNameOf(id string) string {
	return []string{"page_view", "search", "add_to_cart"}[int(id[len(id)-1])%3]
}

func event(source trackapi.Source, id string) trackapi.Event {
	name := eventNameOf(id)
	b, _ := json.Marshal(body{ID: id, EventName: name})
	return trackapi.Event{SourceID: source.ID, Site: source.Site, EventID: id, EventName: name, ReceivedAt: 1700000000000, Body: b}
}

func events(source trackapi.Source, ids ...string) []trackapi.Event {
	evs := make([]trackapi.Event, len(ids))
	for i, id := range ids {
		evs[i] = event(source, id)
	}
	return evs
}

// readPage is the page size of readAll: small, so that the tests page through the log.
const readPage = 3

// readAll reads the whole event log that matches filter with ReadEvents, page after page as an
// export does, and checks the cursor rules on the way: Seq strictly increasing, next the last
// returned Seq (or after for an empty page), pages no longer than the limit, and the body's id
// that of EventID (except for events for which a skipBodyCheck returns true).
func readAll(t testing.TB, db *sqlite.DB, filter trackapi.EventFilter, skipBodyCheck ...func(trackapi.StoredEvent) bool) []trackapi.StoredEvent {
	t.Helper()
	var all []trackapi.StoredEvent
	after := int64(0)
	for {
		page, next, err := db.ReadEvents(context.Background(), after, filter, readPage)
		if err != nil {
			t.Fatalf("read events after %d: %v", after, err)
		}
		if len(page) > readPage {
			t.Fatalf("read %d events with limit %d", len(page), readPage)
		}
		if len(page) == 0 {
			if next != after {
				t.Fatalf("empty page after %d: next = %d, want %d", after, next, after)
			}
			return all
		}
		for _, e := range page {
			if e.Seq <= after {
				t.Fatalf("event seq %d after cursor %d: not strictly increasing", e.Seq, after)
			}
			after = e.Seq
			if len(skipBodyCheck) > 0 && skipBodyCheck[0](e) {
				continue
			}
			var b struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(e.Event, &b); err != nil {
				t.Fatalf("stored event %s: %v", e.Event, err)
			}
			if b.ID != e.EventID {
				t.Fatalf("event %d: EventID %q, body id %q", e.Seq, e.EventID, b.ID)
			}
		}
		if next != after {
			t.Fatalf("next = %d, want the last seq %d", next, after)
		}
		all = append(all, page...)
	}
}

// storedIDs returns the event ids in the log that match filter, in log order.
func storedIDs(t testing.TB, db *sqlite.DB, filter trackapi.EventFilter) []string {
	t.Helper()
	var ids []string
	for _, e := range readAll(t, db, filter) {
		ids = append(ids, e.EventID)
	}
	return ids
}

// ofSource is the filter of one source's events.
func ofSource(id int64) trackapi.EventFilter { return trackapi.EventFilter{SourceID: id} }

// everything is the filter that matches every event.
var everything = trackapi.EventFilter{}

// rawDB opens path with the plain driver, to look at the file from outside the package.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func queryInt(t testing.TB, db *sql.DB, query string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestOpenMigratesOnceAndReopens(t *testing.T) {
	path := tempPath(t)
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	src := newSource(t, db, "site1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	raw := rawDB(t, path)
	if v := queryInt(t, raw, "PRAGMA user_version"); v != schemaVersion {
		t.Fatalf("user_version = %d, want %d", v, schemaVersion)
	}
	var mode string
	if err := raw.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q (%v), want wal", mode, err)
	}

	// Reopening must not run 0001 again (CREATE TABLE would fail) nor lose data.
	db = open(t, path, sqlite.Options{})
	sources, err := db.Sources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) != 1 || sources[0].ID != src.ID {
		t.Fatalf("sources after reopen = %+v, want the one created before", sources)
	}
	if v := queryInt(t, raw, "PRAGMA user_version"); v != schemaVersion {
		t.Fatalf("user_version after reopen = %d, want %d", v, schemaVersion)
	}
}

func TestOpenSameFileTwiceAtOnce(t *testing.T) {
	path := tempPath(t)
	start := make(chan struct{})
	dbs := make([]*sqlite.DB, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range dbs {
		wg.Go(func() {
			<-start
			dbs[i], errs[i] = sqlite.Open(path)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}

	// Both work on the same data: what one writes, the other reads and deduplicates against.
	src := newSource(t, dbs[0], "site1")
	stored, err := dbs[1].StoreEvents(context.Background(), events(src, "a"))
	if err != nil || !reflect.DeepEqual(stored, []bool{true}) {
		t.Fatalf("store through second DB = %v, %v", stored, err)
	}
	stored, err = dbs[0].StoreEvents(context.Background(), events(src, "a", "b"))
	if err != nil || !reflect.DeepEqual(stored, []bool{false, true}) {
		t.Fatalf("store through first DB = %v, %v; want [false true]", stored, err)
	}
	if ids := storedIDs(t, dbs[1], everything); !reflect.DeepEqual(ids, []string{"a", "b"}) {
		t.Fatalf("exported ids = %v", ids)
	}
	if v := queryInt(t, rawDB(t, path), "PRAGMA user_version"); v != schemaVersion {
		t.Fatalf("user_version = %d, want %d", v, schemaVersion)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := tempPath(t)
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw := rawDB(t, path)
	if _, err := raw.Exec(fmt.Sprintf("PRAGMA user_version = %d", schemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if db, err := sqlite.Open(path); err == nil {
		db.Close()
		t.Fatal("opened a file with a newer schema")
	}
}

func TestStoreEvents(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	s1 := newSource(t, db, "site1")
	s2 := newSource(t, db, "site2")

	// Within one call: the second "a" is a duplicate of the first.
	stored, err := db.StoreEvents(ctx, events(s1, "a", "b", "a"))
	if err != nil || !reflect.DeepEqual(stored, []bool{true, true, false}) {
		t.Fatalf("first call = %v, %v; want [true true false]", stored, err)
	}
	// Across calls, and per source: "a" of s2 is a different event from "a" of s1.
	warned := event(s2, "a")
	warned.Warnings = []trackapi.Problem{{Code: "unknown_field", Path: "/x", Message: "x is not known"}, {Code: "c2", Path: "/y", Message: "m2"}}
	stored, err = db.StoreEvents(ctx, []trackapi.Event{event(s1, "b"), warned, event(s1, "c")})
	if err != nil || !reflect.DeepEqual(stored, []bool{false, true, true}) {
		t.Fatalf("second call = %v, %v; want [false true true]", stored, err)
	}
	// A call with no events is fine.
	stored, err = db.StoreEvents(ctx, nil)
	if err != nil || len(stored) != 0 {
		t.Fatalf("empty call = %v, %v", stored, err)
	}

	all := readAll(t, db, everything)
	if len(all) != 4 {
		t.Fatalf("read %d events, want 4: %+v", len(all), all)
	}
	if ids := storedIDs(t, db, everything); !reflect.DeepEqual(ids, []string{"a", "b", "a", "c"}) {
		t.Fatalf("log order = %v, want a b a c (the order of storing)", ids)
	}
	first := all[0]
	if first.SourceID != s1.ID || first.Site != "site1" || first.ReceivedAt != 1700000000000 ||
		first.EventID != "a" || first.EventName != eventNameOf("a") || first.Seq <= 0 ||
		!bytes.Equal(first.Event, event(s1, "a").Body) {
		t.Fatalf("first stored event = %+v", first)
	}
	if first.Warnings == nil || len(first.Warnings) != 0 {
		t.Fatalf("warnings of an event without any = %#v, want empty non-nil", first.Warnings)
	}
	if !reflect.DeepEqual(all[2].Warnings, warned.Warnings) || all[2].SourceID != s2.ID {
		t.Fatalf("warned event read as %+v, want warnings %+v", all[2], warned.Warnings)
	}
	if ids := storedIDs(t, db, ofSource(s1.ID)); !reflect.DeepEqual(ids, []string{"a", "b", "c"}) {
		t.Fatalf("events of source 1 = %v, want a b c", ids)
	}
	if ids := storedIDs(t, db, ofSource(s2.ID)); !reflect.DeepEqual(ids, []string{"a"}) {
		t.Fatalf("events of source 2 = %v, want a", ids)
	}
	if got := readAll(t, db, ofSource(s2.ID+100)); len(got) != 0 {
		t.Fatalf("events of an unknown source = %+v", got)
	}
}

func TestReadEvents(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	s1 := newSource(t, db, "site1")
	s2 := newSource(t, db, "site2")
	var want1, want2 []string
	for i := range 20 {
		id := fmt.Sprint("e", i)
		src := s1
		if i%4 == 0 {
			src = s2
			want2 = append(want2, id)
		} else {
			want1 = append(want1, id)
		}
		if _, err := db.StoreEvents(ctx, events(src, id)); err != nil {
			t.Fatal(err)
		}
	}

	// The whole log, one source's events, one event name, and both filters at once, each read
	// page by page.
	if got := len(readAll(t, db, everything)); got != 20 {
		t.Fatalf("read %d events, want 20", got)
	}
	if got := storedIDs(t, db, ofSource(s1.ID)); !reflect.DeepEqual(got, want1) {
		t.Fatalf("events of source 1 = %v, want %v", got, want1)
	}
	if got := storedIDs(t, db, ofSource(s2.ID)); !reflect.DeepEqual(got, want2) {
		t.Fatalf("events of source 2 = %v, want %v", got, want2)
	}
	for _, name := range []string{"page_view", "search", "add_to_cart"} {
		var wantAll, wantS1 []string
		for _, id := range storedIDs(t, db, everything) {
			if eventNameOf(id) == name {
				wantAll = append(wantAll, id)
			}
		}
		for _, id := range want1 {
			if eventNameOf(id) == name {
				wantS1 = append(wantS1, id)
			}
		}
		if got := storedIDs(t, db, trackapi.EventFilter{EventName: name}); !reflect.DeepEqual(got, wantAll) || len(got) == 0 {
			t.Fatalf("events named %s = %v, want %v", name, got, wantAll)
		}
		got := storedIDs(t, db, trackapi.EventFilter{SourceID: s1.ID, EventName: name})
		if !reflect.DeepEqual(got, wantS1) {
			t.Fatalf("events of source 1 named %s = %v, want %v", name, got, wantS1)
		}
	}
	if got := readAll(t, db, trackapi.EventFilter{EventName: "no_such_event"}); len(got) != 0 {
		t.Fatalf("events of an unknown name = %+v", got)
	}

	// A cursor in the middle, and past the end.
	all := readAll(t, db, everything)
	page, next, err := db.ReadEvents(ctx, all[9].Seq, everything, 5)
	if err != nil || len(page) != 5 || page[0].Seq != all[10].Seq || next != all[14].Seq {
		t.Fatalf("page after the 10th event = %d events, next %d, %v; want 5 from seq %d, next %d",
			len(page), next, err, all[10].Seq, all[14].Seq)
	}
	page, next, err = db.ReadEvents(ctx, all[19].Seq, everything, 5)
	if err != nil || len(page) != 0 || next != all[19].Seq {
		t.Fatalf("page after the last event = %+v, next %d, %v; want none, next %d", page, next, err, all[19].Seq)
	}

	// A limit below 1 would read nothing for ever: it is refused, and not as a retryable error.
	for _, limit := range []int{0, -1} {
		page, next, err := db.ReadEvents(ctx, 0, everything, limit)
		if err == nil || errors.Is(err, trackapi.ErrUnavailable) || len(page) != 0 || next != 0 {
			t.Fatalf("limit %d: %d events, next %d, %v; want a permanent error", limit, len(page), next, err)
		}
	}
}

// TestReadEventsStreamsInSeqOrder checks the plan of ReadEvents' query: a range scan of the table
// from the cursor, in seq order, with no sort, whatever the filter. A sort would read every row
// after the cursor (of a source, with its index) before returning the first.
func TestReadEventsStreamsInSeqOrder(t *testing.T) {
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	if _, err := db.StoreEvents(context.Background(), events(src, "a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	for _, filter := range []trackapi.EventFilter{
		everything,
		{SourceID: src.ID},
		{EventName: "search"},
		{SourceID: src.ID, EventName: "search"},
	} {
		plan := sqlite.ReadEventsPlan(t, db, 1, filter, 100)
		text := strings.Join(plan, "; ")
		if len(plan) != 1 || !strings.Contains(text, "INTEGER PRIMARY KEY (rowid>?)") || strings.Contains(text, "TEMP B-TREE") {
			t.Fatalf("plan with filter %+v: %q; want one range scan on seq and no sort", filter, text)
		}
	}
}

func TestStoreEventsRejectsInvalidEventsAlone(t *testing.T) {
	ctx := context.Background()
	var c commits
	db := open(t, tempPath(t), sqlite.Options{OnCommit: c.onCommit})
	src := newSource(t, db, "site1")

	noBody := event(src, "x")
	noBody.Body = nil
	if _, err := db.StoreEvents(ctx, []trackapi.Event{noBody}); err == nil || errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("event without body: %v, want an error that is not ErrUnavailable", err)
	}

	// The bad request, whose second event names an unknown source, shares a transaction with good
	// ones: it must fail alone, with its first event undone too.
	unknown := trackapi.Source{ID: src.ID + 100, Site: "nowhere"}
	bad := []trackapi.Event{event(src, "bad-1"), event(unknown, "bad-2")}
	release := sqlite.HoldWriter(t, db)
	waitGood1, err := sqlite.Enqueue(ctx, db, events(src, "good-1"))
	if err != nil {
		t.Fatal(err)
	}
	waitBad, err := sqlite.Enqueue(ctx, db, bad)
	if err != nil {
		t.Fatal(err)
	}
	waitGood2, err := sqlite.Enqueue(ctx, db, events(src, "good-2"))
	if err != nil {
		t.Fatal(err)
	}
	release()

	if stored, err := waitGood1(); err != nil || !reflect.DeepEqual(stored, []bool{true}) {
		t.Fatalf("good request 1 = %v, %v", stored, err)
	}
	if stored, err := waitBad(); err == nil || errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("bad request = %v, %v; want an error that is not ErrUnavailable", stored, err)
	}
	if stored, err := waitGood2(); err != nil || !reflect.DeepEqual(stored, []bool{true}) {
		t.Fatalf("good request 2 = %v, %v", stored, err)
	}
	if ids := storedIDs(t, db, everything); !reflect.DeepEqual(ids, []string{"good-1", "good-2"}) {
		t.Fatalf("stored ids = %v, want good-1 good-2", ids)
	}
	if c.maxRequests.Load() < 2 {
		t.Fatalf("the bad request was not grouped with a good one (largest group %d)", c.maxRequests.Load())
	}
}

func TestStoreEventsGroupsWaitingRequests(t *testing.T) {
	ctx := context.Background()
	var c commits
	db := open(t, tempPath(t), sqlite.Options{OnCommit: c.onCommit})
	src := newSource(t, db, "site1")

	const n = 10
	release := sqlite.HoldWriter(t, db)
	waits := make([]func() ([]bool, error), n)
	for i := range waits {
		var err error
		waits[i], err = sqlite.Enqueue(ctx, db, events(src, fmt.Sprint("e", i), "shared"))
		if err != nil {
			t.Fatal(err)
		}
	}
	release()

	storedShared := 0
	for i, wait := range waits {
		stored, err := wait()
		if err != nil || len(stored) != 2 || !stored[0] {
			t.Fatalf("request %d = %v, %v", i, stored, err)
		}
		if stored[1] {
			storedShared++
		}
	}
	if storedShared != 1 {
		t.Fatalf("the shared event was stored %d times, want 1", storedShared)
	}
	// The committer may have taken some requests before it found the writer busy; all the others
	// were waiting when it got the writer back. So: one or two transactions for the n requests.
	if g, r := c.groups.Load(), c.requests.Load(); g > 2 || r != n {
		t.Fatalf("%d transactions for %d requests, want at most 2 for %d", g, r, n)
	}
	if got := len(readAll(t, db, everything)); got != n+1 {
		t.Fatalf("exported %d events, want %d", got, n+1)
	}
}

func TestStoreEventsConcurrent(t *testing.T) {
	const goroutines, calls = 50, 20
	ctx := context.Background()
	var c commits
	db := open(t, tempPath(t), sqlite.Options{OnCommit: c.onCommit})
	src := newSource(t, db, "site1")

	// Each call stores 5 events shared by the 5 goroutines with the same g%10 (overlapping across
	// calls of different goroutines) and one event of its own, twice (a duplicate in the call).
	var storedTrue atomic.Int64
	start := make(chan struct{})
	errs := make(chan error, goroutines*calls)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for call := range calls {
				own := fmt.Sprintf("own-%d-%d", g, call)
				ids := []string{own}
				for k := range 5 {
					ids = append(ids, fmt.Sprintf("shared-%d-%d", g%10, call*5+k))
				}
				ids = append(ids, own)
				stored, err := db.StoreEvents(ctx, events(src, ids...))
				if err != nil {
					errs <- err
					return
				}
				if stored[len(stored)-1] {
					errs <- fmt.Errorf("duplicate %s within a call reported as stored", own)
				}
				for _, s := range stored {
					if s {
						storedTrue.Add(1)
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	const distinct = goroutines*calls + 10*calls*5
	if n := storedTrue.Load(); n != distinct {
		t.Fatalf("%d events reported stored, want %d (the distinct ids)", n, distinct)
	}
	seen := map[string]int{}
	for _, id := range storedIDs(t, db, everything) {
		seen[id]++
	}
	if len(seen) != distinct {
		t.Fatalf("%d distinct ids exported, want %d", len(seen), distinct)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s stored %d times", id, n)
		}
	}
	if c.requests.Load() != goroutines*calls {
		t.Fatalf("OnCommit saw %d requests, want %d", c.requests.Load(), goroutines*calls)
	}
	if c.maxRequests.Load() < 2 {
		t.Fatalf("no transaction had more than one request: %d transactions for %d requests", c.groups.Load(), c.requests.Load())
	}
	t.Logf("%d requests in %d transactions, largest %d", c.requests.Load(), c.groups.Load(), c.maxRequests.Load())
}

func TestStoreEventsOverloaded(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")

	// With the committer held up, requests pile up until the queue is full; then a call is
	// refused at once instead of waiting. (The committer holds one group besides the queue.)
	release := sqlite.HoldWriter(t, db)
	var waits []func() ([]bool, error)
	var refused error
	for i := 0; refused == nil && i < 10*sqlite.QueueSize; i++ {
		wait, err := sqlite.Enqueue(ctx, db, events(src, fmt.Sprint("e", i)))
		if err != nil {
			refused = err
			break
		}
		waits = append(waits, wait)
	}
	if !errors.Is(refused, trackapi.ErrUnavailable) {
		t.Fatalf("after %d queued requests: %v, want ErrUnavailable", len(waits), refused)
	}
	if len(waits) < sqlite.QueueSize {
		t.Fatalf("refused after %d requests, want at least %d", len(waits), sqlite.QueueSize)
	}
	release()

	for i, wait := range waits {
		if stored, err := wait(); err != nil || !reflect.DeepEqual(stored, []bool{true}) {
			t.Fatalf("request %d = %v, %v", i, stored, err)
		}
	}
	if stored, err := db.StoreEvents(ctx, events(src, "after")); err != nil || !stored[0] {
		t.Fatalf("store once drained: %v, %v", stored, err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping once drained: %v", err)
	}
}

func TestStoreEventsContextEnds(t *testing.T) {
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.StoreEvents(ctx, events(src, "early")); !errors.Is(err, context.Canceled) {
		t.Fatalf("store with a canceled context: %v, want context.Canceled", err)
	}

	// A caller whose context ends while the commit is held up gets its answer at once.
	release := sqlite.HoldWriter(t, db)
	defer release()
	ctx, cancel = context.WithCancel(context.Background())
	wait, err := sqlite.Enqueue(ctx, db, events(src, "late"))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait after cancel: %v, want context.Canceled", err)
	}
}

func TestCloseRefusesNewEvents(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(tempPath(t))
	if err != nil {
		t.Fatal(err)
	}
	src := newSource(t, db, "site1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.StoreEvents(ctx, events(src, "a")); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("store after close: %v, want ErrUnavailable", err)
	}
	if err := db.Ping(ctx); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("ping after close: %v, want ErrUnavailable", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestCloseDrainsQueuedRequests(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	src := newSource(t, db, "site1")

	const n = 20
	release := sqlite.HoldWriter(t, db)
	waits := make([]func() ([]bool, error), n)
	for i := range waits {
		if waits[i], err = sqlite.Enqueue(ctx, db, events(src, fmt.Sprint("e", i))); err != nil {
			t.Fatal(err)
		}
	}
	sqlite.StopAccepting(db)
	if _, err := sqlite.Enqueue(ctx, db, events(src, "too-late")); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("enqueue while closing: %v, want ErrUnavailable", err)
	}
	release()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for i, wait := range waits {
		if stored, err := wait(); err != nil || !reflect.DeepEqual(stored, []bool{true}) {
			t.Fatalf("request %d queued before close = %v, %v", i, stored, err)
		}
	}

	db = open(t, path, sqlite.Options{})
	if got := len(readAll(t, db, everything)); got != n {
		t.Fatalf("%d events in the file after reopening, want %d", got, n)
	}
}

func TestCloseWhileStoring(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	src := newSource(t, db, "site1")

	const goroutines = 20
	var mu sync.Mutex
	var committed []string
	var started sync.WaitGroup // every goroutine has had one call succeed
	started.Add(goroutines)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			first := true
			defer func() {
				if first {
					started.Done()
				}
			}()
			for call := 0; ; call++ {
				ids := []string{fmt.Sprintf("%d-%d-a", g, call), fmt.Sprintf("%d-%d-b", g, call)}
				_, err := db.StoreEvents(ctx, events(src, ids...))
				if errors.Is(err, trackapi.ErrUnavailable) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				committed = append(committed, ids...)
				mu.Unlock()
				if first {
					first = false
					started.Done()
				}
			}
		})
	}
	started.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("StoreEvents calls still running 30s after Close")
	}
	close(errs)
	for err := range errs {
		t.Fatalf("StoreEvents during close: %v, want success or ErrUnavailable", err)
	}

	// Every call that succeeded is in the file, and nothing else: a refused call stored nothing.
	db = open(t, path, sqlite.Options{})
	got := storedIDs(t, db, everything)
	if len(got) != len(committed) {
		t.Fatalf("%d events in the file, %d reported committed", len(got), len(committed))
	}
	inFile := map[string]bool{}
	for _, id := range got {
		inFile[id] = true
	}
	for _, id := range committed {
		if !inFile[id] {
			t.Fatalf("committed event %s missing after reopening", id)
		}
	}
}

// paddedEvents returns n events of about 330 bytes each.
func paddedEvents(source trackapi.Source, prefix string, n int) []trackapi.Event {
	pad := strings.Repeat("x", 290)
	evs := make([]trackapi.Event, n)
	for i := range evs {
		id := fmt.Sprintf("%s-%d", prefix, i)
		b, _ := json.Marshal(body{ID: id, Pad: pad})
		evs[i] = trackapi.Event{SourceID: source.ID, Site: source.Site, EventID: id, ReceivedAt: 1700000000000, Body: b}
	}
	return evs
}

func TestCommitFailureIsUnavailableAndRecovers(t *testing.T) {
	ctx := context.Background()
	var c commits
	db := open(t, tempPath(t), sqlite.Options{OnCommit: c.onCommit})
	src := newSource(t, db, "site1")
	batch := paddedEvents(src, "e", 100) // ~33 KB: needs new pages

	// The fault: the database may not grow past its current size, so inserts fail with SQLITE_FULL.
	limit := sqlite.WriterPragma(t, db, "max_page_count")
	pages := sqlite.WriterPragma(t, db, "page_count")
	if got := sqlite.WriterPragma(t, db, fmt.Sprint("max_page_count = ", pages)); got != pages {
		t.Fatalf("max_page_count set to %d, want %d", got, pages)
	}
	for attempt := range 2 { // the fault persists: each group fails again
		_, err := db.StoreEvents(ctx, batch)
		var e *sqlitedriver.Error
		if !errors.Is(err, trackapi.ErrUnavailable) || !errors.As(err, &e) || e.Code()&0xff != sqlite3.SQLITE_FULL {
			t.Fatalf("attempt %d with a full database: %v, want ErrUnavailable wrapping SQLITE_FULL", attempt, err)
		}
	}
	if n := c.failures.Load(); n != 2 {
		t.Fatalf("OnCommit saw %d failed transactions, want 2", n)
	}
	if got := readAll(t, db, everything); len(got) != 0 {
		t.Fatalf("%d events stored by failed transactions", len(got))
	}
	// Readiness follows: while the fault lasts, Ping's test write fails too.
	for range 2 {
		if err := db.Ping(ctx); !errors.Is(err, trackapi.ErrUnavailable) {
			t.Fatalf("ping with a full database: %v, want ErrUnavailable", err)
		}
	}

	// The fault clears: readiness comes back without any event traffic, and the very next call
	// commits everything, with nothing left over.
	sqlite.WriterPragma(t, db, fmt.Sprint("max_page_count = ", limit))
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping after the fault cleared: %v", err)
	}
	stored, err := db.StoreEvents(ctx, batch)
	if err != nil {
		t.Fatalf("after the fault cleared: %v", err)
	}
	for i, s := range stored {
		if !s {
			t.Fatalf("event %d reported duplicate after a failed transaction", i)
		}
	}
	if got := len(readAll(t, db, everything)); got != len(batch) {
		t.Fatalf("%d events exported, want %d", got, len(batch))
	}
}

func TestPing(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}

	// Another connection holds the write lock: the store cannot commit.
	raw := rawDB(t, path)
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	// Ping bounds its wait for the lock itself (not busy_timeout's 5 s), with no deadline given.
	start := time.Now()
	if err := db.Ping(ctx); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("ping while another connection writes: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("ping while another connection writes took %v, want well under a second", took)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping after the lock is gone: %v", err)
	}
}

// holdCommits returns Options whose committer, once armed, stops inside its next transaction
// (holding the writer and the write lock) until released; entered receives when it got there.
// Release is also called when the test ends, before the DB opened after it is closed.
func holdCommits(t *testing.T) (opts sqlite.Options, arm func(), entered <-chan struct{}, release func()) {
	var armed atomic.Bool
	in := make(chan struct{}, 1)
	hold := make(chan struct{})
	opts = sqlite.WithInTransaction(sqlite.Options{}, func() {
		if armed.CompareAndSwap(true, false) {
			in <- struct{}{}
			<-hold
		}
	})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	return opts, func() { armed.Store(true) }, in, release
}

// TestPingWhileCommitting checks that readiness does not wait behind a commit: the committer
// holds the writer connection for the whole transaction, and a Ping that took the write lock
// itself would wait until it ends (for a big group on a slow disk, seconds).
func TestPingWhileCommitting(t *testing.T) {
	ctx := context.Background()
	opts, arm, entered, release := holdCommits(t)
	db := open(t, tempPath(t), opts)
	t.Cleanup(release) // before the Close registered by open
	src := newSource(t, db, "site1")

	arm()
	done := make(chan error, 1)
	go func() {
		_, err := db.StoreEvents(ctx, events(src, "slow"))
		done <- err
	}()
	<-entered
	// More requests wait behind the long transaction, as under load.
	var waits []func() ([]bool, error)
	for i := range 10 {
		wait, err := sqlite.Enqueue(ctx, db, events(src, fmt.Sprint("queued-", i)))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, wait)
	}
	for range 3 {
		// A deadline, so that a Ping that waits for the commit fails rather than hangs.
		pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		err := db.Ping(pingCtx)
		cancel()
		if took := time.Since(start); err != nil || took > 500*time.Millisecond {
			t.Fatalf("ping during a commit: %v after %v; want success within 500ms", err, took)
		}
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("the held commit: %v", err)
	}
	for _, wait := range waits {
		if _, err := wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping once idle: %v", err)
	}
}

// TestPingStalledCommit checks the limit of "a busy committer is a working store": a transaction
// that runs far longer than any should (a hung disk) makes readiness fail.
func TestPingStalledCommit(t *testing.T) {
	ctx := context.Background()
	opts, arm, entered, release := holdCommits(t)
	db := open(t, tempPath(t), sqlite.WithStallAfter(opts, 100*time.Millisecond))
	t.Cleanup(release)
	src := newSource(t, db, "site1")

	arm()
	done := make(chan error, 1)
	go func() {
		_, err := db.StoreEvents(ctx, events(src, "stalled"))
		done <- err
	}()
	<-entered
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping at the start of a commit: %v", err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := db.Ping(ctx); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("ping during a stalled commit: %v, want ErrUnavailable", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping once the commit ended: %v", err)
	}
}

// TestPingProbeIsBounded checks that the test write after a failed commit does not wait for the
// writer for ever: here something else holds it, and Ping answers within its probe bound.
func TestPingProbeIsBounded(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	limit := sqlite.WriterPragma(t, db, "max_page_count")
	sqlite.WriterPragma(t, db, fmt.Sprint("max_page_count = ", sqlite.WriterPragma(t, db, "page_count")))
	if _, err := db.StoreEvents(ctx, paddedEvents(src, "e", 100)); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("store into a full database: %v, want ErrUnavailable", err)
	}

	release := sqlite.HoldWriter(t, db)
	start := time.Now()
	if err := db.Ping(ctx); !errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("ping after a failed commit, writer held: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("ping after a failed commit, writer held, took %v; want about a second at most", took)
	}
	release()
	sqlite.WriterPragma(t, db, fmt.Sprint("max_page_count = ", limit))
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping after the fault cleared: %v", err)
	}
}

func BenchmarkStoreEvents(b *testing.B) {
	const perCall = 100
	var c commits
	db := open(b, tempPath(b), sqlite.Options{OnCommit: c.onCommit})
	src := newSource(b, db, "site1")
	pad := strings.Repeat("x", 290) // body ~330 bytes

	var next atomic.Int64
	b.SetParallelism(8) // many concurrent clients, as behind an HTTP server
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		evs := make([]trackapi.Event, perCall)
		for pb.Next() {
			call := next.Add(1)
			for i := range evs {
				id := fmt.Sprintf("%d-%d", call, i)
				data, _ := json.Marshal(body{ID: id, Pad: pad})
				evs[i] = trackapi.Event{SourceID: src.ID, Site: src.Site, EventID: id, ReceivedAt: 1700000000000, Body: data}
			}
			if _, err := db.StoreEvents(context.Background(), evs); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N*perCall)/b.Elapsed().Seconds(), "events/s")
	if g := c.groups.Load(); g > 0 {
		b.ReportMetric(float64(c.requests.Load())/float64(g), "calls/commit")
	}
}
