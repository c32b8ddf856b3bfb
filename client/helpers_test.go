package client_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
)

// quiet drops logs that would bury test failures.
var quiet = testenv.Quiet

// env is one real server (real handlers, real SQLite file) on 127.0.0.1 with one active source.
type env struct {
	*testenv.Server
	t testing.TB
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return &env{Server: testenv.New(t, testenv.Options{}), t: t}
}

// fastRetry keeps tests quick while still going through the backoff.
var fastRetry = client.RetryPolicy{
	MaxAttempts: 8, MaxElapsed: 20 * time.Second,
	BaseDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond, AttemptTimeout: 10 * time.Second,
}

// client is a client of the env's source at url (the env's own server when url is ""), whose
// every response is checked against openapi.yaml.
func (e *env) client(url string, opts ...client.Option) *client.Client {
	e.t.Helper()
	if url == "" {
		url = e.URL
	}
	all := append([]client.Option{client.WithHTTPClient(apitest.Client(e.t)), client.WithLogger(quiet), client.WithRetry(fastRetry)}, opts...)
	c, err := client.New(url, e.Site, e.Key, all...)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// stored counts the stored events by context.event_id.
func (e *env) stored() map[string]int {
	e.t.Helper()
	counts := map[string]int{}
	for _, ev := range e.storedEvents() {
		counts[eventID(e.t, ev.Event)]++
	}
	return counts
}

func (e *env) storedEvents() []trackapi.StoredEvent {
	e.t.Helper()
	return testenv.Stored(e.t, e.DB)
}

func eventID(t testing.TB, raw []byte) string {
	t.Helper()
	return apitest.EventID(t, raw)
}

// exactlyOnce fails unless each id is stored exactly once and nothing else is stored.
func (e *env) exactlyOnce(ids []string) {
	e.t.Helper()
	counts := e.stored()
	for _, id := range ids {
		if counts[id] != 1 {
			e.t.Errorf("event %s stored %d times, want 1", id, counts[id])
		}
	}
	if len(counts) != len(ids) {
		e.t.Errorf("%d distinct events stored, want %d", len(counts), len(ids))
	}
}

// ids are the event ids of results.
func ids(results []client.Result) []string {
	out := make([]string, len(results))
	for i, r := range results {
		out[i] = r.EventID
	}
	return out
}

// searches makes n search events, each with its own id given by the test.
func searches(prefix string, n int) []gen.Event {
	out := make([]gen.Event, n)
	for i := range out {
		out[i] = client.Search("t-shirts", client.NewUser("anon-1", "1", "3"))
		out[i].Context.EventId = prefix + "-" + strconv.Itoa(i)
	}
	return out
}

// action is what the fault server does with one request.
type action int

const (
	pass        action = iota // forward to the real server
	unavailable               // 503 with Retry-After (faultServer.retryAfter)
	tooMany                   // 429 with Retry-After
	badGateway                // 502 with an HTML body, as a proxy would answer
	hang                      // no answer until the client gives up
	resetBefore               // close the connection with a TCP reset, nothing forwarded
	resetAfter                // forward (the real server stores), then reset instead of answering
	badRequest                // 400 with faultServer.bad as the body
	hold                      // wait until the test calls release, then forward
)

// request is what the fault server saw of one request.
type request struct {
	at     time.Time
	path   string
	size   int
	events []string // event ids of the body, in order
	action action
}

// faultServer stands in front of a real server on 127.0.0.1 and does to each request what its
// script says. Every answer that comes from the real server is checked against openapi.yaml.
type faultServer struct {
	t          testing.TB
	URL        string
	real       http.Handler
	script     func(n int, r *request) action // n counts requests from 1
	retryAfter string
	bad        gen.Error

	mu       sync.Mutex
	requests []request
	arrived  chan request // every request, as it arrives (buffered)

	released    chan struct{}
	releaseOnce sync.Once
}

// release lets held requests through, and all later ones.
func (f *faultServer) release() { f.releaseOnce.Do(func() { close(f.released) }) }

func newFaultServer(t testing.TB, real http.Handler, script func(n int, r *request) action) *faultServer {
	t.Helper()
	f := &faultServer{t: t, real: real, script: script, retryAfter: "1", arrived: make(chan request, 10000), released: make(chan struct{})}
	ts := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(ts.Close)
	t.Cleanup(f.release) // runs first: held requests must end for ts.Close to return
	f.URL = ts.URL
	return f
}

func (f *faultServer) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client went away
	}
	req := request{at: time.Now(), path: r.URL.Path, size: len(body), events: bodyIDs(body)}
	f.mu.Lock()
	n := len(f.requests) + 1
	req.action = f.script(n, &req)
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	f.arrived <- req

	switch req.action {
	case unavailable, tooMany:
		status := http.StatusServiceUnavailable
		if req.action == tooMany {
			status = http.StatusTooManyRequests
		}
		w.Header().Set("Retry-After", f.retryAfter)
		writeJSON(w, status, gen.Error{Code: gen.ErrorCodeUnavailable, Message: "injected"})
	case badGateway:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
	case badRequest:
		writeJSON(w, http.StatusBadRequest, f.bad)
	case hang:
		<-r.Context().Done() // the client abandoned the attempt and closed the connection
	case resetBefore:
		reset(f.t, w)
	case resetAfter, pass, hold:
		if req.action == hold {
			select {
			case <-f.released:
			case <-r.Context().Done():
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		f.real.ServeHTTP(rec, r)
		apitest.CheckResponse(f.t, r, rec.Code, rec.Header(), rec.Body.Bytes())
		if req.action == resetAfter {
			if rec.Code != http.StatusOK {
				f.t.Errorf("the real server answered %d before the injected reset: %s", rec.Code, rec.Body)
			}
			reset(f.t, w)
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}
}

// reset closes the request's connection with a TCP RST, without an answer.
func reset(t testing.TB, w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// bodyIDs lists the event ids of a single or batch body.
func bodyIDs(body []byte) []string {
	var batch struct {
		Batch []json.RawMessage `json:"batch"`
	}
	elements := []json.RawMessage{body}
	if json.Unmarshal(body, &batch) == nil && batch.Batch != nil {
		elements = batch.Batch
	}
	var out []string
	for _, el := range elements {
		var ev struct {
			Context struct {
				EventID string `json:"event_id"`
			} `json:"context"`
		}
		json.Unmarshal(el, &ev)
		out = append(out, ev.Context.EventID)
	}
	return out
}

func (f *faultServer) seen() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.requests...)
}

// plainClient makes a client of the env's source through the fault server. Its HTTP client does
// not check responses: the injected ones are not all in the spec; the fault server checks those
// of the real server.
func (f *faultServer) client(e *env, policy client.RetryPolicy) *client.Client {
	f.t.Helper()
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	f.t.Cleanup(hc.CloseIdleConnections)
	c, err := client.New(f.URL, e.Site, e.Key, client.WithHTTPClient(hc), client.WithLogger(quiet), client.WithRetry(policy))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// script helpers
func always(a action) func(int, *request) action { return func(int, *request) action { return a } }

func first(a action, times int) func(int, *request) action {
	return func(n int, _ *request) action {
		if n <= times {
			return a
		}
		return pass
	}
}

// waitFor returns the next request the fault server sees, or fails after d.
func (f *faultServer) waitFor(d time.Duration) request {
	f.t.Helper()
	select {
	case r := <-f.arrived:
		return r
	case <-time.After(d):
		f.t.Fatalf("no request within %s", d)
		return request{}
	}
}
