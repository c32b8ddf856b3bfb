package ingest

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// jsonStringLen is what encoding/json writes for a string with HTML escaping on (Echo's c.JSON),
// for every kind of character, and never less than what an encoder that escapes less writes.
func TestJSONStringLen(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "é", "€", "😀", "\"", "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "<", ">", "&",
		"\u2028", "\u2029", "\xff", "\xe2\x82", "/", " ", "\x7f"}
	for range 20000 {
		var b bytes.Buffer
		for range rng.IntN(20) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		s := b.String()
		escaped, _ := json.Marshal(s)
		var plain bytes.Buffer
		enc := json.NewEncoder(&plain)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		got := jsonStringLen(s)
		if got < len(escaped) || got < plain.Len()-1 {
			t.Fatalf("jsonStringLen(%q) = %d, encoding/json writes %d (%d without HTML escaping)", s, got, len(escaped), plain.Len()-1)
		}
		if got > len(escaped) && !bytes.ContainsAny([]byte(s), "\b\f") {
			t.Fatalf("jsonStringLen(%q) = %d, encoding/json writes %d: more than needed", s, got, len(escaped))
		}
	}
}

// problemBytes is what a listed problem adds to the answer, separator included.
func TestProblemBytes(t *testing.T) {
	for _, p := range []trackapi.Problem{
		{Code: "schema_violation", Path: "/user", Message: `user: property "user" is missing`},
		{Code: "x", Path: "", Message: "<&>\u2028"},
	} {
		for _, index := range []int{0, 7, 123456} {
			one, _ := json.Marshal([]gen.Problem{{Index: index, Code: gen.ProblemCode(p.Code), Path: p.Path, Message: p.Message}})
			two, _ := json.Marshal([]gen.Problem{{Index: index, Code: gen.ProblemCode(p.Code), Path: p.Path, Message: p.Message},
				{Index: index, Code: gen.ProblemCode(p.Code), Path: p.Path, Message: p.Message}})
			if got, want := problemBytes(index, p), len(two)-len(one); got != want {
				t.Errorf("problemBytes(%d, %+v) = %d, want %d", index, p, got, want)
			}
		}
	}
}
