package forward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/forward"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/testenv"
)

func destination(url, site, token string) trackapi.Destination {
	return trackapi.Destination{ID: 5, Type: trackapi.DestinationForward,
		Config: trackapi.DestinationConfig{URL: url, Site: site, Token: token, AllowPrivate: true}}
}

func newSink(t *testing.T, d trackapi.Destination) *forward.Sink {
	t.Helper()
	s, err := forward.New(d, forward.Options{Logger: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func deliver(t *testing.T, s *forward.Sink, timeout time.Duration, batch ...trackapi.Envelope) []trackapi.DeliveryResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := s.Deliver(ctx, batch)
	if len(res) != len(batch) {
		t.Fatalf("%d results for %d envelopes", len(res), len(batch))
	}
	return res
}

// storedEnvelopes collects events on a first server and returns them as the engine hands them to
// a sink: stored events, with the ids and normalisation the first server gave them.
func storedEnvelopes(t *testing.T, n int) []trackapi.Envelope {
	t.Helper()
	near := testenv.New(t, testenv.Options{})
	cl, err := client.New(near.URL, near.Site, near.Key)
	if err != nil {
		t.Fatal(err)
	}
	var events []gen.Event
	for i := range n {
		var e gen.Event
		raw := fmt.Sprintf(`{"event_name":"page_view","page_name":"p%d","user":{"consistent_anonymous_id":"v%d"}}`, i, i%3)
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if _, err := cl.SendBatch(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	var out []trackapi.Envelope
	for _, se := range testenv.Stored(t, near.DB) {
		out = append(out, trackapi.Envelope{ID: fmt.Sprintf("%d:%s", se.SourceID, se.EventID), SourceID: se.SourceID,
			Site: se.Site, ReceivedAt: se.ReceivedAt, Event: se.Event, Seq: se.Seq, EventID: se.EventID})
	}
	if len(out) != n {
		t.Fatalf("the first server stored %d events of %d", len(out), n)
	}
	return out
}

func ids(events []trackapi.StoredEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.EventID)
	}
	return out
}

func mustDeliver(t *testing.T, res []trackapi.DeliveryResult) {
	t.Helper()
	for i, r := range res {
		if r.Err != nil || r.Reason != "" || r.Sample != nil || r.Permanent {
			t.Fatalf("envelope %d: %+v", i, r)
		}
	}
}

func TestForwardedEventsKeepTheirIDsAndRepeatsAreDuplicates(t *testing.T) {
	batch := storedEnvelopes(t, 5)
	far := testenv.New(t, testenv.Options{})
	s := newSink(t, destination(far.URL, far.Site, far.Key))

	mustDeliver(t, deliver(t, s, 10*time.Second, batch...))
	stored := testenv.Stored(t, far.DB)
	want := make([]string, len(batch))
	for i, e := range batch {
		want[i] = e.EventID
	}
	if got := ids(stored); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("far end stored %v, want %v", got, want)
	}
	for i, se := range stored {
		if se.SourceID != far.Source.ID || se.EventName != "page_view" {
			t.Errorf("stored %d: source %d, name %q", i, se.SourceID, se.EventName)
		}
		var a, b map[string]any
		_ = json.Unmarshal(se.Event, &a)
		_ = json.Unmarshal(batch[i].Event, &b)
		if fmt.Sprint(a["page_name"]) != fmt.Sprint(b["page_name"]) || fmt.Sprint(a["user"]) != fmt.Sprint(b["user"]) {
			t.Errorf("stored %d: %s, sent %s", i, se.Event, batch[i].Event)
		}
	}

	// The engine sends a batch again when it did not learn the outcome: the far end has them,
	// and says duplicates, which are delivered.
	mustDeliver(t, deliver(t, s, 10*time.Second, batch...))
	if n := len(testenv.Stored(t, far.DB)); n != len(batch) {
		t.Fatalf("after the repeat the far end holds %d events, want %d", n, len(batch))
	}
}

func envelope(id, event string) trackapi.Envelope {
	return trackapi.Envelope{ID: "1:" + id, SourceID: 1, Site: "29", ReceivedAt: 1700000000000, Event: json.RawMessage(event), EventID: id}
}

func TestEventWithoutNameIsPermanentAlone(t *testing.T) {
	far := testenv.New(t, testenv.Options{})
	s := newSink(t, destination(far.URL, far.Site, far.Key))
	res := deliver(t, s, 10*time.Second,
		envelope("a", `{"context":{"event_id":"a","event_timestamp":1700000000000}}`), // the far end would reject it
		envelope("c", `{"event_name":"ok","context":{"event_id":"c","event_timestamp":1700000000000}}`),
	)
	r := res[0]
	if r.Err == nil || !r.Permanent || r.Reason != "rejected_missing_event_name" || r.Sample == nil {
		t.Fatalf("no event_name: %+v, want a permanent rejected_missing_event_name with a sample", r)
	}
	if r.Sample.Response != nil || !strings.Contains(r.Sample.Request.Body, `"event_id":"a"`) || r.Sample.Error == "" {
		t.Errorf("sample: %+v", r.Sample)
	}
	if res[1].Err != nil {
		t.Errorf("the good event: %v", res[1].Err)
	}
	if got := ids(testenv.Stored(t, far.DB)); len(got) != 1 || got[0] != "c" {
		t.Errorf("far end stored %v, want [c]", got)
	}
}

// A collector may reject an event the client cannot judge (the vendor's has rules of its own):
// its 200 answer names the event, which alone is permanent.
func TestEventRejectedInA200IsPermanentAlone(t *testing.T) {
	answer := `{"received":2,"accepted":1,"duplicates":0,"rejected":1,` +
		`"errors":[{"index":1,"code":"schema_violation","path":"/page_name","message":"too long"}],"warnings":[]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	s := newSink(t, destination(srv.URL, "29", "key"))
	res := deliver(t, s, 5*time.Second,
		envelope("a", `{"event_name":"x","context":{"event_id":"a"}}`),
		envelope("b", `{"event_name":"y","context":{"event_id":"b"}}`))
	if res[0].Err != nil {
		t.Errorf("accepted event: %v", res[0].Err)
	}
	r := res[1]
	if r.Err == nil || !r.Permanent || r.Reason != "rejected_schema_violation" || r.Sample == nil {
		t.Fatalf("rejected event: %+v", r)
	}
	smp := r.Sample
	if smp.Response == nil || smp.Response.Status != 200 || smp.Response.Body != answer || smp.Request.Method != "POST" ||
		!strings.Contains(smp.Request.Body, `"event_id":"b"`) || smp.Response.Headers["Content-Type"] != "application/json" {
		t.Errorf("sample: %+v", smp)
	}
}

func TestWrongTokenIsPermanentInvalidSource(t *testing.T) {
	far := testenv.New(t, testenv.Options{})
	s := newSink(t, destination(far.URL, far.Site, "not-the-key"))
	res := deliver(t, s, 10*time.Second, storedEnvelopes(t, 2)...)
	for i, r := range res {
		if r.Err == nil || !r.Permanent || r.Reason != "rejected_invalid_source" || r.Sample == nil {
			t.Fatalf("envelope %d: %+v, want a permanent rejected_invalid_source", i, r)
		}
		smp := r.Sample
		if smp.Request.Headers["Authorization"] != "REDACTED" || strings.Contains(fmt.Sprint(smp), "not-the-key") {
			t.Errorf("the sample shows the token: %+v", smp)
		}
		if smp.Request.URL != far.URL+"/events/batch?tc_s=REDACTED" {
			t.Errorf("sample URL %s", smp.Request.URL)
		}
		if smp.Response == nil || smp.Response.Status != 200 || !strings.Contains(smp.Response.Body, "invalid_source") {
			t.Errorf("sample response: %+v", smp.Response)
		}
	}
	if n := len(testenv.Stored(t, far.DB)); n != 0 {
		t.Errorf("far end stored %d events", n)
	}
}

func TestCollectorDownIsRetryable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	s := newSink(t, destination("http://"+addr, "29", "key"))
	res := deliver(t, s, 5*time.Second, envelope("a", `{"event_name":"x","context":{"event_id":"a"}}`))
	r := res[0]
	if r.Err == nil || r.Permanent || r.Reason != "connection_refused" || r.Sample == nil {
		t.Fatalf("%+v, want a retryable connection_refused", r)
	}
	if r.Sample.Response != nil || !strings.Contains(r.Sample.Error, "refused") || r.Sample.Request.URL != "http://"+addr+"/events/batch?tc_s=REDACTED" {
		t.Errorf("sample: %+v", r.Sample)
	}
}

func TestHTTPAnswers(t *testing.T) {
	for _, tc := range []struct {
		status     int
		header     string
		body       string
		reason     string
		permanent  bool
		retryAfter time.Duration
	}{
		{400, "", `{"code":"invalid_json","message":"bad"}`, "http_400", true, 0},
		{401, "", ``, "http_401", true, 0},
		{404, "", `not here`, "http_404", true, 0},
		{408, "", ``, "http_408", false, 0},
		{429, "3", `{"code":"unavailable","message":"slow down"}`, "http_429", false, 3 * time.Second},
		{503, "7", `{"code":"unavailable","message":"busy"}`, "http_503", false, 7 * time.Second},
		{502, "", `<html>bad gateway</html>`, "http_502", false, 0},
		{200, "", `<html>a login page</html>`, "invalid_response", false, 0},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			s := newSink(t, destination(srv.URL, "29", "key"))
			res := deliver(t, s, 5*time.Second, envelope("a", `{"event_name":"x","context":{"event_id":"a"}}`),
				envelope("b", `{"event_name":"y","context":{"event_id":"b"}}`))
			for i, r := range res {
				if r.Err == nil || r.Permanent != tc.permanent || r.Reason != tc.reason || r.RetryAfter != tc.retryAfter || r.Sample == nil {
					t.Fatalf("envelope %d: %+v, want reason %s, permanent %v, retry after %s", i, r, tc.reason, tc.permanent, tc.retryAfter)
				}
				if tc.status != 200 && (r.Sample.Response == nil || r.Sample.Response.Status != tc.status || r.Sample.Response.Body != tc.body) {
					t.Errorf("sample response: %+v", r.Sample.Response)
				}
			}
		})
	}
}

func TestSlowCollectorTimesOutByTheDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	s := newSink(t, destination(srv.URL, "29", "key"))
	start := time.Now()
	r := deliver(t, s, 500*time.Millisecond, envelope("a", `{"event_name":"x","context":{"event_id":"a"}}`))[0]
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Deliver took %s with a 500 ms deadline", took)
	}
	if r.Err == nil || r.Permanent || r.Reason != "timeout" {
		t.Fatalf("%+v, want a retryable timeout", r)
	}
}

func TestLargeSampleBodiesAreCut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := newSink(t, destination("http://"+addr, "29", "key"))
	big := fmt.Sprintf(`{"event_name":"x","blob":"%s","context":{"event_id":"a"}}`, strings.Repeat("é", 5000))
	r := deliver(t, s, 5*time.Second, envelope("a", big))[0]
	if r.Sample == nil || len(r.Sample.Request.Body) > trackapi.SampleBodyLimit || len(r.Sample.Request.Body) < trackapi.SampleBodyLimit-1 {
		t.Fatalf("sample body of %d bytes", len(r.Sample.Request.Body))
	}
}

func TestNewRefusesPrivateTargets(t *testing.T) {
	refused := []string{
		"http://127.0.0.1:8080", "http://127.1.2.3", "http://100.64.0.1", // names (localhost) are checked when dialled
		"http://10.0.0.1", "http://172.16.5.4", "http://192.168.1.1/events", "http://169.254.169.254",
		"http://0.0.0.0", "http://[::1]:8080", "http://[fd00::1]", "http://[fe80::1]", "http://[::]",
		"http://[::ffff:127.0.0.1]", "http://[::ffff:10.0.0.1]",
	}
	for _, u := range refused {
		d := destination(u, "29", "key")
		d.Config.AllowPrivate = false
		if _, err := forward.New(d, forward.Options{}); err == nil || !strings.Contains(err.Error(), "allow_private") {
			t.Errorf("%s: %v, want a refusal", u, err)
		}
		d.Config.AllowPrivate = true
		if _, err := forward.New(d, forward.Options{}); err != nil {
			t.Errorf("%s with allow_private: %v", u, err)
		}
	}
	for _, u := range []string{"https://collect.example.com", "https://collect.example.com/events", "http://8.8.8.8", "http://[2001:db8::1]", "http://localhost:8080"} {
		d := destination(u, "29", "key")
		d.Config.AllowPrivate = false
		if _, err := forward.New(d, forward.Options{}); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

func TestNewRefusesBadDestinations(t *testing.T) {
	for name, d := range map[string]trackapi.Destination{
		"wrong type": {Type: trackapi.DestinationWebhook, Config: trackapi.DestinationConfig{URL: "https://x.example", Site: "1", Token: "k"}},
		"no URL":     {Type: trackapi.DestinationForward, Config: trackapi.DestinationConfig{Site: "1", Token: "k"}},
		"ftp":        {Type: trackapi.DestinationForward, Config: trackapi.DestinationConfig{URL: "ftp://x.example", Site: "1", Token: "k"}},
		"no site":    {Type: trackapi.DestinationForward, Config: trackapi.DestinationConfig{URL: "https://x.example", Token: "k"}},
		"no token":   {Type: trackapi.DestinationForward, Config: trackapi.DestinationConfig{URL: "https://x.example", Site: "1"}},
		"query":      {Type: trackapi.DestinationForward, Config: trackapi.DestinationConfig{URL: "https://x.example/?token=secret", Site: "1", Token: "k"}},
	} {
		_, err := forward.New(d, forward.Options{})
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the URL's token: %v", name, err)
		}
	}
}
