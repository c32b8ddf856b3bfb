package inspector

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
)

// Sampling is the inspector's sampling budgets. The zero value of a field means trackapi's
// (InspectorSamplePerMinute, InspectorSampleBonusPerHour, InspectorTestCodePerMinute); tests
// raise them to keep everything.
type Sampling struct {
	// PerMinute entries are kept a minute for each (source, event name), and when a minute has
	// more, up to BonusPerHour more an hour. Entries with a problem have a budget of their own of
	// the same size.
	PerMinute    int
	BonusPerHour int
	// TestCodePerMinute events with a test_code are kept a minute for each source whatever the
	// budgets above say; more are sampled like the others.
	TestCodePerMinute int
}

func (s Sampling) withDefaults() Sampling {
	if s.PerMinute <= 0 {
		s.PerMinute = trackapi.InspectorSamplePerMinute
	}
	if s.BonusPerHour <= 0 {
		s.BonusPerHour = trackapi.InspectorSampleBonusPerHour
	}
	if s.TestCodePerMinute <= 0 {
		s.TestCodePerMinute = trackapi.InspectorTestCodePerMinute
	}
	return s
}

// The budgets a source has: for each event name one for entries without a problem and one for
// entries with one, one for refused requests (so that a flood of events without a name, which
// share the name "", does not crowd them out), and one for test events.
const (
	classPlain uint8 = iota
	classProblem
	classRefusal
	classTest
)

// Bounds of the sampler's memory. A budget is kept for each (source, event name, class) seen in
// the current hour: event names are the sender's to choose, so their number is bounded, at
// samplerShards × maxBudgetsPerShard. Budgets untouched this hour hold nothing a fresh one
// would not, and make room when a shard is full; when a shard is full of budgets in use, the
// keys it does not know share one budget (the shard's overflow) until the next hour frees room.
const (
	samplerShards      = 64
	maxBudgetsPerShard = 1024
)

// sampler decides, on the collect path, whether an entry is kept, before anything of it is
// built: a hash of its key and one short lock of one of samplerShards shards. It keeps no name,
// only hashes.
type sampler struct {
	rules  Sampling
	seed   maphash.Seed
	shards [samplerShards]samplerShard
}

type samplerShard struct {
	mu       sync.Mutex
	budgets  map[uint64]budget
	overflow budget
	swept    int64 // the minute of the last sweep of stale budgets, so that it runs once a minute at most
}

// budget is one key's use of its budget: used entries in the minute, bonus entries in the hour.
// The minute and hour only move forward: a request received a moment before another but
// counted after it counts in the later minute, rather than resetting it.
type budget struct {
	minute, hour int64
	used, bonus  int32
}

func newSampler(rules Sampling) *sampler {
	s := &sampler{rules: rules.withDefaults(), seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].budgets = make(map[uint64]budget)
	}
	return s
}

// key hashes a budget's key: the source, or the site when the source is unknown (0), the event
// name and the class.
func (s *sampler) key(sourceID int64, site, name string, class uint8) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	var b [9]byte
	for i := range 8 {
		b[i] = byte(sourceID >> (8 * i))
	}
	b[8] = class
	_, _ = h.Write(b[:]) // a maphash.Hash never fails
	if sourceID == 0 {
		_, _ = h.WriteString(site)
		_ = h.WriteByte(0)
	}
	_, _ = h.WriteString(name)
	return h.Sum64()
}

// take reports whether one more entry of key is kept at now, and counts it if so. perMinute and
// bonusPerHour are the budget's sizes.
func (s *sampler) take(key uint64, now time.Time, perMinute, bonusPerHour int) bool {
	sec := now.Unix()
	minute, hour := sec/60, sec/3600
	sh := &s.shards[key%samplerShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b, ok := sh.budgets[key]
	if !ok && len(sh.budgets) >= maxBudgetsPerShard {
		sh.sweep(minute, hour)
	}
	full := !ok && len(sh.budgets) >= maxBudgetsPerShard
	if full {
		b = sh.overflow
	}
	kept := b.take(minute, hour, perMinute, bonusPerHour)
	if full {
		sh.overflow = b
	} else {
		sh.budgets[key] = b
	}
	return kept
}

func (b *budget) take(minute, hour int64, perMinute, bonusPerHour int) bool {
	if minute > b.minute {
		b.minute, b.used = minute, 0
	}
	if int(b.used) < perMinute {
		b.used++
		return true
	}
	if hour > b.hour {
		b.hour, b.bonus = hour, 0
	}
	if int(b.bonus) < bonusPerHour {
		b.bonus++
		return true
	}
	return false
}

// sweep deletes the budgets that hold nothing for this minute and hour, once a minute at most.
func (sh *samplerShard) sweep(minute, hour int64) {
	if sh.swept == minute {
		return
	}
	sh.swept = minute
	for k, b := range sh.budgets {
		if b.minute < minute && (b.hour < hour || b.bonus == 0) {
			delete(sh.budgets, k)
		}
	}
}

// keepRefusal is the sampling rule for the entry of a refused request: its source's (or site's)
// refusal budget, of the size of an event name's.
func (s *sampler) keepRefusal(sourceID int64, site string, now time.Time) bool {
	return s.take(s.key(sourceID, site, "", classRefusal), now, s.rules.PerMinute, s.rules.BonusPerHour)
}

// keep is the sampling rule for one entry: a test event within its source's test budget is
// kept; any other is kept within its (source, event name, class) budget.
func (s *sampler) keep(sourceID int64, site, name, testCode string, problem bool, now time.Time) bool {
	if testCode != "" && s.take(s.key(sourceID, site, "", classTest), now, s.rules.TestCodePerMinute, 0) {
		return true
	}
	class := classPlain
	if problem {
		class = classProblem
	}
	return s.take(s.key(sourceID, site, name, class), now, s.rules.PerMinute, s.rules.BonusPerHour)
}
