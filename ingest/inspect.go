package ingest

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sources"
)

// Inspector is told what became of every collect request, for the event inspector and the
// data-quality counts (trackapi.InspectorEntry states the rules; inspector.Capturer is the one
// in use). The collect path calls Inspect once for each request: after the events' outcomes are
// known (once they are stored), or once the request is refused. It builds no record for the
// inspector itself; the Inspector samples first and copies only what it keeps, so that an event
// it does not keep costs the collect path almost nothing.
type Inspector interface {
	// Inspect must return at once, without waiting for anything slow (a store, a full queue),
	// and must not keep in, or anything in points to, after it returns: the collect path reuses
	// them. Problems are shared and must not be changed.
	Inspect(in *Inspection)
}

// Inspection is one request as the Inspector sees it.
type Inspection struct {
	At    time.Time // when the request was received (the Collector's clock)
	Batch bool      // POST /events/batch
	Site  string    // tc_s as sent
	// KeyPrefix is trackapi.KeyPrefix of the key sent ("" when none): the key itself never
	// leaves the collect path.
	KeyPrefix string
	// SourceID is the source of the key sent when the key is known, also when it was refused
	// (expired, revoked, another site's, an inactive source's); 0 when unknown or missing.
	SourceID int64
	// Reason is why the credentials were refused (a sources.Reason), "" when they were not.
	Reason string
	// ClientIP is the client address as the server found it, not masked: the Inspector masks it.
	ClientIP string
	// Refusal is set when the whole request was refused (a 400); Events is then empty, and Body
	// is what was read of the request body (maybe nothing).
	Refusal *Refusal
	Body    []byte
	// Events are the request's events in their order, when it was not refused.
	Events []InspectedEvent
}

// InspectedEvent is what became of one event of a request.
type InspectedEvent struct {
	Outcome   string // trackapi.InspectorAccepted, ...
	EventName string // "" when missing or not a string
	EventID   string // the id stored or deduplicated on; "" when rejected
	// TestCode is the event's top-level test_code when it is a non-empty string.
	TestCode string
	// Problems are the event's warnings (with event_id_reused for a reused id), or its rejection.
	Problems []trackapi.Problem
	// Body is the event's JSON as processed (the server's fills included) when it went to the
	// store, else as sent.
	Body json.RawMessage
}

// inspections recycles Inspections, so that telling the Inspector about a request allocates
// nothing once the pool is warm.
var inspections = sync.Pool{New: func() any { return new(Inspection) }}

// newInspection returns a cleared Inspection for req, received at at, with room for n events.
func newInspection(req Request, at time.Time, auth sources.Auth, n int) *Inspection {
	in := inspections.Get().(*Inspection)
	events := in.Events[:0]
	*in = Inspection{
		At: at, Batch: req.Batch, Site: req.Site, KeyPrefix: trackapi.KeyPrefix(req.Key),
		SourceID: auth.Source.ID, Reason: string(auth.Reason), ClientIP: req.ClientIP,
	}
	if cap(events) < n {
		events = make([]InspectedEvent, 0, n)
	}
	in.Events = events
	return in
}

// inspect hands in to the Inspector and recycles it.
func (c *Collector) inspect(in *Inspection) {
	c.inspector.Inspect(in)
	clear(in.Events) // drop the references to the request's bytes
	in.Events = in.Events[:0]
	in.Body, in.Refusal = nil, nil
	inspections.Put(in)
}

// inspectRefusal tells the Inspector about a refused request. The request's credentials are
// checked, so that a sender sees its own refusals under its source; a check that fails (the
// store is unavailable) leaves the refusal without a source.
func (c *Collector) inspectRefusal(ctx context.Context, req Request, refusal *Refusal) {
	auth, err := c.sources.Authenticate(ctx, req.Site, req.Key)
	if err != nil {
		auth = sources.Auth{}
	}
	in := newInspection(req, c.now(), auth, 0)
	in.Refusal, in.Body = refusal, req.Body
	c.inspect(in)
}

// InspectRefusal tells the Inspector, when the Collector has one, about a request refused before
// Collect: the HTTP layer's refusals (a body over its limit, an unreadable gzip stream, an
// unsupported Content-Encoding, a parameter given twice). req.Body is what was read of the body,
// maybe nothing. Collect tells it about its own refusals.
func (c *Collector) InspectRefusal(ctx context.Context, req Request, refusal *Refusal) {
	if c.inspector == nil || refusal == nil {
		return
	}
	c.inspectRefusal(ctx, req, refusal)
}

// inspectUnauthenticated tells the Inspector about a request whose credentials were refused:
// every event is rejected with invalid_source. Their names and test codes are read from the raw
// events (the events are not processed otherwise).
func (c *Collector) inspectUnauthenticated(req Request, at time.Time, auth sources.Auth, raws []json.RawMessage) {
	in := newInspection(req, at, auth, len(raws))
	problems := []trackapi.Problem{invalidSource}
	for _, raw := range raws {
		name, testCode := nameAndTestCode(raw)
		in.Events = append(in.Events, InspectedEvent{
			Outcome: trackapi.InspectorRejected, EventName: name, TestCode: testCode, Problems: problems, Body: raw,
		})
	}
	c.inspect(in)
}

// inspectOutcomes tells the Inspector what became of the events of an authenticated request.
func (c *Collector) inspectOutcomes(req Request, at time.Time, auth sources.Auth, raws []json.RawMessage,
	outcomes []eventOutcome, toStore []trackapi.Event, stored []trackapi.StoreOutcome) {
	in := newInspection(req, at, auth, len(outcomes))
	for i, o := range outcomes {
		if o.rejected != nil {
			in.Events = append(in.Events, InspectedEvent{
				Outcome: trackapi.InspectorRejected, EventName: o.eventName, TestCode: o.testCode,
				Problems: []trackapi.Problem{*o.rejected}, Body: raws[i],
			})
			continue
		}
		e := toStore[o.stored]
		ev := InspectedEvent{EventName: e.EventName, EventID: e.EventID, TestCode: o.testCode, Problems: o.warnings, Body: e.Body}
		switch stored[o.stored] {
		case trackapi.OutcomeStored:
			ev.Outcome = trackapi.InspectorAccepted
			if len(o.warnings) > 0 {
				ev.Outcome = trackapi.InspectorWarned
			}
		case trackapi.OutcomeIDReused:
			ev.Outcome = trackapi.InspectorDuplicate
			ev.Problems = append(o.warnings[:len(o.warnings):len(o.warnings)], idReused)
		default:
			ev.Outcome = trackapi.InspectorDuplicate
		}
		in.Events = append(in.Events, ev)
	}
	c.inspect(in)
}

// nameAndTestCode reads an event's event_name and test_code from its raw bytes, when they are
// strings (the last of repeated keys, as everywhere).
func nameAndTestCode(raw []byte) (name, testCode string) {
	var buf [24]member
	members, _ := appendMembers(buf[:0], raw)
	return stringMember(members, "event_name"), stringMember(members, "test_code")
}

// stringMember is the value of the last member named key when it is a JSON string, else "".
func stringMember(members []member, key string) string {
	if v := lastMember(members, key); len(v) > 0 && v[0] == '"' {
		return decodeKey(v)
	}
	return ""
}
