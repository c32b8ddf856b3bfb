package ingest_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
)

// The cost of the inspector on the collect path: each benchmark runs the same requests through
// Collect over the real SQLite store (in b.TempDir(), fsync on) with the inspector off and on, in
// one invocation, so that the two can be compared:
//
//	go test -run '^$' -bench 'Inspector' -count 5 ./ingest/
//
// With it on, the capturer's writer runs as in `trackapi serve`, so its writes take their turns
// at the store's writer connection. The events are valid page_view events with new ids (stored,
// and sampled out but for the first few a minute, as in a steady flood), or, for "warned",
// events without a timestamp or user (each with warnings, which are counted by code and path).

func BenchmarkInspectorSingle1KB(b *testing.B) {
	benchInspector(b, 1, 1024, false, 1)
}

func BenchmarkInspectorSingle1KBParallel50(b *testing.B) {
	benchInspector(b, 1, 1024, false, 50)
}

func BenchmarkInspectorBatch100x330B(b *testing.B) {
	benchInspector(b, 100, 330, false, 1)
}

func BenchmarkInspectorBatch100x330BWarned(b *testing.B) {
	benchInspector(b, 100, 330, true, 1)
}

func BenchmarkInspectorBatch100x330BParallel20(b *testing.B) {
	benchInspector(b, 100, 330, false, 20)
}

// benchRounds counts the calls of benchInspector, whose order of off and on alternates: the
// machine's speed drifts over a run (here, a virtual machine), and a fixed order would give the
// drift to the one that always runs second.
var benchRounds atomic.Int64

func benchInspector(b *testing.B, events, size int, warned bool, inFlight int) {
	order := []bool{false, true}
	if benchRounds.Add(1)%2 == 0 {
		order = []bool{true, false}
	}
	for _, on := range order {
		name := "inspector=off"
		if on {
			name = "inspector=on"
		}
		b.Run(name, func(b *testing.B) { benchCollectInspector(b, events, size, warned, inFlight, on) })
	}
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// benchSide is one collect path over its own SQLite file, with the inspector on or off.
type benchSide struct {
	b         testing.TB
	collector *ingest.Collector
	capturer  *inspector.Capturer // nil when off
	site, key string
	events    int
	idAt      []int
	next      atomic.Uint64
	close     func()
}

func newBenchSide(b testing.TB, events, size int, warned, on bool) (*benchSide, []byte) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "trackapi.db"))
	if err != nil {
		b.Fatal(err)
	}
	keys := sources.New(db, sources.Options{Logger: quietLog})
	src, key, err := keys.Create(ctx, "29", "bench")
	if err != nil {
		b.Fatal(err)
	}
	side := &benchSide{b: b, site: src.Site, key: key.Key, events: events}
	cfg := ingest.Config{Store: db, Sources: keys, Logger: quietLog}
	stop := func() {}
	if on {
		if side.capturer, err = inspector.New(inspector.Config{Store: db, Logger: quietLog}); err != nil {
			b.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- side.capturer.Run(runCtx) }()
		stop = func() { cancel(); <-done }
		cfg.Inspector = side.capturer
	}
	side.close = func() { stop(); _ = keys.Close(ctx); _ = db.Close() }
	if side.collector, err = ingest.New(cfg); err != nil {
		b.Fatal(err)
	}
	body, idAt := inspectorBenchBody(events, size, warned)
	side.idAt = idAt
	return side, body
}

// send collects body (the caller's own copy) with new event ids.
func (s *benchSide) send(body []byte) bool {
	n := s.next.Add(1)
	for i, at := range s.idAt {
		copy(body[at:at+24], fmt.Sprintf("%016d-%07d", n, i))
	}
	res, err := s.collector.Collect(context.Background(), ingest.Request{Batch: s.events > 1, Site: s.site, Key: s.key, Body: body, ClientIP: "203.0.113.7"})
	if err != nil || res.Accepted != s.events {
		s.b.Errorf("collect: %+v, %v", res, err)
		return false
	}
	return true
}

func benchCollectInspector(b *testing.B, events, size int, warned bool, inFlight int, on bool) {
	side, body := newBenchSide(b, events, size, warned, on)
	defer side.close()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	if inFlight <= 1 {
		mine := append([]byte(nil), body...)
		for i := 0; i < b.N && side.send(mine); i++ {
		}
	} else {
		b.SetParallelism(max(1, inFlight/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			mine := append([]byte(nil), body...)
			for pb.Next() && side.send(mine) {
			}
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
	if side.capturer != nil {
		b.ReportMetric(float64(side.capturer.Dropped()), "dropped")
	}
}

// BenchmarkInspectorPaired sends each request once to a collect path with the inspector off and
// once to one with it on, each over its own SQLite file, in turns (off first, then on first), and
// times each side: a drift of the machine's speed then touches both alike, which separate
// benchmarks run one after the other cannot promise. It reports, for each side, the time of a
// request and the process's CPU time during it (user and system: the fsync waits are not in it,
// so the inspector's share of it is larger than of the time, and it is steadier on a machine
// whose disk other work shares), and the ratios on/off of both.
func BenchmarkInspectorPaired(b *testing.B) {
	for _, shape := range []struct {
		name         string
		events, size int
		warned       bool
	}{
		{"Single1KB", 1, 1024, false},
		{"Batch100x330B", 100, 330, false},
		{"Batch100x330BWarned", 100, 330, true},
	} {
		b.Run(shape.name, func(b *testing.B) {
			off, body := newBenchSide(b, shape.events, shape.size, shape.warned, false)
			defer off.close()
			on, _ := newBenchSide(b, shape.events, shape.size, shape.warned, true)
			defer on.close()
			offBody, onBody := append([]byte(nil), body...), append([]byte(nil), body...)
			var offTime, onTime, offCPU, onCPU time.Duration
			timed := func(side *benchSide, body []byte, total, cpu *time.Duration) bool {
				cpuStart := cpuTime(b)
				start := time.Now()
				ok := side.send(body)
				*total += time.Since(start)
				*cpu += cpuTime(b) - cpuStart
				return ok
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var ok bool
				if i%2 == 0 {
					ok = timed(off, offBody, &offTime, &offCPU) && timed(on, onBody, &onTime, &onCPU)
				} else {
					ok = timed(on, onBody, &onTime, &onCPU) && timed(off, offBody, &offTime, &offCPU)
				}
				if !ok {
					break
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(offTime.Nanoseconds())/float64(b.N), "off-ns/req")
			b.ReportMetric(float64(onTime.Nanoseconds())/float64(b.N), "on-ns/req")
			b.ReportMetric(float64(onTime)/float64(offTime), "on/off")
			b.ReportMetric(float64(offCPU.Nanoseconds())/float64(b.N), "off-cpu-ns/req")
			b.ReportMetric(float64(onCPU.Nanoseconds())/float64(b.N), "on-cpu-ns/req")
			b.ReportMetric(float64(onCPU)/float64(offCPU), "cpu-on/off")
		})
	}
}

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inspectorBenchBody is a request of events events of about size bytes each, and where each
// event's 24-byte id is.
func inspectorBenchBody(events, size int, warned bool) ([]byte, []int) {
	placeholder := strings.Repeat("0", 24)
	head := `{"event_name":"page_view","page_type":"product",` +
		`"user":{"consistent_anonymous_id":"6f1c2ad0-67892","consent_categories":["1","3"]},` +
		`"context":{"event_id":"` + placeholder + `","event_timestamp":1700000000000,"page":{"url":"https://shop.example.com/p/1234","lang":"en"},` +
		`"device":{"ip":"198.51.100.23"}},"note":"`
	if warned {
		head = `{"event_name":"page_view","page_type":"product",` +
			`"context":{"event_id":"` + placeholder + `","page":{"url":"https://shop.example.com/p/1234","lang":"en"},` +
			`"device":{"ip":"198.51.100.23"}},"note":"`
	}
	event := head + strings.Repeat("x", max(0, size-len(head)-2)) + `"}`
	idAt := strings.Index(event, placeholder)
	if events == 1 {
		return []byte(event), []int{idAt}
	}
	body := []byte(`{"batch":[`)
	var ids []int
	for i := range events {
		if i > 0 {
			body = append(body, ',')
		}
		ids = append(ids, len(body)+idAt)
		body = append(body, event...)
	}
	return append(body, "]}"...), ids
}
