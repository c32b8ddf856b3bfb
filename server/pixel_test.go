package server_test

import (
	"bytes"
	"fmt"
	"image/gif"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/spec"
	"github.com/trackapi/trackapi/server"
)

// pixel sends a GET to url (a pixel) with headers, through the spec-checking client.
func (e *env) pixel(url string, header ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	r := e.do(req)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if r.Status == http.StatusOK {
			decodeStrict(e.t, r.Body, &r.Result)
		} else {
			decodeStrict(e.t, r.Body, &r.Error)
		}
	}
	return r
}

// lastStored is the event stored last, and the codes of its warnings.
func (e *env) lastStored() (string, []string) {
	e.t.Helper()
	all := e.stored()
	if len(all) == 0 {
		e.t.Fatal("nothing stored")
	}
	last := all[len(all)-1]
	codes := []string{}
	for _, w := range last.Warnings {
		codes = append(codes, string(w.Code))
	}
	return string(last.Event), codes
}

// Each form of the pixel, on each path it is served at, stores exactly the event its query
// describes, with the warnings a POST of that event gets.
func TestPixelStoredEvents(t *testing.T) {
	e := newEnv(t)
	creds := "tc_s=" + e.Site + "&token=" + e.Key
	const user = "&user[consistent_anonymous_id]=a1&user[consent_categories][]=1&user[consent_categories][]=3"
	const userJSON = `"user":{"consistent_anonymous_id":"a1","consent_categories":["1","3"]}`
	tests := []struct {
		name   string
		path   string
		query  string
		header []string
		want   string
		codes  []string
	}{
		{"the vendor's example", "/events",
			creds + "&event_name=page_view&page_type=home" + user + "&context[event_id]=p-1&context[event_timestamp]=1718003600000",
			nil,
			`{"event_name":"page_view","page_type":"home",` + userJSON + `,"context":{"event_id":"p-1","event_timestamp":1718003600000}}`,
			[]string{"timestamp_normalized"}},
		{"items, with a trailing slash", "/events/",
			creds + "&event_name=add_to_cart&value=49.92&currency=EUR&items[0][id]=SKU-1&items[0][quantity]=1&items[0][product][id]=P-1" +
				"&items[0][product][name]=Blue+runner&items[1][id]=SKU-2&items[1][product][colors][]=blue&items[1][product][colors][]=red" +
				user + "&context[event_id]=p-2&context[event_timestamp]=1718003600000",
			nil,
			`{"event_name":"add_to_cart","value":"49.92","currency":"EUR","items":[{"id":"SKU-1","quantity":"1","product":{"id":"P-1","name":"Blue runner"}},` +
				`{"id":"SKU-2","product":{"colors":["blue","red"]}}],` + userJSON + `,"context":{"event_id":"p-2","event_timestamp":1718003600000}}`,
			[]string{"timestamp_normalized"}},
		{"the alias, brackets encoded", "/cdp/events",
			creds + "&event_name=search&search_term=%22t-shirts%22+%3C%26%3E&user%5Bconsistent_anonymous_id%5D=a1&user%5Bconsent_categories%5D%5B%5D=1" +
				"&context%5Bevent_id%5D=p-3&context%5Bevent_timestamp%5D=1718003600000",
			nil,
			`{"event_name":"search","search_term":"\"t-shirts\" <&>","user":{"consistent_anonymous_id":"a1","consent_categories":["1"]},` +
				`"context":{"event_id":"p-3","event_timestamp":1718003600000}}`,
			[]string{"timestamp_normalized"}},
		{"the alias with a trailing slash, the key as Bearer, JSON asked for", "/cdp/events/",
			"tc_s=" + e.Site + "&event_name=login&method=sso" + user + "&context[event_id]=p-4&context[event_timestamp]=1718003600000",
			[]string{"Authorization", "Bearer " + e.Key, "Accept", "application/json"},
			`{"event_name":"login","method":"sso",` + userJSON + `,"context":{"event_id":"p-4","event_timestamp":1718003600000}}`,
			[]string{"timestamp_normalized"}},
		{"a name given twice", "/events",
			creds + "&event_name=page_view&page_type=a&page_type=b" + user + "&context[event_id]=p-5&context[event_timestamp]=1718003600000",
			nil,
			`{"event_name":"page_view","page_type":"b",` + userJSON + `,"context":{"event_id":"p-5","event_timestamp":1718003600000}}`,
			[]string{"duplicate_key", "timestamp_normalized"}},
		{"sparse indices", "/events",
			creds + "&event_name=view_item_list&items[7][id]=b&items[3][id]=a" + user + "&context[event_id]=p-6&context[event_timestamp]=1718003600000",
			nil,
			`{"event_name":"view_item_list","items":[{"id":"a"},{"id":"b"}],` + userJSON + `,"context":{"event_id":"p-6","event_timestamp":1718003600000}}`,
			[]string{"timestamp_normalized"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.pixel(e.URL+tt.path+"?"+tt.query, tt.header...)
			if r.Status != http.StatusOK {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			got, codes := e.lastStored()
			if got != tt.want {
				t.Errorf("stored\n %s\nwant\n %s", got, tt.want)
			}
			slices.Sort(codes)
			if !slices.Equal(codes, tt.codes) {
				t.Errorf("warnings %v, want %v", codes, tt.codes)
			}
		})
	}
}

// A pixel is processed exactly as the POST of the event it builds: the same result and the same
// stored event (sent under another source, so that neither is the other's duplicate).
func TestPixelIsAPOST(t *testing.T) {
	e := newEnv(t)
	_, otherKey := e.AddSource(t, e.Site, "other")
	queries := []string{
		"event_name=page_view&page_type=home&user[consistent_anonymous_id]=a1&user[consent_categories][]=1&context[event_id]=same-1&context[event_timestamp]=2024-06-10T08:00:00Z",
		"event_name=purchase&id=O-1&items[0][product][price]=9.5&context[event_id]=same-2&context[event_timestamp]=1718003600000", // recommended properties missing
		"page_type=home&context[event_id]=same-3", // no event_name: rejected
		"event_name=x&event_timestamp=1718003600000&context[event_id]=same-4&context[event_id]=same-4b&context[event_timestamp]=1718003600000",
	}
	for _, q := range queries {
		pixel := e.pixel(e.url("/events")+"&"+q, "Accept", "application/json")
		before := len(e.stored())
		posted := e.post(e.URL+"/events?tc_s="+e.Site+"&token="+otherKey, pixelBody(t, q))
		if pixel.Status != http.StatusOK || posted.Status != http.StatusOK {
			t.Fatalf("%s: pixel %d %s, POST %d %s", q, pixel.Status, pixel.Body, posted.Status, posted.Body)
		}
		if !sameResult(pixel.Result, posted.Result) {
			t.Errorf("%s:\npixel %s\nPOST  %s", q, pixel.Body, posted.Body)
		}
		all := e.stored()
		if len(all) != before+posted.Result.Accepted {
			t.Fatalf("%s: %d stored after the POST, want %d", q, len(all), before+posted.Result.Accepted)
		}
		generated := regexp.MustCompile(`"event_timestamp":17[0-9]{11}\b`)
		if posted.Result.Accepted == 1 && !bytes.Equal(generated.ReplaceAll(all[len(all)-1].Event, nil), generated.ReplaceAll(all[len(all)-2].Event, nil)) {
			t.Errorf("%s: stored\npixel %s\nPOST  %s", q, all[len(all)-2].Event, all[len(all)-1].Event)
		}
	}
}

// pixelBody is the JSON a pixel query describes, written by hand from the rules (not by the
// server's builder), for the queries of TestPixelIsAPOST.
func pixelBody(t *testing.T, q string) []byte {
	t.Helper()
	bodies := map[string]string{
		"event_name=page_view&page_type=home&user[consistent_anonymous_id]=a1&user[consent_categories][]=1&context[event_id]=same-1&context[event_timestamp]=2024-06-10T08:00:00Z": `{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"a1","consent_categories":["1"]},"context":{"event_id":"same-1","event_timestamp":"2024-06-10T08:00:00Z"}}`,
		"event_name=purchase&id=O-1&items[0][product][price]=9.5&context[event_id]=same-2&context[event_timestamp]=1718003600000":                                                  `{"event_name":"purchase","id":"O-1","items":[{"product":{"price":"9.5"}}],"context":{"event_id":"same-2","event_timestamp":"1718003600000"}}`,
		"event_name=x&context[event_id]=same-5":   `{"event_name":"x","context":{"event_id":"same-5"}}`,
		"page_type=home&context[event_id]=same-3": `{"page_type":"home","context":{"event_id":"same-3"}}`,
		"event_name=x&event_timestamp=1718003600000&context[event_id]=same-4&context[event_id]=same-4b&context[event_timestamp]=1718003600000": `{"event_name":"x","event_timestamp":"1718003600000","context":{"event_id":"same-4","event_id":"same-4b","event_timestamp":"1718003600000"}}`,
	}
	b, ok := bodies[q]
	if !ok {
		t.Fatalf("no body for %s", q)
	}
	return []byte(b)
}

// sameResult compares two results but for the ids and times the server generated.
func sameResult(a, b gen.CollectResult) bool {
	strip := func(r gen.CollectResult) string {
		for _, list := range [][]gen.Problem{r.Errors, r.Warnings} {
			for i := range list {
				if list[i].Code == gen.EventIdGenerated || list[i].Code == gen.TimestampGenerated {
					list[i].Message = ""
				}
			}
		}
		return fmt.Sprintf("%+v", r)
	}
	return strip(a) == strip(b)
}

// The answer: a transparent 1×1 GIF that no cache keeps, or the result as JSON when asked for,
// on every path of the pixel.
func TestPixelAnswers(t *testing.T) {
	e := newEnv(t)
	for i, path := range []string{"/events", "/events/", "/cdp/events", "/cdp/events/"} {
		q := e.url(path) + fmt.Sprintf("&event_name=x&context[event_id]=answer-%d", i)
		for _, accept := range []string{"", "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", "*/*", "application/json;q=0"} {
			r := e.pixel(q, "Accept", accept)
			if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "image/gif" {
				t.Fatalf("%s, Accept %q: %d %q", path, accept, r.Status, r.Header.Get("Content-Type"))
			}
			img, err := gif.Decode(bytes.NewReader(r.Body))
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != 1 || b.Dy() != 1 {
				t.Errorf("image %v, want 1×1", b)
			}
			checkNoCache(t, r.Header)
		}
		r := e.pixel(q, "Accept", "application/json, text/plain, */*")
		if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("%s asking for JSON: %d %q", path, r.Status, r.Header.Get("Content-Type"))
		}
		checkCounts(t, r, 1, 0, 1, 0) // the first GET of this path stored it
		checkNoCache(t, r.Header)
	}
}

func checkNoCache(t *testing.T, h http.Header) {
	t.Helper()
	if got := h.Get("Cache-Control"); !strings.Contains(got, "no-store") || !strings.Contains(got, "no-cache") {
		t.Errorf("Cache-Control %q", got)
	}
}

// Refused pixels: a 400 in JSON (the same code as for a body), nothing stored.
func TestPixelRefusals(t *testing.T) {
	e := newEnv(t)
	var many strings.Builder
	for i := range trackapi.PixelMaxParameters {
		fmt.Fprintf(&many, "&p%d=", i)
	}
	tests := []struct {
		name, query string
		code        gen.ErrorCode
	}{
		{"query over 32768 bytes", "&event_name=x&pad=" + strings.Repeat("a", trackapi.PixelQueryLimit), gen.ErrorCodePayloadTooLarge},
		{"event over 32768 bytes", "&event_name=x&pad=" + strings.Repeat("%01", 8000), gen.ErrorCodePayloadTooLarge},
		{"more than 1000 parameters", "&event_name=x" + many.String(), gen.ErrorCodeInvalidPayload},
		{"more than 10 bracket levels", "&event_name=x&a[b][c][d][e][f][g][h][i][j][k][l]=1", gen.ErrorCodeInvalidPayload},
		{"an index over 999", "&event_name=x&items[999999999][id]=1", gen.ErrorCodeInvalidPayload},
		{"brackets that do not pair up", "&event_name=x&user[id=1", gen.ErrorCodeInvalidPayload},
		{"bad URL encoding", "&event_name=x&a=%E2%28", gen.ErrorCodeInvalidPayload},
		{"event_name twice", "&event_name=x&event_name=y", gen.ErrorCodeInvalidPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.pixel(e.url("/events")+tt.query, "Accept", "image/*")
			if r.Status != http.StatusBadRequest || r.Error.Code != tt.code {
				t.Fatalf("got %d %.300s, want 400 %s", r.Status, r.Body, tt.code)
			}
			checkNoCache(t, r.Header)
		})
	}
	if n := len(e.stored()); n != 0 {
		t.Errorf("%d events stored from refused pixels", n)
	}
}

// The aliases under /cdp/events serve the POSTs as /events does, with the same limits.
func TestAliases(t *testing.T) {
	e := newEnv(t)
	for i, path := range []string{"/cdp/events", "/cdp/events/"} {
		id := fmt.Sprintf("alias-%d", i)
		r := e.post(e.url(path), mustJSON(t, validEvent(id)))
		checkCounts(t, r, 1, 1, 0, 0)
		got, codes := e.lastStored()
		if want := string(mustJSON(t, validEvent(id))); got != want || len(codes) != 0 {
			t.Errorf("%s stored %s %v, want %s", path, got, codes, want)
		}
	}
	r := e.post(e.url("/cdp/events/batch"), batchOf(t, validEvent("alias-b1"), validEvent("alias-b2")))
	checkCounts(t, r, 2, 2, 0, 0)
	if got, _ := e.lastStored(); got != string(mustJSON(t, validEvent("alias-b2"))) {
		t.Errorf("/cdp/events/batch stored %s", got)
	}
	big := `{"event_name":"x","pad":"` + strings.Repeat("a", trackapi.SingleBodyLimit) + `"}`
	if r := e.post(e.url("/cdp/events"), []byte(big)); r.Status != http.StatusBadRequest || r.Error.Code != gen.ErrorCodePayloadTooLarge {
		t.Errorf("a single body over its limit: %d %s", r.Status, r.Body)
	}
	if r := e.post(e.url("/cdp/events/batch"), []byte(`{"batch":[{"event_name":"x"},`+big+`]}`)); r.Status != http.StatusBadRequest || r.Error.Code != gen.ErrorCodeEventTooLarge {
		t.Errorf("a batch element over its limit: %d %s", r.Status, r.Body)
	}
	if n := len(e.stored()); n != 4 {
		t.Errorf("%d stored, want 4", n)
	}
}

// Every operation of openapi.yaml is routed at its path, and under each alias its
// x-trackapi-aliases names (/cdp/events...); and every alias the server serves is in the spec,
// so that the two cannot drift.
func TestEveryOperationIsRouted(t *testing.T) {
	doc, err := spec.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	routes := map[string]bool{}
	for _, r := range e.Handler.(*echo.Echo).Routes() {
		routes[r.Method+" "+r.Path] = true
	}
	aliases, _ := doc.Info.Extensions["x-trackapi-aliases"].(map[string]any)
	if len(aliases) == 0 {
		t.Fatal("openapi.yaml names no aliases (info.x-trackapi-aliases)")
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			want := []string{path}
			for alias, target := range aliases {
				if target == path {
					want = append(want, alias)
				}
			}
			for _, p := range want {
				if !routes[method+" "+p] {
					t.Errorf("%s %s (the operation at %s) is not routed", method, p, path)
				}
			}
		}
	}
	for _, base := range server.CollectBases {
		if base != "/events" && aliases[base] == nil {
			t.Errorf("%s is served but openapi.yaml's x-trackapi-aliases does not name it", base)
		}
	}
}
