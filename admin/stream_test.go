package admin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/server"
)

// openStream opens a live stream of the config API with token and the query (with its "?"), and
// fails the test unless it is a 200.
func openStream(t testing.TB, c *http.Client, baseURL, token, query string) *apitest.Stream {
	t.Helper()
	s, status, body := tryStream(t, c, baseURL, token, query)
	if s == nil {
		t.Fatalf("opening a stream: %d %s", status, body)
	}
	return s
}

// tryStream asks for a live stream: the open stream on a 200, else the status and the body.
func tryStream(t testing.TB, c *http.Client, baseURL, token, query string) (*apitest.Stream, int, []byte) {
	t.Helper()
	return apitest.OpenStream(t, c, baseURL+"/api/inspector/stream"+query, "Authorization", "Bearer "+token)
}

// nextEntry returns the stream's next entry, decoded, checking that its event id is its id.
func nextEntry(t testing.TB, s *apitest.Stream, d time.Duration) adminapi.InspectorEntry {
	t.Helper()
	f := s.NextEvent(d)
	var e adminapi.InspectorEntry
	if f.Event != "entry" {
		t.Fatalf("a stream event %+v, want an entry", f)
	}
	if err := json.Unmarshal([]byte(f.Data), &e); err != nil {
		t.Fatalf("entry data %q: %v", f.Data, err)
	}
	if f.ID != fmt.Sprint(e.Id) {
		t.Errorf("event id %q for entry %d", f.ID, e.Id)
	}
	return e
}

// inspect feeds the capturer one request's event as the collect path would: an accepted event
// named name from an unknown key, unless outcome and reason say otherwise.
func (e *env) inspect(name, outcome, reason string) {
	in := &ingest.Inspection{At: time.Now(), Site: "29", KeyPrefix: "0b5d3c1a", Reason: reason, ClientIP: "203.0.113.77",
		Events: []ingest.InspectedEvent{{Outcome: outcome, EventName: name,
			Body: json.RawMessage(fmt.Sprintf(`{"event_name":%q,"context":{"device":{"ip":"198.51.100.23"}}}`, name))}}}
	if outcome == trackapi.InspectorRejected {
		in.Events[0].Problems = []trackapi.Problem{{Code: "invalid_source", Message: "tc_s and token do not match an active source"}}
	}
	e.Capture.Inspect(in)
}

// A stream outlives the HTTP server's read and write timeouts (here 300 ms, so that the test is
// short): an idle stream gets heartbeats (every 100 ms here) for more than three times the
// timeouts, then an entry written after that, as GET /api/inspector/events/{id} shows it.
func TestStreamHeartbeatsOutliveServerTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, withHeartbeat(100*time.Millisecond),
		withHTTPServer(server.HTTPOptions{ReadTimeout: timeout, WriteTimeout: timeout}))
	s := openStream(t, apitest.StreamClient(t), e.URL, e.Read, "")
	if f, ok := s.Next(5 * time.Second); !ok || f.Comment == "" {
		t.Fatalf("the stream's first line %+v (open %v), want its opening comment", f, ok)
	}
	// Read heartbeats until the stream has lived past four times the timeouts and had three.
	start := time.Now()
	heartbeats := 0
	for time.Since(start) < 4*timeout || heartbeats < 3 {
		f, ok := s.Next(5 * time.Second)
		if !ok {
			t.Fatalf("the stream ended %s after it opened, with %d heartbeats: a server timeout (%s) cut it",
				time.Since(start).Round(time.Millisecond), heartbeats, timeout)
		}
		if f.Comment != "keep-alive" || f.Event != "" {
			t.Fatalf("on an idle stream: %+v, want : keep-alive", f)
		}
		heartbeats++
	}
	e.inspect("late", trackapi.InspectorAccepted, "")
	got := nextEntry(t, s, 5*time.Second)
	if got.EventName == nil || *got.EventName != "late" || got.Outcome != adminapi.InspectorOutcomeAccepted {
		t.Fatalf("streamed entry %+v", got)
	}
	one, err := e.ReadAPI.GetInspectorEventWithResponse(ctx(t), got.Id)
	if err != nil || one.JSON200 == nil {
		t.Fatalf("get entry %d: %v %s", got.Id, err, one.Body)
	}
	if !reflect.DeepEqual(*one.JSON200, got) {
		t.Errorf("the stream's entry differs from GET's:\nstream %+v\nget    %+v", got, *one.JSON200)
	}
	if ip := got.ClientIp; ip == nil || *ip != "203.0.113.0" || !strings.Contains(fmt.Sprint(got.Body), "198.51.100.0") {
		t.Errorf("addresses not masked in the stream: client %v, body %v", ip, got.Body)
	}
}

// At most 10 streams a token: the 11th is a 429 too_many_streams (a JSON Error); another token
// still opens one; once a stream is closed, its token may open a new one.
func TestStreamLimitPerToken(t *testing.T) {
	e := newEnv(t)
	c := apitest.StreamClient(t)
	var open []*apitest.Stream
	for range 10 {
		open = append(open, openStream(t, c, e.URL, e.Read, ""))
	}
	s, status, body := tryStream(t, c, e.URL, e.Read, "")
	if s != nil {
		t.Fatal("an 11th stream of one token opened")
	}
	var apiErr adminapi.Error
	if err := json.Unmarshal(body, &apiErr); err != nil || status != http.StatusTooManyRequests ||
		apiErr.Code != adminapi.ErrorCodeTooManyStreams || !strings.Contains(apiErr.Message, "10") {
		t.Fatalf("11th stream: %d %s, want 429 too_many_streams", status, body)
	}
	openStream(t, c, e.URL, e.Write, "") // another token's first

	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, status, body := tryStream(t, c, e.URL, e.Read, "")
		if s != nil {
			break
		}
		if status != http.StatusTooManyRequests {
			t.Fatalf("after closing a stream: %d %s", status, body)
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed stream still counts against its token after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The replacement took the freed slot: the token is at 10 again.
	if s, status, body := tryStream(t, c, e.URL, e.Read, ""); s != nil || status != http.StatusTooManyRequests {
		t.Errorf("with 10 streams open again: %d %s, want 429", status, body)
	}
}

// Shutdown ends the open streams, with a comment saying so, long before their next heartbeat
// (15 s, the default) or any entry; a stream opened after it ends at once.
func TestShutdownEndsStreams(t *testing.T) {
	e := newEnv(t)
	c := apitest.StreamClient(t)
	var streams []*apitest.Stream
	for range 3 {
		s := openStream(t, c, e.URL, e.Read, "")
		if f, ok := s.Next(5 * time.Second); !ok || f.Comment == "" {
			t.Fatalf("first line %+v", f)
		}
		streams = append(streams, s)
	}
	e.Admin.Shutdown()
	for i, s := range streams {
		comments, ended := s.Ended(5 * time.Second)
		if !ended {
			t.Fatalf("stream %d still open 5 s after Shutdown", i)
		}
		if len(comments) != 1 || !strings.Contains(comments[0], "shutting down") {
			t.Errorf("stream %d ended with comments %q, want one saying the server is shutting down", i, comments)
		}
	}
	late := openStream(t, c, e.URL, e.Read, "")
	if _, ended := late.Ended(5 * time.Second); !ended {
		t.Error("a stream opened after Shutdown stays open")
	}
}

// The filters of a stream apply: entries of another event name, another outcome or another
// reason are not sent, and the first entry a stream gets is the first that matches.
func TestStreamFilters(t *testing.T) {
	e := newEnv(t)
	c := apitest.StreamClient(t)
	byName := openStream(t, c, e.URL, e.Read, "?event_name=wanted")
	rejected := openStream(t, c, e.URL, e.Read, "?outcome=rejected")
	// code also matches the reason of an invalid_source (admin.yaml's InspectorCode).
	expired := openStream(t, c, e.URL, e.Read, "?code=key_expired")
	all := openStream(t, c, e.URL, e.Read, "")

	e.inspect("other", trackapi.InspectorAccepted, "")
	e.inspect("other", trackapi.InspectorRejected, "unknown_key")
	e.inspect("wanted", trackapi.InspectorRejected, "key_expired")
	e.inspect("wanted", trackapi.InspectorAccepted, "")

	name := func(e adminapi.InspectorEntry) string {
		if e.EventName == nil {
			return ""
		}
		return *e.EventName
	}
	reason := func(e adminapi.InspectorEntry) string {
		if e.Reason == nil {
			return ""
		}
		return *e.Reason
	}
	var ids []int64
	for range 4 {
		got := nextEntry(t, all, 5*time.Second)
		ids = append(ids, got.Id)
	}
	if got := nextEntry(t, byName, 5*time.Second); name(got) != "wanted" || got.Id != ids[2] {
		t.Errorf("event_name=wanted: first entry %d %q, want %d wanted", got.Id, name(got), ids[2])
	}
	if got := nextEntry(t, byName, 5*time.Second); name(got) != "wanted" || got.Id != ids[3] {
		t.Errorf("event_name=wanted: second entry %d %q, want %d wanted", got.Id, name(got), ids[3])
	}
	if got := nextEntry(t, rejected, 5*time.Second); got.Outcome != adminapi.InspectorOutcomeRejected || got.Id != ids[1] {
		t.Errorf("outcome=rejected: first entry %d %s, want %d", got.Id, got.Outcome, ids[1])
	}
	if got := nextEntry(t, rejected, 5*time.Second); got.Outcome != adminapi.InspectorOutcomeRejected || got.Id != ids[2] {
		t.Errorf("outcome=rejected: second entry %d %s, want %d", got.Id, got.Outcome, ids[2])
	}
	if got := nextEntry(t, expired, 5*time.Second); reason(got) != "key_expired" || got.Id != ids[2] {
		t.Errorf("code=key_expired: first entry %d with reason %q, want %d key_expired", got.Id, reason(got), ids[2])
	}
	// Nothing else matches: after one more entry that every stream takes, each stream's next entry
	// is that one.
	e.inspect("wanted", trackapi.InspectorRejected, "key_expired")
	last := nextEntry(t, all, 5*time.Second)
	for filter, s := range map[string]*apitest.Stream{"event_name": byName, "outcome": rejected, "code": expired} {
		if got := nextEntry(t, s, 5*time.Second); got.Id != last.Id {
			t.Errorf("%s filter: entry %d came before %d", filter, got.Id, last.Id)
		}
	}
}
