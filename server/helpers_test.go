package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
)

// env is one real server on 127.0.0.1 over a real SQLite file, with one active source, and the
// spec-checking client the tests send through.
type env struct {
	*testenv.Server
	t      testing.TB
	client *http.Client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, testenv.Options{})
}

func newEnvWith(t testing.TB, opts testenv.Options) *env {
	t.Helper()
	return &env{Server: testenv.New(t, opts), t: t, client: apitest.Client(t)}
}

// url is the URL of path with the env's site and key in the query.
func (e *env) url(path string) string {
	return e.URL + path + "?tc_s=" + e.Site + "&token=" + e.Key
}

// response is what a test looks at: the status, the headers and the decoded body.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	Result gen.CollectResult // for a 200
	Error  gen.Error         // for a 400 or 503
}

// post sends body to url through the spec-checking client and decodes the answer.
func (e *env) post(url string, body []byte, header ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) response {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	switch {
	case req.Method != http.MethodPost: // the operations API: the spec check is enough
	case resp.StatusCode == http.StatusOK:
		decodeStrict(e.t, body, &r.Result)
	default:
		decodeStrict(e.t, body, &r.Error)
	}
	return r
}

func decodeStrict(t testing.TB, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %.300s: %v", body, err)
	}
}

// stored returns every stored event, oldest first.
func (e *env) stored() []trackapi.StoredEvent {
	e.t.Helper()
	return testenv.Stored(e.t, e.DB)
}

// storedBody decodes the i-th stored event.
func storedBody(t testing.TB, ev trackapi.StoredEvent) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(ev.Event))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("stored event %.200s: %v", ev.Event, err)
	}
	return m
}

// validEvent is an event that passes the schema without warnings.
func validEvent(id string) map[string]any {
	return map[string]any{
		"event_name":  "search",
		"search_term": "t-shirts",
		"user":        map[string]any{"consistent_anonymous_id": "67892", "consent_categories": []any{"1", "3"}},
		"context":     map[string]any{"event_id": id, "event_timestamp": 1639044446636},
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// batchOf wraps events into a batch body.
func batchOf(t testing.TB, events ...any) []byte {
	return mustJSON(t, map[string]any{"batch": events})
}

// checkCounts asserts the counts of a 200 and their invariant.
func checkCounts(t testing.TB, r response, received, accepted, duplicates, rejected int) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", r.Status, r.Body)
	}
	got := r.Result
	if got.Received != received || got.Accepted != accepted || got.Duplicates != duplicates || got.Rejected != rejected {
		t.Errorf("counts received/accepted/duplicates/rejected = %d/%d/%d/%d, want %d/%d/%d/%d; body %s",
			got.Received, got.Accepted, got.Duplicates, got.Rejected, received, accepted, duplicates, rejected, r.Body)
	}
	if got.Received != got.Accepted+got.Duplicates+got.Rejected {
		t.Errorf("received %d != accepted+duplicates+rejected", got.Received)
	}
	if len(got.Errors) != got.Rejected {
		t.Errorf("%d errors for %d rejected events", len(got.Errors), got.Rejected)
	}
}

// codes lists the (index, code) pairs of problems, for comparing with a want list.
func codes(problems []gen.Problem) []string {
	out := []string{}
	for _, p := range problems {
		out = append(out, fmt.Sprintf("%d:%s", p.Index, p.Code))
	}
	return out
}

// quietLogger drops the server's request logs, which would bury test failures.
var quietLogger = testenv.Quiet
