package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// inspectorRounds alternates the order of BenchmarkStoreEventsWithInspector's two sides from one
// call to the next, so that a drift of the machine's speed does not always fall on the same side.
var inspectorRounds atomic.Int64

// BenchmarkStoreEventsWithInspector is BenchmarkStoreEvents (100 events of ~330 bytes a call, 8
// callers a core), alone and beside the inspector's writer at its busiest: a full batch of 256
// entries of 1 KB, with counts, every 200 ms (the capturer's default batch and period), each in a
// transaction of its own at the writer connection. What the commits of events lose to it is what
// the inspector's writes cost collection.
//
//	go test -run '^$' -bench StoreEventsWithInspector -count 5 ./sqlite/
func BenchmarkStoreEventsWithInspector(b *testing.B) {
	order := []bool{false, true}
	if inspectorRounds.Add(1)%2 == 0 {
		order = []bool{true, false}
	}
	for _, on := range order {
		name := "inspector=off"
		if on {
			name = "inspector=on"
		}
		b.Run(name, func(b *testing.B) { benchStoreWithInspector(b, on) })
	}
}

func benchStoreWithInspector(b *testing.B, on bool) {
	const perCall = 100
	var c commits
	db := open(b, tempPath(b), sqlite.Options{OnCommit: c.onCommit})
	src := newSource(b, db, "site1")
	pad := strings.Repeat("x", 290)

	stop := make(chan struct{})
	done := make(chan int, 1)
	if on {
		go func() {
			writes := 0
			defer func() { done <- writes }()
			ticker := time.NewTicker(200 * time.Millisecond)
			defer ticker.Stop()
			body := json.RawMessage(`{"event_name":"page_view","pad":"` + strings.Repeat("y", 1000) + `"}`)
			for {
				select {
				case <-stop:
					return
				case <-ticker.C:
				}
				entries := make([]trackapi.InspectorEntry, 256)
				for i := range entries {
					entries[i] = trackapi.InspectorEntry{At: time.Now(), SourceID: src.ID, Site: src.Site, EventName: "page_view",
						EventID: fmt.Sprint(writes, "-", i), Outcome: trackapi.InspectorWarned, Codes: []string{"schema_violation"},
						Problems: []trackapi.Problem{{Code: "schema_violation", Path: "/user", Message: "m"}}, Body: body}
				}
				q := trackapi.QualityReport{
					Events:    []trackapi.EventQuality{{SourceID: src.ID, EventName: "page_view", Hour: time.Now(), Collected: 1000}},
					Anomalies: []trackapi.QualityAnomaly{{SourceID: src.ID, EventName: "page_view", Hour: time.Now(), Code: "schema_violation", Path: "/user", Count: 10, Message: "m", Sample: body}},
				}
				if err := db.AddInspectorEntries(context.Background(), entries, q); err != nil {
					b.Error(err)
					return
				}
				writes++
			}
		}()
	}

	var next atomic.Int64
	b.SetParallelism(8)
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
	close(stop)
	b.ReportMetric(float64(b.N*perCall)/b.Elapsed().Seconds(), "events/s")
	if on {
		b.ReportMetric(float64(<-done)/b.Elapsed().Seconds(), "inspector-writes/s")
	}
}

// BenchmarkAddInspectorEntries is one write of the capturer at its busiest: 256 entries of 1 KB
// with their counts. Its time is how long it holds the writer connection (and the commits of
// events waiting for it).
func BenchmarkAddInspectorEntries(b *testing.B) {
	db := open(b, tempPath(b), sqlite.Options{})
	src := newSource(b, db, "site1")
	body := json.RawMessage(`{"event_name":"page_view","pad":"` + strings.Repeat("y", 1000) + `"}`)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		entries := make([]trackapi.InspectorEntry, 256)
		for i := range entries {
			n++
			entries[i] = trackapi.InspectorEntry{At: time.Now(), SourceID: src.ID, Site: src.Site, EventName: "page_view",
				EventID: fmt.Sprint(n), Outcome: trackapi.InspectorWarned, Codes: []string{"schema_violation"},
				Problems: []trackapi.Problem{{Code: "schema_violation", Path: "/user", Message: "m"}}, Body: body}
		}
		if err := db.AddInspectorEntries(context.Background(), entries, trackapi.QualityReport{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/entry")
}
