package inspector_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
	"github.com/trackapi/trackapi/metrics"
	"github.com/trackapi/trackapi/sqlite"
)

// heldStore is the real SQLite store whose AddInspectorEntries waits until released: a store
// that cannot keep up.
type heldStore struct {
	*sqlite.DB
	entered chan struct{} // gets a value each time a write starts
	release chan struct{} // closed to let writes through
}

func (s *heldStore) AddInspectorEntries(ctx context.Context, entries []trackapi.InspectorEntry, q trackapi.QualityReport) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return s.DB.AddInspectorEntries(ctx, entries, q)
}

func openDB(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "trackapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return db
}

// one is a request of one accepted event with a name of its own, so that sampling keeps it.
func one(i int) *ingest.Inspection {
	return &ingest.Inspection{At: base, SourceID: 1, Site: "29", ClientIP: "192.0.2.1", Events: []ingest.InspectedEvent{{
		Outcome: trackapi.InspectorAccepted, EventName: fmt.Sprint("e", i), EventID: fmt.Sprint(i),
		Body: []byte(fmt.Sprintf(`{"event_name":"e%d"}`, i)),
	}}}
}

// TestFullQueueDropsWithoutWaiting: with the store stuck, the collect path's calls still return,
// and what the queue has no room for is dropped and counted, in the capturer and in the
// metrics. Once the store is back, what was queued is written.
func TestFullQueueDropsWithoutWaiting(t *testing.T) {
	db := openDB(t)
	store := &heldStore{DB: db, entered: make(chan struct{}, 1), release: make(chan struct{})}
	m := metrics.New()
	const queue = 100
	c, err := inspector.New(inspector.Config{Store: store, Logger: quiet, QueueSize: queue, BatchSize: 10,
		FlushEvery: time.Millisecond, OnDrop: m.ObserveInspectorDropped})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	release := sync.OnceFunc(func() { close(store.release) })
	stop := sync.OnceValue(func() error { release(); cancel(); return <-done })
	t.Cleanup(func() { _ = stop() })

	// The first entry goes to the writer, which then waits in the store.
	c.Inspect(one(0))
	<-store.entered
	const calls = 10000
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := 1; i < calls; i++ {
			c.Inspect(one(i))
		}
	}()
	select {
	case <-finished:
	case <-time.After(time.Minute): // only so that a hang fails with a message
		t.Fatal("Inspect calls waited for the stuck store")
	}
	if got, want := c.Dropped(), int64(calls-1-queue); got != want {
		t.Fatalf("dropped %d, want %d: all but the one being written and the %d queued", got, want, queue)
	}
	if got := counterValue(t, m, "trackapi_inspector_dropped_total", "queue_full"); got != float64(calls-1-queue) {
		t.Errorf("trackapi_inspector_dropped_total{reason=queue_full} = %v, want %d", got, calls-1-queue)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	written, _, err := db.InspectorEntriesAfter(context.Background(), trackapi.InspectorFilter{}, 0, calls)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 1+queue {
		t.Errorf("%d entries written once the store was back, want %d", len(written), 1+queue)
	}
}

// TestQueuedBytesAreBounded: big bodies fill the byte budget before the queue's count.
func TestQueuedBytesAreBounded(t *testing.T) {
	db := openDB(t)
	store := &heldStore{DB: db, entered: make(chan struct{}, 1), release: make(chan struct{})}
	c, err := inspector.New(inspector.Config{Store: store, Logger: quiet, QueueSize: 1000, MaxQueuedBytes: 100 << 10,
		FlushEvery: time.Millisecond, Sampling: inspector.Sampling{PerMinute: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { close(store.release); cancel(); <-done }()
	big := func() *ingest.Inspection {
		in := one(0)
		in.Events[0].Body = []byte(`{"event_name":"e0","pad":"` + string(make([]byte, 0)) + fmt.Sprintf("%031000d", 0) + `"}`)
		return in
	}
	c.Inspect(big())
	<-store.entered
	for range 100 {
		c.Inspect(big())
	}
	// Each body is about 31 KB: 3 fit in 100 KiB, the one being written among them (it counts
	// until it is written).
	if got := c.Dropped(); got != 100-2 {
		t.Errorf("dropped %d of 100 big entries, want 98", got)
	}
}

// counterValue reads one labelled value of a counter from the metrics' registry.
func counterValue(t testing.TB, m *metrics.Metrics, name, label string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetValue() == label {
					return metric.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
