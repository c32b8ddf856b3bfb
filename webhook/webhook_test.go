package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/webhook"
)

// t0 is the tests' fixed clock: signatures, timestamps and Retry-After dates depend on it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// specSignature computes a Standard Webhooks v1 signature straight from the spec's text, without
// the package's code: HMAC-SHA256, keyed with the base64-decoded part of "whsec_<base64>", of
// "{msg_id}.{timestamp}.{payload}", base64-encoded and prefixed with "v1,".
func specSignature(t *testing.T, secret, msgID, timestamp string, payload []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("decode secret %q: %v", secret, err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + timestamp + "." + string(payload)))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// The vector published with the Standard Webhooks reference libraries (libraries/go/webhook_test.go,
// TestWebhookSign, in github.com/standard-webhooks/standard-webhooks).
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = "1614265330"
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func vectorHeaders(sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", vectorID)
	h.Set("webhook-timestamp", vectorTimestamp)
	h.Set("webhook-signature", sig)
	return h
}

func TestSpecTestVector(t *testing.T) {
	if got := specSignature(t, vectorSecret, vectorID, vectorTimestamp, []byte(vectorPayload)); got != vectorSignature {
		t.Fatalf("the test's own reading of the spec gives %s, the published vector %s", got, vectorSignature)
	}
	at := time.Unix(1614265330, 0)
	if err := webhook.Verify(vectorSecret, vectorHeaders(vectorSignature), []byte(vectorPayload), at, 0); err != nil {
		t.Fatalf("Verify refuses the published vector: %v", err)
	}
	// The reference libraries take the secret without its prefix too.
	if err := webhook.Verify(strings.TrimPrefix(vectorSecret, "whsec_"), vectorHeaders(vectorSignature), []byte(vectorPayload), at, 0); err != nil {
		t.Fatalf("Verify refuses the vector's secret without prefix: %v", err)
	}
	if err := webhook.Verify(vectorSecret, vectorHeaders(vectorSignature), []byte(`{"test": 2432232315}`), at, 0); !errors.Is(err, webhook.ErrSignature) {
		t.Fatalf("Verify of a changed body: %v, want ErrSignature", err)
	}
}

func TestVerify(t *testing.T) {
	at := time.Unix(1614265330, 0)
	body := []byte(vectorPayload)
	other := specSignature(t, "whsec_"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 24)), vectorID, vectorTimestamp, body)
	for _, tc := range []struct {
		name    string
		headers http.Header
		now     time.Time
		tol     time.Duration
		want    error
	}{
		{"valid", vectorHeaders(vectorSignature), at, 0, nil},
		{"one of several", vectorHeaders(other + " v1a,abcd " + vectorSignature + " v2," + strings.TrimPrefix(vectorSignature, "v1,")), at, 0, nil},
		{"only other secrets", vectorHeaders(other), at, 0, webhook.ErrSignature},
		{"right value, other version", vectorHeaders("v2," + strings.TrimPrefix(vectorSignature, "v1,")), at, 0, webhook.ErrSignature},
		{"garbage", vectorHeaders("v1,!!! nonsense v1"), at, 0, webhook.ErrSignature},
		{"at the tolerance, late", vectorHeaders(vectorSignature), at.Add(5 * time.Minute), 0, nil},
		{"at the tolerance, early", vectorHeaders(vectorSignature), at.Add(-5 * time.Minute), 0, nil},
		{"too old", vectorHeaders(vectorSignature), at.Add(5*time.Minute + time.Second), 0, webhook.ErrTimestamp},
		{"too new", vectorHeaders(vectorSignature), at.Add(-5*time.Minute - time.Second), 0, webhook.ErrTimestamp},
		{"own tolerance", vectorHeaders(vectorSignature), at.Add(time.Hour), 2 * time.Hour, nil},
		{"own tolerance exceeded", vectorHeaders(vectorSignature), at.Add(time.Minute), 30 * time.Second, webhook.ErrTimestamp},
		{"no id", del(vectorHeaders(vectorSignature), "webhook-id"), at, 0, webhook.ErrMissingHeader},
		{"no timestamp", del(vectorHeaders(vectorSignature), "webhook-timestamp"), at, 0, webhook.ErrMissingHeader},
		{"no signature", del(vectorHeaders(vectorSignature), "webhook-signature"), at, 0, webhook.ErrMissingHeader},
		{"timestamp not seconds", set(vectorHeaders(vectorSignature), "webhook-timestamp", "1614265330.0"), at, 0, webhook.ErrTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify(vectorSecret, tc.headers, body, tc.now, tc.tol)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func del(h http.Header, name string) http.Header { h.Del(name); return h }

func set(h http.Header, name, value string) http.Header { h.Set(name, value); return h }

func TestNewSecret(t *testing.T) {
	a, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := webhook.NewSecret()
	if a == b {
		t.Fatal("two secrets are equal")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	if !strings.HasPrefix(a, "whsec_") || err != nil || len(key) != 24 {
		t.Fatalf("secret %q: want whsec_ and the base64 of 24 bytes (%d bytes, %v)", a, len(key), err)
	}
}

// --- the sink against real servers ---

type request struct {
	header http.Header
	body   []byte
	path   string
}

// recorder is a test endpoint that keeps every request and answers with respond (nil: 204).
type recorder struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(w http.ResponseWriter, r *http.Request, n int)
}

func newRecorder(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, n int)) *recorder {
	rec := &recorder{respond: respond}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read request body: %v", err)
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, request{header: r.Header.Clone(), body: body, path: r.URL.Path})
		n := len(rec.reqs)
		rec.mu.Unlock()
		if rec.respond == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		rec.respond(w, r, n)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) requests() []request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]request(nil), rec.reqs...)
}

func destination(rawURL string, secrets ...trackapi.SigningSecret) trackapi.Destination {
	return trackapi.Destination{ID: 7, Name: "test", Type: trackapi.DestinationWebhook, Status: trackapi.DestinationActive,
		Config: trackapi.DestinationConfig{URL: rawURL, AllowPrivate: true, Secrets: secrets}}
}

func newSecret(t *testing.T) string {
	t.Helper()
	s, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// clock is a settable clock for Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock(at time.Time) *clock { c := &clock{}; c.set(at); return c }
func (c *clock) set(at time.Time)  { c.ns.Store(at.UnixNano()) }
func (c *clock) now() time.Time    { return time.Unix(0, c.ns.Load()).UTC() }

func newSink(t *testing.T, d trackapi.Destination, opts webhook.Options) *webhook.Sink {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return t0 }
	}
	s, err := webhook.New(d, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func envelopes(prefix string, n int) []trackapi.Envelope {
	out := make([]trackapi.Envelope, n)
	for i := range out {
		out[i] = trackapi.Envelope{
			ID: fmt.Sprintf("3:%s-%d", prefix, i), SourceID: 3, Site: "shop.example", ReceivedAt: 1767225600000 + int64(i),
			Event: json.RawMessage(fmt.Sprintf(`{"event":"page_view","n":%d}`, i)), Seq: int64(i + 1), EventID: fmt.Sprintf("%s-%d", prefix, i),
		}
	}
	return out
}

func deliver(t *testing.T, s *webhook.Sink, batch []trackapi.Envelope) []trackapi.DeliveryResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	results := s.Deliver(ctx, batch)
	if len(results) != len(batch) {
		t.Fatalf("%d results for %d envelopes", len(results), len(batch))
	}
	return results
}

func requireDelivered(t *testing.T, results []trackapi.DeliveryResult) {
	t.Helper()
	for i, r := range results {
		if r.Err != nil || r.Reason != "" || r.Sample != nil || r.Permanent {
			t.Fatalf("result %d: %+v, want delivered", i, r)
		}
	}
}

func TestDeliverBodyAndHeaders(t *testing.T) {
	rec := newRecorder(t, nil)
	sec := newSecret(t)
	s := newSink(t, destination(rec.srv.URL+"/hook", trackapi.SigningSecret{Secret: sec}), webhook.Options{})
	batch := envelopes("a", 3)
	// Stored bytes with whitespace and characters encoding/json would escape must arrive as stored.
	batch[1].Event = json.RawMessage("{ \"event\" : \"<b>&</b>\",\n  \"n\": 1.50 }")

	requireDelivered(t, deliver(t, s, batch))
	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.path != "/hook" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("path %q, Content-Type %q", r.path, r.header.Get("Content-Type"))
	}
	var got struct {
		Events []json.RawMessage `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if len(got.Events) != 3 {
		t.Fatalf("%d events, want 3", len(got.Events))
	}
	for i, raw := range got.Events {
		var env struct {
			ID         string          `json:"id"`
			SourceID   int64           `json:"source_id"`
			Site       string          `json:"site"`
			ReceivedAt int64           `json:"received_at"`
			Event      json.RawMessage `json:"event"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&env); err != nil {
			t.Fatalf("event %d %s: %v", i, raw, err)
		}
		e := batch[i]
		if env.ID != e.ID || env.SourceID != e.SourceID || env.Site != e.Site || env.ReceivedAt != e.ReceivedAt || !bytes.Equal(env.Event, e.Event) {
			t.Fatalf("event %d: %s, want %+v", i, raw, e)
		}
		if i != 1 { // a compact event: the envelope is exactly what trackapi.Envelope marshals to
			want, _ := json.Marshal(e)
			if !bytes.Equal(raw, want) {
				t.Fatalf("envelope %d: %s, json.Marshal gives %s", i, raw, want)
			}
		}
	}
	if !bytes.Contains(r.body, batch[1].Event) {
		t.Fatalf("the event's stored bytes are not in the body %s", r.body)
	}

	id, ts := r.header.Get("webhook-id"), r.header.Get("webhook-timestamp")
	if ts != fmt.Sprint(t0.Unix()) {
		t.Fatalf("webhook-timestamp %q, want %d", ts, t0.Unix())
	}
	if want := specSignature(t, sec, id, ts, r.body); r.header.Get("webhook-signature") != want {
		t.Fatalf("webhook-signature %q, the spec gives %q", r.header.Get("webhook-signature"), want)
	}
	if err := webhook.Verify(sec, r.header, r.body, t0.Add(time.Minute), 0); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestSecretRotation(t *testing.T) {
	rec := newRecorder(t, nil)
	current, previous, expired := newSecret(t), newSecret(t), newSecret(t)
	clk := newClock(t0)
	s := newSink(t, destination(rec.srv.URL,
		trackapi.SigningSecret{Secret: current},
		trackapi.SigningSecret{Secret: previous, ExpiresAt: t0.Add(time.Hour)},
		trackapi.SigningSecret{Secret: expired, ExpiresAt: t0},
	), webhook.Options{Now: clk.now})

	requireDelivered(t, deliver(t, s, envelopes("a", 2)))
	clk.set(t0.Add(2 * time.Hour))
	requireDelivered(t, deliver(t, s, envelopes("a", 2)))
	reqs := rec.requests()

	during, after := reqs[0], reqs[1]
	sigs := strings.Split(during.header.Get("webhook-signature"), " ")
	id, ts := during.header.Get("webhook-id"), during.header.Get("webhook-timestamp")
	want := []string{specSignature(t, current, id, ts, during.body), specSignature(t, previous, id, ts, during.body)}
	if strings.Join(sigs, " ") != strings.Join(want, " ") {
		t.Fatalf("during the overlap: signatures %q, want the current and the previous secret's %q", sigs, want)
	}
	for _, sec := range []string{current, previous} {
		if err := webhook.Verify(sec, during.header, during.body, t0, 0); err != nil {
			t.Fatalf("during the overlap, Verify with either secret: %v", err)
		}
	}
	if err := webhook.Verify(expired, during.header, during.body, t0, 0); !errors.Is(err, webhook.ErrSignature) {
		t.Fatalf("a secret expired at now still signs: %v", err)
	}

	at := t0.Add(2 * time.Hour)
	if n := len(strings.Fields(after.header.Get("webhook-signature"))); n != 1 {
		t.Fatalf("after the overlap: %d signatures, want 1", n)
	}
	if err := webhook.Verify(current, after.header, after.body, at, 0); err != nil {
		t.Fatalf("after the overlap, Verify with the current secret: %v", err)
	}
	if err := webhook.Verify(previous, after.header, after.body, at, 0); !errors.Is(err, webhook.ErrSignature) {
		t.Fatalf("after the overlap, the previous secret still verifies: %v", err)
	}
}

func TestEverySecretExpired(t *testing.T) {
	rec := newRecorder(t, nil)
	s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: newSecret(t), ExpiresAt: t0.Add(-time.Minute)}), webhook.Options{})
	for _, r := range deliver(t, s, envelopes("a", 2)) {
		if r.Reason != "no_signing_secret" || !r.Permanent || r.Sample == nil {
			t.Fatalf("result %+v, want a permanent no_signing_secret", r)
		}
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("%d unsigned requests sent", n)
	}
}

func TestMessageID(t *testing.T) {
	rec := newRecorder(t, nil)
	clk := newClock(t0)
	s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{Now: clk.now})
	deliver(t, s, envelopes("a", 3))
	clk.set(t0.Add(10 * time.Minute))
	deliver(t, s, envelopes("a", 3)) // a retry of the same events
	deliver(t, s, envelopes("b", 3))
	deliver(t, s, envelopes("a", 2))
	reqs := rec.requests()
	id := func(i int) string { return reqs[i].header.Get("webhook-id") }
	if !regexp.MustCompile(`^msg_[0-9a-f]{64}$`).MatchString(id(0)) {
		t.Fatalf("webhook-id %q", id(0))
	}
	if id(0) != id(1) {
		t.Fatalf("a retry of the same envelopes has id %q, the first attempt %q", id(1), id(0))
	}
	if reqs[0].header.Get("webhook-timestamp") == reqs[1].header.Get("webhook-timestamp") {
		t.Fatal("the retry kept the first attempt's timestamp")
	}
	if id(2) == id(0) || id(3) == id(0) || id(2) == id(3) {
		t.Fatalf("different envelopes share an id: %q %q %q", id(0), id(2), id(3))
	}
}

func TestClassification(t *testing.T) {
	retryDate := t0.Add(2 * time.Minute).Format(http.TimeFormat)
	status := func(code int, header ...string) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) {
			for i := 0; i+1 < len(header); i += 2 {
				w.Header().Set(header[i], header[i+1])
			}
			w.WriteHeader(code)
			fmt.Fprintf(w, "status %d", code)
		}
	}
	for _, tc := range []struct {
		name       string
		handler    func(http.ResponseWriter, *http.Request)
		reason     string // "" delivered
		permanent  bool
		retryAfter time.Duration
	}{
		{"200", status(200), "", false, 0},
		{"204", status(204), "", false, 0},
		{"301 not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/target", http.StatusMovedPermanently)
		}, "http_301", true, 0},
		{"307 not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/target", http.StatusTemporaryRedirect)
		}, "http_307", true, 0},
		{"400", status(400), "http_400", true, 0},
		{"404", status(404), "http_404", true, 0},
		{"410", status(410), "http_410", true, 0},
		{"408", status(408), "http_408", false, 0},
		{"429 seconds", status(429, "Retry-After", "120"), "http_429", false, 2 * time.Minute},
		{"429 date", status(429, "Retry-After", retryDate), "http_429", false, 2 * time.Minute},
		{"429 capped", status(429, "Retry-After", "86400"), "http_429", false, time.Hour},
		{"429 unreadable", status(429, "Retry-After", "soon"), "http_429", false, 0},
		{"400 Retry-After ignored", status(400, "Retry-After", "120"), "http_400", true, 0},
		{"500", status(500), "http_500", false, 0},
		{"503 seconds", status(503, "Retry-After", "30"), "http_503", false, 30 * time.Second},
		{"503 past date", status(503, "Retry-After", t0.Add(-time.Hour).Format(http.TimeFormat)), "http_503", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var targetCalls atomic.Int32
			mux := http.NewServeMux()
			mux.HandleFunc("/hook", tc.handler)
			mux.HandleFunc("/target", func(w http.ResponseWriter, _ *http.Request) {
				targetCalls.Add(1)
				w.WriteHeader(http.StatusOK)
			})
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			s := newSink(t, destination(srv.URL+"/hook", trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
			results := deliver(t, s, envelopes("a", 3))
			if tc.reason == "" {
				requireDelivered(t, results)
				return
			}
			for i, r := range results {
				if r.Err == nil || r.Reason != tc.reason || r.Permanent != tc.permanent || r.RetryAfter != tc.retryAfter {
					t.Fatalf("result %d: reason %q permanent %t retry after %s (%v), want %q %t %s",
						i, r.Reason, r.Permanent, r.RetryAfter, r.Err, tc.reason, tc.permanent, tc.retryAfter)
				}
				if r.Sample == nil || r.Sample.Response == nil || r.Sample.Response.Status != results[0].Sample.Response.Status {
					t.Fatalf("result %d: sample %+v", i, r.Sample)
				}
			}
			if n := targetCalls.Load(); n != 0 {
				t.Fatalf("the redirect target was called %d times", n)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	d := destination(srv.URL, trackapi.SigningSecret{Secret: newSecret(t)})

	t.Run("the caller's deadline", func(t *testing.T) {
		s := newSink(t, d, webhook.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		r := s.Deliver(ctx, envelopes("a", 1))[0]
		if r.Reason != "timeout" || r.Permanent || r.Sample == nil || r.Sample.Response != nil || r.Sample.Error == "" {
			t.Fatalf("result %+v (sample %+v), want a retryable timeout with an error sample", r, r.Sample)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("Deliver returned after %s, the deadline was 200ms", took)
		}
	})
	t.Run("Options.Timeout", func(t *testing.T) {
		s := newSink(t, d, webhook.Options{Timeout: 200 * time.Millisecond})
		if r := s.Deliver(context.Background(), envelopes("a", 1))[0]; r.Reason != "timeout" {
			t.Fatalf("result %+v, want timeout", r)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		s := newSink(t, d, webhook.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		if r := s.Deliver(ctx, envelopes("a", 1))[0]; r.Reason != "canceled" || r.Permanent {
			t.Fatalf("result %+v, want a retryable canceled", r)
		}
	})
}

func TestConnectionReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset bool // RST (linger 0) rather than an orderly close
	}{{"closed before answering", false}, {"reset", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				conn, _, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				if tc.reset {
					conn.(*net.TCPConn).SetLinger(0)
				}
				conn.Close()
			}))
			t.Cleanup(srv.Close)
			s := newSink(t, destination(srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
			for _, r := range deliver(t, s, envelopes("a", 2)) {
				if r.Reason != "connection_reset" || r.Permanent || r.Sample == nil || r.Sample.Error == "" {
					t.Fatalf("result %+v, want a retryable connection_reset", r)
				}
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := newSink(t, destination("http://"+addr+"/hook?token=s3cr3t", trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
	r := deliver(t, s, envelopes("a", 1))[0]
	if r.Reason != "connection_refused" || r.Permanent {
		t.Fatalf("result %+v, want a retryable connection_refused", r)
	}
	// net/http's own error text holds the URL with its query: it must not reach operators.
	if strings.Contains(r.Err.Error(), "s3cr3t") || strings.Contains(r.Sample.Error, "s3cr3t") || strings.Contains(r.Sample.Request.URL, "s3cr3t") {
		t.Fatalf("the token leaks: %v / %+v", r.Err, r.Sample)
	}
}

func TestResponseReadIsBounded(t *testing.T) {
	for _, code := range []int{http.StatusOK, http.StatusInternalServerError} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			var written atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(code)
				chunk := bytes.Repeat([]byte("x"), 32<<10)
				for r.Context().Err() == nil { // a body without end
					n, err := w.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			t.Cleanup(srv.Close)
			s := newSink(t, destination(srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
			start := time.Now()
			r := deliver(t, s, envelopes("a", 1))[0]
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("Deliver took %s", took)
			}
			if code == http.StatusOK {
				requireDelivered(t, []trackapi.DeliveryResult{r})
				return
			}
			if r.Reason != "http_500" || r.Sample == nil || r.Sample.Response == nil || len(r.Sample.Response.Body) != trackapi.SampleBodyLimit {
				t.Fatalf("result %+v, want http_500 with a 4096-byte response sample", r)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(srv.Close)
	d := destination(srv.URL, trackapi.SigningSecret{Secret: newSecret(t)})

	if r := deliver(t, newSink(t, d, webhook.Options{}), envelopes("a", 1))[0]; r.Reason != "tls" || r.Permanent {
		t.Fatalf("an untrusted certificate: %+v, want a retryable tls", r)
	}
	trusting := webhook.Options{Transport: srv.Client().Transport.(*http.Transport)}
	requireDelivered(t, deliver(t, newSink(t, d, trusting), envelopes("a", 1)))
}

func TestNewRefuses(t *testing.T) {
	sec := []trackapi.SigningSecret{{Secret: newSecret(t)}}
	for _, raw := range []string{
		"http://127.0.0.1/hook", "http://127.1.2.3:8080/", "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/",
		"http://[::1]/", "http://169.254.1.1/", "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/",
		"http://[::]/", "http://[fc00::1]/", "http://[fd12:3456::1]/", "http://[fe80::1%25eth0]/", "http://224.0.0.1/",
		"http://[ff02::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/", "http://100.64.0.1/",
		"http://[64:ff9b::7f00:1]/", "http://255.255.255.255/", "https://10.1.2.3:8443/",
	} {
		d := trackapi.Destination{ID: 1, Config: trackapi.DestinationConfig{URL: raw, Secrets: sec}}
		if _, err := webhook.New(d, webhook.Options{}); !errors.Is(err, webhook.ErrPrivateAddress) {
			t.Errorf("New(%s): %v, want ErrPrivateAddress", raw, err)
		}
		d.Config.AllowPrivate = true
		if s, err := webhook.New(d, webhook.Options{}); err != nil {
			t.Errorf("New(%s) with AllowPrivate: %v", raw, err)
		} else {
			s.Close()
		}
	}
	// Names and public addresses pass New; names are checked when dialled. Nothing is dialled here.
	for _, raw := range []string{"https://hooks.example.com/in", "http://localhost:1/", "http://93.184.216.34/", "https://[2001:4860:4860::8888]/"} {
		s, err := webhook.New(trackapi.Destination{Config: trackapi.DestinationConfig{URL: raw, Secrets: sec}}, webhook.Options{})
		if err != nil {
			t.Errorf("New(%s): %v", raw, err)
		} else {
			s.Close()
		}
	}
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for name, cfg := range map[string]trackapi.DestinationConfig{
		"no scheme":      {URL: "hooks.example.com/in", Secrets: sec},
		"ftp":            {URL: "ftp://hooks.example.com/in", Secrets: sec},
		"no host":        {URL: "http:///in", Secrets: sec},
		"unparsable":     {URL: "http://[::1", Secrets: sec},
		"no secret":      {URL: "https://hooks.example.com/in"},
		"no prefix":      {URL: "https://hooks.example.com/in", Secrets: []trackapi.SigningSecret{{Secret: strings.TrimPrefix(sec[0].Secret, "whsec_")}}},
		"not base64":     {URL: "https://hooks.example.com/in", Secrets: []trackapi.SigningSecret{{Secret: "whsec_not*base64"}}},
		"too short":      {URL: "https://hooks.example.com/in", Secrets: []trackapi.SigningSecret{{Secret: short}}},
		"second invalid": {URL: "https://hooks.example.com/in", Secrets: []trackapi.SigningSecret{sec[0], {Secret: "whsec_"}}},
	} {
		if _, err := webhook.New(trackapi.Destination{Config: cfg}, webhook.Options{}); err == nil {
			t.Errorf("New with %s: no error", name)
		}
	}
}

// TestPrivateAddressAtDial: a name resolving to loopback (the DNS rebinding case) is refused when
// dialled, before the server sees anything.
func TestPrivateAddressAtDial(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	d := destination("http://localhost:"+u.Port()+"/hook", trackapi.SigningSecret{Secret: newSecret(t)})

	d.Config.AllowPrivate = false
	for _, r := range deliver(t, newSink(t, d, webhook.Options{}), envelopes("a", 2)) {
		if r.Reason != "private_address" || !r.Permanent || !errors.Is(r.Err, webhook.ErrPrivateAddress) || r.Sample == nil || r.Sample.Error == "" {
			t.Fatalf("result %+v, want a permanent private_address", r)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the server was called %d times", n)
	}

	d.Config.AllowPrivate = true
	requireDelivered(t, deliver(t, newSink(t, d, webhook.Options{}), envelopes("a", 2)))
	if n := calls.Load(); n != 1 {
		t.Fatalf("with AllowPrivate the server was called %d times, want 1", n)
	}
}

func TestSamples(t *testing.T) {
	respBody := strings.Repeat("é", 6000) // 12000 bytes: the cut must fall between characters
	var gotUser, gotPass string
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		gotUser, gotPass, _ = r.BasicAuth()
		w.Header().Set("Set-Cookie", "session=abc")
		w.Header().Set("X-Request-Id", "req-1")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, respBody)
	})
	u, _ := url.Parse(rec.srv.URL)
	raw := "http://user:pa55@" + u.Host + "/hook?token=t0k3n&v=2#frag"
	s := newSink(t, destination(raw, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
	batch := envelopes("a", 2)
	batch[0].Event = json.RawMessage(`{"pad":"` + strings.Repeat("y", 6000) + `"}`)

	r := deliver(t, s, batch)[0]
	if gotUser != "user" || gotPass != "pa55" {
		t.Fatalf("basic auth from the URL: %q %q", gotUser, gotPass)
	}
	sm := r.Sample
	if sm == nil || sm.Response == nil {
		t.Fatalf("result %+v: no sample", r)
	}
	if want := "http://REDACTED@" + u.Host + "/hook?token=REDACTED&v=REDACTED"; sm.Request.URL != want {
		t.Fatalf("sample URL %q, want %q", sm.Request.URL, want)
	}
	if sm.Request.Method != http.MethodPost || sm.Request.Headers["Webhook-Signature"] != "REDACTED" ||
		sm.Request.Headers["Webhook-Id"] == "" || sm.Request.Headers["Content-Type"] != "application/json" {
		t.Fatalf("sample request headers %v", sm.Request.Headers)
	}
	sent := rec.requests()[0].body
	if len(sm.Request.Body) != trackapi.SampleBodyLimit || !bytes.HasPrefix(sent, []byte(sm.Request.Body)) {
		t.Fatalf("sample request body: %d bytes, want the first %d of the body", len(sm.Request.Body), trackapi.SampleBodyLimit)
	}
	if sm.Response.Status != 400 || sm.Response.Headers["Set-Cookie"] != "REDACTED" || sm.Response.Headers["X-Request-Id"] != "req-1" {
		t.Fatalf("sample response %d %v", sm.Response.Status, sm.Response.Headers)
	}
	if n := len(sm.Response.Body); n > trackapi.SampleBodyLimit || n < trackapi.SampleBodyLimit-1 || !strings.HasPrefix(respBody, sm.Response.Body) {
		t.Fatalf("sample response body: %d bytes, want the first whole characters of 4096 bytes", n)
	}
	for _, leak := range []string{"pa55", "t0k3n", "frag"} {
		js, _ := json.Marshal(sm)
		if strings.Contains(r.Err.Error(), leak) || strings.Contains(string(js), leak) {
			t.Fatalf("%q leaks into the error %q or the sample %s", leak, r.Err, js)
		}
	}
}

func TestSplitsLargeBatches(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
	batch := envelopes("a", 40)
	for i := range batch {
		batch[i].Event = json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("p", 30000)))
	}
	results := deliver(t, s, batch)
	reqs := rec.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests for ~1.2 MB, want 3", len(reqs))
	}
	next := 0
	ids := map[string]bool{}
	for k, req := range reqs {
		if len(req.body) > webhook.MaxBodyBytes {
			t.Fatalf("request %d: %d bytes", k, len(req.body))
		}
		ids[req.header.Get("webhook-id")] = true
		var body struct{ Events []struct{ ID string } }
		if err := json.Unmarshal(req.body, &body); err != nil {
			t.Fatalf("request %d: %v", k, err)
		}
		for _, e := range body.Events {
			if e.ID != batch[next].ID {
				t.Fatalf("request %d carries %s, want %s", k, e.ID, batch[next].ID)
			}
			r := results[next]
			if k == 1 && (r.Reason != "http_503" || r.Permanent) || k != 1 && r.Err != nil {
				t.Fatalf("envelope %d in request %d: %+v", next, k, r)
			}
			next++
		}
	}
	if next != len(batch) || len(ids) != 3 {
		t.Fatalf("%d envelopes sent of %d, %d distinct webhook-ids", next, len(batch), len(ids))
	}
}

func TestRefusedEnvelopes(t *testing.T) {
	rec := newRecorder(t, nil)
	s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
	batch := envelopes("a", 4)
	batch[1].Event = json.RawMessage(`{"event":`)
	batch[3].Event = json.RawMessage(`"` + strings.Repeat("z", webhook.MaxBodyBytes) + `"`)
	results := deliver(t, s, batch)
	for i, want := range []string{"", "invalid_event", "", "too_large"} {
		r := results[i]
		if r.Reason != want || (want != "") != (r.Permanent && r.Err != nil && r.Sample != nil) {
			t.Fatalf("result %d: %+v, want %q", i, r, want)
		}
	}
	reqs := rec.requests()
	var body struct{ Events []struct{ ID string } }
	if len(reqs) != 1 || json.Unmarshal(reqs[0].body, &body) != nil || len(body.Events) != 2 ||
		body.Events[0].ID != batch[0].ID || body.Events[1].ID != batch[2].ID {
		t.Fatalf("requests %d, events %+v: want one request with envelopes 0 and 2", len(reqs), body.Events)
	}
}

func TestEmptyBatch(t *testing.T) {
	rec := newRecorder(t, nil)
	s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
	if r := s.Deliver(context.Background(), nil); len(r) != 0 {
		t.Fatalf("%d results", len(r))
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("%d requests for nothing", n)
	}
}
