// Package ingest holds the event rules: what happens to a collect request between its body (read
// and decompressed by the HTTP layer, within its limit) and the store. In order:
//
//  1. checkJSON and splitSingle/splitBatch: the request-level 400s (a Refusal);
//  2. the source service authenticates tc_s and the key (an invalid_source rejection otherwise);
//  3. eventProcessor.process, for each event: the conversion of legacy shapes (legacy.go),
//     event_name, normalisation (id, timestamp), schema validation with kin-openapi, the
//     standard events' required properties (standard.go); warnings and rejections;
//  4. trackapi.EventStore.StoreEvents (StoreEventOutcomes when the store is a
//     trackapi.OutcomeStore, which tells a reused event id), which returns once the events are
//     synced to disk;
//  5. the answer, whose size answer.go bounds;
//  6. the Inspector, when there is one, is told what became of the request and each of its
//     events, refused and unauthenticated requests included (inspect.go).
//
// It knows nothing of HTTP or Echo; server/ adapts it to the generated Echo interface.
package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/sources"
)

// Authenticator checks a request's site and key; *sources.Service is the one in use.
type Authenticator interface {
	Authenticate(ctx context.Context, site, key string) (sources.Auth, error)
}

// Config is what a Collector needs.
type Config struct {
	Store   trackapi.EventStore
	Sources Authenticator
	// Now is the receive-time clock; nil: time.Now.
	Now func() time.Time
	// Logger gets a line (info) for each event whose id was already stored for a different
	// event; nil: slog.Default().
	Logger *slog.Logger
	// Inspector, when set, is told what became of every request and its events (see
	// Inspector); nil: the inspector is off.
	Inspector Inspector
}

// Collector applies the event rules to collect requests. It is safe for concurrent use.
type Collector struct {
	store     trackapi.EventStore
	outcomes  trackapi.OutcomeStore // store, when it tells reused ids from plain duplicates
	sources   Authenticator
	events    *eventProcessor
	now       func() time.Time
	log       *slog.Logger
	inspector Inspector // nil: off
}

// New builds a Collector; it fails only when the embedded spec's Event schema is unusable.
func New(cfg Config) (*Collector, error) {
	if cfg.Store == nil || cfg.Sources == nil {
		return nil, errors.New("ingest: Config.Store and Config.Sources are required")
	}
	events, err := newEventProcessor()
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	outcomes, _ := cfg.Store.(trackapi.OutcomeStore)
	return &Collector{store: cfg.Store, outcomes: outcomes, sources: cfg.Sources, events: events, now: cfg.Now, log: cfg.Logger,
		inspector: cfg.Inspector}, nil
}

// Request is one collect request as the event rules see it.
type Request struct {
	Batch bool   // POST /events/batch: {"batch": [...]}; else one event
	Site  string // tc_s; empty when not sent
	Key   string // the source key, from ?token= or the Bearer header; empty when not sent
	Body  []byte // the whole body, decompressed, within its endpoint's limit
	// ClientIP is the client address as the HTTP layer found it, for the inspector (which masks
	// it); empty when unknown.
	ClientIP string
}

// Collect applies the rules to one request and returns the 200 body once the accepted events
// are on disk. Its errors:
//   - a *Refusal (errors.As): the request as a whole is unusable (400), nothing was stored;
//   - wrapping trackapi.ErrUnavailable: nothing could be stored right now, a retry may work (503);
//   - the context's error: the caller went away;
//   - anything else is a bug or a bad value that a retry would not fix (500).
func (c *Collector) Collect(ctx context.Context, req Request) (gen.CollectResult, error) {
	split := splitSingle
	if req.Batch {
		split = splitBatch
	}
	if refusal := checkJSON(req.Body); refusal != nil {
		return gen.CollectResult{}, c.refused(ctx, req, refusal)
	}
	raws, refusal := split(req.Body)
	if refusal != nil {
		return gen.CollectResult{}, c.refused(ctx, req, refusal)
	}
	return c.collect(ctx, req, raws)
}

// refused tells the Inspector, when there is one, about a refused request, and returns the
// refusal.
func (c *Collector) refused(ctx context.Context, req Request, refusal *Refusal) error {
	if c.inspector != nil {
		c.inspectRefusal(ctx, req, refusal)
	}
	return refusal
}

// collect authenticates, processes and stores the events of a usable request, and answers
// within the bounds of answer.go.
func (c *Collector) collect(ctx context.Context, req Request, raws []json.RawMessage) (gen.CollectResult, error) {
	receivedAt := c.now()
	result := gen.CollectResult{Received: len(raws)}

	auth, err := c.sources.Authenticate(ctx, req.Site, req.Key)
	if err != nil {
		return gen.CollectResult{}, err
	}
	if !auth.OK() {
		// The same rejection for every event: listed for the first ones, counted for the rest.
		a := newAnswer(len(req.Body), len(raws), len(raws), []string{string(gen.InvalidSource)}, nil)
		a.addRun(&a.errors, 0, len(raws), invalidSource)
		a.fill(&result)
		result.Rejected = len(raws)
		if c.inspector != nil {
			c.inspectUnauthenticated(req, receivedAt, auth, raws)
		}
		return result, nil
	}

	outcomes := make([]eventOutcome, len(raws))
	toStore := make([]trackapi.Event, 0, len(raws))
	hashes := make([]byte, bodyHashBytes*len(raws)) // one allocation for the request's hashes
	for i, raw := range raws {
		p := c.events.process(raw, req.Batch, receivedAt)
		outcomes[i].eventName, outcomes[i].testCode = p.eventName, p.testCode
		if p.rejected != nil {
			outcomes[i].rejected = p.rejected
			result.Rejected++
			continue
		}
		outcomes[i].warnings = p.warnings
		outcomes[i].stored = len(toStore)
		hash := hashes[i*bodyHashBytes : (i+1)*bodyHashBytes : (i+1)*bodyHashBytes]
		bodyHash(hash, raw)
		toStore = append(toStore, trackapi.Event{
			SourceID: auth.Source.ID, Site: auth.Source.Site, EventID: p.eventID, EventName: p.eventName,
			ReceivedAt: receivedAt.UnixMilli(), Body: p.body, Warnings: p.warnings, BodyHash: hash,
		})
	}

	var stored []trackapi.StoreOutcome
	if len(toStore) > 0 {
		if stored, err = c.storeEvents(ctx, toStore); err != nil {
			return gen.CollectResult{}, err
		}
	}
	var reused []int // indexes into toStore
	for i, o := range stored {
		switch o {
		case trackapi.OutcomeStored:
			result.Accepted++
		case trackapi.OutcomeIDReused:
			reused = append(reused, i)
			result.Duplicates++
		default:
			result.Duplicates++
		}
	}

	a := c.listProblems(req, outcomes, stored)
	a.fill(&result)
	if len(reused) > 0 {
		c.logReused(auth, toStore, reused)
	}
	if c.inspector != nil {
		c.inspectOutcomes(req, receivedAt, auth, raws, outcomes, toStore, stored)
	}
	return result, nil
}

// eventOutcome is what the answer says about one event of the request.
type eventOutcome struct {
	rejected *trackapi.Problem  // nil when the event went to the store
	warnings []trackapi.Problem // of an event that went to the store
	stored   int                // its index in the events given to the store
	// eventName and testCode are the event's, for the Inspector.
	eventName, testCode string
}

// listProblems lists the request's problems, in the order of the events: each event's rejection or
// warnings, and event_id_reused after the warnings of a duplicate whose body differed.
func (c *Collector) listProblems(req Request, outcomes []eventOutcome, stored []trackapi.StoreOutcome) *answer {
	reused := func(o eventOutcome) bool {
		return o.rejected == nil && stored[o.stored] == trackapi.OutcomeIDReused
	}
	var errorCodes, warningCodes []string
	problems := 0
	for _, o := range outcomes {
		if o.rejected != nil {
			errorCodes = addCode(errorCodes, o.rejected.Code)
			problems++
			continue
		}
		for _, w := range o.warnings {
			warningCodes = addCode(warningCodes, w.Code)
		}
		problems += len(o.warnings)
		if reused(o) {
			warningCodes = addCode(warningCodes, idReused.Code)
			problems++
		}
	}
	a := newAnswer(len(req.Body), len(outcomes), problems, errorCodes, warningCodes)
	for i, o := range outcomes {
		if o.rejected != nil {
			a.add(&a.errors, i, *o.rejected)
			continue
		}
		for _, w := range o.warnings {
			a.add(&a.warnings, i, w)
		}
		if reused(o) {
			a.add(&a.warnings, i, idReused)
		}
	}
	return a
}

// storeEvents stores events with their outcomes when the store tells them, else with
// StoreEvents (every duplicate then a plain one).
func (c *Collector) storeEvents(ctx context.Context, events []trackapi.Event) ([]trackapi.StoreOutcome, error) {
	if c.outcomes != nil {
		return c.outcomes.StoreEventOutcomes(ctx, events)
	}
	stored, err := c.store.StoreEvents(ctx, events)
	if err != nil {
		return nil, err
	}
	outcomes := make([]trackapi.StoreOutcome, len(stored))
	for i, isNew := range stored {
		outcomes[i] = trackapi.OutcomeDuplicate
		if isNew {
			outcomes[i] = trackapi.OutcomeStored
		}
	}
	return outcomes, nil
}

// maxReusedLogLines caps the log lines of one request's reused event ids; one more line counts
// the rest, so that a sender reusing ids in bulk cannot flood the log.
const maxReusedLogLines = 10

// logReused leaves a trace of each reused event id (source and id, never the body), for an
// operator to find the event the sender meant to send and could not.
func (c *Collector) logReused(auth sources.Auth, events []trackapi.Event, reused []int) {
	for n, i := range reused {
		if n == maxReusedLogLines {
			c.log.Info("more event ids reused for different events in the same request; not stored",
				"source_id", auth.Source.ID, "site", auth.Source.Site, "count", len(reused)-n)
			return
		}
		c.log.Info("event id reused for a different event; not stored (counted as a duplicate)",
			"source_id", auth.Source.ID, "site", auth.Source.Site, "event_id", shorten(events[i].EventID, 200))
	}
}

// shorten cuts s to at most n bytes (at a rune boundary) for a log line, saying so.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}

// invalidSource rejects every event of a request that names no active source.
var invalidSource = trackapi.Problem{
	Code: string(gen.InvalidSource), Path: "",
	Message: "missing, unknown or deactivated source: check tc_s and the source key",
}

// idReused is the warning on a duplicate whose body differs from the stored event's.
var idReused = trackapi.Problem{
	Code: string(gen.EventIdReused), Path: "/context/event_id",
	Message: "an event with this context.event_id was already stored with a different body; " +
		"this one was not stored (counted as a duplicate)",
}

// bodyHashBytes is how much of the SHA-256 of an event's bytes is kept: 64 bits tell a different
// body from a retry with a chance of error of 2^-64 a duplicate, for 9 bytes a stored event.
const bodyHashBytes = 8

// bodyHash writes into dst the hash of an event as its sender sent it (trackapi.Event.BodyHash):
// its raw bytes, without the white space around them. Hashing what was sent, not the stored body,
// is what keeps a plain retry from counting as a different event when the server fills in a
// timestamp (the receive time, different at each attempt); the cost is that the same event sent
// again with other spacing or member order counts as different.
func bodyHash(dst []byte, raw []byte) {
	sum := sha256.Sum256(bytes.TrimSpace(raw))
	copy(dst, sum[:])
}
