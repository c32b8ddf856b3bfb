package inspector

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
)

// OverflowEventName is the event name counts are kept under when more distinct (source, event
// name) keys arrive between two writes of the counts than the capturer holds (qualityShards ×
// maxPendingKeys of each kind): event names are the sender's to choose, and a sender inventing a
// new one for every event must not make the capturer's memory grow without bound. Totals stay
// exact; only the split by event name is lost for the excess.
const OverflowEventName = "(other event names)"

// Bounds of the counts held between two writes.
const (
	qualityShards = 16
	// maxPendingKeys bounds the (source, event name, hour) keys, and again the anomaly keys, of
	// one shard.
	maxPendingKeys = 4096
	// maxPendingSampleBytes bounds the sample bodies one shard holds; an anomaly that is new
	// when the bound is reached gets no sample (the stored one, if any, is kept).
	maxPendingSampleBytes = 1 << 20
	// maxUnwrittenKeys bounds the counts kept across failed writes; beyond it they are given up
	// (and logged), rather than growing while the store is unavailable.
	maxUnwrittenKeys = 200000
)

type eventKey struct {
	source int64
	hour   int64 // epoch milliseconds of the hour's start
	name   string
}

type anomalyKey struct {
	eventKey
	code, path string
}

type eventCounts struct {
	collected, withWarnings, rejected, duplicates int64
}

type anomalyCounts struct {
	count   int64
	message string
	sample  []byte // a copy of at most trackapi.QualitySampleLimit bytes of the body, not masked yet
	cut     bool   // sample is the start of a longer body
}

// quality holds the exact data-quality counts until the writer takes them. A request adds its
// counts under the lock of one shard picked at random, so concurrent requests rarely wait for
// each other; the writer takes every shard's maps and merges them.
type quality struct {
	shards [qualityShards]qualityShard
}

type qualityShard struct {
	mu          sync.Mutex
	events      map[eventKey]*eventCounts
	anomalies   map[anomalyKey]*anomalyCounts
	sampleBytes int
}

func newQuality() *quality {
	q := &quality{}
	for i := range q.shards {
		q.shards[i].reset()
	}
	return q
}

func (sh *qualityShard) reset() {
	sh.events = make(map[eventKey]*eventCounts)
	sh.anomalies = make(map[anomalyKey]*anomalyCounts)
	sh.sampleBytes = 0
}

// add counts the events of one request, received at at. Refusals are not events: they are not
// counted.
func (q *quality) add(in *ingest.Inspection, at time.Time) {
	if len(in.Events) == 0 {
		return
	}
	hour := at.UTC().Truncate(time.Hour).UnixMilli()
	sh := &q.shards[rand.IntN(qualityShards)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// A batch's events mostly share their name, and their problems: the counts of the current
	// name, and of the problems met since it changed, are found without a map lookup.
	var counts *eventCounts
	var last string
	var recent recentAnomalies
	for i := range in.Events {
		ev := &in.Events[i]
		name := cutString(ev.EventName, trackapi.InspectorTextLimit)
		if counts == nil || name != last {
			counts, last = sh.counts(eventKey{source: in.SourceID, hour: hour, name: name}), name
			recent.n = 0
		}
		switch ev.Outcome {
		case trackapi.InspectorAccepted:
			counts.collected++
		case trackapi.InspectorWarned:
			counts.collected++
			counts.withWarnings++
			sh.addProblems(in.SourceID, hour, name, ev, false, &recent)
		case trackapi.InspectorDuplicate:
			counts.duplicates++
			sh.addProblems(in.SourceID, hour, name, ev, true, &recent) // event_id_reused only
		case trackapi.InspectorRejected:
			counts.rejected++
			sh.addProblems(in.SourceID, hour, name, ev, false, &recent)
		}
	}
}

// recentAnomalies are the anomalies of one event name last met in a request, on the stack.
type recentAnomalies struct {
	n       int
	entries [8]struct {
		code, path string
		counts     *anomalyCounts
	}
}

// find returns the counts of (code, path) when met lately, else nil.
func (r *recentAnomalies) find(code, path string) *anomalyCounts {
	for i := range r.n {
		if e := &r.entries[i]; e.code == code && e.path == path {
			return e.counts
		}
	}
	return nil
}

// add remembers the counts of (code, path), when there is room.
func (r *recentAnomalies) add(code, path string, a *anomalyCounts) {
	if r.n < len(r.entries) {
		r.entries[r.n].code, r.entries[r.n].path, r.entries[r.n].counts = code, path, a
		r.n++
	}
}

// counts returns the counts of k, made when new (under OverflowEventName when the shard is full).
func (sh *qualityShard) counts(k eventKey) *eventCounts {
	if c, ok := sh.events[k]; ok {
		return c
	}
	if len(sh.events) >= maxPendingKeys {
		k.name = OverflowEventName
		if c, ok := sh.events[k]; ok {
			return c
		}
	}
	k.name = strings.Clone(k.name) // not a part of a longer name the request holds
	c := &eventCounts{}
	sh.events[k] = c
	return c
}

// addProblems counts the problems of one event (of name, whose recent anomalies are recent),
// only event_id_reused when reusedOnly.
func (sh *qualityShard) addProblems(source, hour int64, name string, ev *ingest.InspectedEvent, reusedOnly bool, recent *recentAnomalies) {
	for _, p := range ev.Problems {
		if reusedOnly && p.Code != string(gen.EventIdReused) {
			continue
		}
		path := cutString(p.Path, trackapi.InspectorTextLimit)
		if a := recent.find(p.Code, path); a != nil {
			a.count++
			a.message = p.Message
			continue
		}
		k := anomalyKey{eventKey: eventKey{source: source, hour: hour, name: name}, code: p.Code, path: path}
		a, ok := sh.anomalies[k]
		if !ok && len(sh.anomalies) >= maxPendingKeys {
			k.name, k.path = OverflowEventName, ""
			a, ok = sh.anomalies[k]
		}
		if !ok {
			k.name, k.code, k.path = strings.Clone(k.name), strings.Clone(k.code), strings.Clone(k.path)
			a = &anomalyCounts{}
			if sh.sampleBytes < maxPendingSampleBytes {
				a.sample = bytes.Clone(cutUTF8(ev.Body, trackapi.QualitySampleLimit))
				a.cut = len(a.sample) < len(ev.Body)
				sh.sampleBytes += len(a.sample)
			}
			sh.anomalies[k] = a
		}
		recent.add(p.Code, path, a)
		a.count++
		a.message = p.Message
	}
}

// pendingQuality is what the writer has taken from the shards and not written yet.
type pendingQuality struct {
	events    map[eventKey]*eventCounts
	anomalies map[anomalyKey]*anomalyCounts
}

func newPendingQuality() pendingQuality {
	return pendingQuality{events: map[eventKey]*eventCounts{}, anomalies: map[anomalyKey]*anomalyCounts{}}
}

func (p pendingQuality) empty() bool { return len(p.events) == 0 && len(p.anomalies) == 0 }

func (p pendingQuality) size() int { return len(p.events) + len(p.anomalies) }

// takeInto moves every shard's counts into p, adding them to what p holds. An anomaly keeps its
// newest message, and its newest sample unless it has none.
func (q *quality) takeInto(p pendingQuality) {
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		events, anomalies := sh.events, sh.anomalies
		sh.reset()
		sh.mu.Unlock()
		for k, c := range events {
			if have, ok := p.events[k]; ok {
				have.collected += c.collected
				have.withWarnings += c.withWarnings
				have.rejected += c.rejected
				have.duplicates += c.duplicates
			} else {
				p.events[k] = c
			}
		}
		for k, a := range anomalies {
			if have, ok := p.anomalies[k]; ok {
				have.count += a.count
				have.message = a.message
				if a.sample != nil {
					have.sample, have.cut = a.sample, a.cut
				}
			} else {
				p.anomalies[k] = a
			}
		}
	}
}

// report is p as the store takes it, with the samples' addresses masked.
func (p pendingQuality) report() trackapi.QualityReport {
	var r trackapi.QualityReport
	for k, c := range p.events {
		r.Events = append(r.Events, trackapi.EventQuality{
			SourceID: k.source, EventName: k.name, Hour: time.UnixMilli(k.hour).UTC(),
			Collected: c.collected, WithWarnings: c.withWarnings, Rejected: c.rejected, Duplicates: c.duplicates,
		})
	}
	for k, a := range p.anomalies {
		anomaly := trackapi.QualityAnomaly{
			SourceID: k.source, EventName: k.name, Hour: time.UnixMilli(k.hour).UTC(),
			Code: k.code, Path: k.path, Count: a.count, Message: a.message,
		}
		if a.sample != nil {
			anomaly.Sample = prepareBody(a.sample, a.cut, false)
		}
		r.Anomalies = append(r.Anomalies, anomaly)
	}
	return r
}
