package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// The helpers behind the rules of rules_test.go and bounds_test.go.

// The pairwise and the map way of finding repeats agree.
func TestSupersededMembers(t *testing.T) {
	for _, n := range []int{0, 1, 2, smallObject, smallObject + 1, 200} {
		for _, repeatEvery := range []int{0, 1, 3, 7} {
			var b strings.Builder
			b.WriteByte('{')
			for i := range n {
				if i > 0 {
					b.WriteByte(',')
				}
				k := i
				if repeatEvery > 0 && i%(repeatEvery+1) == repeatEvery {
					k = i / 2 // an earlier key
				}
				fmt.Fprintf(&b, `"k%d":%d`, k, i)
			}
			b.WriteByte('}')
			members, _ := objectMembers([]byte(b.String()))
			got := supersededMembers(members)
			last := map[string]int{}
			for i, m := range members {
				last[m.key] = i
			}
			if (got == nil) != (len(last) == len(members)) {
				t.Fatalf("n=%d every=%d: nil=%v with %d distinct of %d", n, repeatEvery, got == nil, len(last), len(members))
			}
			for i, m := range members {
				if got != nil && got[i] != (last[m.key] != i) {
					t.Fatalf("n=%d every=%d: member %d (%s) dropped=%v", n, repeatEvery, i, m.key, got[i])
				}
			}
		}
	}
}

func TestHasLoneSurrogate(t *testing.T) {
	for s, want := range map[string]bool{
		`"plain"`:              false,
		`"\u00e9\n\"\\"`:       false,
		`"\ud83d\ude00"`:       false,
		`"\uD83D\uDE00x"`:      false,
		`"\ud800"`:             true,
		`"a\udfff"`:            true,
		`"\ud83d"`:             true,
		`"\ud83dx\ude00"`:      true,
		`"\ud83d\u0041"`:       true,
		`"\ud83d\ud83d\ude00"`: true,
		`"\\ud800"`:            false, // a backslash, then "ud800"
		`"\\\ud800"`:           true,
		`"\ude00\ud83d"`:       true,
	} {
		if got := hasLoneSurrogate([]byte(s)); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
		// Cross-check with encoding/json: a lone surrogate decodes to U+FFFD, and no other
		// escape here does.
		var decoded string
		if err := json.Unmarshal([]byte(s), &decoded); err != nil {
			t.Fatal(err)
		}
		if strings.ContainsRune(decoded, '\uFFFD') != want {
			t.Errorf("%s: the test case disagrees with encoding/json", s)
		}
	}
}

func TestDeeperThan(t *testing.T) {
	for _, tc := range []struct {
		value string
		depth int
	}{
		{`1`, 0}, {`"[[["`, 0}, {`[]`, 1}, {`{"a":[{}]}`, 3}, {`[[1],[[2]],"]]]]"]`, 3},
		{`{"a":"\"[[[[","b":[[]]}`, 3}, {nest(200, 0), 100},
	} {
		for limit := 0; limit <= 101; limit++ {
			if got := deeperThan([]byte(tc.value), limit); got != (tc.depth > limit) {
				t.Errorf("deeperThan(%.40s, %d) = %v, depth is %d", tc.value, limit, got, tc.depth)
			}
		}
	}
}

// The validator's view copies what it cuts and leaves the event alone.
func TestArrayCutViewLeavesTheEventAlone(t *testing.T) {
	p, err := newEventProcessor()
	if err != nil {
		t.Fatal(err)
	}
	long := make([]any, 1200)
	for i := range long {
		long[i] = json.Number("1")
	}
	user := map[string]any{"consent_categories": long, "extra": []any{long}}
	event := map[string]any{"event_name": "e", "user": user, "free": long}
	var cut arrayCut
	view, changed := cut.view(p.schema, event, nil)
	if !changed || cut.first != "/user/consent_categories" || cut.items != 1200 {
		t.Fatalf("changed %v, cut %+v", changed, cut)
	}
	v := view.(map[string]any)
	if n := len(v["user"].(map[string]any)["consent_categories"].([]any)); n != maxValidatedItems {
		t.Errorf("view has %d items", n)
	}
	if len(v["free"].([]any)) != 1200 || len(v["user"].(map[string]any)["extra"].([]any)[0].([]any)) != 1200 {
		t.Error("an array the schema does not describe was cut")
	}
	if len(user["consent_categories"].([]any)) != 1200 || len(event) != 3 {
		t.Error("the event changed")
	}
	// No cut, no copy.
	short := map[string]any{"event_name": "e", "user": map[string]any{"consent_categories": long[:10]}}
	if _, changed := (&arrayCut{}).view(p.schema, short, nil); changed {
		t.Error("a short event was copied")
	}
}

// The startup check refuses array rules that the cut would change.
func TestCheckArraySchemas(t *testing.T) {
	maxItems := uint64(maxValidatedItems)
	for name, items := range map[string]*openapi3.Schema{
		"maxItems":    {Items: openapi3.NewSchemaRef("", openapi3.NewStringSchema()), MaxItems: &maxItems},
		"minItems":    {Items: openapi3.NewSchemaRef("", openapi3.NewStringSchema()), MinItems: maxValidatedItems + 1},
		"uniqueItems": {Items: openapi3.NewSchemaRef("", openapi3.NewStringSchema()), UniqueItems: true},
	} {
		schema := openapi3.NewObjectSchema().WithProperty("a", openapi3.NewObjectSchema().WithProperty("list", items))
		if err := checkArraySchemas(schema, "Event", map[*openapi3.Schema]bool{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := newEventProcessor(); err != nil {
		t.Errorf("the embedded spec: %v", err)
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"}, {"exactly10!", 10, "exactly10!"}, {"a bit too long", 10, "a bit t..."},
		{"ééééé", 8, "éé..."}, // never half a character
	} {
		if got := clip(tc.in, tc.max); got != tc.want || len(got) > tc.max {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
	if clip("x", 1) != "x" {
		t.Error("clip of one byte")
	}
}
