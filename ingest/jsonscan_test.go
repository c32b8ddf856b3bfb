package ingest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// The top-level walkers must agree with encoding/json on every valid document, however its
// strings, escapes, nesting and spacing are made.
func TestWalkersAgreeWithEncodingJSON(t *testing.T) {
	objects := []string{
		`{}`,
		` { "a" : 1 , "b":[1,2,{"c":"]}"}] ,"d":"x\"}y" } `,
		`{"k\u0065y":"v","key":"w"}`, // an escaped key, repeated: the last one wins
		`{"a":"\\","b":"\\\"","c":{"d":[[],{}]},"e":-1.5e3,"f":true,"g":null}`,
		"{\"s\":\"caf\u00e9 \\u00e9\",\n\t\"n\":{\"deep\":[[[[\"]]]]\"]]]]}}",
		`{"batch":[{"a":1},{"b":"}{"} , [] ,"x"]}`,
	}
	for _, doc := range objects {
		var want map[string]json.RawMessage
		if err := json.Unmarshal([]byte(doc), &want); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		members, ok := objectMembers([]byte(doc))
		if !ok {
			t.Fatalf("%s: not seen as an object", doc)
		}
		got := map[string]json.RawMessage{}
		for _, m := range members {
			got[m.key] = m.value
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d keys, want %d", doc, len(got), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) || !bytes.Equal(lastMember(members, k), v) {
				t.Errorf("%s: member %q = %s, want %s", doc, k, got[k], v)
			}
		}
	}
	var want []json.RawMessage
	doc := ` [ {"a":"]"} , 1,"s\"",[[]] ,{} ] `
	if err := json.Unmarshal([]byte(doc), &want); err != nil {
		t.Fatal(err)
	}
	got, ok := arrayElements([]byte(doc))
	if !ok || len(got) != len(want) {
		t.Fatalf("elements %q, want %q", got, want)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("element %d = %s, want %s", i, got[i], want[i])
		}
	}
	if _, ok := objectMembers([]byte(`[1]`)); ok {
		t.Error("an array seen as an object")
	}
	if _, ok := arrayElements([]byte(`null`)); ok {
		t.Error("null seen as an array")
	}
}

// For any valid JSON object in valid UTF-8 (what checkJSON lets through), the walker finds the members encoding/json finds, with the same
// values byte for byte (the last one of a repeated key).
func FuzzWalkers(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "testdata", "events", "*.json"))
	for _, name := range seeds {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) || !utf8.Valid(doc) { // what checkJSON lets through
			return
		}
		var want map[string]json.RawMessage
		if json.Unmarshal(doc, &want) != nil || want == nil { // null decodes into a map as nil
			if _, ok := objectMembers(doc); ok {
				t.Fatalf("%q: walked as an object, but it is not one", doc)
			}
			return
		}
		members, ok := objectMembers(doc)
		if !ok {
			t.Fatalf("%q: not walked as an object", doc)
		}
		for k, v := range want {
			if got := lastMember(members, k); !bytes.Equal(got, bytes.TrimSpace(v)) {
				t.Fatalf("%q: member %q = %q, want %q", doc, k, got, v)
			}
		}
		for _, m := range members {
			if _, ok := want[m.key]; !ok {
				t.Fatalf("%q: member %q that encoding/json does not see", doc, m.key)
			}
		}
	})
}
