// Package client is the Go client partners use to send events to a trackapi collector (or any
// collector of the HTTP Tracking API v2.0). It sits on top of the client generated from
// openapi.yaml (package gen) and adds what the generated code cannot know:
//
//   - Nothing the server must refuse is sent. Every event is encoded once, checked against the
//     server's limits (32768 bytes an event, 512000 bytes a batch request) and shape rules, and
//     refused locally with an *EventError naming it, before any network I/O.
//   - Nothing is duplicated. Events without context.event_id get a UUIDv7 (and a timestamp) before
//     the first attempt, so every retry carries the same id and the server's deduplication makes
//     retries safe, even when a connection breaks after the server stored the events.
//   - Nothing is lost silently. Every event ends Delivered, Rejected (the server said why) or
//     Failed (with the error), and a batch's results are mapped back to the caller's indices.
//     The server lists at most 100 errors and 100 warnings an answer and counts the rest by code;
//     rejections it did not list are placed when the answer determines them (a wrong key rejects
//     every event, with one code), and otherwise end Failed with ErrOutcomeUnknown, never
//     Delivered by guess (record, in deliver.go, says how).
//   - Retries are for what can succeed later: network errors, timeouts, 5xx and 429, with
//     exponential backoff and full jitter, honouring Retry-After, bounded in attempts and time.
//     A 400 is never retried unchanged.
//
// Send posts one event; SendBatch packs many into as few requests as the limits allow; a Batcher
// collects events from many goroutines and sends them in the background.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// The server's limits (openapi.yaml's x-trackapi-limits, the same constants the server uses). The
// client checks them on the exact bytes it sends, so that a request is never refused for its size.
const (
	// MaxEventBytes is the largest event: the body of POST /events, and each element of a batch.
	MaxEventBytes = trackapi.EventLimit
	// MaxBatchBytes is the largest body of POST /events/batch.
	MaxBatchBytes = trackapi.BatchBodyLimit
)

// maxResponseBytes caps how much of a response is read: the server's answers are small, and a
// misbehaving proxy must not make the client hold an unbounded body.
const maxResponseBytes = 4 << 20

// Client sends events to one source (site and key) of a collector. It is safe for concurrent use.
type Client struct {
	api     gen.ClientInterface
	site    string
	auth    string // "Bearer <key>"
	retry   RetryPolicy
	onRetry func(RetryAttempt) // nil: retries are only logged
	log     *slog.Logger
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
	jitter  func(n int64) int64
}

// Option configures a Client.
type Option func(*Client) error

// WithHTTPClient sets what performs the HTTP requests, for a custom transport (proxies, TLS
// settings) or a test's checking client. The default is an http.Client without a global
// timeout: each attempt has its own timeout (RetryPolicy.AttemptTimeout).
func WithHTTPClient(doer gen.HttpRequestDoer) Option {
	return func(c *Client) error {
		if doer == nil {
			return errors.New("WithHTTPClient: nil doer")
		}
		return c.setDoer(doer)
	}
}

// WithRetry replaces the default retry policy (DefaultRetryPolicy). Zero fields take their
// defaults, so WithRetry(RetryPolicy{MaxAttempts: 3}) changes only the attempts.
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) error {
		c.retry = p.withDefaults()
		return nil
	}
}

// WithRetryObserver has observe called before each retry, so that a caller can show why its
// requests are slow (a server down, overloaded, timing out) while the retries are still going on;
// the outcome comes later, in the results. observe is called from the goroutine that retries,
// possibly several at once (a Batcher's senders), and delays the retry it reports: keep it short
// and safe for concurrent use.
func WithRetryObserver(observe func(RetryAttempt)) Option {
	return func(c *Client) error {
		if observe == nil {
			return errors.New("WithRetryObserver: nil function")
		}
		c.onRetry = observe
		return nil
	}
}

// WithLogger sets where retries are logged (at Debug level; outcomes are reported in results, not
// logs). The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		c.log = l
		return nil
	}
}

// New returns a client for the collector at baseURL sending as source key of site. baseURL is the
// server's base, with or without the trailing /events of the spec's servers
// ("http://127.0.0.1:8080" and "https://collect.example.com/events" both work).
//
// The site and key are required: the server answers a request without them with every event
// rejected, so sending one would only waste it. The key travels in the Authorization header,
// never in the URL, so that it stays out of proxies' access logs.
func New(baseURL, site, key string, opts ...Option) (*Client, error) {
	server, err := eventsURL(baseURL)
	if err != nil {
		return nil, err
	}
	if site == "" || key == "" {
		return nil, errors.New("client: the site and the source key are required")
	}
	c := &Client{
		site:   site,
		auth:   "Bearer " + key,
		retry:  DefaultRetryPolicy(),
		log:    slog.Default(),
		now:    time.Now,
		sleep:  sleepCtx,
		jitter: randInt64N,
	}
	api, err := gen.NewClient(server, gen.WithHTTPClient(defaultHTTPClient()), gen.WithRequestEditorFn(c.editRequest))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c.api = api
	for _, opt := range opts {
		if err := opt(c); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	return c, nil
}

func (c *Client) setDoer(doer gen.HttpRequestDoer) error {
	api, ok := c.api.(*gen.Client)
	if !ok {
		return errors.New("the HTTP client cannot be changed")
	}
	api.Client = doer
	return nil
}

// editRequest adds the headers every request carries: the key (the spec's sourceKeyBearer
// security scheme) and who sends.
func (c *Client) editRequest(_ context.Context, req *http.Request) error {
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("User-Agent", "trackapi-go-client/1")
	return nil
}

// eventsURL turns a base URL into the spec's server URL, the one its paths (/events and
// /events/batch) go under: the base without a trailing /events, which the vendor's URLs have.
func eventsURL(base string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(base))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text quotes the URL whole, query included
		}
		return "", fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("client: base URL %q: want http(s)://host[:port][/path]", withoutSecrets(u))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("client: base URL %q: no query or fragment expected (the key goes in the Authorization header)", withoutSecrets(u))
	}
	u.Path = strings.TrimSuffix(strings.TrimRight(u.Path, "/"), "/events")
	u.RawPath = ""
	return u.String(), nil
}

// withoutSecrets is a URL fit for an error message: a key given as ?token=... (as the API allows
// browsers to) or as a password must not reach logs and terminals through it.
func withoutSecrets(u *url.URL) string {
	shown := *u
	shown.RawQuery, shown.Fragment, shown.RawFragment = "", "", ""
	return shown.Redacted()
}

// defaultHTTPClient keeps enough idle connections for a Batcher's concurrent senders.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return &http.Client{Transport: t}
}

// Send sends one event on POST /events, filling context.event_id and context.event_timestamp
// when they are missing. The error is nil only when the event was delivered (stored now, or
// already stored: a duplicate); otherwise the Result says whether the server rejected it or the
// delivery failed, and why. An event the server would refuse is refused locally with an
// *EventError, and nothing is sent.
func (c *Client) Send(ctx context.Context, event gen.Event) (Result, error) {
	enc, err := encodeEvent(event, 0, c.now())
	if err != nil {
		return Result{Status: StatusRejected, Err: err, Code: localCode(err)}, err
	}
	return c.sendOne(ctx, enc)
}

// SendRaw is Send for an event already in JSON, such as a line of an NDJSON file. The event is
// sent as given (compacted), with context.event_id and context.event_timestamp added when
// missing; it must be a JSON object with a string event_name, and its context, if any, an object.
func (c *Client) SendRaw(ctx context.Context, event []byte) (Result, error) {
	enc, err := encodeRaw(event, 0, c.now())
	if err != nil {
		return Result{Status: StatusRejected, Err: err, Code: localCode(err)}, err
	}
	return c.sendOne(ctx, enc)
}

func (c *Client) sendOne(ctx context.Context, enc encoded) (Result, error) {
	out := newBatchResult(1)
	c.deliver(ctx, []encoded{enc}, true, out)
	r := out.Results[0]
	if r.Status != StatusDelivered {
		return r, fmt.Errorf("client: event %s not delivered: %w", r.EventID, r.Err)
	}
	return r, nil
}

// SendBatch sends events on POST /events/batch, packed in order into as few requests as the
// limits allow, and returns one Result per event, in the order given. Every event is encoded and
// checked first: if any would be refused by the server, SendBatch returns an error joining an
// *EventError for each such event, and sends nothing.
//
// The error is nil only when every event was delivered; otherwise it wraps ErrNotDelivered (and
// the first event's error) and the results say which events were rejected or failed.
func (c *Client) SendBatch(ctx context.Context, events []gen.Event) (*BatchResult, error) {
	return sendAll(c, ctx, events, encodeEvent)
}

// SendRawBatch is SendBatch for events already in JSON (see SendRaw).
func (c *Client) SendRawBatch(ctx context.Context, events [][]byte) (*BatchResult, error) {
	return sendAll(c, ctx, events, encodeRaw)
}

// sendAll encodes and checks every event, and sends them only if none would be refused.
func sendAll[E any](c *Client, ctx context.Context, events []E, encode func(E, int, time.Time) (encoded, error)) (*BatchResult, error) {
	encs := make([]encoded, len(events))
	var errs []error
	now := c.now()
	for i, e := range events {
		enc, err := encode(e, i, now)
		if err != nil {
			errs = append(errs, err)
		}
		encs[i] = enc
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c.sendEncoded(ctx, encs)
}

func (c *Client) sendEncoded(ctx context.Context, encs []encoded) (*BatchResult, error) {
	out := newBatchResult(len(encs))
	for i := range encs {
		encs[i].slot = i
	}
	for _, p := range pack(encs, MaxBatchBytes, 0) {
		c.deliver(ctx, p, false, out)
	}
	return out, out.err()
}

// readLimited reads a response body, at most maxResponseBytes of it.
func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxResponseBytes {
		return nil, fmt.Errorf("response body over %d bytes", maxResponseBytes)
	}
	return b, nil
}
