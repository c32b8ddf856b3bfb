// Package ingest holds the event rules: what happens to a collect request between its body (read
// and decompressed by the HTTP layer, within its limit) and the store. In order:
//
//  1. checkJSON and splitSingle/splitBatch: the request-level 400s (a Refusal);
//  2. the source service authenticates tc_s and the key (an invalid_source rejection otherwise);
//  3. eventProcessor.process, for each event: event_name, normalisation (id, timestamp), schema
//     validation with kin-openapi; warnings and rejections;
//  4. trackapi.EventStore.StoreEvents, which returns once the events are synced to disk.
//
// It knows nothing of HTTP or Echo; server/ adapts it to the generated Echo interface.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
}

// Collector applies the event rules to collect requests. It is safe for concurrent use.
type Collector struct {
	store   trackapi.EventStore
	sources Authenticator
	events  *eventProcessor
	now     func() time.Time
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
	return &Collector{store: cfg.Store, sources: cfg.Sources, events: events, now: cfg.Now}, nil
}

// Request is one collect request as the event rules see it.
type Request struct {
	Batch bool   // POST /events/batch: {"batch": [...]}; else one event
	Site  string // tc_s; empty when not sent
	Key   string // the source key, from ?token= or the Bearer header; empty when not sent
	Body  []byte // the whole body, decompressed, within its endpoint's limit
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
		return gen.CollectResult{}, refusal
	}
	raws, refusal := split(req.Body)
	if refusal != nil {
		return gen.CollectResult{}, refusal
	}
	return c.collect(ctx, req, raws)
}

// collect authenticates, processes and stores the events of a usable request.
func (c *Collector) collect(ctx context.Context, req Request, raws []json.RawMessage) (gen.CollectResult, error) {
	receivedAt := c.now()
	result := gen.CollectResult{Received: len(raws), Errors: []gen.Problem{}, Warnings: []gen.Problem{}}

	auth, err := c.sources.Authenticate(ctx, req.Site, req.Key)
	if err != nil {
		return gen.CollectResult{}, err
	}
	if !auth.OK() {
		for i := range raws {
			result.Errors = append(result.Errors, gen.Problem{
				Index: i, Code: gen.InvalidSource, Path: "",
				Message: "missing, unknown or deactivated source: check tc_s and the source key",
			})
		}
		result.Rejected = len(raws)
		return result, nil
	}

	toStore := make([]trackapi.Event, 0, len(raws))
	for i, raw := range raws {
		p := c.events.process(raw, req.Batch, receivedAt)
		if p.rejected != nil {
			result.Errors = append(result.Errors, problemAt(i, *p.rejected))
			result.Rejected++
			continue
		}
		for _, w := range p.warnings {
			result.Warnings = append(result.Warnings, problemAt(i, w))
		}
		toStore = append(toStore, trackapi.Event{
			SourceID: auth.Source.ID, Site: auth.Source.Site, EventID: p.eventID, EventName: p.eventName,
			ReceivedAt: receivedAt.UnixMilli(), Body: p.body, Warnings: p.warnings,
		})
	}

	if len(toStore) > 0 {
		stored, err := c.store.StoreEvents(ctx, toStore)
		if err != nil {
			return gen.CollectResult{}, err
		}
		for _, isNew := range stored {
			if isNew {
				result.Accepted++
			} else {
				result.Duplicates++
			}
		}
	}
	return result, nil
}

func problemAt(index int, p trackapi.Problem) gen.Problem {
	return gen.Problem{Index: index, Code: gen.ProblemCode(p.Code), Path: p.Path, Message: p.Message}
}
