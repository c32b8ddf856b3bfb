package ingest_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
)

// answer is one 200 as the tests look at it.
type answer struct {
	raw    []byte
	result gen.CollectResult
}

// post sends body (gzipped when gz) to path through the spec-checking client and returns the
// 200's body, decoded.
func post(t testing.TB, url string, body []byte, gz bool) answer {
	t.Helper()
	sent := body
	if gz {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(body)
		w.Close()
		sent = buf.Bytes()
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(sent))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := apitest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, raw)
	}
	a := answer{raw: raw}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a.result); err != nil {
		t.Fatalf("decoding %.300s: %v", raw, err)
	}
	return a
}

func batchOf(elements ...string) []byte {
	return []byte(`{"batch":[` + strings.Join(elements, ",") + `]}`)
}

func repeat(element string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = element
	}
	return s
}

func omitted(counts *[]gen.ProblemCount) (total int, byCode map[gen.ProblemCode]int) {
	byCode = map[gen.ProblemCode]int{}
	if counts != nil {
		for _, c := range *counts {
			if c.Count < 1 || byCode[c.Code] != 0 {
				panic(fmt.Sprintf("bad summary %+v", *counts))
			}
			byCode[c.Code] = c.Count
			total += c.Count
		}
	}
	return total, byCode
}

// checkAnswer checks what every 200 must hold, for a request body of bodyBytes (decompressed):
// its size bound, its counts, and lists that are a prefix (in index order) of the problems, each
// rejected event with exactly one rejection, listed or counted.
func checkAnswer(t testing.TB, a answer, bodyBytes, received int) {
	t.Helper()
	r := a.result
	if limit := ingest.AnswerLimit(bodyBytes); len(a.raw) > limit {
		t.Fatalf("answer of %d bytes to a body of %d bytes: over its limit of %d", len(a.raw), bodyBytes, limit)
	}
	if len(a.raw) > ingest.MaxAnswerBytes {
		t.Fatalf("answer of %d bytes", len(a.raw))
	}
	if r.Received != received || r.Accepted+r.Duplicates+r.Rejected != r.Received {
		t.Fatalf("counts %d received = %d accepted + %d duplicates + %d rejected, for %d events", r.Received, r.Accepted, r.Duplicates, r.Rejected, received)
	}
	for name, list := range map[string][]gen.Problem{"errors": r.Errors, "warnings": r.Warnings} {
		if len(list) > ingest.MaxListedProblems {
			t.Fatalf("%d %s listed", len(list), name)
		}
		for i := 1; i < len(list); i++ {
			if list[i].Index < list[i-1].Index {
				t.Fatalf("%s not in index order: %d after %d", name, list[i].Index, list[i-1].Index)
			}
		}
	}
	seen := map[int]bool{}
	last := -1
	for _, p := range r.Errors {
		if seen[p.Index] {
			t.Fatalf("two rejections of event %d", p.Index)
		}
		seen[p.Index] = true
		last = p.Index
	}
	n, _ := omitted(r.ErrorsOmitted)
	if len(seen)+n != r.Rejected {
		t.Fatalf("%d rejections listed + %d counted, for %d rejected", len(seen), n, r.Rejected)
	}
	if n > received-1-last {
		t.Fatalf("%d rejections counted after the last listed one (%d), of %d events", n, last, received)
	}
}

// cutByBytes tells whether a list stopped for the answer's size rather than its count.
func cutByBytes(a answer) bool {
	r := a.result
	return (r.ErrorsOmitted != nil && len(r.Errors) < ingest.MaxListedProblems) ||
		(r.WarningsOmitted != nil && len(r.Warnings) < ingest.MaxListedProblems)
}

// A wrong key on a 512000-byte batch of empty objects (569 bytes gzipped) was answered with one
// invalid_source error an element: 22.6 MB. The rejections are now listed for the first events
// only and counted for the rest, in at most 64 KB whatever the batch.
func TestWrongKeyAnswerIsBounded(t *testing.T) {
	s := testenv.New(t, testenv.Options{})
	const n = 170662
	body := batchOf(repeat("{}", n)...)
	if len(body) > 512000 {
		t.Fatalf("body of %d bytes", len(body))
	}
	for _, gz := range []bool{true, false} {
		a := post(t, s.URL+"/events/batch?tc_s="+s.Site+"&token=wrong", body, gz)
		checkAnswer(t, a, len(body), n)
		r := a.result
		total, byCode := omitted(r.ErrorsOmitted)
		if len(a.raw) > 64<<10 || r.Rejected != n || len(r.Errors) != ingest.MaxListedProblems ||
			total != n-ingest.MaxListedProblems || byCode[gen.InvalidSource] != total || len(r.Warnings) != 0 || r.WarningsOmitted != nil {
			t.Fatalf("answer of %d bytes: %d rejected, %d listed, omitted %+v", len(a.raw), r.Rejected, len(r.Errors), byCode)
		}
		for i, p := range r.Errors {
			if p.Index != i || p.Code != gen.InvalidSource {
				t.Fatalf("error %d: %+v", i, p)
			}
		}
		t.Logf("gzip %v: %d-byte body, %d-byte answer", gz, len(body), len(a.raw))
	}
}

// 26946 events without id or timestamp (512000 bytes) got 80838 warnings listed: 11.7 MB. Now the
// first 100 are listed and the rest counted by code, within twice the request.
func TestWarningsAnswerIsBounded(t *testing.T) {
	s := testenv.New(t, testenv.Options{})
	const n = 26946
	body := batchOf(repeat(`{"event_name":"a"}`, n)...)
	a := post(t, s.URL+"/events/batch?tc_s="+s.Site+"&token="+s.Key, body, false)
	checkAnswer(t, a, len(body), n)
	r := a.result
	total, byCode := omitted(r.WarningsOmitted)
	if r.Accepted != n || len(r.Warnings) != ingest.MaxListedProblems || len(r.Warnings)+total != 3*n ||
		byCode[gen.EventIdGenerated] != n-34 || byCode[gen.TimestampGenerated] != n-33 || byCode[gen.SchemaViolation] != n-33 {
		t.Fatalf("answer of %d bytes: %d accepted, %d warnings listed, omitted %+v", len(a.raw), r.Accepted, len(r.Warnings), byCode)
	}
	// The order of first occurrence, as in openapi.yaml's example.
	if got := *r.WarningsOmitted; got[0].Code != gen.TimestampGenerated || got[1].Code != gen.SchemaViolation || got[2].Code != gen.EventIdGenerated {
		t.Fatalf("warnings_omitted %+v", got)
	}
	t.Logf("%d-byte body, %d-byte answer", len(body), len(a.raw))
}

// The bounds hold for requests of every size and mix: single events and batches, small and large,
// rejections and warnings interleaved, messages that escape to several times their size.
func TestAnswerBounds(t *testing.T) {
	s := testenv.New(t, testenv.Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	// A timestamp padded with U+2028 (3 bytes sent, escaped to 6 in the message) still converts,
	// and its message quotes it whole.
	padded := func(n int) string {
		return `{"event_name":"a","context":{"event_timestamp":"` + strings.Repeat("\u2028", n) + `1"}}`
	}
	kinds := []string{
		`{}`,
		`{"event_name":"a"}`,
		`{"event_name":1}`,
		`{"event_name":"a","user":{"consistent_anonymous_id":"1"},"context":{"event_id":"x","event_timestamp":1}}`,
		`{"event_name":"a","user":{"consent_categories":[{},{},{},{},{},{},{},{},{},{},{},{},{}]},"event_timestamp":"2021-12-09"}`,
		`{"event_name":"<&>","context":5}`,
		padded(10),
		padded(3000),
	}
	bySize := 0 // answers whose lists stopped for their size: the budget is exercised too
	check := func(name, path string, body []byte, received int) {
		t.Helper()
		a := post(t, s.URL+path+"?tc_s="+s.Site+"&token="+s.Key, body, false)
		checkAnswer(t, a, len(body), received)
		if cutByBytes(a) {
			bySize++
		}
		bad := post(t, s.URL+path+"?tc_s="+s.Site+"&token=wrong", body, false)
		checkAnswer(t, bad, len(body), received)
		if len(bad.raw) > 64<<10 || bad.result.Rejected != received {
			t.Fatalf("%s: wrong key answered in %d bytes, %d rejected", name, len(bad.raw), bad.result.Rejected)
		}
	}
	for _, k := range kinds {
		check(k[:min(len(k), 40)], "/events", []byte(k), 1)
	}
	for round := range 60 {
		var elements []string
		size := 0
		limit := []int{200, 2000, 20000, 500000}[round%4]
		for {
			e := kinds[rng.IntN(len(kinds))]
			if size+len(e)+1 > limit-20 {
				break
			}
			elements = append(elements, e)
			size += len(e) + 1
		}
		if len(elements) == 0 {
			continue
		}
		check(fmt.Sprintf("round %d", round), "/events/batch", batchOf(elements...), len(elements))
	}
	// Messages quote at most a few dozen bytes of what was sent, so the count of 100 stops most
	// lists; some must still stop for their size, or the byte budget went untested.
	if bySize < 1 {
		t.Fatalf("no answer had a list stopped by its size")
	}
}
