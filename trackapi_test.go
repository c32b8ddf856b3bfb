package trackapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/spec"
)

// The limits exist once in Go (the root package, used by the server and the client) and once in
// openapi.yaml's x-trackapi-limits, which is what the spec's readers and generated tools see.
// They must say the same.
func TestLimitsMatchTheSpec(t *testing.T) {
	doc, err := spec.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := doc.Info.Extensions["x-trackapi-limits"]
	if !ok {
		t.Fatal("openapi.yaml has no info.x-trackapi-limits")
	}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var limits map[string]int
	if err := json.Unmarshal(b, &limits); err != nil {
		t.Fatalf("x-trackapi-limits %s: %v", b, err)
	}
	want := map[string]int{
		"single_body_bytes": trackapi.SingleBodyLimit,
		"batch_body_bytes":  trackapi.BatchBodyLimit,
		"batch_event_bytes": trackapi.EventLimit,
		"pixel_query_bytes": trackapi.PixelQueryLimit,
		"pixel_parameters":  trackapi.PixelMaxParameters,
		"pixel_name_depth":  trackapi.PixelMaxNameDepth,
		"pixel_max_index":   trackapi.PixelMaxIndex,
	}
	if len(limits) != len(want) {
		t.Errorf("x-trackapi-limits has %v, want exactly the keys of %v", limits, want)
	}
	for name, value := range want {
		if limits[name] != value {
			t.Errorf("x-trackapi-limits.%s = %d, the Go constant is %d", name, limits[name], value)
		}
	}
}

// The event-id rule: a non-empty string or a number's text is the sender's id; anything else is
// missing and gets a server id.
func TestEventIDRule(t *testing.T) {
	for raw, want := range map[string]string{
		`"abc"`:  "abc",
		`""`:     "",
		`123`:    "123",
		`1.5e3`:  "1.5e3",
		`null`:   "",
		`{}`:     "",
		`["a"]`:  "",
		`true`:   "",
		``:       "",
		`"a\"b"`: `a"b`,
	} {
		if got := trackapi.EventIDOfJSON(json.RawMessage(raw)); got != want {
			t.Errorf("EventIDOfJSON(%s) = %q, want %q", raw, got, want)
		}
	}
}

// An envelope's JSON carries the event byte for byte (json.Marshal would compact it and escape
// <, > and &), and for a compact event without those it is what json.Marshal gives.
func TestEnvelopeJSON(t *testing.T) {
	env := trackapi.Envelope{ID: "2:e-1", SourceID: 2, Site: "shop", ReceivedAt: 1700000000000,
		Event: json.RawMessage(`{"event_name":"x","page":{"title":"<A & B>"}, "n": 1.50}`)}
	got, err := env.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"2:e-1","source_id":2,"site":"shop","received_at":1700000000000,"event":{"event_name":"x","page":{"title":"<A & B>"}, "n": 1.50}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	env.Event = json.RawMessage(`{"event_name":"x"}`)
	got, _ = env.AppendJSON(nil)
	if std, _ := json.Marshal(env); string(got) != string(std) {
		t.Errorf("AppendJSON %s, json.Marshal %s", got, std)
	}
	env.Event = json.RawMessage(`{"broken"`)
	if _, err := env.AppendJSON(nil); err == nil {
		t.Error("an invalid event was encoded")
	}
}

// Samples keep the first 4096 bytes of a body, never half a UTF-8 character.
func TestSampleBody(t *testing.T) {
	short := []byte("abc")
	if got := trackapi.SampleBody(short); got != "abc" {
		t.Errorf("a short body: %q", got)
	}
	long := []byte(strings.Repeat("a", trackapi.SampleBodyLimit-1) + "é" + "zzz")
	if got := trackapi.SampleBody(long); len(got) != trackapi.SampleBodyLimit-1 || !utf8.ValidString(got) {
		t.Errorf("cut at %d bytes, valid UTF-8 %t", len(got), utf8.ValidString(got))
	}
	exact := []byte(strings.Repeat("b", trackapi.SampleBodyLimit+10))
	if got := trackapi.SampleBody(exact); len(got) != trackapi.SampleBodyLimit {
		t.Errorf("cut at %d bytes", len(got))
	}
}
