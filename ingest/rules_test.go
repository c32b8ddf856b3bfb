package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// collectOK sends body and fails the test unless the request is usable.
func collectOK(t *testing.T, c *Collector, batch bool, body string) gen.CollectResult {
	t.Helper()
	res, err := c.Collect(context.Background(), Request{Batch: batch, Body: []byte(body)})
	if err != nil {
		t.Fatalf("%.200s: %v", body, err)
	}
	return res
}

// warningsOf lists the warnings of event index as "code path".
func warningsOf(res gen.CollectResult, index int) []string {
	var out []string
	for _, w := range res.Warnings {
		if w.Index == index {
			out = append(out, string(w.Code)+" "+w.Path)
		}
	}
	return out
}

// firstWins reads the member key of a JSON object the way some readers do: the first one wins.
func firstWins(t *testing.T, object []byte, key string) []byte {
	t.Helper()
	members, ok := objectMembers(object)
	if !ok {
		t.Fatalf("not an object: %s", object)
	}
	for _, m := range members {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

// A key repeated at the root or in context: the last one is used for everything (dedup, checks)
// and the stored body holds it alone, so that a reader keeping the first one sees the same event.
func TestDuplicateKeys(t *testing.T) {
	const user = `"user":{"consistent_anonymous_id":"a"}`
	cases := []struct {
		name, body string
		wantID     string
		warnings   []string
		wantBody   string // "" : only checked for the id
	}{
		{
			name:     "context twice, nothing to normalise",
			body:     `{"event_name":"e","context":{"event_id":"first","event_timestamp":1},` + user + `,"context":{"event_id":"second","event_timestamp":2}}`,
			wantID:   "second",
			warnings: []string{"duplicate_key /context"},
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"second","event_timestamp":2}}`,
		},
		{
			name:     "context twice, the last one normalised",
			body:     `{"event_name":"e","context":{"event_id":"first","event_timestamp":1},` + user + `,"context":{"event_id":"second"}}`,
			wantID:   "second",
			warnings: []string{"duplicate_key /context", "timestamp_generated /context/event_timestamp"},
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"second","event_timestamp":1700000000000}}`,
		},
		{
			name:     "event_id twice in context",
			body:     `{"event_name":"e",` + user + `,"context":{"event_id":"first","page":{"url":"u"},"event_id":"second","event_timestamp":1}}`,
			wantID:   "second",
			warnings: []string{"duplicate_key /context/event_id"},
			wantBody: `{"event_name":"e",` + user + `,"context":{"page":{"url":"u"},"event_id":"second","event_timestamp":1}}`,
		},
		{
			name:     "a key spelt with an escape repeats the same key",
			body:     `{"event_name":"e",` + user + `,"cont\u0065xt":{"event_id":"first","event_timestamp":1},"context":{"event_id":"second","event_timestamp":1}}`,
			wantID:   "second",
			warnings: []string{"duplicate_key /context"},
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"second","event_timestamp":1}}`,
		},
		{
			name:     "event_name and a free property twice",
			body:     `{"event_name":"a","x":1,"event_name":"b",` + user + `,"x":2,"context":{"event_id":"id","event_timestamp":1}}`,
			wantID:   "id",
			warnings: []string{"duplicate_key /event_name", "duplicate_key /x"},
			wantBody: `{"event_name":"b",` + user + `,"x":2,"context":{"event_id":"id","event_timestamp":1}}`,
		},
		{
			name:     "repeats deeper down are stored as sent",
			body:     `{"event_name":"e","user":{"consistent_anonymous_id":"a","id":"1","id":"2"},"context":{"event_id":"id","event_timestamp":1,"page":{"url":"a","url":"b"}}}`,
			wantID:   "id",
			warnings: nil,
			wantBody: `{"event_name":"e","user":{"consistent_anonymous_id":"a","id":"1","id":"2"},"context":{"event_id":"id","event_timestamp":1,"page":{"url":"a","url":"b"}}}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, store := newTestCollector(t)
			res := collectOK(t, c, false, tc.body)
			if res.Accepted != 1 {
				t.Fatalf("%+v", res)
			}
			if got := warningsOf(res, 0); strings.Join(got, ",") != strings.Join(tc.warnings, ",") {
				t.Errorf("warnings %q, want %q", got, tc.warnings)
			}
			stored := store.last[0]
			if stored.EventID != tc.wantID {
				t.Errorf("deduplicated on %q, want %q", stored.EventID, tc.wantID)
			}
			if string(stored.Body) != tc.wantBody {
				t.Errorf("stored\n%s\nwant\n%s", stored.Body, tc.wantBody)
			}
			// Any reader finds the id the server deduplicated on.
			if id := trackapi.EventIDOfJSON(firstWins(t, firstWins(t, stored.Body, "context"), "event_id")); id != stored.EventID {
				t.Errorf("a first-wins reader sees id %q, the server deduplicated on %q", id, stored.EventID)
			}
		})
	}
}

// In a batch, a repeated root event_timestamp moves into context as the last one, and no copy of it
// stays at the root.
func TestDuplicateRootTimestampInBatch(t *testing.T) {
	c, store := newTestCollector(t)
	res := collectOK(t, c, true, `{"batch":[{"event_name":"e","event_timestamp":1,"user":{"consistent_anonymous_id":"a"},"event_timestamp":2,"context":{"event_id":"x"}}]}`)
	if got := warningsOf(res, 0); strings.Join(got, ",") != "duplicate_key /event_timestamp,timestamp_moved /context/event_timestamp" {
		t.Errorf("warnings %q", got)
	}
	if want := `{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"x","event_timestamp":2}}`; string(store.last[0].Body) != want {
		t.Errorf("stored %s, want %s", store.last[0].Body, want)
	}
}

// Thousands of repeated keys cost linear time and a bounded list of warnings.
func TestManyDuplicateKeys(t *testing.T) {
	c, store := newTestCollector(t)
	var b strings.Builder
	b.WriteString(`{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"x","event_timestamp":1}`)
	for i := range 2000 {
		fmt.Fprintf(&b, `,"k%d":1,"k%d":2`, i%1500, i%1500)
	}
	b.WriteString(`}`)
	res := collectOK(t, c, false, b.String())
	if n := len(res.Warnings); n != maxDuplicateWarnings+1 || !strings.Contains(res.Warnings[n-1].Message, "1490 more repeated keys") {
		t.Errorf("%d warnings: %.300v", n, res.Warnings)
	}
	members, _ := objectMembers(store.last[0].Body)
	if len(members) != 3+1500 || supersededMembers(members) != nil {
		t.Errorf("stored %d members, some repeated: %.300s", len(members), store.last[0].Body)
	}
	if got := lastMember(members, "k7"); string(got) != "2" {
		t.Errorf("k7 = %s, want the last one, 2", got)
	}
}

// Ids that differ only in lone surrogates decode the same; the server assigns ids of its own rather
// than drop the second event as a duplicate of the first.
func TestLoneSurrogateEventIDs(t *testing.T) {
	c, store := newTestCollector(t)
	event := func(id string) string {
		return `{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"` + id + `","event_timestamp":1}}`
	}
	res := collectOK(t, c, true, `{"batch":[`+event(`id\ud800`)+`,`+event(`id\udc01`)+`,`+event(`id\ud83d\ude00`)+`,`+event(`id\\ud800`)+`,`+event(`id\ud800\ud800`)+`]}`)
	if res.Accepted != 5 || res.Duplicates != 0 {
		t.Fatalf("%+v", res)
	}
	for i, want := range []string{"invalid_event_id /context/event_id", "invalid_event_id /context/event_id", "", "", "invalid_event_id /context/event_id"} {
		if got := strings.Join(warningsOf(res, i), ","); got != want {
			t.Errorf("event %d: warnings %q, want %q", i, got, want)
		}
	}
	for i, e := range store.last {
		var body struct {
			Context struct {
				EventID string `json:"event_id"`
			} `json:"context"`
		}
		if err := json.Unmarshal(e.Body, &body); err != nil {
			t.Fatal(err)
		}
		if body.Context.EventID != e.EventID {
			t.Errorf("event %d: stored id %q, deduplicated on %q", i, body.Context.EventID, e.EventID)
		}
		if strings.ContainsRune(e.EventID, '\uFFFD') {
			t.Errorf("event %d: id %q", i, e.EventID)
		}
	}
	if store.last[2].EventID != "id\U0001F600" || store.last[3].EventID != `id\ud800` {
		t.Errorf("valid ids changed: %q %q", store.last[2].EventID, store.last[3].EventID)
	}
	// A retry of the valid ones is a duplicate; of the others, a new event (documented).
	res = collectOK(t, c, true, `{"batch":[`+event(`id\ud800`)+`,`+event(`id\ud83d\ude00`)+`]}`)
	if res.Accepted != 1 || res.Duplicates != 1 {
		t.Errorf("retry: %+v", res)
	}
}

// Up to 64 levels the event is checked; deeper, it is stored with one warning saying it was not.
func TestValidationDepthLimit(t *testing.T) {
	c, store := newTestCollector(t)
	event := func(levels int) string { // the event and context are 2 levels
		return `{"event_name":"e","context":{"event_id":"x` + fmt.Sprint(levels) + `","event_timestamp":1,"x":` + nest(2*(levels-2), 0) + `}}`
	}
	res := collectOK(t, c, false, event(maxValidationDepth))
	if got := strings.Join(warningsOf(res, 0), ","); got != "schema_violation /user" {
		t.Errorf("at the limit: %q", got)
	}
	res = collectOK(t, c, false, event(maxValidationDepth+1))
	if got := strings.Join(warningsOf(res, 0), ","); got != "schema_violation /context" || !strings.Contains(res.Warnings[0].Message, "not checked") {
		t.Errorf("over the limit: %+v", res.Warnings)
	}
	if res.Accepted != 1 || string(store.last[0].Body) != event(maxValidationDepth+1) {
		t.Errorf("not stored as sent: %+v", res)
	}
	// Deep free properties are not walked by the validator, so not limited.
	res = collectOK(t, c, false, `{"event_name":"e","items":`+nest(400, 0)+`,"context":{"event_id":"y","event_timestamp":1}}`)
	if got := strings.Join(warningsOf(res, 0), ","); got != "schema_violation /user" {
		t.Errorf("deep free property: %q", got)
	}
}

// encoding/json reads 10 000 levels; a deeper body is refused as a whole, saying why.
func TestDepthLimitOfJSON(t *testing.T) {
	c, _ := newTestCollector(t)
	body := func(levels int) []byte { // the event object is one level
		return []byte(`{"event_name":"e","x":` + nest(2*(levels-1), 0) + `}`)
	}
	if _, err := c.Collect(context.Background(), Request{Body: body(maxJSONDepth)}); err != nil {
		t.Errorf("%d levels: %v", maxJSONDepth, err)
	}
	_, err := c.Collect(context.Background(), Request{Body: body(maxJSONDepth + 1)})
	var refusal *Refusal
	if !errors.As(err, &refusal) || refusal.Code != gen.ErrorCodeInvalidJson || !strings.Contains(refusal.Message, "more than 10000 levels deep") {
		t.Errorf("%d levels: %v", maxJSONDepth+1, err)
	}
}

// Warnings quote at most a few dozen bytes of what was sent, however long.
func TestWarningMessagesAreShort(t *testing.T) {
	c, _ := newTestCollector(t)
	long := strings.Repeat("x", 20000)
	for _, body := range []string{
		`{"event_name":"e","user":"` + long + `","context":{"event_id":"a","event_timestamp":1}}`,
		`{"event_name":"e","user":{"consistent_anonymous_id":["` + long + `"]},"context":{"event_id":"b","event_timestamp":1}}`,
		`{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"c","event_timestamp":"` + strings.Repeat(" ", 20000) + `12"}}`,
		`{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"\ud800` + long + `","event_timestamp":1}}`,
		`{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"d","event_timestamp":1},"` + long + `":1,"` + long + `":2}`,
		`{"event_name":"e","context":` + nest(8000, 0) + `}`,
	} {
		res := collectOK(t, c, false, body)
		if len(res.Warnings) == 0 {
			t.Errorf("no warning for %.80s", body)
		}
		for _, w := range res.Warnings {
			if len(w.Message) > 300 || strings.Contains(w.Message, strings.Repeat("x", 100)) {
				t.Errorf("%s warning of %d bytes: %.300s", w.Code, len(w.Message), w.Message)
			}
		}
	}
}

// An array over maxValidatedItems is checked on its first items, with a warning; what is stored is
// not cut.
func TestLongArraysAreCutForValidation(t *testing.T) {
	c, store := newTestCollector(t)
	items := make([]string, 1500)
	for i := range items {
		items[i] = "1"
	}
	items[5], items[1200] = `{}`, `{}`
	body := `{"event_name":"e","user":{"consistent_anonymous_id":"a","consent_categories":[` + strings.Join(items, ",") + `]},"context":{"event_id":"x","event_timestamp":1}}`
	res := collectOK(t, c, false, body)
	if got := strings.Join(warningsOf(res, 0), ","); got != "schema_violation /user/consent_categories,schema_violation /user/consent_categories/5" {
		t.Errorf("warnings %q", got)
	}
	if !strings.Contains(res.Warnings[0].Message, "has 1500 items; only the first 1000") {
		t.Errorf("%+v", res.Warnings[0])
	}
	if string(store.last[0].Body) != body {
		t.Error("the stored event changed")
	}
}
