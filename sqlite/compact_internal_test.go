package sqlite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/trackapi/trackapi"
)

const (
	testID = "01a24e84-de6e-7e65-9d10-54069cbfdde8"
	testAt = int64(1796613660270)
)

var (
	idWarning = trackapi.Problem{Code: "event_id_generated", Path: "/context/event_id", Message: idGeneratedPrefix + testID}
	tsWarning = trackapi.Problem{Code: "timestamp_generated", Path: "/context/event_timestamp", Message: timestampGeneratedMsg}
)

// roundTrip encodes e as StoreEvents does and decodes it as a read does, and checks that the read
// gives back e's body byte for byte and its warnings; it returns the stored body and warnings.
func roundTrip(t *testing.T, e trackapi.Event) (body, warnings []byte) {
	t.Helper()
	original := bytes.Clone(e.Body)
	var enc encoder
	body, warnings = enc.encode(e)
	if !bytes.Equal(e.Body, original) {
		t.Fatalf("encode changed the caller's body: %s", e.Body)
	}
	// What the store holds is read back as a copy, as database/sql gives it.
	gotBody, gotWarnings, err := decode(e.EventID, e.ReceivedAt, bytes.Clone(body), bytes.Clone(warnings))
	if err != nil {
		t.Fatalf("decode %q / %x: %v", body, warnings, err)
	}
	if !bytes.Equal(gotBody, e.Body) {
		t.Fatalf("body read %s, stored %s, want %s", gotBody, body, e.Body)
	}
	want := e.Warnings
	if want == nil {
		want = []trackapi.Problem{}
	}
	if !reflect.DeepEqual(gotWarnings, want) {
		t.Fatalf("warnings read %+v, want %+v", gotWarnings, want)
	}
	return body, warnings
}

// The warnings ingest writes for an event without id or timestamp take a few bytes, and the
// members the server added to the body are not stored: the row has them.
func TestCompactCommonWarnings(t *testing.T) {
	full := `{"event_name":"a","context":{"event_id":"` + testID + `","event_timestamp":1796613660270}}`
	schema := trackapi.Problem{Code: "schema_violation", Path: "/user", Message: `user: property "user" is missing`}
	body, warnings := roundTrip(t, trackapi.Event{EventID: testID, ReceivedAt: testAt, Body: []byte(full),
		Warnings: []trackapi.Problem{idWarning, tsWarning, schema}})
	if string(body) != `{"event_name":"a","context":{}}` {
		t.Errorf("stored body %s, want the id and timestamp cut", body)
	}
	// version, 2 × (code, flags, offset), schema: code, flags, path (1+5), reason (1+26)
	if len(warnings) != 1+3+3+2+6+27 {
		t.Errorf("stored warnings %d bytes (%q), want 42", len(warnings), warnings)
	}
}

// Every way a member can sit in an object, several cuts, repeats of the member's bytes, messages
// that are not the templates, codes the compact form does not know: all read back as they were.
func TestCompactRoundTrip(t *testing.T) {
	id := `"event_id":"` + testID + `"`
	ts := `"event_timestamp":1796613660270`
	otherID := trackapi.Problem{Code: "event_id_generated", Path: "/context/event_id", Message: "some other wording " + testID}
	bodies := []string{
		`{"context":{` + id + `,` + ts + `}}`,
		`{"context":{` + ts + `,` + id + `}}`,
		`{"context":{` + id + `}}`,
		`{"a":1,"context":{"x":[1,2],` + id + `,"y":{}},"b":2}`,
		`{"context":{"x":1,` + ts + `},"items":[{` + ts + `},{` + id + `}]}`,
		`{"context":{` + id + ` , ` + ts + ` }}`, // spacing: cut without the commas
		`{` + id + `}`,
		`{"context":5}`, // nothing to cut
		id,              // not even JSON: still byte for byte
		`{"event_id":"` + testID + `x"}`,
	}
	warningSets := [][]trackapi.Problem{
		nil,
		{idWarning},
		{tsWarning},
		{idWarning, tsWarning},
		{tsWarning, idWarning},
		{idWarning, idWarning, tsWarning, tsWarning},
		{otherID, tsWarning},
		{{Code: "timestamp_moved", Path: "/context/event_timestamp", Message: timestampMovedMsg}},
		{{Code: "timestamp_moved", Path: "/elsewhere", Message: "moved"}},
		{{Code: "timestamp_normalized", Path: "/context/event_timestamp", Message: "context.event_timestamp 2021-12-09 was converted to epoch milliseconds 1639008000000"}},
		{{Code: "schema_violation", Path: "", Message: "no path"}},
		{{Code: "schema_violation", Path: "/user/consent_categories/3", Message: "user/consent_categories/3: doesn't match"}},
		{{Code: "schema_violation", Path: "/", Message: ": odd"}},
		{{Code: "schema_violation", Path: "/a", Message: "a:"}},
		{{Code: "a_code_of_tomorrow", Path: "/x", Message: "x: new"}, idWarning},
		{{Code: "", Path: "", Message: ""}},
		{{Code: "schema_violation", Path: "/é\n\"", Message: "é\n\": \u2028 <&> \x00"}},
		arraySchemaWarnings(3),
		{arraySchemaWarnings(1)[0], {Code: "schema_violation", Path: "/user/consent_categories/1", Message: "user/consent_categories/1: other"},
			arraySchemaWarnings(3)[2], {Code: "schema_violation", Path: "/user", Message: "doesn't match any schema from \"anyOf\""},
			{Code: "schema_violation", Path: "/user/x", Message: "user/x: doesn't match any schema from \"anyOf\""}},
	}
	for _, b := range bodies {
		for _, ws := range warningSets {
			t.Run(fmt.Sprintf("%s/%d", b, len(ws)), func(t *testing.T) {
				roundTrip(t, trackapi.Event{EventID: testID, ReceivedAt: testAt, Body: []byte(b), Warnings: ws})
			})
		}
	}
}

// arraySchemaWarnings are the schema warnings of n bad elements of user.consent_categories.
func arraySchemaWarnings(n int) []trackapi.Problem {
	var ws []trackapi.Problem
	for i := range n {
		path := fmt.Sprintf("/user/consent_categories/%d", i)
		ws = append(ws, trackapi.Problem{Code: "schema_violation", Path: path, Message: path[1:] + `: doesn't match any schema from "anyOf"`})
	}
	return ws
}

// Repeated schema warnings (an array's bad elements) share their path's start and their reason.
func TestCompactArrayWarnings(t *testing.T) {
	_, warnings := roundTrip(t, trackapi.Event{EventID: testID, ReceivedAt: testAt, Body: []byte(`{}`), Warnings: arraySchemaWarnings(10)})
	if len(warnings) != 1+68+9*5 {
		t.Errorf("ten schema warnings of an array in %d bytes, want %d", len(warnings), 1+68+9*5)
	}
}

// One encoder serves a whole call: what it returned for an event stays as it was while it
// encodes the next ones (its buffer grows and is reused).
func TestCompactEncoderKeepsEarlierResults(t *testing.T) {
	var enc encoder
	type stored struct{ body, warnings []byte }
	var returned, copies []stored
	for i := range 300 {
		id := fmt.Sprintf("%s-%d", testID, i)
		e := trackapi.Event{EventID: id, ReceivedAt: testAt + int64(i),
			Body: []byte(fmt.Sprintf(`{"n":%d,"context":{"event_id":%q,"event_timestamp":%d}}`, i, id, testAt+int64(i))),
			Warnings: []trackapi.Problem{
				{Code: "event_id_generated", Path: "/context/event_id", Message: idGeneratedPrefix + id},
				tsWarning,
			}}
		b, w := enc.encode(e)
		returned = append(returned, stored{b, w})
		copies = append(copies, stored{bytes.Clone(b), bytes.Clone(w)})
	}
	for i := range returned {
		if !bytes.Equal(returned[i].body, copies[i].body) || !bytes.Equal(returned[i].warnings, copies[i].warnings) {
			t.Fatalf("event %d: what encode returned changed while later events were encoded", i)
		}
	}
}

// Random bodies around the members, random warnings: every one reads back as it was.
func TestCompactRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{`{`, `}`, `,`, `"context":`, `"event_id":"` + testID + `"`, `"event_timestamp":1796613660270`,
		`"event_timestamp":17966136602701`, `"x":1`, ` `, `[`, `]`, `"é"`}
	codes := []trackapi.Problem{idWarning, tsWarning,
		{Code: "schema_violation", Path: "/p", Message: "p: bad"},
		{Code: "timestamp_moved", Path: "/context/event_timestamp", Message: timestampMovedMsg},
		{Code: "other", Path: "", Message: strings.Repeat("m", 200)}}
	codes = append(codes, arraySchemaWarnings(3)...)
	codes = append(codes, trackapi.Problem{Code: "schema_violation", Path: "/user/consent", Message: "user/consent: doesn't match any schema from \"anyOf\""})
	for range 5000 {
		var b strings.Builder
		for range 1 + rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		var ws []trackapi.Problem
		for range rng.IntN(5) {
			ws = append(ws, codes[rng.IntN(len(codes))])
		}
		roundTrip(t, trackapi.Event{EventID: testID, ReceivedAt: testAt, Body: []byte(b.String()), Warnings: ws})
	}
}

// Rows written before migration 0005 hold JSON text, which reads as it is; a damaged compact
// form is an error, not a wrong event.
func TestDecodeOldAndDamaged(t *testing.T) {
	old, _ := json.Marshal([]trackapi.Problem{idWarning, {Code: "c", Path: "/p", Message: "m"}})
	body, ws, err := decode(testID, testAt, []byte(`{"a":1}`), old)
	if err != nil || string(body) != `{"a":1}` || !reflect.DeepEqual(ws, []trackapi.Problem{idWarning, {Code: "c", Path: "/p", Message: "m"}}) {
		t.Fatalf("old JSON: %s %+v %v", body, ws, err)
	}
	if _, ws, err := decode(testID, testAt, []byte(`{}`), []byte("null")); err != nil || ws == nil || len(ws) != 0 {
		t.Fatalf("JSON null: %+v %v", ws, err)
	}
	var enc encoder
	_, good := enc.encode(trackapi.Event{EventID: testID, ReceivedAt: testAt,
		Body: []byte(`{"context":{"event_id":"` + testID + `"}}`), Warnings: []trackapi.Problem{idWarning, {Code: "schema_violation", Path: "/x", Message: "x: y"}}})
	for n := 1; n < len(good); n++ {
		if _, _, err := decode(testID, testAt, []byte(`{"context":{}}`), good[:n]); err == nil && n < len(good) {
			// A prefix that ends between entries is a valid, shorter list; one that ends inside an
			// entry must fail.
			if n != 1 && n != 4 {
				t.Errorf("a compact form cut at %d of %d bytes was read without error", n, len(good))
			}
		}
	}
	if _, _, err := decode(testID, testAt, []byte(`{}`), []byte{compactV1, 200, 0}); err == nil {
		t.Error("an unknown code number was read without error")
	}
	if _, _, err := decode(testID, testAt, []byte(`{}`), []byte{compactV1, codeIDGenerated, cutAlone, 50}); err == nil {
		t.Error("a cut beyond the body was read without error")
	}
}
