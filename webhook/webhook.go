// Package webhook is the sink of webhook destinations: it POSTs batches of stored events, as
// trackapi.Envelope JSON, to an HTTP endpoint, signed the Standard Webhooks way
// (https://www.standardwebhooks.com/), and says how each envelope fared. Retries, dead letters and
// statistics belong to the delivery engine; this package only sends and classifies.
//
// A destination is a URL that operators, possibly less trusted than the host, configure, so the
// sink refuses loopback, private, link-local and other local addresses (unless AllowPrivate): in the
// URL at New, and for every address a host name resolves to at each dial, which a later DNS
// change cannot get around. It follows no redirect, for the same reason and because the Standard
// Webhooks spec counts a 3xx as a failure.
//
// Receivers check requests with Verify.
package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/netguard"
)

// MaxBodyBytes is the largest request body the sink sends. Deliver cuts a batch whose JSON would be
// larger into several requests, each with its own outcome, so the engine need not know the
// encoding; an envelope too large to fit alone is refused for good (reason too_large). It is
// trackapi's own batch limit, so a trackapi collector, and receivers with similar limits, take
// every request.
const MaxBodyBytes = 512000

// DefaultBatchSize is the batch size for a destination that sets none (trackapi.Destination's
// "0: the sink's default"): 100 events of the usual few hundred bytes make one request of tens of
// KB, few enough that a receiver answers well within DefaultTimeout; Deliver splits larger ones.
const DefaultBatchSize = 100

// DefaultTimeout is the longest one request may take when the caller's context allows longer: the
// Standard Webhooks spec recommends 15 to 30 s for receivers to answer.
const DefaultTimeout = 30 * time.Second

const (
	// responseReadLimit is how much of a response body is read: enough to keep connections
	// alive after the usual short answers, bounded against endpoints that stream without end.
	responseReadLimit = 64 << 10
	// maxRetryAfter caps the wait a destination may ask for, so that one bad header cannot hold
	// events back for days.
	maxRetryAfter = time.Hour
	// redacted replaces credentials in samples.
	redacted = "REDACTED"
	// bodyPrefix and bodySuffix wrap the envelopes of a request.
	bodyPrefix = `{"events":[`
	bodySuffix = `]}`
)

// Options are the optional settings of New. The zero value is the default.
type Options struct {
	// Transport is the base of the sink's transport, e.g. an httptest TLS server's client
	// transport to trust its certificate; nil: a fresh http.Transport. The sink uses a clone with
	// its own dialer (the address check, unless AllowPrivate) and without a proxy, which would hide
	// the destination's address from that check: no option turns the check off.
	Transport *http.Transport
	// Now is the clock of the webhook-timestamp header, of secret expiry and of Retry-After dates;
	// nil: time.Now.
	Now func() time.Time
	// Logger gets a debug line for each failed request; nil: slog.Default().
	Logger *slog.Logger
	// Timeout bounds each request when the context passed to Deliver allows longer; 0:
	// DefaultTimeout.
	Timeout time.Duration
}

// Sink sends envelopes to one webhook destination. It is safe for concurrent use.
type Sink struct {
	destID    int64
	url       string // as configured, credentials included: what is requested
	shownURL  string // with credentials redacted: what errors, samples and logs show
	secrets   []secret
	client    *http.Client
	transport *http.Transport
	now       func() time.Time
	log       *slog.Logger
	timeout   time.Duration
}

var (
	_ trackapi.Sink      = (*Sink)(nil)
	_ trackapi.Previewer = (*Sink)(nil) // the config API's dry run finds Preview through it
)

// secret is a signing secret decoded once, at New.
type secret struct {
	key       []byte
	expiresAt time.Time // zero: no expiry
}

// New returns the sink of webhook destination d. It checks the configuration, so that a bad one
// is an error when the destination is made, never at delivery time: the URL must be http or https
// with a host, and must not name a refused address (the error wraps ErrPrivateAddress) unless
// d.Config.AllowPrivate; at least one secret is required, as an unsigned webhook could be forged
// by anyone who learns the URL, and each must be "whsec_" and the base64 of 24 to 64 bytes.
func New(d trackapi.Destination, opts Options) (*Sink, error) {
	u, err := url.Parse(d.Config.URL)
	if err != nil {
		return nil, fmt.Errorf("webhook destination %d: url: %w", d.ID, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("webhook destination %d: url %s: the scheme must be http or https", d.ID, redactURL(u))
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("webhook destination %d: url %s: a host is required", d.ID, redactURL(u))
	}
	if err := netguard.CheckHost(u.Hostname()); err != nil && !d.Config.AllowPrivate {
		return nil, fmt.Errorf("webhook destination %d: url %s: %w (allow_private lets it through)", d.ID, redactURL(u), err)
	}
	if len(d.Config.Secrets) == 0 {
		return nil, fmt.Errorf("webhook destination %d: a signing secret is required", d.ID)
	}
	secrets := make([]secret, len(d.Config.Secrets))
	for i, s := range d.Config.Secrets {
		key, err := parseSecret(s.Secret)
		if err != nil {
			return nil, fmt.Errorf("webhook destination %d: secret %d: %w", d.ID, i+1, err)
		}
		secrets[i] = secret{key: key, expiresAt: s.ExpiresAt}
	}

	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	var t *http.Transport
	if opts.Transport != nil {
		t = opts.Transport.Clone()
	} else {
		t = &http.Transport{
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
			MaxIdleConnsPerHost: 4,
		}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !d.Config.AllowPrivate {
		dialer.Control = netguard.DialControl
	}
	t.Proxy = nil
	t.DialContext = dialer.DialContext
	t.Dial, t.DialTLS, t.DialTLSContext = nil, nil, nil // every connection goes through dialer
	t.ForceAttemptHTTP2 = true                          // a custom DialContext turns HTTP/2 off otherwise
	t.MaxResponseHeaderBytes = responseReadLimit

	return &Sink{
		destID:   d.ID,
		url:      u.String(),
		shownURL: redactURL(u),
		secrets:  secrets,
		client: &http.Client{
			Transport: t,
			// The 3xx itself is the answer: following it would let a public endpoint
			// redirect into the local network, and the spec counts it as a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		transport: t,
		now:       opts.Now,
		log:       opts.Logger,
		timeout:   opts.Timeout,
	}, nil
}

// Deliver POSTs batch as {"events": [envelope, ...]}, in as many requests as MaxBodyBytes needs,
// and returns results[i] for batch[i]: the envelopes of one request share its outcome. Each
// envelope is written as trackapi.Envelope marshals, except that its event is copied byte for byte
// (encoding/json would compact it and escape <, > and &), so the receiver gets the event as stored.
// An event that is not valid JSON (reason invalid_event) or an envelope larger than a request may
// be (too_large) fails for good without a request.
func (s *Sink) Deliver(ctx context.Context, batch []trackapi.Envelope) []trackapi.DeliveryResult {
	results := make([]trackapi.DeliveryResult, len(batch))
	s.split(batch, results, func(idx []int, body []byte) bool {
		r := s.post(ctx, messageID(batch, idx), body, len(idx))
		for _, i := range idx {
			results[i] = r
		}
		return true
	})
	return results
}

// Preview is the first request Deliver would send for batch, signed as it would be now, shown as
// a failure's sample shows it: webhook-signature and other credentials REDACTED, the URL's
// userinfo and query values REDACTED, the body cut to trackapi.SampleBodyLimit. A batch larger
// than MaxBodyBytes would go in several requests; only the first is shown. Envelopes Deliver would
// refuse (invalid_event, too_large) are left out of it as Deliver leaves them out; when every one
// would be refused, or no secret is current, the error is the one Deliver would report.
func (s *Sink) Preview(batch []trackapi.Envelope) (trackapi.SampleRequest, error) {
	results := make([]trackapi.DeliveryResult, len(batch))
	var (
		shown trackapi.SampleRequest
		err   error
		built bool
	)
	s.split(batch, results, func(idx []int, body []byte) bool {
		built = true
		req, _, rerr := s.newRequest(context.Background(), messageID(batch, idx), body)
		if rerr != nil {
			err = rerr
			return false
		}
		shown = s.sampleRequest(req.Header, body)
		return false // the first request only
	})
	if !built {
		for _, r := range results {
			if r.Err != nil {
				return trackapi.SampleRequest{}, r.Err
			}
		}
		return trackapi.SampleRequest{}, errors.New("webhook: preview: the batch is empty, no request would be sent")
	}
	if err != nil {
		return trackapi.SampleRequest{}, err
	}
	return shown, nil
}

// split encodes batch into request bodies as Deliver sends them, so that Deliver and Preview
// cannot differ: it calls send with each body and the indexes of its envelopes, in order, until
// send returns false. An envelope that cannot go gets its refusal in results and is in no body.
// Each body is a buffer of its own, which send may keep.
func (s *Sink) split(batch []trackapi.Envelope, results []trackapi.DeliveryResult, send func(idx []int, body []byte) bool) {
	var (
		idx  []int // the envelopes of the request being built
		body = bytes.NewBufferString(bodyPrefix)
	)
	flush := func() bool {
		if len(idx) == 0 {
			return true
		}
		body.WriteString(bodySuffix)
		more := send(idx, body.Bytes())
		idx = idx[:0]
		body = bytes.NewBufferString(bodyPrefix)
		return more
	}
	for i, e := range batch {
		enc, err := encodeEnvelope(e)
		if err != nil {
			results[i] = s.refusal("invalid_event", fmt.Errorf("webhook: envelope %s: %w", e.ID, err), e.Event)
			continue
		}
		if len(bodyPrefix)+len(enc)+len(bodySuffix) > MaxBodyBytes {
			results[i] = s.refusal("too_large", fmt.Errorf("webhook: envelope %s: %d bytes of JSON, more than a request of %d bytes may hold",
				e.ID, len(enc), MaxBodyBytes), enc)
			continue
		}
		if len(idx) > 0 && body.Len()+1+len(enc)+len(bodySuffix) > MaxBodyBytes {
			if !flush() {
				return
			}
		}
		if len(idx) > 0 {
			body.WriteByte(',')
		}
		body.Write(enc)
		idx = append(idx, i)
	}
	flush()
}

// Close closes the idle connections. Deliver must not be called after it.
func (s *Sink) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// encodeEnvelope is the envelope's exact JSON (trackapi.Envelope.AppendJSON).
func encodeEnvelope(e trackapi.Envelope) ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, len(e.Event)+128))
}

// messageID is the webhook-id of a request carrying batch[idx]: "msg_" and the hex SHA-256 of the
// envelope ids (each prefixed with its length, so no id can be confused with two). A retry of the
// same envelopes in the same grouping has the same id, as the spec wants; the engine may group
// retries differently, so receivers that must not apply an event twice deduplicate on the
// envelopes' ids. It has no ".", which would confuse the signed content.
func messageID(batch []trackapi.Envelope, idx []int) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, i := range idx {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(batch[i].ID)))])
		h.Write([]byte(batch[i].ID))
	}
	return "msg_" + hex.EncodeToString(h.Sum(nil))
}

// newRequest is the signed request of one body, with every header the receiver gets from the
// sink: post sends it, Preview shows it. It fails with the reason of the result when there is
// nothing to send, returning the request built so far (nil if none) for the sample.
func (s *Sink) newRequest(ctx context.Context, msgID string, body []byte) (req *http.Request, reason string, err error) {
	now := s.now()
	ts := strconv.FormatInt(now.Unix(), 10)
	var sigs []string
	for _, sec := range s.secrets {
		if sec.expiresAt.IsZero() || sec.expiresAt.After(now) {
			sigs = append(sigs, signature(sec.key, msgID, ts, body))
		}
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil { // the URL was parsed at New: a bug
		return nil, "network", fmt.Errorf("webhook: POST %s: %w", s.shownURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trackapi-webhook")
	req.Header.Set(HeaderID, msgID)
	req.Header.Set(HeaderTimestamp, ts)
	if len(sigs) == 0 {
		// Every secret has expired: sending unsigned would be refused by a receiver that
		// verifies, and accepted by one that does not, neither of which is right.
		return req, "no_signing_secret", fmt.Errorf("webhook: POST %s: every signing secret has expired", s.shownURL)
	}
	req.Header.Set(HeaderSignature, strings.Join(sigs, " "))
	return req, "", nil
}

// post sends one request of n envelopes and classifies its outcome.
func (s *Sink) post(ctx context.Context, msgID string, body []byte, n int) trackapi.DeliveryResult {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, reason, err := s.newRequest(ctx, msgID, body)
	if err != nil {
		var h http.Header
		if req != nil {
			h = req.Header
		}
		return s.failed(true, reason, err, h, body, nil, n)
	}

	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text shows the URL with the query: show ours
			err = ue.Err
		}
		reason, permanent := classifyError(err)
		return s.failed(permanent, reason, fmt.Errorf("webhook: POST %s: %w", s.shownURL, err), req.Header, body, nil, n)
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	var head []byte
	if !ok { // only failures keep a sample
		head = make([]byte, trackapi.SampleBodyLimit)
		k, _ := io.ReadFull(resp.Body, head)
		head = head[:k]
	}
	// Read the rest up to the limit, so that a short answer leaves the connection reusable; past
	// it, closing drops the connection, which is cheaper than reading without end.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, int64(responseReadLimit-len(head))))
	if ok {
		return trackapi.DeliveryResult{}
	}
	reason = "http_" + strconv.Itoa(resp.StatusCode)
	// 3xx (not followed) and 4xx are refusals that a retry would meet again; 408, 429 and 5xx
	// say "later".
	permanent, retryAfter := true, time.Duration(0)
	if resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		permanent, retryAfter = false, parseRetryAfter(resp.Header.Get("Retry-After"), s.now())
	}
	r := s.failed(permanent, reason, fmt.Errorf("webhook: POST %s: HTTP %s", s.shownURL, resp.Status), req.Header, body, resp, n)
	r.RetryAfter = retryAfter
	r.Sample.Response.Body = trackapi.SampleBody(head)
	return r
}

// MaxSecretOverlap bounds how long a replaced signing secret still signs, as for source keys: a
// longer overlap would make a rotation after a leak meaningless.
const MaxSecretOverlap = 7 * 24 * time.Hour

// RotateSecrets puts secret first and makes the previous secrets expire after overlap at the
// latest; secrets already expired are dropped. The command line and the config API rotate with it.
func RotateSecrets(old []trackapi.SigningSecret, secret string, now time.Time, overlap time.Duration) []trackapi.SigningSecret {
	out := []trackapi.SigningSecret{{Secret: secret}}
	expires := now.Add(overlap)
	for _, s := range old {
		if !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(now) {
			continue
		}
		if s.ExpiresAt.IsZero() || s.ExpiresAt.After(expires) {
			s.ExpiresAt = expires
		}
		if s.ExpiresAt.After(now) {
			out = append(out, s)
		}
	}
	return out
}

// ErrPrivateAddress is wrapped by New's error when a destination's URL names a refused address,
// and by a delivery's error when its host name resolved to one (netguard's rule).
var ErrPrivateAddress = netguard.ErrPrivateAddress
