package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/gen"
)

// Every 400 the spec lists, with its exact code and index; nothing of a refused request is stored.
func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	ev := string(mustJSON(t, validEvent("a")))
	big := `{"event_name":"x","pad":"` + strings.Repeat("a", 33000) + `"}`
	idx := func(i int) *int { return &i }
	tests := []struct {
		name  string
		path  string
		body  string
		code  gen.ErrorCode
		index *int
	}{
		{"single empty body", "/events", "", gen.ErrorCodeInvalidJson, nil},
		{"single only spaces", "/events", "  \n", gen.ErrorCodeInvalidJson, nil},
		{"single syntax error", "/events", `{"event_name":}`, gen.ErrorCodeInvalidJson, nil},
		{"single truncated", "/events", `{"event_name":"x"`, gen.ErrorCodeInvalidJson, nil},
		{"single trailing data", "/events", ev + ` {}`, gen.ErrorCodeInvalidJson, nil},
		{"single invalid UTF-8", "/events", "{\"event_name\":\"caf\xe9\"}", gen.ErrorCodeInvalidJson, nil},
		{"single too deep", "/events", strings.Repeat("[", 11000) + strings.Repeat("]", 11000), gen.ErrorCodeInvalidJson, nil},
		{"single array", "/events", `[` + ev + `]`, gen.ErrorCodeInvalidPayload, nil},
		{"single string", "/events", `"page_view"`, gen.ErrorCodeInvalidPayload, nil},
		{"single null", "/events", `null`, gen.ErrorCodeInvalidPayload, nil},
		{"single too large", "/events", big, gen.ErrorCodePayloadTooLarge, nil},
		{"batch empty body", "/events/batch", "", gen.ErrorCodeInvalidJson, nil},
		{"batch syntax error", "/events/batch", `{"batch":[` + ev + `,]}`, gen.ErrorCodeInvalidJson, nil},
		{"batch bare array", "/events/batch", `[` + ev + `]`, gen.ErrorCodeInvalidPayload, nil},
		{"batch without batch key", "/events/batch", `{"events":[` + ev + `]}`, gen.ErrorCodeInvalidPayload, nil},
		{"batch not an array", "/events/batch", `{"batch":` + ev + `}`, gen.ErrorCodeInvalidPayload, nil},
		{"batch null", "/events/batch", `{"batch":null}`, gen.ErrorCodeInvalidPayload, nil},
		{"batch element not object", "/events/batch", `{"batch":[` + ev + `,42,` + ev + `]}`, gen.ErrorCodeInvalidPayload, idx(1)},
		{"batch element array", "/events/batch", `{"batch":[[` + ev + `]]}`, gen.ErrorCodeInvalidPayload, idx(0)},
		{"batch too deep", "/events/batch", `{"batch":[{"event_name":"x","a":` + strings.Repeat("[", 11000) + strings.Repeat("]", 11000) + `}]}`, gen.ErrorCodeInvalidJson, nil},
		{"vendor path too deep", "/events/", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), gen.ErrorCodeInvalidJson, nil},
		{"vendor path array", "/events/", `[` + ev + `]`, gen.ErrorCodeInvalidPayload, nil},
		{"batch element too large", "/events/batch", `{"batch":[` + ev + `,` + ev + `,` + big + `]}`, gen.ErrorCodeEventTooLarge, idx(2)},
		{"batch too large", "/events/batch", `{"batch":[` + strings.Repeat(ev+",", 512000/len(ev)) + ev + `]}`, gen.ErrorCodePayloadTooLarge, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(e.url(tt.path), []byte(tt.body))
			if r.Status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %.300s", r.Status, r.Body)
			}
			if r.Error.Code != tt.code {
				t.Errorf("code %q, want %q (message %q)", r.Error.Code, tt.code, r.Error.Message)
			}
			if r.Error.Message == "" {
				t.Error("empty message")
			}
			if !reflect.DeepEqual(r.Error.Index, tt.index) {
				t.Errorf("index %v, want %v", deref(r.Error.Index), deref(tt.index))
			}
		})
	}
	if n := len(e.stored()); n != 0 {
		t.Errorf("%d events stored from refused requests", n)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// A query parameter or header given twice, on each collect path. The spec promises that neither
// Content-Type nor Authorization ever causes a 4xx: Content-Type is not read, and an Authorization
// header repeated with different values names no key, so the events are rejected (invalid_source)
// unless token names one; a repeat of one value counts once. tc_s or token twice is refused (400
// invalid_payload), which is what Echo answers and the spec says.
func TestGivenTwice(t *testing.T) {
	e := newEnv(t)
	bearer, wrong := "Bearer "+e.Key, "Bearer not-the-key"
	site := "?tc_s=" + e.Site
	tests := []struct {
		name   string
		query  string
		header [][2]string
		want   string // "accepted", "invalid_source" or an error code
	}{
		{"tc_s twice", site + "&tc_s=" + e.Site + "&token=" + e.Key, nil, "invalid_payload"},
		{"token twice", site + "&token=" + e.Key + "&token=" + e.Key, nil, "invalid_payload"},
		{"Content-Type twice", site + "&token=" + e.Key, [][2]string{{"Content-Type", "application/json"}, {"Content-Type", "text/plain"}}, "accepted"},
		{"Authorization twice, one value", site, [][2]string{{"Authorization", bearer}, {"Authorization", bearer}}, "accepted"},
		{"Authorization twice, the right key first", site, [][2]string{{"Authorization", bearer}, {"Authorization", wrong}}, "invalid_source"},
		{"Authorization twice, the right key last", site, [][2]string{{"Authorization", wrong}, {"Authorization", bearer}}, "invalid_source"},
		{"Authorization twice, token wins", site + "&token=" + e.Key, [][2]string{{"Authorization", wrong}, {"Authorization", bearer}}, "accepted"},
	}
	n := 0
	for _, tt := range tests {
		for _, path := range []string{"/events", "/events/", "/events/batch"} {
			n++
			ev := validEvent(fmt.Sprintf("twice-%d", n))
			body := mustJSON(t, ev)
			if path == "/events/batch" {
				body = batchOf(t, ev)
			}
			req, err := http.NewRequest(http.MethodPost, e.URL+path+tt.query, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.header {
				req.Header.Add(h[0], h[1])
			}
			r := e.do(req)
			switch tt.want {
			case "accepted":
				checkCounts(t, r, 1, 1, 0, 0)
			case "invalid_source":
				checkCounts(t, r, 1, 0, 0, 1)
				if len(r.Result.Errors) == 1 && r.Result.Errors[0].Code != gen.InvalidSource {
					t.Errorf("%s %s: %s", tt.name, path, r.Body)
				}
			default:
				if r.Status != http.StatusBadRequest || string(r.Error.Code) != tt.want {
					t.Errorf("%s %s: got %d %s, want 400 %s", tt.name, path, r.Status, r.Body, tt.want)
				}
			}
		}
	}
}

// invalid_source: every way a request can fail to name an active source, with the key in the
// query or the header; and the ways that work.
func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.AddSource(t, "30", "other site") // so that "key of another site" names a real site
	gone, deactivatedKey := e.AddSource(t, "29", "gone")
	if err := e.Sources.SetActive(ctx, gone.ID, false); err != nil {
		t.Fatal(err)
	}
	// Rotations: one with the previous key expired at once, one with an overlap.
	rotated, expiredKey := e.AddSource(t, "29", "rotated")
	rotatedKey, err := e.Sources.RotateKey(ctx, rotated.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	overlapping, previousKey := e.AddSource(t, "29", "overlapping")
	nextKey, err := e.Sources.RotateKey(ctx, overlapping.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revoked, revokedKey := e.AddSource(t, "29", "revoked")
	keys, err := e.Sources.Keys(ctx, revoked.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Sources.RevokeKey(ctx, revoked.ID, keys[0].ID); err != nil {
		t.Fatal(err)
	}
	body := batchOf(t, validEvent("1"), validEvent("2"))
	tests := []struct {
		name   string
		query  string
		header []string
		ok     bool
	}{
		{"token in query", "tc_s=29&token=" + e.Key, nil, true},
		{"bearer header", "tc_s=29", []string{"Authorization", "Bearer " + e.Key}, true},
		{"bearer scheme in lower case", "tc_s=29", []string{"Authorization", "bearer " + e.Key}, true},
		{"token wins over a wrong header", "tc_s=29&token=" + e.Key, []string{"Authorization", "Bearer wrong"}, true},
		{"wrong token loses even with a right header", "tc_s=29&token=wrong", []string{"Authorization", "Bearer " + e.Key}, false},
		{"no key", "tc_s=29", nil, false},
		{"no site", "token=" + e.Key, nil, false},
		{"nothing", "", nil, false},
		{"unknown key", "tc_s=29&token=7183b9d4-1031-11ee-be56-0242ac120002", nil, false},
		{"key of another site", "tc_s=30&token=" + e.Key, nil, false},
		{"basic auth header", "tc_s=29", []string{"Authorization", "Basic " + e.Key}, false},
		{"deactivated source", "tc_s=29&token=" + deactivatedKey, nil, false},
		{"key rotated out at once", "tc_s=29&token=" + expiredKey, nil, false},
		{"the key it was rotated to", "tc_s=29&token=" + rotatedKey.Key, nil, true},
		{"previous key during the overlap", "tc_s=29&token=" + previousKey, nil, true},
		{"next key during the overlap", "tc_s=29", []string{"Authorization", "Bearer " + nextKey.Key}, true},
		{"revoked key", "tc_s=29&token=" + revokedKey, nil, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.stored())
			// Fresh ids each time, so that a success is an accept and not a duplicate.
			body := bytes.ReplaceAll(body, []byte(`"event_id":"`), []byte(`"event_id":"`+tt.name+string(rune('a'+i))))
			r := e.post(e.URL+"/events/batch?"+tt.query, body, tt.header...)
			if tt.ok {
				checkCounts(t, r, 2, 2, 0, 0)
			} else {
				checkCounts(t, r, 2, 0, 0, 2)
				if got, want := codes(r.Result.Errors), []string{"0:invalid_source", "1:invalid_source"}; !reflect.DeepEqual(got, want) {
					t.Errorf("errors %v, want %v", got, want)
				}
			}
			if stored := len(e.stored()) - before; stored != r.Result.Accepted {
				t.Errorf("%d events stored, %d accepted", stored, r.Result.Accepted)
			}
		})
	}
}

// Each rejection and warning openapi.yaml lists, with its exact code, path and counts.
func TestRejectionsAndWarnings(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name     string
		path     string
		body     string
		counts   [4]int // received, accepted, duplicates, rejected
		errors   []string
		warnings []string
		check    func(t *testing.T, stored map[string]any)
	}{
		{
			name: "valid event has no warning", path: "/events",
			body:   `{"event_name":"search","search_term":"shoes","user":{"consistent_anonymous_id":"1","consent_categories":["1"]},"context":{"event_id":"v1","event_timestamp":1639044446636}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{},
		},
		{
			name: "numeric consent categories are accepted without warning", path: "/events",
			body:   `{"event_name":"search","search_term":"shoes","user":{"consistent_anonymous_id":"1","consent_categories":[1,"3"]},"context":{"event_id":"v2","event_timestamp":1639044446636}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{},
		},
		{
			name: "missing event_name", path: "/events",
			body:   `{"user":{"consistent_anonymous_id":"1"},"context":{"event_id":"r1","event_timestamp":1}}`,
			counts: [4]int{1, 0, 0, 1}, errors: []string{"0:missing_event_name"}, warnings: []string{},
		},
		{
			name: "event_name not a string", path: "/events/batch",
			body:   `{"batch":[{"event_name":42,"context":{"event_id":"r2"}},{"event_name":"ok","user":{"consistent_anonymous_id":"1"},"context":{"event_id":"r3","event_timestamp":1}}]}`,
			counts: [4]int{2, 1, 0, 1}, errors: []string{"0:missing_event_name"}, warnings: []string{},
		},
		{
			name: "missing event_id and timestamp are generated", path: "/events",
			body:   `{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"1"}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:event_id_generated", "0:timestamp_generated"},
			check: func(t *testing.T, ev map[string]any) {
				ctx := ev["context"].(map[string]any)
				if id, _ := ctx["event_id"].(string); len(id) != 36 || id[14] != '7' {
					t.Errorf("generated event_id %v is not a UUIDv7", ctx["event_id"])
				}
				ms, _ := ctx["event_timestamp"].(json.Number).Int64()
				if d := time.Since(time.UnixMilli(ms)); d < 0 || d > time.Minute {
					t.Errorf("generated timestamp %d is not the receive time", ms)
				}
			},
		},
		{
			name: "numeric string timestamp", path: "/events",
			body:   `{"event_name":"x","user":{"consistent_anonymous_id":"1"},"context":{"event_id":"t1","event_timestamp":"1639044446636"}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:timestamp_normalized"},
			check: wantTimestamp(1639044446636),
		},
		{
			name: "ISO 8601 timestamp", path: "/events",
			body:   `{"event_name":"x","user":{"consistent_anonymous_id":"1"},"context":{"event_id":"t2","event_timestamp":"2025-04-18T07:53:39.974+02:00"}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:timestamp_normalized"},
			check: wantTimestamp(time.Date(2025, 4, 18, 5, 53, 39, 974e6, time.UTC).UnixMilli()),
		},
		{
			name: "root timestamp in a batch moves into context", path: "/events/batch",
			body:   `{"batch":[{"event_name":"x","event_timestamp":1639044446000,"user":{"consistent_anonymous_id":"1"},"context":{"event_id":"t3"}}]}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:timestamp_moved"},
			check: func(t *testing.T, ev map[string]any) {
				wantTimestamp(1639044446000)(t, ev)
				if _, still := ev["event_timestamp"]; still {
					t.Error("event_timestamp is still at the root")
				}
			},
		},
		{
			name: "schema violations are warnings and the event is stored", path: "/events",
			body:   `{"event_name":"x","user":{"consent_categories":[true]},"context":{"event_id":"s1","event_timestamp":1}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:schema_violation", "0:schema_violation"},
		},
		{
			name: "missing user is a schema violation", path: "/events",
			body:   `{"event_name":"x","context":{"event_id":"s2","event_timestamp":1}}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:schema_violation"},
		},
		{
			name: "context that is not an object", path: "/events",
			body:   `{"event_name":"x","user":{"consistent_anonymous_id":"1"},"context":"nope"}`,
			counts: [4]int{1, 1, 0, 0}, errors: []string{}, warnings: []string{"0:schema_violation"},
		},
		{
			name: "warnings of a batch carry their element's index", path: "/events/batch",
			body:   `{"batch":[{"event_name":"a","user":{"consistent_anonymous_id":"1"},"context":{"event_id":"i1","event_timestamp":1}},{"event_name":"b","user":{"consistent_anonymous_id":"1"},"context":{"event_id":"i2"}},{"context":{}}]}`,
			counts: [4]int{3, 2, 0, 1}, errors: []string{"2:missing_event_name"}, warnings: []string{"1:timestamp_generated"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.stored())
			r := e.post(e.url(tt.path), []byte(tt.body))
			checkCounts(t, r, tt.counts[0], tt.counts[1], tt.counts[2], tt.counts[3])
			if got := codes(r.Result.Errors); !reflect.DeepEqual(got, tt.errors) {
				t.Errorf("errors %v, want %v; body %s", got, tt.errors, r.Body)
			}
			if got := codes(r.Result.Warnings); !reflect.DeepEqual(got, tt.warnings) {
				t.Errorf("warnings %v, want %v; body %s", got, tt.warnings, r.Body)
			}
			all := e.stored()
			if len(all)-before != tt.counts[1] {
				t.Fatalf("%d events stored, want %d", len(all)-before, tt.counts[1])
			}
			if tt.check != nil {
				tt.check(t, storedBody(t, all[len(all)-1]))
			}
			// The warnings of the response are stored with the events they belong to.
			stored := 0
			for _, ev := range all[before:] {
				stored += len(ev.Warnings)
			}
			if stored != len(r.Result.Warnings) {
				t.Errorf("%d warnings stored, %d reported", stored, len(r.Result.Warnings))
			}
		})
	}
}

func wantTimestamp(ms int64) func(t *testing.T, ev map[string]any) {
	return func(t *testing.T, ev map[string]any) {
		t.Helper()
		got, err := ev["context"].(map[string]any)["event_timestamp"].(json.Number).Int64()
		if err != nil || got != ms {
			t.Errorf("stored context.event_timestamp %v, want %d", ev["context"], ms)
		}
	}
}

// An event that needs no normalisation is stored byte for byte as sent.
func TestStoresRawBytesWhenUnchanged(t *testing.T) {
	e := newEnv(t)
	body := `{ "event_name" : "search", "z_custom": {"b": 1.50, "a": [1e3]},` +
		` "user": {"consistent_anonymous_id": "1"}, "context": {"event_id": "raw-1", "event_timestamp": 1639044446636} }`
	checkCounts(t, e.post(e.url("/events"), []byte(body)), 1, 1, 0, 0)
	all := e.stored()
	var want bytes.Buffer
	if err := json.Compact(&want, []byte(body)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := json.Compact(&got, all[0].Event); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("stored %s, sent %s", got.String(), want.String())
	}
	if all[0].Site != "29" || all[0].SourceID != e.Source.ID {
		t.Errorf("stored with site %q source %d", all[0].Site, all[0].SourceID)
	}
}

// Deduplication on (source, context.event_id): across requests, inside one batch, across sources.
func TestDeduplication(t *testing.T) {
	e := newEnv(t)
	one := mustJSON(t, validEvent("dup-1"))
	checkCounts(t, e.post(e.url("/events"), one), 1, 1, 0, 0)
	checkCounts(t, e.post(e.url("/events"), one), 1, 0, 1, 0)
	checkCounts(t, e.post(e.url("/events/"), one), 1, 0, 1, 0)

	batch := batchOf(t, validEvent("dup-2"), validEvent("dup-3"), validEvent("dup-2"), validEvent("dup-1"))
	checkCounts(t, e.post(e.url("/events/batch"), batch), 4, 2, 2, 0)
	// A retried batch stores nothing again.
	checkCounts(t, e.post(e.url("/events/batch"), batch), 4, 0, 4, 0)

	// The same id from another source is another event.
	_, key := e.AddSource(t, "29", "second")
	checkCounts(t, e.post(e.URL+"/events?tc_s=29&token="+key, one), 1, 1, 0, 0)
	if n := len(e.stored()); n != 4 {
		t.Errorf("%d events stored, want 4", n)
	}
}
