package forward_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/testenv"
)

// captured is one request as the far collector received it.
type captured struct {
	url    string
	header http.Header
	body   []byte
}

// capturingProxy stands before a real collector and keeps every request it passes on, so that a
// test sees what went over the wire while the collector answers as it does.
type capturingProxy struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []captured
}

func newCapturingProxy(t *testing.T, target string) *capturingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &capturingProxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading a request: %v", err)
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, captured{url: r.URL.String(), header: r.Header.Clone(), body: body})
		p.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *capturingProxy) requests() []captured {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.reqs)
}

func TestPreviewIsTheRequestDeliverSends(t *testing.T) {
	batch := storedEnvelopes(t, 3)
	far := testenv.New(t, testenv.Options{})
	proxy := newCapturingProxy(t, far.URL)
	s := newSink(t, destination(proxy.srv.URL, far.Site, far.Key))

	var _ trackapi.Previewer = s
	preview, err := s.Preview(batch)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if n := len(proxy.requests()); n != 0 {
		t.Fatalf("Preview sent %d requests", n)
	}
	mustDeliver(t, deliver(t, s, 10*time.Second, batch...))
	reqs := proxy.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if len(testenv.Stored(t, far.DB)) != len(batch) {
		t.Fatal("the collector behind the proxy did not store the batch")
	}

	if preview.Body != string(got.body) {
		t.Fatalf("preview body\n%s\nreceived\n%s", preview.Body, got.body)
	}
	if preview.Method != http.MethodPost || preview.URL != proxy.srv.URL+"/events/batch?tc_s=REDACTED" {
		t.Errorf("preview %s %s", preview.Method, preview.URL)
	}
	if got.url != "/events/batch?tc_s="+url.QueryEscape(far.Site) {
		t.Errorf("received %s", got.url)
	}
	if preview.Headers["Authorization"] != "REDACTED" {
		t.Errorf("Authorization %q, want REDACTED", preview.Headers["Authorization"])
	}
	// Every header the collector got, but those the transport adds on the wire, is shown, with
	// the value it got unless redacted.
	var want []string
	for name := range got.header {
		if name != "Accept-Encoding" && name != "Content-Length" {
			want = append(want, name)
		}
	}
	var have []string
	for name, v := range preview.Headers {
		have = append(have, name)
		if v != "REDACTED" && got.header.Get(name) != v {
			t.Errorf("header %s: preview %q, received %q", name, v, got.header.Get(name))
		}
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(have, want) {
		t.Fatalf("preview headers %v, received %v", have, want)
	}
	shown, _ := json.Marshal(preview)
	if strings.Contains(string(shown), far.Key) {
		t.Fatalf("the preview shows the token: %s", shown)
	}
	if got.header.Get("Authorization") != "Bearer "+far.Key {
		t.Fatalf("the collector got Authorization %q: the token was to travel there", got.header.Get("Authorization"))
	}
}

func TestPreviewShowsTheFirstOfSeveralRequests(t *testing.T) {
	// 20 events of about 30 KB: more than one batch request (512 000 bytes) holds.
	var batch []trackapi.Envelope
	for i := range 20 {
		ev := fmt.Sprintf(`{"event_name":"page_view","page_name":"%s","context":{"event_id":"01890a5d-ac96-774b-b9aa-%012d","event_timestamp":1767225600000}}`,
			strings.Repeat(string(rune('a'+i)), 30_000), i)
		batch = append(batch, trackapi.Envelope{ID: fmt.Sprint(i), Event: json.RawMessage(ev)})
	}
	far := testenv.New(t, testenv.Options{})
	proxy := newCapturingProxy(t, far.URL)
	s := newSink(t, destination(proxy.srv.URL, far.Site, far.Key))

	preview, err := s.Preview(batch)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	mustDeliver(t, deliver(t, s, 20*time.Second, batch...))
	reqs := proxy.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d requests: the batch was meant to need several", len(reqs))
	}
	if preview.Body != trackapi.SampleBody(reqs[0].body) || len(preview.Body) != trackapi.SampleBodyLimit {
		t.Fatalf("preview body (%d bytes) is not the first request's, cut at %d", len(preview.Body), trackapi.SampleBodyLimit)
	}
}

func TestPreviewFailsAsDeliverWould(t *testing.T) {
	far := testenv.New(t, testenv.Options{})
	proxy := newCapturingProxy(t, far.URL)
	s := newSink(t, destination(proxy.srv.URL, far.Site, far.Key))
	bad := trackapi.Envelope{ID: "1:x", Event: json.RawMessage(`{"page_name":"no event name"}`)}
	good := storedEnvelopes(t, 1)[0]

	preview, err := s.Preview([]trackapi.Envelope{bad, good})
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if strings.Contains(preview.Body, "no event name") || !strings.Contains(preview.Body, good.EventID) {
		t.Fatalf("preview body %s, want the valid event only", preview.Body)
	}
	_, err = s.Preview([]trackapi.Envelope{bad})
	r := deliver(t, s, 5*time.Second, bad)[0]
	if err == nil || r.Err == nil || err.Error() != r.Err.Error() {
		t.Fatalf("Preview of a refused event: %v; Deliver's error %v", err, r.Err)
	}
	if n := len(proxy.requests()); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}
