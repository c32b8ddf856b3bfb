package ingest

import (
	"strings"
	"testing"
)

// Each legacy form, and mixtures of them with v2, stored exactly as below: the converted event,
// then normalised and checked like any other, and deduplicated on its converted id.
func TestLegacyConversion(t *testing.T) {
	const user = `"user":{"consistent_anonymous_id":"a"}`
	cases := []struct {
		name     string
		batch    bool
		body     string
		wantBody string
		wantID   string // "" : a server id
		warnings []string
		message  string // of the legacy_format_converted warning
	}{
		{
			name: "v1, the vendor's example",
			body: `{"event_name":"search","event_id":"e-legacy-77","event_timestamp":1718003400000,` +
				`"properties":{"search_term":"rain jacket","user":{"id":"CRM-5521","consistent_anonymous_id":"a","consent_categories":[1,3]}},` +
				`"page":{"title":"Search","location":"https://www.shopco.example/search?q=rain+jacket"},` +
				`"device":{"user_agent":"curl/8.5","ip":"203.0.113.9"}}`,
			wantBody: `{"event_name":"search","search_term":"rain jacket","user":{"id":"CRM-5521","consistent_anonymous_id":"a","consent_categories":[1,3]},` +
				`"context":{"event_id":"e-legacy-77","event_timestamp":1718003400000,` +
				`"page":{"title":"Search","url":"https://www.shopco.example/search?q=rain+jacket"},"device":{"user_agent":"curl/8.5","ip":"203.0.113.9"}}}`,
			wantID:   "e-legacy-77",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy v1 format to v2: properties moved to the root; moved into context: event_id, event_timestamp, page, device; renamed page.location to url",
		},
		{
			name:     "v1 with an app and spaces, values byte for byte",
			body:     `{ "event_name" : "e", "properties" : { "n" : 1.50 , ` + user + ` } , "app" : {"name":"A"}, "event_id" : "x1", "event_timestamp" : 1 }`,
			wantBody: `{"event_name":"e","n":1.50,` + user + `,"context":{"app":{"name":"A"},"event_id":"x1","event_timestamp":1}}`,
			wantID:   "x1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy v1 format to v2: properties moved to the root; moved into context: app, event_id, event_timestamp",
		},
		{
			name: "2021: event and properties, camelCase, an ISO timestamp (the vendor's example)",
			body: `{"event":"search","eventId":"202110130000000000","properties":{"search_term":"t-shirts",` +
				`"user":{"id":"12345","consistent_anonymous_id":"a","consent_categories":[1,3]}},` +
				`"device":{"userAgent":"Mozilla/5.0","ip":"108.0.78.21"},"eventTimestamp":"2015-12-12T19:11:01.249Z"}`,
			// the timestamp's conversion re-encodes context (keys sorted), as for any event
			wantBody: `{"event_name":"search","search_term":"t-shirts","user":{"id":"12345","consistent_anonymous_id":"a","consent_categories":[1,3]},` +
				`"context":{"device":{"ip":"108.0.78.21","user_agent":"Mozilla/5.0"},"event_id":"202110130000000000","event_timestamp":1449947461249}}`,
			wantID:   "202110130000000000",
			warnings: []string{"legacy_format_converted ", "timestamp_normalized /context/event_timestamp"},
			message: "converted from the legacy 2021 event/properties, camelCase format to v2: properties moved to the root; event renamed event_name; " +
				"moved into context: eventId as event_id, device, eventTimestamp as event_timestamp; renamed device.userAgent to user_agent",
		},
		{
			name:     "2021 without properties",
			body:     `{"event":"page_view","page_type":"home",` + user + `,"context":{"event_id":"p1","event_timestamp":1}}`,
			wantBody: `{"event_name":"page_view","page_type":"home",` + user + `,"context":{"event_id":"p1","event_timestamp":1}}`,
			wantID:   "p1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy 2021 event/properties format to v2: event renamed event_name",
		},
		{
			name:     "camelCase in context only",
			body:     `{"event_name":"e",` + user + `,"context":{"eventId":"c1","eventTimestamp":5,"device":{"userAgent":"UA","ip":"1.2.3.4"},"page":{"location":"kept"}}}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"c1","event_timestamp":5,"device":{"user_agent":"UA","ip":"1.2.3.4"},"page":{"location":"kept"}}}`,
			wantID:   "c1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy camelCase format to v2: renamed context.eventId to event_id, context.eventTimestamp to event_timestamp, device.userAgent to user_agent",
		},
		{
			name:     "camelCase at the root of a v2 event",
			body:     `{"event_name":"e","eventId":"r1",` + user + `,"eventTimestamp":7,"context":{"page":{"url":"u"}}}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"page":{"url":"u"},"event_id":"r1","event_timestamp":7}}`,
			wantID:   "r1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy camelCase format to v2: moved into context: eventId as event_id, eventTimestamp as event_timestamp",
		},
		{
			name:     "mixture: context.event_id wins over the root's event_id and eventId",
			body:     `{"event_name":"e","event_id":"legacy","eventId":"camel","properties":{` + user + `},"context":{"event_id":"v2","event_timestamp":1}}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"v2","event_timestamp":1}}`,
			wantID:   "v2",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy v1, camelCase format to v2: properties moved to the root; dropped for their v2 form, also sent: event_id, eventId",
		},
		{
			name:     "mixture: context.event_id wins over context.eventId, snake_case over camelCase at the root",
			body:     `{"eventTimestamp":2,"event_name":"e","event_timestamp":3,` + user + `,"context":{"eventId":"camel","event_id":"v2"}}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"v2","event_timestamp":3}}`,
			wantID:   "v2",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy camelCase format to v2: moved into context: event_timestamp; dropped for their v2 form, also sent: context.eventId, eventTimestamp",
		},
		{
			name:     "mixture: context.eventId (already in context) wins over the root's event_id",
			body:     `{"event_name":"e","event_id":"root","properties":{},` + user + `,"context":{"eventId":"ctx","event_timestamp":1}}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"ctx","event_timestamp":1}}`,
			wantID:   "ctx",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy v1, camelCase format to v2: properties moved to the root; renamed context.eventId to event_id; dropped for their v2 form, also sent: event_id",
		},
		{
			name:     "mixture: root properties win over properties', event_name over event, context's device over the root's",
			body:     `{"event":"old","event_name":"e","search_term":"root","properties":{"search_term":"props","x":1},"device":{"ip":"legacy"},` + user + `,"context":{"event_id":"m1","event_timestamp":1,"device":{"ip":"v2","user_agent":"ua","userAgent":"old"}}}`,
			wantBody: `{"event_name":"e","search_term":"root","x":1,` + user + `,"context":{"event_id":"m1","event_timestamp":1,"device":{"ip":"v2","user_agent":"ua"}}}`,
			wantID:   "m1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy 2021 event/properties, camelCase format to v2: properties moved to the root; dropped for their v2 form, also sent: properties.search_term, event and 2 more",
		},
		{
			name:     "properties repeated: the last one is used",
			body:     `{"event_name":"e","properties":{"a":1},"properties":{"b":2},` + user + `,"context":{"event_id":"d1","event_timestamp":1}}`,
			wantBody: `{"event_name":"e","b":2,` + user + `,"context":{"event_id":"d1","event_timestamp":1}}`,
			wantID:   "d1",
			warnings: []string{"legacy_format_converted ", "duplicate_key /properties"},
			message:  "converted from the legacy v1 format to v2: properties moved to the root",
		},
		{
			name:     "a key repeated inside properties is a repeated root key",
			body:     `{"event_name":"e","properties":{"a":1,"a":2},` + user + `,"context":{"event_id":"d2","event_timestamp":1}}`,
			wantBody: `{"event_name":"e","a":2,` + user + `,"context":{"event_id":"d2","event_timestamp":1}}`,
			wantID:   "d2",
			warnings: []string{"legacy_format_converted ", "duplicate_key /a"},
			message:  "converted from the legacy v1 format to v2: properties moved to the root",
		},
		{
			name:     "context null is replaced",
			body:     `{"event_name":"e","event_id":"n1","event_timestamp":1,"properties":{` + user + `},"context":null}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_id":"n1","event_timestamp":1}}`,
			wantID:   "n1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy v1 format to v2: properties moved to the root; moved into context: event_id, event_timestamp",
		},
		{
			name:     "context not an object: the envelope stays at the root",
			body:     `{"event_name":"e","eventId":"s1","properties":{` + user + `},"context":"nope"}`,
			wantBody: `{"event_name":"e","eventId":"s1",` + user + `,"context":"nope"}`,
			warnings: []string{"legacy_format_converted ", "schema_violation /context"},
			message:  "converted from the legacy v1, camelCase format to v2: properties moved to the root; context is not an object, so the envelope stayed at the root",
		},
		{
			name:     "in a batch, the root timestamp moves with the envelope",
			batch:    true,
			body:     `{"batch":[{"event_name":"e","event_timestamp":9,"event_id":"b1","properties":{` + user + `}}]}`,
			wantBody: `{"event_name":"e",` + user + `,"context":{"event_timestamp":9,"event_id":"b1"}}`,
			wantID:   "b1",
			warnings: []string{"legacy_format_converted "},
			message:  "converted from the legacy v1 format to v2: properties moved to the root; moved into context: event_timestamp, event_id",
		},
		{
			name:     "conversion comes before the other rules: a generated id, standard events",
			body:     `{"event":"search","properties":{"test_code":"T",` + user + `}}`,
			wantBody: `{"event_name":"search","test_code":"T",` + user + `,"context":{"event_id":"<id>","event_timestamp":1700000000000}}`,
			warnings: []string{"legacy_format_converted ", "event_id_generated /context/event_id", "timestamp_generated /context/event_timestamp",
				"missing_required_property /search_term"},
			message: "converted from the legacy 2021 event/properties format to v2: properties moved to the root; event renamed event_name",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, store := newTestCollector(t)
			res := collectOK(t, c, tc.batch, tc.body)
			if res.Accepted != 1 {
				t.Fatalf("%+v", res)
			}
			if got := warningsOf(res, 0); strings.Join(got, ",") != strings.Join(tc.warnings, ",") {
				t.Errorf("warnings %q, want %q", got, tc.warnings)
			}
			if res.Warnings[0].Message != tc.message {
				t.Errorf("message\n%s\nwant\n%s", res.Warnings[0].Message, tc.message)
			}
			stored := store.last[0]
			want := strings.Replace(tc.wantBody, "<id>", stored.EventID, 1)
			if string(stored.Body) != want {
				t.Errorf("stored\n%s\nwant\n%s", stored.Body, want)
			}
			if tc.wantID != "" && stored.EventID != tc.wantID {
				t.Errorf("deduplicated on %q, want %q", stored.EventID, tc.wantID)
			}
			// Sent again, the legacy event is a duplicate of the converted one, and the converted
			// one is stored as is.
			if res := collectOK(t, c, tc.batch, tc.body); tc.wantID != "" && (res.Duplicates != 1 || len(res.Warnings) != len(tc.warnings)) {
				t.Errorf("sent again: %+v", res)
			}
			p, _ := newEventProcessor()
			if again := p.process(stored.Body, tc.batch, c.now()); string(again.body) != string(stored.Body) {
				t.Errorf("processing the stored event again changed it: %s", again.body)
			}
		})
	}
}

// What only looks legacy is left alone: a v2 event's own "event" or non-object "properties",
// and a page.location in context.
func TestNotLegacy(t *testing.T) {
	for _, body := range []string{
		`{"event_name":"e","event":"signup-form","properties":"x","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"n1","event_timestamp":1}}`,
		`{"event_name":"e","properties":[1],"user":{"consistent_anonymous_id":"a"},"context":{"event_id":"n2","event_timestamp":1,"page":{"location":"l"},"device":{"ip":"1"}}}`,
		`{"event_name":"e","page":{"location":"l"},"device":{"userAgent":"custom"},"user":{"consistent_anonymous_id":"a"},"context":{"event_id":"n3","event_timestamp":1}}`,
	} {
		c, store := newTestCollector(t)
		res := collectOK(t, c, false, body)
		if len(res.Warnings) != 0 || string(store.last[0].Body) != body {
			t.Errorf("%s: %+v, stored %s", body, res.Warnings, store.last[0].Body)
		}
	}
}

// Warnings name what was sent, cut: however many keys were dropped, and however long.
func TestLegacyWarningIsShort(t *testing.T) {
	long := strings.Repeat("k", 5000)
	var b strings.Builder
	b.WriteString(`{"event_name":"e","` + long + `":1,`)
	for i := range 200 {
		b.WriteString(`"p` + strings.Repeat("x", i) + `":1,`)
	}
	b.WriteString(`"properties":{"` + long + `":2`)
	for i := range 200 {
		b.WriteString(`,"p` + strings.Repeat("x", i) + `":2`)
	}
	b.WriteString(`}}`)
	c, _ := newTestCollector(t)
	res := collectOK(t, c, false, b.String())
	w := res.Warnings[0]
	if w.Code != "legacy_format_converted" || len(w.Message) > maxLegacyMessage || !strings.Contains(w.Message, "and 199 more") {
		t.Errorf("%d bytes: %s", len(w.Message), w.Message)
	}
}
