package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/testenv"
)

// The examples of openapi.yaml are what the server does. Every example validates against its
// schema, is consistent with its operation (a single-event answer counts one event, a 400's limit
// is its endpoint's, the counts add up), and is reproduced: the request examples are sent and
// stored, and each answer example is what the server answers to a request made for it (ids
// aside), on every path whose operation shows it.
func TestSpecExamples(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromFile(filepath.Join("..", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	limits := specLimits(t, doc)
	seen := 0
	for _, path := range doc.Paths.InMatchingOrder() {
		op := doc.Paths.Value(path).Post
		if op == nil {
			continue
		}
		o := specOperation{path: path, id: op.OperationID, single: path != "/events/batch", limits: limits}
		for mediaType, media := range op.RequestBody.Value.Content {
			for name, value := range mediaExamples(media) {
				seen++
				t.Run(fmt.Sprintf("%s/request/%s/%s", o.id, mediaType, name), func(t *testing.T) {
					o.checkRequestExample(t, op.RequestBody.Value.Content, mediaType, value.value)
				})
			}
		}
		for status, resp := range op.Responses.Map() {
			for mediaType, media := range resp.Value.Content {
				for name, ex := range mediaExamples(media) {
					seen++
					t.Run(fmt.Sprintf("%s/%s/%s/%s", o.id, status, mediaType, name), func(t *testing.T) {
						if err := media.Schema.Value.VisitJSON(ex.value, openapi3.MultiErrors()); err != nil {
							t.Fatalf("does not match its schema: %v", err)
						}
						o.checkResponseExample(t, status, mediaType, name, ex)
					})
				}
			}
		}
	}
	if seen < 20 {
		t.Errorf("only %d examples found: is openapi.yaml read?", seen)
	}
}

// specLimits reads info.x-trackapi-limits, checking them against the server's.
func specLimits(t *testing.T, doc *openapi3.T) map[string]int {
	t.Helper()
	raw, err := json.Marshal(doc.Info.Extensions["x-trackapi-limits"])
	if err != nil {
		t.Fatal(err)
	}
	var limits map[string]int
	if err := json.Unmarshal(raw, &limits); err != nil {
		t.Fatalf("x-trackapi-limits %s: %v", raw, err)
	}
	want := map[string]int{"single_body_bytes": trackapi.SingleBodyLimit, "batch_body_bytes": trackapi.BatchBodyLimit, "batch_event_bytes": trackapi.EventLimit,
		"pixel_query_bytes": trackapi.PixelQueryLimit, "pixel_parameters": trackapi.PixelMaxParameters, "pixel_name_depth": trackapi.PixelMaxNameDepth, "pixel_max_index": trackapi.PixelMaxIndex}
	if !reflect.DeepEqual(limits, want) {
		t.Fatalf("x-trackapi-limits %v, the server's %v", limits, want)
	}
	return limits
}

type specExample struct {
	value  any
	listed map[string]int // x-trackapi-listed: the real answer's list lengths, for a shortened example
}

// mediaExamples are a media type's examples by name ("example" for its single example).
func mediaExamples(media *openapi3.MediaType) map[string]specExample {
	out := map[string]specExample{}
	if media.Example != nil {
		out["example"] = specExample{value: media.Example}
	}
	for name, ref := range media.Examples {
		ex := specExample{value: ref.Value.Value}
		if listed, ok := ref.Value.Extensions["x-trackapi-listed"]; ok {
			raw, _ := json.Marshal(listed)
			_ = json.Unmarshal(raw, &ex.listed)
		}
		out[name] = ex
	}
	return out
}

// specOperation is one collect operation of openapi.yaml.
type specOperation struct {
	path, id string
	single   bool
	limits   map[string]int
}

func (o specOperation) bodyLimit() int {
	if o.single {
		return o.limits["single_body_bytes"]
	}
	return o.limits["batch_body_bytes"]
}

// checkRequestExample: the example matches its schema (text/plain: and its text matches the JSON
// schema), and the server stores every event of it.
func (o specOperation) checkRequestExample(t *testing.T, content openapi3.Content, mediaType string, value any) {
	if err := content[mediaType].Schema.Value.VisitJSON(value, openapi3.MultiErrors()); err != nil {
		t.Fatalf("does not match its schema: %v", err)
	}
	var body []byte
	if text, ok := value.(string); ok {
		body = []byte(text)
		var decoded any
		if err := json.Unmarshal(body, &decoded); err != nil {
			t.Fatalf("%s example is not JSON: %v", mediaType, err)
		}
		if err := content["application/json"].Schema.Value.VisitJSON(decoded, openapi3.MultiErrors()); err != nil {
			t.Fatalf("%s example does not match the JSON schema: %v", mediaType, err)
		}
	} else {
		body = mustJSON(t, value)
	}
	e := newEnv(t)
	r := e.post(e.url(o.path), body, "Content-Type", mediaType)
	if r.Status != http.StatusOK || r.Result.Received == 0 || r.Result.Accepted != r.Result.Received {
		t.Fatalf("not every event stored: %d %s", r.Status, r.Body)
	}
}

func (o specOperation) checkResponseExample(t *testing.T, status, mediaType, name string, ex specExample) {
	switch {
	case mediaType == "text/plain" && status == "400":
		o.checkPlainRefusal(t, ex.value)
	case mediaType != "application/json":
		t.Fatalf("no check for a %s %s answer", status, mediaType)
	case status == "200":
		var want gen.CollectResult
		decodeStrict(t, mustJSON(t, ex.value), &want)
		o.checkResultConsistent(t, want, ex.listed)
		compareAnswer(t, o.reproduce200(t, name, want.Received), ex)
	case status == "400":
		var want gen.Error
		decodeStrict(t, mustJSON(t, ex.value), &want)
		o.checkRefusalConsistent(t, want)
		compareAnswer(t, o.reproduce400(t, name), ex)
	case status == "503":
		compareAnswer(t, o.reproduce503(t, name), ex)
	case status == "500":
		var want gen.Error
		decodeStrict(t, mustJSON(t, ex.value), &want)
		if want.Code != gen.ErrorCodeInternal {
			t.Errorf("a 500 with code %s", want.Code)
		}
	default:
		t.Fatalf("no check for a %s answer", status)
	}
}

var rejectionCodes = []gen.ProblemCode{gen.InvalidSource, gen.MissingEventName}

// checkResultConsistent: the counts add up, each problem is in its list and points into the
// request, and a single-event answer is about one event.
func (o specOperation) checkResultConsistent(t *testing.T, r gen.CollectResult, listed map[string]int) {
	t.Helper()
	if r.Received != r.Accepted+r.Duplicates+r.Rejected {
		t.Errorf("received %d != accepted %d + duplicates %d + rejected %d", r.Received, r.Accepted, r.Duplicates, r.Rejected)
	}
	if o.single && r.Received > 1 {
		t.Errorf("a single-event answer with received %d", r.Received)
	}
	count := func(list string, shown int, omitted *[]gen.ProblemCount) int {
		n := shown
		if l, ok := listed[list]; ok {
			if l < shown || l > 100 {
				t.Errorf("x-trackapi-listed %s: %d, with %d shown", list, l, shown)
			}
			n = l
		}
		if omitted != nil {
			for _, c := range *omitted {
				n += c.Count
			}
		}
		return n
	}
	if n := count("errors", len(r.Errors), r.ErrorsOmitted); n != r.Rejected {
		t.Errorf("%d rejections listed or counted, rejected %d", n, r.Rejected)
	}
	count("warnings", len(r.Warnings), r.WarningsOmitted)
	for list, problems := range map[string][]gen.Problem{"errors": r.Errors, "warnings": r.Warnings} {
		for i, p := range problems {
			if p.Index >= r.Received || (o.single && p.Index != 0) || (i > 0 && p.Index < problems[i-1].Index) {
				t.Errorf("%s[%d]: index %d in an answer to %d events", list, i, p.Index, r.Received)
			}
			if slices.Contains(rejectionCodes, p.Code) != (list == "errors") {
				t.Errorf("%s[%d]: code %s in %s", list, i, p.Code, list)
			}
		}
	}
}

// limitInMessage finds the byte counts a 400's message gives as a limit.
var limitInMessage = regexp.MustCompile(`(\d+)-byte limit|larger than (\d+) bytes|more than (\d+) bytes`)

// checkRefusalConsistent: the code is one of the operation's, index only where the spec has one,
// and a limit in the message is the operation's.
func (o specOperation) checkRefusalConsistent(t *testing.T, e gen.Error) {
	t.Helper()
	codes := []gen.ErrorCode{gen.ErrorCodeInvalidPayload, gen.ErrorCodeInvalidJson, gen.ErrorCodePayloadTooLarge}
	if !o.single {
		codes = append(codes, gen.ErrorCodeEventTooLarge)
	}
	if !slices.Contains(codes, e.Code) {
		t.Errorf("code %s is not one of %s's 400s", e.Code, o.id)
	}
	if e.Index != nil && (o.single || (e.Code != gen.ErrorCodeInvalidPayload && e.Code != gen.ErrorCodeEventTooLarge)) {
		t.Errorf("an index in a %s of %s", e.Code, o.id)
	}
	want := o.bodyLimit()
	if e.Code == gen.ErrorCodeEventTooLarge {
		want = o.limits["batch_event_bytes"]
	}
	for _, m := range limitInMessage.FindAllStringSubmatch(e.Message, -1) {
		if got, _ := strconv.Atoi(m[1] + m[2] + m[3]); got != want || (e.Code != gen.ErrorCodePayloadTooLarge && e.Code != gen.ErrorCodeEventTooLarge) {
			t.Errorf("%s %q gives a limit of %d; %s's is %d", e.Code, e.Message, got, o.id, want)
		}
	}
}

// request is what the examples' reproductions send.
type request struct {
	query  string // "": the env's site and key
	header [][2]string
	body   []byte
}

func (o specOperation) send(e *env, r request) response {
	e.t.Helper()
	u := e.url(o.path)
	if r.query != "" {
		u = e.URL + o.path + "?" + r.query
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(r.body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range r.header {
		req.Header.Add(h[0], h[1])
	}
	return e.do(req)
}

// body is an event body for the operation: the event, or a batch of it.
func (o specOperation) body(t *testing.T, events ...string) []byte {
	if o.single {
		if len(events) != 1 {
			t.Fatalf("%d events for a single-event body", len(events))
		}
		return []byte(events[0])
	}
	return []byte(`{"batch":[` + strings.Join(events, ",") + `]}`)
}

const exampleUser = `"user":{"consistent_anonymous_id":"67892"}`

// reproduce200 sends the request that the 200 example of that name answers; received is the
// example's count of events, for the examples of a large batch.
func (o specOperation) reproduce200(t *testing.T, name string, received int) response {
	e := newEnv(t)
	wrongKey := "tc_s=" + e.Site + "&token=wrong"
	event := func(id string) string {
		return `{"event_name":"search","search_term":"shoes",` + exampleUser + `,"context":{"event_id":"` + id + `","event_timestamp":1639044446636}}`
	}
	switch name {
	case "stored":
		return o.send(e, request{body: o.body(t, `{"event_name":"search","search_term":"shoes",`+exampleUser+`,"context":{"event_timestamp":1639044446636}}`)})
	case "badKey":
		events := []string{event("k-1")}
		if !o.single {
			events = append(events, event("k-2"))
		}
		return o.send(e, request{query: wrongKey, body: o.body(t, events...)})
	case "missingName":
		return o.send(e, request{body: o.body(t, `{"search_term":"t-shirts"}`)})
	case "reused":
		checkCounts(t, o.send(e, request{body: o.body(t, event("r-1"))}), 1, 1, 0, 0)
		return o.send(e, request{body: o.body(t, `{"event_name":"login",`+exampleUser+`,"context":{"event_id":"r-1","event_timestamp":1639044446636}}`)})
	case "timestampOutOfRange":
		return o.send(e, request{body: o.body(t, `{"event_name":"search","search_term":"shoes",`+exampleUser+`,"context":{"event_id":"t-1","event_timestamp":1e30}}`)})
	case "mixed":
		return o.send(e, request{body: o.body(t, event("m-1"), event("m-1"), `{"search_term":"t-shirts"}`)})
	case "rootTimestamp": // the answer to the request example of that name
		return o.send(e, request{body: []byte(`{"batch":[{"event_name":"page_view","page_type":"home","event_timestamp":1639044446000,` +
			`"user":{"consistent_anonymous_id":"67892"},"context":{"event_id":"pv-1"}},{"event_name":"add_to_cart","value":20,` +
			`"currency":"EUR","items":[],"user":{"consistent_anonymous_id":"67892"}}]}`)})
	case "badKeyLargeBatch": // empty objects, nearly as many as the limit allows
		return o.send(e, request{query: wrongKey, body: o.body(t, slices.Repeat([]string{"{}"}, received)...)})
	case "manyWarnings": // events of a bare name, nearly as many as the limit allows
		return o.send(e, request{body: o.body(t, slices.Repeat([]string{`{"event_name":"e"}`}, received)...)})
	}
	t.Fatalf("no request reproduces the 200 example %q: add one here", name)
	return response{}
}

// reproduce400 sends the request that the 400 example of that name answers.
func (o specOperation) reproduce400(t *testing.T, name string) response {
	e := newEnv(t)
	pad := func(size int) string { // an object of exactly size bytes
		head := `{"event_name":"x","pad":"`
		return head + strings.Repeat("a", size-len(head)-len(`"}`)) + `"}`
	}
	switch name {
	case "notAnObject", "bareArray":
		return o.send(e, request{body: []byte(`[{"event_name":"a"}]`)})
	case "elementNotObject":
		return o.send(e, request{body: []byte(`{"batch":[{"event_name":"a"},[]]}`)})
	case "parameterTwice":
		query := "tc_s=" + e.Site + "&tc_s=" + e.Site + "&token=" + e.Key
		if !o.single {
			query = "tc_s=" + e.Site + "&token=" + e.Key + "&token=" + e.Key
		}
		return o.send(e, request{query: query, body: o.body(t, `{"event_name":"a"}`)})
	case "syntaxError":
		return o.send(e, request{body: []byte(`{"event_name":"a"`)})
	case "tooDeep":
		return o.send(e, request{body: []byte(strings.Repeat("[", 10001) + strings.Repeat("]", 10001))})
	case "tooLarge":
		size := 40123
		if !o.single {
			size = 600000
		}
		return o.send(e, request{body: []byte(pad(size))})
	case "eventTooLarge":
		small := `{"event_name":"a"}`
		return o.send(e, request{body: o.body(t, small, small, small, pad(40123))})
	}
	t.Fatalf("no request reproduces the 400 example %q: add one here", name)
	return response{}
}

// reproduce503 brings the server into the state the 503 example of that name answers.
func (o specOperation) reproduce503(t *testing.T, name string) response {
	switch name {
	case "unavailable": // a store that cannot commit
		e := newEnv(t)
		if err := e.DB.Close(); err != nil {
			t.Fatal(err)
		}
		return o.send(e, request{body: o.body(t, `{"event_name":"a"}`)})
	case "overloaded": // a body that does not fit in the body budget in time
		e := newEnvWith(t, testenv.Options{BodyBudget: 1000, BodyWait: 50 * time.Millisecond})
		return o.send(e, request{body: o.body(t, eventJSON(5000))})
	}
	t.Fatalf("no request reproduces the 503 example %q: add one here", name)
	return response{}
}

func eventJSON(size int) string {
	head := `{"event_name":"x","pad":"`
	return head + strings.Repeat("a", size-len(head)-len(`"}`)) + `"}`
}

// checkPlainRefusal: a request that is not valid HTTP/1.1 gets the plain-text 400 shown.
func (o specOperation) checkPlainRefusal(t *testing.T, example any) {
	e := newEnv(t)
	u, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"event_name":"a"}`
	fmt.Fprintf(conn, "POST %s?tc_s=%s&token=%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%s",
		o.path, e.Site, e.Key, u.Host, len(body), len(body)+1, body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	_, _ = got.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || got.String() != example {
		t.Errorf("two Content-Length values: %d %s %q, want 400 text/plain %q", resp.StatusCode, resp.Header.Get("Content-Type"), got.String(), example)
	}
}

// uuidPattern matches the server's ids, which differ from run to run.
var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// compareAnswer fails unless the answer is the example, ids aside; of a list the example shortens
// (x-trackapi-listed), the answer's first entries, its length being the one given.
func compareAnswer(t *testing.T, r response, ex specExample) {
	t.Helper()
	normalise := func(b []byte) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(uuidPattern.ReplaceAll(b, []byte("UUID")), &m); err != nil {
			t.Fatalf("%.300s: %v", b, err)
		}
		return m
	}
	got, want := normalise(r.Body), normalise(mustJSON(t, ex.value))
	for list, n := range ex.listed {
		items, _ := got[list].([]any)
		shown, _ := want[list].([]any)
		if len(items) != n {
			t.Errorf("the answer lists %d %s, the example says %d", len(items), list, n)
		}
		got[list] = items[:min(len(items), len(shown))]
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the server answers (ids aside)\n%.2000s\nthe example says\n%.2000s", mustJSON(t, got), mustJSON(t, want))
	}
}
