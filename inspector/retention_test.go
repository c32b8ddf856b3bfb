package inspector_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
)

// TestRetention captures entries received at various ages through the capturer, and checks what
// a retention pass keeps: 7 days, 1 day for test events, the newest 10 000 of a source.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	c, err := inspector.New(inspector.Config{Store: db, Logger: quiet, QueueSize: 20000,
		Sampling: inspector.Sampling{PerMinute: 1 << 30, TestCodePerMinute: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()

	now := base.Add(30 * 24 * time.Hour)
	inspect := func(source int64, name, testCode string, at time.Time, n int) {
		in := &ingest.Inspection{At: at, SourceID: source, Site: "29"}
		for i := range n {
			in.Events = append(in.Events, ingest.InspectedEvent{Outcome: trackapi.InspectorAccepted, EventName: name,
				EventID: fmt.Sprint(i), TestCode: testCode, Body: []byte(`{}`)})
		}
		c.Inspect(in)
	}
	inspect(1, "eight-days", "", now.Add(-8*24*time.Hour), 3)
	inspect(1, "six-days", "", now.Add(-6*24*time.Hour), 3)
	inspect(1, "test-two-days", "T", now.Add(-48*time.Hour), 3)
	inspect(1, "test-twelve-hours", "T", now.Add(-12*time.Hour), 3)
	for range 10 {
		inspect(2, "flood", "", now.Add(-time.Hour), 1005) // 50 over the cap
	}
	inspect(2, "newest", "", now.Add(-time.Minute), 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.Dropped() != 0 {
		t.Fatalf("%d entries dropped", c.Dropped())
	}

	var observed int
	deleted, err := inspector.Retention{Store: db, Now: func() time.Time { return now }, Observe: func(n int) { observed += n }}.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 + 3 + 51; deleted != want || observed != want {
		t.Errorf("deleted %d (observed %d), want %d", deleted, observed, want)
	}
	names := map[string]int{}
	for _, source := range []int64{1, 2} {
		list, _, err := db.InspectorEntries(ctx, trackapi.InspectorFilter{SourceID: source}, 0, 2*trackapi.InspectorMaxPerSource)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			names[e.EventName]++
		}
	}
	want := map[string]int{"six-days": 3, "test-twelve-hours": 3, "flood": trackapi.InspectorMaxPerSource - 1, "newest": 1}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("kept %v, want %v", names, want)
	}
	if deleted, err := (inspector.Retention{Store: db, Now: func() time.Time { return now }}).Pass(ctx); err != nil || deleted != 0 {
		t.Errorf("second pass: deleted %d, %v; want nothing left to delete", deleted, err)
	}

	// Run passes at once, and stops with its context.
	gone, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	passes := make(chan int, 10)
	go func() {
		inspector.Retention{Store: db, Every: time.Hour, Now: func() time.Time { return now.Add(7 * 24 * time.Hour) },
			Observe: func(n int) { passes <- n }, Logger: quiet}.Run(gone)
		close(stopped)
	}()
	if n := <-passes; n != 3+3+trackapi.InspectorMaxPerSource {
		t.Errorf("Run's first pass deleted %d, want every entry left", n)
	}
	stop()
	<-stopped
	if _, err := db.InspectorEntry(ctx, 1); !errors.Is(err, trackapi.ErrNotFound) {
		t.Errorf("entry 1 after everything expired: %v", err)
	}
}
