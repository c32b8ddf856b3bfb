package ingest

import (
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A context.event_timestamp is stored as epoch milliseconds only when it is one: a number whose
// integer part fits in a 64-bit signed integer, or a string the server converts into one. Any
// other value is stored as sent, with one schema_violation warning, and never as a different
// number (2^63 and 1e30 were stored as -2^63, with a warning presenting it as a conversion).
func TestTimestampRange(t *testing.T) {
	p, err := newEventProcessor()
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1700000000000)
	cases := []struct {
		name, ts string // ts: the JSON text of context.event_timestamp
		want     string // the stored value's JSON text
		warning  string // "code substring of the message", or "" for none
	}{
		{"an integer", `1639044446636`, `1639044446636`, ""},
		{"the largest int64", `9223372036854775807`, `9223372036854775807`, ""},
		{"the smallest int64", `-9223372036854775808`, `-9223372036854775808`, ""},
		{"2^63", `9223372036854775808`, `9223372036854775808`, "schema_violation outside"},
		{"-2^63-1", `-9223372036854775809`, `-9223372036854775809`, "schema_violation outside"},
		{"1e30", `1e30`, `1e30`, "schema_violation outside"},
		{"-1e30", `-1e30`, `-1e30`, "schema_violation outside"},
		{"2^63 with a fraction", `9223372036854775808.5`, `9223372036854775808.5`, "schema_violation outside"},
		{"2^63 as an exponent", `9.223372036854775808e18`, `9.223372036854775808e18`, "schema_violation outside"},
		{"just under 2^63 with a fraction", `9223372036854775806.5`, `9223372036854775806`, "timestamp_normalized converted"},
		{"-2^63 with a fraction", `-9223372036854775808.5`, `-9223372036854775808`, "timestamp_normalized converted"},
		{"a fraction", `1639044446636.7`, `1639044446636`, "timestamp_normalized converted"},
		{"an exponent", `1.639044446636e12`, `1639044446636`, "timestamp_normalized converted"},
		{"beyond float64", `1e400`, `1e400`, "schema_violation outside"},
		{"beyond float64, negative", `-1e400`, `-1e400`, "schema_violation outside"},
		{"under float64", `1e-400`, `0`, "timestamp_normalized converted"},
		{"the string 1e30", `"1e30"`, `"1e30"`, "schema_violation integer"},
		{"a numeric string over int64", `"9223372036854775808"`, `"9223372036854775808"`, "schema_violation integer"},
		{"a numeric string", `"1639044446636"`, `1639044446636`, "timestamp_normalized converted"},
		{"an ISO year 9999", `"9999-12-31T23:59:59.999Z"`, `253402300799999`, "timestamp_normalized converted"},
		{"an ISO year 10000", `"10000-01-01T00:00:00Z"`, `"10000-01-01T00:00:00Z"`, "schema_violation integer"},
		{"an ISO year 275760", `"+275760-09-13T00:00:00Z"`, `"+275760-09-13T00:00:00Z"`, "schema_violation integer"},
		{"an ISO year 292278994", `"292278994-08-17T07:12:55.807Z"`, `"292278994-08-17T07:12:55.807Z"`, "schema_violation integer"},
	}
	for _, tt := range cases {
		for _, inBatch := range []bool{false, true} {
			raw := `{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"ts","event_timestamp":` + tt.ts + `}}`
			if inBatch { // the root-level form of a batch element, moved into context
				raw = `{"event_name":"e","event_timestamp":` + tt.ts + `,"user":{"consistent_anonymous_id":"a"},"context":{"event_id":"ts"}}`
			}
			out := p.process([]byte(raw), inBatch, now)
			if out.rejected != nil {
				t.Fatalf("%s: rejected: %v", tt.name, out.rejected)
			}
			var stored struct {
				Context struct {
					EventTimestamp json.RawMessage `json:"event_timestamp"`
				} `json:"context"`
			}
			if err := json.Unmarshal(out.body, &stored); err != nil {
				t.Fatalf("%s: stored body: %v", tt.name, err)
			}
			if got := string(stored.Context.EventTimestamp); got != tt.want {
				t.Errorf("%s (batch %v): stored %s, want %s", tt.name, inBatch, got, tt.want)
			}
			var got []string
			for _, w := range out.warnings {
				if w.Code == "timestamp_moved" {
					continue
				}
				if w.Path != "/context/event_timestamp" {
					t.Errorf("%s: warning %s at %q: %s", tt.name, w.Code, w.Path, w.Message)
				}
				got = append(got, w.Code+" "+w.Message)
			}
			switch {
			case tt.warning == "" && len(got) > 0:
				t.Errorf("%s (batch %v): warnings %q, want none", tt.name, inBatch, got)
			case tt.warning != "" && len(got) != 1:
				t.Errorf("%s (batch %v): warnings %q, want one %q", tt.name, inBatch, got, tt.warning)
			case tt.warning != "":
				code, part, _ := strings.Cut(tt.warning, " ")
				if !strings.HasPrefix(got[0], code+" ") || !strings.Contains(got[0], part) {
					t.Errorf("%s (batch %v): warning %q, want %s mentioning %q", tt.name, inBatch, got[0], code, part)
				}
			}
		}
	}
}

// exactIntegerPart is integerPart's oracle: math/big's reading of the number, truncated.
func exactIntegerPart(number string) (int64, bool) {
	f, _, err := big.ParseFloat(number, 10, 4096, big.ToZero)
	if err != nil || f.IsInf() { // past big.Float's exponents: far out of range
		return 0, false
	}
	n, acc := f.Int64()
	if acc != big.Exact && (n == math.MinInt64 || n == math.MaxInt64) {
		// Int64 saturates: tell a truncated value at a bound from one past it.
		i, _ := f.Int(nil)
		return n, i.IsInt64()
	}
	return n, true
}

// Numbers read from their digits match math/big's reading of them.
func TestIntegerPart(t *testing.T) {
	for _, number := range []string{
		"0", "-0", "0.5", "-0.5", "1e0", "1E+2", "1e-2", "123.456e1", "123.456e-1", "0.0000000000000000000000001e21",
		"0.0000000000000000000000001e45", "9223372036854775807", "9223372036854775807.999", "9223372036854775808",
		"-9223372036854775808", "-9223372036854775808.999", "-9223372036854775809", "92233720368547758.07e2",
		"92233720368547758.08e2", "0.92233720368547758079e19", "1e18", "1e19", "00", "1.000000000000000000000000000000001e18",
		// Exponents math/big does not read.
		"1e-99999999999999999999", "1e99999999999999999999", "0e99999999999999999999",
	} {
		got, gotOK := integerPart(number)
		want, wantOK := exactIntegerPart(number)
		switch number {
		case "1e-99999999999999999999", "0e99999999999999999999":
			want, wantOK = 0, true
		case "1e99999999999999999999":
			want, wantOK = 0, false
		}
		if gotOK != wantOK || (gotOK && got != want) {
			t.Errorf("integerPart(%s) = %d, %v; want %d, %v", number, got, gotOK, want, wantOK)
		}
	}
}

// FuzzTimestamp holds epochMillis to the exact value of any JSON number: converted to its integer
// part when that fits in an int64 (an integer is already one and is left alone), else left as sent
// and reported out of range, never stored as another number.
func FuzzTimestamp(f *testing.F) {
	for _, seed := range []string{"1639044446636", "1639044446636.7", "9223372036854775808", "-9223372036854775809",
		"1e30", "-1e30", "9.223372036854775808e18", "-9223372036854775808.5", "1e400", "0.1e-5", "12e-1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, number string) {
		if len(number) > 400 || checkJSON([]byte(number)) != nil || !strings.ContainsAny(number[:1], "-0123456789") {
			return // not one JSON number (exactIntegerPart's precision covers 400 characters)
		}
		ms, outcome := epochMillis(json.Number(number))
		if _, err := strconv.ParseInt(number, 10, 64); err == nil {
			if outcome != timestampAsSent {
				t.Fatalf("%s is epoch milliseconds already, got outcome %d", number, outcome)
			}
			return
		}
		if _, _, err := big.ParseFloat(number, 10, 64, big.ToZero); err != nil {
			return // an exponent math/big does not read: TestIntegerPart has such cases
		}
		want, ok := exactIntegerPart(number)
		switch {
		case ok && (outcome != timestampConverted || ms != want):
			t.Fatalf("%s: got %d (outcome %d), want %d converted", number, ms, outcome, want)
		case !ok && outcome != timestampOutOfRange:
			t.Fatalf("%s is out of range, got %d (outcome %d)", number, ms, outcome)
		}
	})
}

// A timestamp out of range is reported also when the schema check does not run (an event too deep
// to check) or would word it otherwise (a number past float64), and reported once.
func TestTimestampOutOfRangeAlwaysReported(t *testing.T) {
	p, err := newEventProcessor()
	if err != nil {
		t.Fatal(err)
	}
	deep := strings.Repeat("[", 70) + strings.Repeat("]", 70)
	for _, raw := range []string{
		`{"event_name":"e","user":` + deep + `,"context":{"event_id":"d","event_timestamp":1e400}}`,
		`{"event_name":"e","user":` + deep + `,"context":{"event_id":"d","event_timestamp":9223372036854775808}}`,
		`{"event_name":"e","user":{"consistent_anonymous_id":"a"},"context":{"event_id":"d","event_timestamp":-1e400}}`,
	} {
		out := p.process([]byte(raw), false, time.Now())
		n := 0
		for _, w := range out.warnings {
			if w.Path == "/context/event_timestamp" {
				n++
				if w.Code != "schema_violation" || !strings.Contains(w.Message, "outside the range") {
					t.Errorf("%.60s...: %s %s", raw, w.Code, w.Message)
				}
			}
		}
		if n != 1 {
			t.Errorf("%.60s...: %d warnings about the timestamp in %+v, want 1", raw, n, out.warnings)
		}
	}
}
