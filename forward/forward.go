// Package forward is the sink of forward destinations: it sends stored events on to another
// collector of the HTTP Tracking API (the vendor's, or another trackapi) through the partners'
// client (package client), in batches, each event exactly as stored. A stored event carries its
// context.event_id, so the far end deduplicates what a retry sends again: an event it already
// has comes back as a duplicate, which counts as delivered.
//
// The delivery engine owns retries: the client makes a single attempt per request, and each
// event's outcome is turned into a DeliveryResult. Accepted and duplicate events are delivered;
// an event the far end rejects (a 200 with an error for it, or an event the client refuses
// locally because the far end would) is permanent, reason rejected_<code>; a 4xx other than 408
// and 429 is permanent, http_<status>; network errors, timeouts, 408, 429 and 5xx are retryable.
//
// A forward destination must not become a way into the local network: unless its
// AllowPrivate is set, New refuses a URL whose host is a loopback, private (RFC 1918, ULA),
// link-local or unspecified IP literal, or localhost, and every connection is checked again
// when it is dialled, after name resolution (names that resolve to such addresses, and redirects
// to them, fail with reason private_address). Connections go direct, never through a proxy from
// the environment, so that the check applies to the collector itself.
package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/internal/netfail"
	"github.com/trackapi/trackapi/internal/netguard"
)

// DefaultBatchSize is the batch size of a forward destination whose BatchSize is 0: about what
// one batch request holds (512 000 bytes) at a kilobyte an event. The client splits a larger
// batch into several requests anyway.
const DefaultBatchSize = 500

// Options are the optional settings of New. The zero value is the default.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// AttemptTimeout bounds one request, from sending it to reading the answer (the client's
	// RetryPolicy.AttemptTimeout); 0: 30 s. Deliver returns by its context's deadline anyway.
	AttemptTimeout time.Duration
	// DialTimeout bounds a connection to the collector; 0: 10 s.
	DialTimeout time.Duration
}

// Sink forwards envelopes to one source of another collector. It is safe for concurrent use.
type Sink struct {
	cl       *client.Client
	hc       *http.Client
	endpoint string // the batch endpoint without query, for the samples of local refusals
	log      *slog.Logger
}

var (
	_ trackapi.Sink      = (*Sink)(nil)
	_ trackapi.Previewer = (*Sink)(nil) // the config API's dry run finds Preview through it
)

// New returns the sink of a forward destination: d.Config.URL is the far collector's base URL
// (with or without /events), d.Config.Site and d.Config.Token its source. It does not connect.
func New(d trackapi.Destination, opts Options) (*Sink, error) {
	if d.Type != trackapi.DestinationForward {
		return nil, fmt.Errorf("forward: destination %d is of type %q, not %q", d.ID, d.Type, trackapi.DestinationForward)
	}
	u, err := url.Parse(strings.TrimSpace(d.Config.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("forward: destination %d: URL: want http(s)://host[:port][/path]", d.ID)
	}
	if !d.Config.AllowPrivate {
		if err := netguard.CheckHost(u.Hostname()); err != nil {
			return nil, fmt.Errorf("forward: destination %d: %w (set allow_private to forward to it)", d.ID, err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 30 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	log := opts.Logger.With("destination", d.ID)
	hc := newHTTPClient(d.Config.AllowPrivate, opts.DialTimeout)
	cl, err := client.New(d.Config.URL, d.Config.Site, d.Config.Token,
		client.WithHTTPClient(recordingDoer{hc}),
		// One attempt a request: the engine retries, with its own backoff and budget.
		client.WithRetry(client.RetryPolicy{MaxAttempts: 1, AttemptTimeout: opts.AttemptTimeout}),
		client.WithLogger(log),
	)
	if err != nil {
		// The client's errors never quote the token (it travels in a header).
		return nil, fmt.Errorf("forward: destination %d: %w", d.ID, err)
	}
	endpoint := *u
	endpoint.RawQuery, endpoint.Fragment, endpoint.User = "", "", nil
	endpoint.Path = strings.TrimRight(endpoint.Path, "/")
	if !strings.HasSuffix(endpoint.Path, "/events") {
		endpoint.Path += "/events"
	}
	endpoint.Path += "/batch"
	return &Sink{cl: cl, hc: hc, endpoint: endpoint.String(), log: log}, nil
}

// Deliver sends the envelopes' events as batches (as few requests as the API's limits allow) and
// returns how each fared. Events the far end would refuse are refused here, without being sent,
// so that they do not keep the others from going.
func (s *Sink) Deliver(ctx context.Context, batch []trackapi.Envelope) []trackapi.DeliveryResult {
	return s.send(ctx, batch, &recorder{})
}

// Preview is the first request Deliver would send for batch, built by the same client call but
// not sent, shown as a failure's sample shows it: the Authorization header (which carries the
// token) REDACTED, every query value (the site) REDACTED, the body cut to
// trackapi.SampleBodyLimit. A batch over the API's batch limits would go in several requests;
// only the first is shown. Events Deliver would refuse locally are left out of it as Deliver
// leaves them out; when every one would be refused, the error is the one Deliver would report.
// Stored events carry their context.event_id and event_timestamp; an event without them gets them
// from the client at each call, so those would differ between a preview and a delivery.
func (s *Sink) Preview(batch []trackapi.Envelope) (trackapi.SampleRequest, error) {
	rec := &recorder{dryRun: true}
	results := s.send(context.Background(), batch, rec)
	if req, ok := rec.first(); ok {
		return req, nil
	}
	for _, r := range results {
		if r.Err != nil {
			return trackapi.SampleRequest{}, r.Err
		}
	}
	return trackapi.SampleRequest{}, errors.New("forward: preview: the batch is empty, no request would be sent")
}

// send is Deliver with rec recording the exchanges; a dry-run rec makes it Preview, so that both
// go through the client's one way of building requests.
func (s *Sink) send(ctx context.Context, batch []trackapi.Envelope, rec *recorder) []trackapi.DeliveryResult {
	results := make([]trackapi.DeliveryResult, len(batch))
	var (
		events [][]byte
		slots  []int // slots[j] is the batch index of events[j]
	)
	for i, env := range batch {
		if _, err := client.PrepareRaw(env.Event); err != nil {
			results[i] = s.refused(env.Event, err)
			continue
		}
		events = append(events, env.Event)
		slots = append(slots, i)
	}
	if len(events) == 0 {
		return results
	}

	res, err := s.cl.SendRawBatch(context.WithValue(ctx, recorderKey{}, rec), events)
	if res == nil {
		// Only a local refusal stops the client before it sends, and those were taken out
		// above; should the rules ever differ, each event's own error is used.
		for j, i := range slots {
			results[i] = s.refused(events[j], eventError(err, j))
		}
		return results
	}
	for j, r := range res.Results {
		if r.Status == client.StatusDelivered {
			continue
		}
		results[slots[j]] = s.result(r, rec)
	}
	return results
}

// Close releases the idle connections.
func (s *Sink) Close() error {
	s.hc.CloseIdleConnections()
	return nil
}

// result turns an event's failure into its DeliveryResult, with the exchange that failed as
// the sample.
func (s *Sink) result(r client.Result, rec *recorder) trackapi.DeliveryResult {
	err := fmt.Errorf("forward: event %s: %w", r.EventID, r.Err)
	var (
		re *client.RejectedError
		se *client.ServerError
		ee *client.EventError
	)
	switch {
	case errors.As(r.Err, &re):
		return trackapi.DeliveryResult{Err: err, Permanent: true, Reason: "rejected_" + string(re.Problem.Code),
			Sample: rec.sample(r.EventID, http.StatusOK)}
	case errors.As(r.Err, &ee):
		return s.refused(r.Event, r.Err)
	case errors.As(r.Err, &se):
		// A 400 (the request was refused), or any 4xx but 408 and 429: the same request would
		// get the same answer. The rest (5xx, 408, 429, a redirect) may work later.
		permanent := se.StatusCode >= 400 && se.StatusCode < 500 &&
			se.StatusCode != http.StatusRequestTimeout && se.StatusCode != http.StatusTooManyRequests
		return trackapi.DeliveryResult{Err: err, Permanent: permanent, RetryAfter: se.RetryAfter,
			Reason: "http_" + strconv.Itoa(se.StatusCode), Sample: rec.sample(r.EventID, se.StatusCode)}
	}
	return trackapi.DeliveryResult{Err: err, Reason: networkReason(r.Err), Sample: rec.sample(r.EventID, 0)}
}

// refused is the permanent result of an event refused locally: the far end would reject it with
// the same code.
func (s *Sink) refused(event []byte, err error) trackapi.DeliveryResult {
	code := "invalid_payload"
	var ee *client.EventError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return trackapi.DeliveryResult{
		Err:       fmt.Errorf("forward: event not sent, the collector would reject it: %w", err),
		Permanent: true,
		Reason:    "rejected_" + code,
		Sample: &trackapi.DeliverySample{
			Request: trackapi.SampleRequest{Method: http.MethodPost, URL: s.endpoint, Headers: map[string]string{},
				Body: trackapi.SampleBody(event)},
			Error: err.Error(),
		},
	}
}

// eventError is the *client.EventError of event j in the error SendRawBatch returned without
// sending, or err itself.
func eventError(err error, j int) error {
	var stack []error
	if err != nil {
		stack = append(stack, err)
	}
	for len(stack) > 0 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if ee, ok := e.(*client.EventError); ok && ee.Index == j {
			return ee
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			stack = append(stack, u.Unwrap()...)
		case interface{ Unwrap() error }:
			if next := u.Unwrap(); next != nil {
				stack = append(stack, next)
			}
		}
	}
	if err == nil {
		return errors.New("not sent")
	}
	return err
}

// networkReason groups the failures that got no HTTP answer.
func networkReason(err error) string {
	if reason, ok := netfail.Reason(err); ok {
		return reason
	}
	// A 200 that is not a collect result, or whose counts do not add up: not a collector of
	// this API, or a proxy in the way.
	return "invalid_response"
}

// newHTTPClient makes the client's HTTP client: direct connections (no proxy from the
// environment) whose every dialled address is checked unless allowPrivate.
func newHTTPClient(allowPrivate bool, dialTimeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = netguard.DialControl
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = d.DialContext
	t.MaxIdleConnsPerHost = 4
	return &http.Client{Transport: t}
}

// recorderKey is the context key of a Deliver's recorder.
type recorderKey struct{}

// recorder keeps the HTTP exchanges of one Deliver, to show the failing one as a sample: the
// client reports outcomes, not the requests and answers behind them.
type recorder struct {
	// dryRun makes recordingDoer record each request and fail it with errPreview instead of
	// performing it: Preview's way to get the client's requests without sending them.
	dryRun bool

	mu        sync.Mutex
	exchanges []*exchange
}

// errPreview fails the requests of a dry run, which are recorded, never performed.
var errPreview = errors.New("forward: a preview sends nothing")

// first is the first recorded request, as shown in samples.
func (r *recorder) first() (trackapi.SampleRequest, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.exchanges) == 0 {
		return trackapi.SampleRequest{}, false
	}
	return r.exchanges[0].request, true
}

// exchange is one request and its answer (or error).
type exchange struct {
	body     []byte // the whole request body, to find an event's request by its id
	request  trackapi.SampleRequest
	response *trackapi.SampleResponse
	respBody *limitedBuffer
	err      error
}

func (r *recorder) add(e *exchange) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges = append(r.exchanges, e)
}

// sample is the last exchange that carried the event and ended with status (0: no answer), or
// failing that the last exchange.
func (r *recorder) sample(eventID string, status int) *trackapi.DeliverySample {
	r.mu.Lock()
	defer r.mu.Unlock()
	quoted := []byte(strconv.Quote(eventID))
	var pick *exchange
	for i := len(r.exchanges) - 1; i >= 0; i-- {
		e := r.exchanges[i]
		got := 0
		if e.response != nil {
			got = e.response.Status
		}
		if got == status && bytes.Contains(e.body, quoted) {
			pick = e
			break
		}
	}
	if pick == nil && len(r.exchanges) > 0 {
		pick = r.exchanges[len(r.exchanges)-1]
	}
	if pick == nil {
		return nil
	}
	out := &trackapi.DeliverySample{Request: pick.request}
	if pick.response != nil {
		resp := *pick.response
		resp.Body = trackapi.SampleBody([]byte(pick.respBody.String()))
		out.Response = &resp
	}
	if pick.err != nil {
		out.Error = pick.err.Error()
	}
	return out
}

// recordingDoer performs the client's requests and records them in the context's recorder.
type recordingDoer struct{ hc *http.Client }

// Do implements the client's HttpRequestDoer.
func (d recordingDoer) Do(req *http.Request) (*http.Response, error) {
	rec, _ := req.Context().Value(recorderKey{}).(*recorder)
	if rec == nil {
		return d.hc.Do(req)
	}
	e := &exchange{}
	if req.GetBody != nil {
		if body, err := req.GetBody(); err == nil {
			e.body, _ = io.ReadAll(body)
			_ = body.Close()
		}
	}
	e.request = trackapi.SampleRequest{
		Method:  req.Method,
		URL:     redactedURL(req.URL),
		Headers: redactedHeaders(req.Header),
		Body:    trackapi.SampleBody(e.body),
	}
	rec.add(e)
	if rec.dryRun {
		return nil, errPreview
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// Its text quotes the URL whole, query included.
			err = fmt.Errorf("%s %s: %w", ue.Op, e.request.URL, ue.Err)
		}
		e.err = err
		return nil, err
	}
	e.response = &trackapi.SampleResponse{Status: resp.StatusCode, Headers: redactedHeaders(resp.Header)}
	e.respBody = &limitedBuffer{limit: trackapi.SampleBodyLimit}
	resp.Body = teeBody{ReadCloser: resp.Body, w: e.respBody}
	return resp, nil
}

// redactedURL is a URL fit for a sample: every query value (a token may be there) and any
// password replaced.
func redactedURL(u *url.URL) string {
	shown := *u
	q := shown.Query()
	for k := range q {
		q[k] = []string{"REDACTED"}
	}
	shown.RawQuery = q.Encode()
	shown.Fragment, shown.RawFragment = "", ""
	return shown.Redacted()
}

// redactedHeaders flattens headers for a sample, with credentials replaced.
func redactedHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		switch http.CanonicalHeaderKey(k) {
		case "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie":
			out[k] = "REDACTED"
		default:
			out[k] = strings.Join(v, ", ")
		}
	}
	return out
}

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// teeBody copies what the client reads of a response body into w.
type teeBody struct {
	io.ReadCloser
	w io.Writer
}

func (t teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if n > 0 {
		_, _ = t.w.Write(p[:n])
	}
	return n, err
}
