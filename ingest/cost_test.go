package ingest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/sources"
)

// acceptAll is an Authenticator that lets every request in.
type acceptAll struct{}

func (acceptAll) Authenticate(context.Context, string, string) (sources.Auth, error) {
	return sources.Auth{Source: trackapi.Source{ID: 1, Site: "1"}}, nil
}

// memStore is an EventStore that keeps the events of its last call and deduplicates on the event
// id, as the SQLite store does.
type memStore struct {
	seen map[string]bool
	last []trackapi.Event
}

func (s *memStore) StoreEvents(_ context.Context, events []trackapi.Event) ([]bool, error) {
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.last = events
	stored := make([]bool, len(events))
	for i, e := range events {
		stored[i] = !s.seen[e.EventID]
		s.seen[e.EventID] = true
	}
	return stored, nil
}

func newTestCollector(t testing.TB) (*Collector, *memStore) {
	t.Helper()
	store := &memStore{}
	c, err := New(Config{Store: store, Sources: acceptAll{}, Now: func() time.Time { return time.UnixMilli(1700000000000) }})
	if err != nil {
		t.Fatal(err)
	}
	return c, store
}

// costShape is an event with a schema violation and a hole that fill fills with about n bytes.
type costShape struct {
	name        string
	prefix      string
	suffix      string
	fill        func(n, maxDepth int) string
	wantWarning string // in the message of one of the event's warnings
}

// nest fills with arrays nested as deep as n bytes allow, no deeper than maxDepth (0: no limit).
func nest(n, maxDepth int) string {
	d := n / 2
	if maxDepth > 0 {
		d = min(d, maxDepth)
	}
	return strings.Repeat("[", d) + strings.Repeat("]", d)
}

// repeat fills with unit(i) for i = 0, 1, ... separated by commas, as many as n bytes allow.
func repeat(unit func(i int) string) func(n, _ int) string {
	return func(n, _ int) string {
		var b strings.Builder
		for i := 0; ; i++ {
			u := unit(i)
			if b.Len()+len(u)+1 > n {
				return b.String()
			}
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(u)
		}
	}
}

const contextEnd = `"context":{"event_id":"d1","event_timestamp":1}}`

// costShapes are the worst events found for the validator, its messages and the duplicate-key
// rule. The deep ones put nested arrays where the validator meets a value in each of its ways:
// inside context (the root error "user is missing" carries the whole event), as the wrong type of
// a described property, as the items of a described array, as a context that is not an object,
// and in a free property at the root. The wide ones make as many violations or repeated keys as fit.
var costShapes = []costShape{
	{"deep-in-context", `{"event_name":"e","context":{"event_id":"d1","event_timestamp":1,"x":`, `}}`, nest, "nests deeper than 64"},
	{"deep-user-wrong-type", `{"event_name":"e","user":`, `,` + contextEnd, nest, "nests deeper than 64"},
	{"deep-consent-items", `{"event_name":"e","user":{"consistent_anonymous_id":"a","consent_categories":[`, `]},` + contextEnd, nest, "nests deeper than 64"},
	{"deep-context-not-object", `{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":`, `}`, nest, "nests deeper than 64"},
	{"deep-free-root-property", `{"event_name":"e","x":`, `,` + contextEnd, nest, `property "user" is missing`},
	{"wide-consent-violations", `{"event_name":"e","user":{"consistent_anonymous_id":"a","consent_categories":[`, `]},` + contextEnd,
		repeat(func(int) string { return `{}` }), "more schema violations not listed"},
	{"wide-consent-valid", `{"event_name":"e","user":{"consent_categories":[`, `]},` + contextEnd,
		repeat(func(int) string { return `0` }), `property "consistent_anonymous_id" is missing`},
	{"wide-root-repeats", `{"event_name":"e",`, `,` + contextEnd, repeat(func(int) string { return `"a":1` }), `the key "a" is repeated`},
	{"wide-context-repeated-keys", `{"event_name":"e","context":{"event_timestamp":"1",`, `,"event_id":"d1"}}`,
		repeat(func(i int) string { return fmt.Sprintf(`"k%d":1,"k%d":1`, i, i) }), "more repeated keys not listed"},
}

// openBrackets counts the containers still open at the end of prefix (no brackets in its strings).
func openBrackets(prefix string) int {
	return strings.Count(prefix, "{") + strings.Count(prefix, "[") - strings.Count(prefix, "}") - strings.Count(prefix, "]")
}

// costEvent fills shape up to size bytes, nesting no deeper than maxDepth levels in all (0: no
// limit but size), and pads it to size bytes with spaces.
func costEvent(shape costShape, size, maxDepth int) []byte {
	if maxDepth > 0 {
		maxDepth -= openBrackets(shape.prefix)
	}
	ev := shape.prefix + shape.fill(size-len(shape.prefix)-len(shape.suffix), maxDepth) + shape.suffix
	return []byte(ev + strings.Repeat(" ", size-len(ev)))
}

// cost is what one call used: CPU time of the whole process (user and system, so also the garbage
// collector's) and bytes allocated.
type cost struct {
	cpu   time.Duration
	alloc uint64
}

func measure(t testing.TB, f func()) cost {
	t.Helper()
	runtime.GC()
	var before, after syscall.Rusage
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		t.Fatal(err)
	}
	f()
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	return cost{cpu: cpu, alloc: m1.TotalAlloc - m0.TotalAlloc}
}

// The bound the collect path keeps whatever a request holds: under 0.5 s of CPU and 100 MB of
// allocations for one request. The test asserts half of each, for margin; the race detector makes
// everything several times slower and bigger, so under it the bound is scaled.
const (
	cpuBound   = 250 * time.Millisecond
	allocBound = 50 << 20
)

// TestCostOfHostileEvents sends the worst events found for the validator, its messages and the
// repeated-key rule, with a schema violation: nested as deep as the JSON decoder accepts (or as
// deep as fits, which it refuses), or as wide as fits; alone and as a full batch. Each request must
// stay within the bound, its warnings short, and every event stored.
func TestCostOfHostileEvents(t *testing.T) {
	c, store := newTestCollector(t)
	check := func(t *testing.T, shape costShape, req Request, wantRefused bool) {
		t.Helper()
		var res gen.CollectResult
		var err error
		used := measure(t, func() { res, err = c.Collect(context.Background(), req) })
		t.Logf("%d bytes: %v CPU, %.1f MB allocated", len(req.Body), used.cpu, float64(used.alloc)/(1<<20))
		var refusal *Refusal
		switch {
		case wantRefused:
			if !errors.As(err, &refusal) || refusal.Code != gen.ErrorCodeInvalidJson || !strings.Contains(refusal.Message, "10000 levels") {
				t.Fatalf("want a 400 invalid_json about the depth, got %v", err)
			}
		case err != nil:
			t.Fatal(err)
		case res.Accepted+res.Duplicates != res.Received:
			t.Fatalf("not all stored: %.500v", res)
		default:
			found := false
			for _, w := range res.Warnings {
				if len(w.Message) > 300 {
					t.Errorf("warning message of %d bytes: %.300s", len(w.Message), w.Message)
				}
				found = found || strings.Contains(w.Message, shape.wantWarning)
			}
			if !found {
				t.Errorf("no warning says %q: %.500v", shape.wantWarning, res.Warnings)
			}
			if len(res.Warnings) > 15*res.Received {
				t.Errorf("%d warnings for %d events", len(res.Warnings), res.Received)
			}
			for _, e := range store.last {
				if len(e.Body) > 2*trackapi.EventLimit {
					t.Errorf("stored body of %d bytes", len(e.Body))
				}
			}
		}
		cpuMax, allocMax := cpuBound, uint64(allocBound)
		if raceEnabled {
			cpuMax, allocMax = 10*cpuMax, 4*allocMax
		}
		if used.cpu > cpuMax || used.alloc > allocMax {
			t.Errorf("%v CPU and %d bytes allocated, want at most %v and %d", used.cpu, used.alloc, cpuMax, allocMax)
		}
	}
	for _, shape := range costShapes {
		t.Run(shape.name, func(t *testing.T) {
			t.Run("single", func(t *testing.T) {
				check(t, shape, Request{Body: costEvent(shape, trackapi.SingleBodyLimit, acceptedDepthInBatch)}, false)
			})
			t.Run("batch", func(t *testing.T) {
				check(t, shape, Request{Batch: true, Body: fullBatch(shape, acceptedDepthInBatch)}, false)
			})
			if strings.HasPrefix(shape.name, "deep-") {
				t.Run("single-deepest-fitting", func(t *testing.T) {
					check(t, shape, Request{Body: costEvent(shape, trackapi.SingleBodyLimit, 0)}, true)
				})
			}
		})
	}
}

// acceptedDepthInBatch is the deepest nesting encoding/json reads minus the batch's own two levels,
// so that the same events fit in a batch.
const acceptedDepthInBatch = maxJSONDepth - 2

// deepBatch fills a batch body up to its limit with deep events of the per-event limit (the last
// one smaller).
func fullBatch(shape costShape, maxDepth int) []byte {
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	for {
		size := min(trackapi.EventLimit, trackapi.BatchBodyLimit-b.Len()-len(`,]}`))
		if size < 1000 {
			break
		}
		if b.Len() > len(`{"batch":[`) {
			b.WriteByte(',')
		}
		b.Write(costEvent(shape, size, maxDepth))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}
