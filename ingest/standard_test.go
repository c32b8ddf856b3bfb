package ingest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// standardEvent is a standard event name with the given root properties (raw JSON values) and
// everything the Event schema recommends, so that the only warnings are about standard events.
func standardEvent(name, id string, props map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"event_name":%q`, name)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range props {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, `,%q:%s`, k, props[k])
	}
	fmt.Fprintf(&b, `,"user":{"consistent_anonymous_id":"a"},"context":{"event_id":%q,"event_timestamp":1}}`, id)
	return b.String()
}

// Every standard event of the spec: without its required properties, one warning each, in the
// spec's order and the vendor's words, and the event is stored as sent; with them, none.
func TestEveryStandardEventWarnsOnMissingProperties(t *testing.T) {
	events, err := StandardEvents()
	if err != nil {
		t.Fatal(err)
	}
	if len(events) < 20 || len(events["purchase"]) != 8 || events["page_view"][0] != "page_type" {
		t.Fatalf("the spec's standard events look wrong: %v", events)
	}
	c, store := newTestCollector(t)
	for name, required := range events {
		t.Run(name, func(t *testing.T) {
			body := standardEvent(name, name+"-bare", nil)
			res := collectOK(t, c, false, body)
			if res.Accepted != 1 || string(store.last[0].Body) != body {
				t.Fatalf("not stored as sent: %+v", res)
			}
			var got, want []string
			for _, w := range res.Warnings {
				got = append(got, w.Path+" "+w.Message)
			}
			for _, prop := range required {
				want = append(want, "/"+prop+" "+name+" event requires ."+prop+" property")
			}
			if !slices.Equal(got, want) {
				t.Errorf("warnings\n%q\nwant\n%q", got, want)
			}
			for _, w := range res.Warnings {
				if w.Code != "missing_required_property" {
					t.Errorf("code %s", w.Code)
				}
			}

			all := map[string]string{}
			for _, prop := range required {
				all[prop] = `"x"`
			}
			if res := collectOK(t, c, false, standardEvent(name, name+"-full", all)); len(res.Warnings) != 0 {
				t.Errorf("with every required property: %+v", res.Warnings)
			}
			if len(required) > 0 { // null is no value
				all[required[0]] = "null"
				res := collectOK(t, c, false, standardEvent(name, name+"-null", all))
				got := slices.DeleteFunc(warningsOf(res, 0), func(w string) bool { return strings.HasPrefix(w, "schema_violation ") })
				if !slices.Equal(got, []string{"missing_required_property /" + required[0]}) {
					t.Errorf("with %s null: %q", required[0], got)
				}
			}
		})
	}
}

// The vendor's example: a page_view without page_type. A custom event needs nothing, and a
// repeated key counts as its last value.
func TestMissingRequiredPropertyCases(t *testing.T) {
	c, _ := newTestCollector(t)
	for _, tc := range []struct{ body, want string }{
		{standardEvent("page_view", "p1", nil), "missing_required_property /page_type: page_view event requires .page_type property"},
		{standardEvent("page_view", "p2", map[string]string{"page_name": `"home"`}), "missing_required_property /page_type: page_view event requires .page_type property"},
		{standardEvent("page_view", "p3", map[string]string{"page_type": `"home"`}), ""},
		{standardEvent("my_custom_event", "c1", nil), ""},
		{standardEvent("Page_View", "c2", nil), ""}, // names are case-sensitive
		{`{"event_name":"search","search_term":"a","search_term":null,"user":{"consistent_anonymous_id":"a"},"context":{"event_id":"s1","event_timestamp":1}}`,
			"duplicate_key /search_term: the key \"search_term\" is repeated in the same object; the last one was used and stored, the earlier ones were dropped\n" +
				"schema_violation /search_term: search_term: Value is not nullable\n" +
				"missing_required_property /search_term: search event requires .search_term property"},
	} {
		res := collectOK(t, c, false, tc.body)
		var got []string
		for _, w := range res.Warnings {
			got = append(got, string(w.Code)+" "+w.Path+": "+w.Message)
		}
		if strings.Join(got, "\n") != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.body, strings.Join(got, "\n"), tc.want)
		}
	}
}

// A spec whose list is missing or malformed stops the server at startup rather than checking
// nothing.
func TestStandardEventsListIsChecked(t *testing.T) {
	doc := func(ext any) *openapi3.T {
		schema := &openapi3.Schema{Extensions: map[string]any{}}
		if ext != nil {
			schema.Extensions[requiredExtension] = ext
		}
		return &openapi3.T{Components: &openapi3.Components{Schemas: openapi3.Schemas{standardSchema: &openapi3.SchemaRef{Value: schema}}}}
	}
	for _, bad := range []*openapi3.T{
		{Components: &openapi3.Components{}},
		doc(nil),
		doc(map[string]any{}),
		doc([]any{"page_view"}),
		doc(map[string]any{"page_view": "page_type"}),
		doc(map[string]any{"page_view": []any{"page_type", "page_type"}}),
		doc(map[string]any{"page_view": []any{""}}),
		doc(map[string]any{"page_view": []any{1}}),
		doc(map[string]any{"": []any{"x"}}),
	} {
		if _, err := loadStandardEvents(bad); err == nil {
			t.Errorf("accepted %+v", bad.Components.Schemas[standardSchema])
		}
	}
	got, err := loadStandardEvents(doc(map[string]any{"page_view": []any{"page_type"}, "login": []any{}}))
	if err != nil || len(got) != 2 || got["page_view"][0].warning.Message != "page_view event requires .page_type property" || got["login"] == nil {
		t.Errorf("%+v, %v", got, err)
	}
}
