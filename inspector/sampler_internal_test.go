package inspector

import (
	"fmt"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

// clock is a fake clock for the sampler: tests move it by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)} }

// keptOf calls keep n times and says how many times it kept.
func keptOf(n int, keep func() bool) int {
	kept := 0
	for range n {
		if keep() {
			kept++
		}
	}
	return kept
}

// TestSamplingBudget follows one (source, event name) through an hour of a steady flood: 6 a
// minute, plus 30 more an hour, taken by the first minutes that have more.
func TestSamplingBudget(t *testing.T) {
	c := newClock()
	s := newSampler(Sampling{})
	page := func() bool { return s.keep(1, "1", "page_view", "", false, c.now()) }

	if got := keptOf(100, page); got != trackapi.InspectorSamplePerMinute+trackapi.InspectorSampleBonusPerHour {
		t.Fatalf("first minute of 100 events: %d kept, want 6 + the whole bonus of 30", got)
	}
	c.add(time.Minute)
	if got := keptOf(100, page); got != trackapi.InspectorSamplePerMinute {
		t.Fatalf("second minute: %d kept, want 6 (the hour's bonus is spent)", got)
	}
	// 58 more minutes of the same hour: 6 each.
	total := 0
	for range 58 {
		c.add(time.Minute)
		total += keptOf(50, page)
	}
	if total != 58*trackapi.InspectorSamplePerMinute {
		t.Fatalf("rest of the hour: %d kept, want %d", total, 58*trackapi.InspectorSamplePerMinute)
	}
	// A new hour brings a new bonus.
	c.add(time.Minute)
	if got := keptOf(100, page); got != 36 {
		t.Fatalf("first minute of the next hour: %d kept, want 36", got)
	}

	// Another event name, another source, or the same name under another unknown site: budgets
	// of their own.
	for _, other := range []func() bool{
		func() bool { return s.keep(1, "1", "search", "", false, c.now()) },
		func() bool { return s.keep(2, "1", "page_view", "", false, c.now()) },
		func() bool { return s.keep(0, "site-a", "page_view", "", false, c.now()) },
		func() bool { return s.keep(0, "site-b", "page_view", "", false, c.now()) },
	} {
		if got := keptOf(10, other); got != 10 {
			t.Errorf("another key: %d of 10 kept, want all (its own budget)", got)
		}
	}
	// A known source's budget does not depend on the site sent with its key.
	c.add(time.Hour)
	s.keep(3, "x", "e", "", false, c.now())
	if got := keptOf(50, func() bool { return s.keep(3, "y", "e", "", false, c.now()) }); got != 35 {
		t.Errorf("source 3 under another site: %d kept, want the 35 left of its budget", got)
	}
}

// TestSamplingProblemsHaveTheirOwnBudget: a flood of valid events does not spend the budget of
// the same event's warnings and rejections, and the reverse.
func TestSamplingProblemsHaveTheirOwnBudget(t *testing.T) {
	c := newClock()
	s := newSampler(Sampling{})
	keptOf(10000, func() bool { return s.keep(1, "1", "page_view", "", false, c.now()) })
	if got := keptOf(100, func() bool { return s.keep(1, "1", "page_view", "", true, c.now()) }); got != 36 {
		t.Fatalf("problems after a flood of valid events: %d kept, want 36", got)
	}
	if got := keptOf(100, func() bool { return s.keep(1, "1", "page_view", "", true, c.now()) }); got != 0 {
		t.Fatalf("problems beyond their budget: %d kept, want 0", got)
	}
	// Events without a name share the name "": a flood of them leaves the refusals' budget.
	keptOf(1000, func() bool { return s.keep(1, "1", "", "", true, c.now()) })
	if got := keptOf(100, func() bool { return s.keepRefusal(1, "1", c.now()) }); got != 36 {
		t.Fatalf("refusals after a flood of events without a name: %d kept, want 36", got)
	}
}

// TestSamplingTestCodes: test events bypass sampling up to 20 a minute a source, whatever their
// event names; beyond that they are sampled like the others.
func TestSamplingTestCodes(t *testing.T) {
	c := newClock()
	s := newSampler(Sampling{})
	// Spend page_view's budget first.
	keptOf(1000, func() bool { return s.keep(1, "1", "page_view", "", false, c.now()) })
	i := 0
	test := func() bool {
		i++
		return s.keep(1, "1", "page_view", fmt.Sprint("T", i%3), false, c.now())
	}
	if got := keptOf(100, test); got != trackapi.InspectorTestCodePerMinute {
		t.Fatalf("test events over a spent budget: %d kept, want %d", got, trackapi.InspectorTestCodePerMinute)
	}
	// The test budget is the source's, not an event name's.
	if s.keep(1, "1", "other_name_spent_below", "T", false, c.now()) != true {
		t.Fatal("an event of a fresh name was not kept by its own budget")
	}
	keptOf(1000, func() bool { return s.keep(1, "1", "search", "", false, c.now()) })
	if s.keep(1, "1", "search", "T", false, c.now()) {
		t.Fatal("a test event beyond the source's test budget and its name's budget was kept")
	}
	// Another source has its own test budget, and a new minute a new one.
	if got := keptOf(30, func() bool { return s.keep(2, "1", "page_view", "T", false, c.now()) }); got != 30 {
		t.Errorf("another source: %d of 30 test events kept, want all (20 by its test budget, 10 by its name's)", got)
	}
	c.add(time.Minute)
	if got := keptOf(100, test); got != trackapi.InspectorTestCodePerMinute+trackapi.InspectorSamplePerMinute {
		t.Errorf("next minute: %d test events kept, want 20 + the 6 of the minute's budget", got)
	}
}

// TestSamplingClockOrder: a request received just before the minute changed, but counted after a
// later one, counts in the later minute rather than resetting its budget.
func TestSamplingClockOrder(t *testing.T) {
	c := newClock()
	s := newSampler(Sampling{})
	late := c.now().Add(time.Minute)
	keptOf(100, func() bool { return s.keep(1, "1", "e", "", false, late) })
	if s.keep(1, "1", "e", "", false, c.now()) {
		t.Fatal("an event of the earlier minute, counted late, was kept after the later minute spent the budget")
	}
}

// TestSamplerMemoryIsBounded: a flood of new event names keeps the sampler within its bound, and
// the names beyond it share one budget a shard rather than each getting a fresh one.
func TestSamplerMemoryIsBounded(t *testing.T) {
	c := newClock()
	s := newSampler(Sampling{})
	const names = samplerShards*maxBudgetsPerShard + 50000
	kept := keptOf(names, func() bool {
		c.t = c.t.Add(time.Nanosecond)
		return s.keep(1, "1", fmt.Sprint("name-", c.t.UnixNano()), "", false, c.now())
	})
	held := 0
	for i := range s.shards {
		held += len(s.shards[i].budgets)
	}
	if held > samplerShards*maxBudgetsPerShard {
		t.Fatalf("%d budgets held, bound %d", held, samplerShards*maxBudgetsPerShard)
	}
	if most := samplerShards*maxBudgetsPerShard + samplerShards*36; kept > most {
		t.Fatalf("%d of %d new names kept; past the bound they share a budget a shard, so at most %d", kept, names, most)
	}
	// In a later hour the stale budgets make room again.
	c.add(2 * time.Hour)
	if !s.keep(1, "1", "fresh", "", false, c.now()) {
		t.Fatal("a new name an hour later was not kept")
	}
}
