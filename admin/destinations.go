package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/webhook"
)

// ListDestinations pages through the destinations by id, each with its delivery state.
func (s *Server) ListDestinations(ctx context.Context, req adminapi.ListDestinationsRequestObject) (adminapi.ListDestinationsResponseObject, error) {
	after, err := parseCursor(req.Params.After)
	if err != nil {
		return nil, err
	}
	list, err := s.cfg.Store.Destinations(ctx)
	if err != nil {
		return nil, err
	}
	page := adminapi.DestinationPage{Items: []adminapi.Destination{}}
	limit := pageLimit(req.Params.Limit)
	for _, d := range list {
		if d.ID <= after {
			continue
		}
		if len(page.Items) == limit {
			page.Next = formatCursor(page.Items[len(page.Items)-1].Id)
			break
		}
		out, err := s.destinationOut(ctx, d)
		if err != nil {
			return nil, err
		}
		page.Items = append(page.Items, out)
	}
	return adminapi.ListDestinations200JSONResponse(page), nil
}

// CreateDestination checks a destination as the delivery engine will use it, then stores it. A
// webhook gets a signing secret, shown in this answer only.
func (s *Server) CreateDestination(ctx context.Context, req adminapi.CreateDestinationRequestObject) (adminapi.CreateDestinationResponseObject, error) {
	d := trackapi.Destination{Type: string(req.Body.Type), Status: trackapi.DestinationActive}
	b := req.Body
	typ := adminapi.DestinationType(b.Type)
	if err := applyFields(&d, adminapi.DestinationFields{Name: &b.Name, Type: &typ, Status: b.Status, Url: b.Url,
		AllowPrivate: b.AllowPrivate, Site: b.Site, Token: b.Token, Brokers: b.Brokers, Topic: b.Topic, Path: b.Path,
		Sources: b.Sources, ConsentCategory: b.ConsentCategory, Filter: b.Filter, BatchSize: b.BatchSize}); err != nil {
		return nil, err
	}
	var secret string
	if d.Type == trackapi.DestinationWebhook {
		var err error
		if secret, err = webhook.NewSecret(); err != nil {
			return nil, err
		}
		d.Config.Secrets = []trackapi.SigningSecret{{Secret: secret}}
	}
	if err := s.checkDestination(ctx, d); err != nil {
		return nil, err
	}
	d, err := s.cfg.Store.CreateDestination(ctx, d)
	if err != nil {
		return nil, err
	}
	out, err := s.destinationOut(ctx, d)
	if err != nil {
		return nil, err
	}
	created := adminapi.DestinationCreated{Destination: out}
	if secret != "" {
		created.SigningSecret = &secret
	}
	return adminapi.CreateDestination201JSONResponse(created), nil
}

// GetDestination returns one destination with its delivery state.
func (s *Server) GetDestination(ctx context.Context, req adminapi.GetDestinationRequestObject) (adminapi.GetDestinationResponseObject, error) {
	d, err := s.cfg.Store.Destination(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	out, err := s.destinationOut(ctx, d)
	if err != nil {
		return nil, err
	}
	return adminapi.GetDestination200JSONResponse{DestinationJSONResponse: adminapi.DestinationJSONResponse(out)}, nil
}

// UpdateDestination changes the fields given, checked as on creation.
func (s *Server) UpdateDestination(ctx context.Context, req adminapi.UpdateDestinationRequestObject) (adminapi.UpdateDestinationResponseObject, error) {
	d, err := s.cfg.Store.Destination(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	if req.Body.Type != nil && string(*req.Body.Type) != d.Type {
		return nil, badRequest("type: a %s destination cannot become a %s one; create a new destination", d.Type, *req.Body.Type)
	}
	if err := applyFields(&d, adminapi.DestinationFields(*req.Body)); err != nil {
		return nil, err
	}
	if err := s.checkDestination(ctx, d); err != nil {
		return nil, err
	}
	if d, err = s.cfg.Store.UpdateDestination(ctx, d); err != nil {
		return nil, err
	}
	out, err := s.destinationOut(ctx, d)
	if err != nil {
		return nil, err
	}
	return adminapi.UpdateDestination200JSONResponse{DestinationJSONResponse: adminapi.DestinationJSONResponse(out)}, nil
}

// DeleteDestination deletes a destination with its delivery state.
func (s *Server) DeleteDestination(ctx context.Context, req adminapi.DeleteDestinationRequestObject) (adminapi.DeleteDestinationResponseObject, error) {
	if err := s.cfg.Store.DeleteDestination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	return adminapi.DeleteDestination204Response{}, nil
}

// RotateSigningSecret gives a webhook a new signing secret; the previous ones keep signing until
// the overlap ends.
func (s *Server) RotateSigningSecret(ctx context.Context, req adminapi.RotateSigningSecretRequestObject) (adminapi.RotateSigningSecretResponseObject, error) {
	d, err := s.cfg.Store.Destination(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	if d.Type != trackapi.DestinationWebhook {
		return nil, fmt.Errorf("destination %d is a %s destination; only webhooks are signed: %w", d.ID, d.Type, trackapi.ErrConflict)
	}
	overlap := 24 * time.Hour
	if req.Body != nil && req.Body.ExpirePreviousAfterSeconds != nil {
		overlap = time.Duration(*req.Body.ExpirePreviousAfterSeconds) * time.Second
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return nil, err
	}
	now := s.now()
	hadPrevious := len(d.Config.Secrets) > 0
	d.Config.Secrets = webhook.RotateSecrets(d.Config.Secrets, secret, now, overlap)
	if _, err := s.cfg.Store.UpdateDestination(ctx, d); err != nil {
		return nil, err
	}
	out := adminapi.NewSigningSecret{SigningSecret: secret, Prefix: secretPrefix(secret)}
	if hadPrevious {
		out.PreviousExpireAt = optTime(now.Add(overlap))
	}
	return adminapi.RotateSigningSecret201JSONResponse(out), nil
}

// checkDestination checks d as the engine will use it: its sources exist, its type has a sink,
// its filter parses and its sink takes its settings. Every mistake is a 400 naming it.
func (s *Server) checkDestination(ctx context.Context, d trackapi.Destination) error {
	for _, id := range d.Sources {
		if _, err := s.cfg.Store.Source(ctx, id); err != nil {
			return badRequest("sources: source %d: %v", id, err)
		}
	}
	if err := deliver.ValidateDestination(d, s.cfg.Sinks); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// applyFields sets the fields given on d.
func applyFields(d *trackapi.Destination, f adminapi.DestinationFields) error {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&d.Name, f.Name)
	set(&d.Config.URL, f.Url)
	set(&d.Config.Site, f.Site)
	set(&d.Config.Token, f.Token)
	set(&d.Config.Topic, f.Topic)
	set(&d.Config.Path, f.Path)
	set(&d.ConsentCategory, f.ConsentCategory)
	if f.Status != nil {
		d.Status = string(*f.Status)
	}
	if f.AllowPrivate != nil {
		d.Config.AllowPrivate = *f.AllowPrivate
	}
	if f.Brokers != nil {
		d.Config.Brokers = *f.Brokers
	}
	if f.Sources != nil {
		d.Sources = *f.Sources
	}
	if f.BatchSize != nil {
		d.BatchSize = *f.BatchSize
	}
	if f.Filter != nil {
		raw, err := json.Marshal(f.Filter)
		if err != nil {
			return badRequest("filter: %v", err)
		}
		if string(raw) == "{}" {
			raw = nil // an empty filter is none
		}
		d.Filter = raw
	}
	return nil
}

// destinationOut is a destination as the API shows it: no token, no secret (their prefixes), and
// a URL without its query string, which may carry credentials.
func (s *Server) destinationOut(ctx context.Context, d trackapi.Destination) (adminapi.Destination, error) {
	state, err := s.cfg.Store.DeliveryState(ctx, d.ID)
	if err != nil {
		return adminapi.Destination{}, err
	}
	batch := d.BatchSize
	if batch == 0 {
		batch = deliver.DefaultBatchSize
	}
	out := adminapi.Destination{
		Id: d.ID, Name: d.Name, Type: adminapi.DestinationType(d.Type), Status: adminapi.DestinationStatus(d.Status),
		Sources: d.Sources, BatchSize: batch, CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(),
		State: s.stateOut(state),
	}
	if out.Sources == nil {
		out.Sources = []int64{}
	}
	if d.ConsentCategory != "" {
		out.ConsentCategory = &d.ConsentCategory
	}
	if len(d.Filter) > 0 {
		var f adminapi.DestinationFilter
		if err := json.Unmarshal(d.Filter, &f); err != nil {
			return adminapi.Destination{}, fmt.Errorf("destination %d: stored filter: %w", d.ID, err)
		}
		out.Filter = &f
	}
	switch d.Type {
	case trackapi.DestinationWebhook, trackapi.DestinationForward:
		u := shownURL(d.Config.URL)
		out.Url, out.AllowPrivate = &u, &d.Config.AllowPrivate
		if d.Type == trackapi.DestinationForward {
			tokenSet := d.Config.Token != ""
			out.Site, out.TokenSet = &d.Config.Site, &tokenSet
		}
	case trackapi.DestinationKafka:
		out.Brokers, out.Topic = &d.Config.Brokers, &d.Config.Topic
	case trackapi.DestinationFile:
		out.Path = &d.Config.Path
	}
	if d.Type == trackapi.DestinationWebhook {
		secrets := make([]adminapi.SigningSecret, 0, len(d.Config.Secrets))
		for _, sec := range d.Config.Secrets {
			secrets = append(secrets, adminapi.SigningSecret{Prefix: secretPrefix(sec.Secret), ExpiresAt: optTime(sec.ExpiresAt)})
		}
		out.SigningSecrets = &secrets
	}
	return out, nil
}

// stateOut is where a destination's delivery stands, as the API shows it.
func (s *Server) stateOut(st trackapi.DeliveryState) adminapi.DeliveryState {
	out := adminapi.DeliveryState{Cursor: st.Cursor, LagEvents: st.LagEvents, Retries: st.Retries,
		DeadLetters: st.DeadLetters, NextRetryAt: optTime(st.NextRetryAt)}
	if !st.LagSince.IsZero() {
		lag := int64(max(0, s.now().Sub(st.LagSince)) / time.Second)
		out.LagSeconds = &lag
	}
	return out
}

// shownURL is a URL without its query string and user info, which may hold credentials.
func shownURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i]
		}
		return raw
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

// secretPrefix tells signing secrets apart without showing them: "whsec_" and 4 characters.
func secretPrefix(secret string) string {
	const shown = len("whsec_") + 4
	if len(secret) <= shown {
		return secret
	}
	return secret[:shown]
}

// samplePageView is the event a destination test sends when it is given none.
const samplePageView = `{"event_name":"page_view","page_type":"home","page_name":"trackapi destination test",` +
	`"user":{"consistent_anonymous_id":"trackapi-test","consent_categories":["1"]}}`

// TestDestination sends one event to a destination now, outside its queue and filters, or shows
// the request it would send (dry run).
func (s *Server) TestDestination(ctx context.Context, req adminapi.TestDestinationRequestObject) (adminapi.TestDestinationResponseObject, error) {
	d, err := s.cfg.Store.Destination(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	dryRun := req.Body != nil && req.Body.DryRun != nil && *req.Body.DryRun
	event := json.RawMessage(samplePageView)
	if req.Body != nil && req.Body.Event != nil {
		if event, err = json.Marshal(*req.Body.Event); err != nil {
			return nil, badRequest("event: %v", err)
		}
		if len(event) > trackapi.EventLimit {
			return nil, badRequest("event: %d bytes, more than %d", len(event), trackapi.EventLimit)
		}
	}
	eventID := trackapi.EventIDOfJSON(event)
	if eventID == "" {
		eventID = "test-" + trackapi.NewEventID()
	}
	now := s.now()
	env := trackapi.Envelope{ID: "0:" + eventID, SourceID: 0, Site: "test", ReceivedAt: now.UnixMilli(), Event: event,
		EventID: eventID, EventName: "test"}
	factory := s.cfg.Sinks[d.Type]
	if factory == nil {
		return nil, fmt.Errorf("destination %d: no sink for type %q", d.ID, d.Type)
	}
	sink, err := factory(d)
	if err != nil {
		return nil, badRequest("destination %d: %v", d.ID, err)
	}
	defer sink.Close()
	batch := []trackapi.Envelope{env}
	result := adminapi.DestinationTestResult{DryRun: dryRun}
	if previewer, ok := sink.(trackapi.Previewer); ok {
		shown, err := previewer.Preview(batch)
		if err != nil {
			return nil, badRequest("event: %v", err)
		}
		result.Request = sampleRequestOut(shown)
	}
	if dryRun {
		return adminapi.TestDestination200JSONResponse(result), nil
	}
	attempt, cancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
	defer cancel()
	r := sink.Deliver(attempt, batch)[0]
	result.Delivered = r.Err == nil
	if r.Err != nil {
		msg := r.Err.Error()
		result.Error, result.Reason = &msg, &r.Reason
	}
	if r.Sample != nil {
		result.Request = sampleRequestOut(r.Sample.Request)
		result.Response = sampleResponseOut(r.Sample.Response)
	}
	return adminapi.TestDestination200JSONResponse(result), nil
}

// payloadWindow is how far back in the event log a view of outgoing payloads looks.
const payloadWindow = 10000

// ListDestinationPayloads shows the newest events the destination has settled that its routing
// lets out, as the envelopes it gets for them.
func (s *Server) ListDestinationPayloads(ctx context.Context, req adminapi.ListDestinationPayloadsRequestObject) (adminapi.ListDestinationPayloadsResponseObject, error) {
	d, err := s.cfg.Store.Destination(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	routing, err := deliver.NewRouting(d)
	if err != nil {
		return nil, fmt.Errorf("destination %d: %w", d.ID, err)
	}
	state, err := s.cfg.Store.DeliveryState(ctx, d.ID)
	if err != nil {
		return nil, err
	}
	limit := 10
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	filter := trackapi.EventFilter{}
	if len(d.Sources) == 1 {
		filter.SourceID = d.Sources[0]
	}
	// Read the window forward (the log reads forward only) and keep the newest that pass.
	var kept []trackapi.StoredEvent
	for after := max(0, state.Cursor-payloadWindow); after < state.Cursor; {
		events, next, err := s.cfg.Store.ReadEvents(ctx, after, filter, 1000)
		if err != nil {
			return nil, err
		}
		for _, ev := range events {
			if ev.Seq > state.Cursor {
				break
			}
			if routing.Takes(ev.SourceID) && routing.Admit(ev) == "" {
				kept = append(kept, ev)
				if len(kept) > limit {
					kept = kept[1:]
				}
			}
		}
		if len(events) == 0 || next <= after {
			break
		}
		after = next
	}
	out := adminapi.PayloadList{Items: make([]adminapi.Payload, 0, len(kept))}
	for i := len(kept) - 1; i >= 0; i-- {
		ev := kept[i]
		raw, err := deliver.EnvelopeOf(ev).AppendJSON(nil)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", ev.Seq, err)
		}
		var payload map[string]any
		if err := json.Unmarshal(raw, &payload); err != nil {
			return nil, fmt.Errorf("event %d: %w", ev.Seq, err)
		}
		out.Items = append(out.Items, adminapi.Payload{Seq: ev.Seq, EventName: ev.EventName,
			ReceivedAt: time.UnixMilli(ev.ReceivedAt).UTC(), Payload: payload})
	}
	return adminapi.ListDestinationPayloads200JSONResponse(out), nil
}

// sampleRequestOut and sampleResponseOut show an exchange with a destination.
func sampleRequestOut(r trackapi.SampleRequest) adminapi.SampleRequest {
	headers := r.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	return adminapi.SampleRequest{Method: r.Method, Url: r.URL, Headers: headers, Body: r.Body}
}

func sampleResponseOut(r *trackapi.SampleResponse) *adminapi.SampleResponse {
	if r == nil {
		return nil
	}
	headers := r.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	return &adminapi.SampleResponse{Status: r.Status, Headers: headers, Body: r.Body}
}
