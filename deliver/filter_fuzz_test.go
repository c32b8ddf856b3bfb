package deliver

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// FuzzParseFilter: ParseFilter never panics on any input, and a filter it accepts is stable: its
// JSON (what a store or the config API keeps) parses again to the same filter (names, paths,
// operators, compared values and patterns), which decides every event the same way, and
// marshals to the same JSON. Otherwise a destination saved and read back would route
// differently from the one that was checked.
func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{
		``, ` `, `{}`, `null`, `[]`, `{`, `{} {}`,
		`{"event_names":["page_view","purchase"],"exclude_event_names":["purchase"]}`,
		`{"conditions":[{"path":"/page_type","op":"is","value":"home"},{"path":"/qty","op":"exists"}]}`,
		`{"conditions":[{"path":"/value","op":"is","value":12.5}]}`,
		`{"conditions":[{"path":"/flag","op":"is","value":true}]}`,
		`{"conditions":[{"path":"/list","op":"contains","value":7}]}`,
		`{"conditions":[{"path":"/url","op":"matches","value":"^https://[a-z.]+/p/\\d+"}]}`,
		`{"conditions":[{"path":"/a~1b/c~0d","op":"is","value":"slash-tilde"}]}`,
		`{"conditions":[{"path":"/list/1","op":"is_empty"}]}`,
		`{"conditions":[{"path":"/a","op":"is","value":"\u003c\u2028é\ud800"}]}`,
		`{"conditions":[{"path":"/a","op":"is","value":1e400}]}`,
		`{"CONDITIONS":[{"PATH":"/a","Op":"not_exists"}],"event_names":["x"],"event_names":["y"]}`,
		`{"conditions":[{"path":"/a","op":"is","value":{"x":1}}]}`,
		`{"conditions":[{"path":"/a","op":"matches","value":"(["}]}`,
		// A value at the limit whose re-marshal escapes every character (< becomes \u003c).
		`{"conditions":[{"path":"/a","op":"is","value":"` + strings.Repeat("<", 4094) + `"}]}`,
	} {
		f.Add([]byte(seed))
	}
	event := decodeJSON([]byte(sampleEvent))
	f.Fuzz(func(t *testing.T, raw []byte) {
		first, err := ParseFilter(raw)
		if err != nil || first == nil {
			if err == nil && len(bytes.TrimSpace(raw)) != 0 {
				t.Fatalf("%q: no filter and no error", raw)
			}
			return
		}
		again, err := json.Marshal(first)
		if err != nil {
			t.Fatalf("%q: marshal: %v", raw, err)
		}
		second, err := ParseFilter(again)
		if err != nil || second == nil {
			t.Fatalf("%q was accepted, its JSON %q is not: %v", raw, again, err)
		}
		if !slices.Equal(first.EventNames, second.EventNames) || !slices.Equal(first.ExcludeEventNames, second.ExcludeEventNames) ||
			len(first.Conditions) != len(second.Conditions) {
			t.Fatalf("%q and its JSON %q parse differently:\n%+v\n%+v", raw, again, first, second)
		}
		for i := range first.Conditions {
			a, b := &first.Conditions[i], &second.Conditions[i]
			if a.Path != b.Path || a.Op != b.Op || a.text != b.text || !slices.Equal(a.segments, b.segments) ||
				(a.re == nil) != (b.re == nil) || (a.re != nil && a.re.String() != b.re.String()) {
				t.Fatalf("%q and its JSON %q: condition %d differs:\n%+v\n%+v", raw, again, i, *a, *b)
			}
		}
		// The same decisions, on an event made to meet the conditions' paths and values.
		probe := map[string]any{}
		for _, c := range first.Conditions {
			if len(c.segments) > 0 {
				probe[c.segments[0]] = c.text
			}
		}
		for _, ev := range []any{event, probe} {
			if first.passesConditions(ev) != second.passesConditions(ev) {
				t.Fatalf("%q and its JSON %q decide an event differently", raw, again)
			}
		}
		for _, name := range append(slices.Concat(first.EventNames, first.ExcludeEventNames), "", "page_view") {
			if first.passesNames(name) != second.passesNames(name) {
				t.Fatalf("%q and its JSON %q decide the name %q differently", raw, again, name)
			}
		}
		if third, err := json.Marshal(second); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("%q: its JSON %q marshals again as %q (%v)", raw, again, third, err)
		}
		if strings.Contains(string(again), `"segments"`) {
			t.Fatalf("the JSON of a filter shows its compiled form: %s", again)
		}
	})
}
