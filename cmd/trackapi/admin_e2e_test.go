package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/webhook"
)

// adminServer is a first start of the real binary with what it printed once on stdout: the
// admin token (scope write) and the key of source 1 (site 1), and the generated client of the
// config API with that token, checking every answer against admin.yaml.
type adminServer struct {
	*process
	token string
	key   string
	api   *adminapi.ClientWithResponses
}

var (
	printedToken = regexp.MustCompile(`\n  (tka_[A-Za-z0-9_-]{43})\n`)
	printedKey   = regexp.MustCompile(`[?&]token=([0-9a-f-]{36})'`)
)

// startAdmin starts `trackapi serve` on a new data directory with flags, and reads the token and
// the key it prints on its first start.
func startAdmin(t *testing.T, flags ...string) *adminServer {
	t.Helper()
	p := startServerWith(t, t.TempDir(), append([]string{"--addr", "127.0.0.1:0"}, flags...)...)
	a := &adminServer{process: p}
	// stdout is copied from a pipe: it may come a moment after the log line startServer waits for.
	eventually(t, 10*time.Second, "the first start prints an admin token and a source key", func() bool {
		out := p.stdout.String()
		token, key := printedToken.FindStringSubmatch(out), printedKey.FindStringSubmatch(out)
		if token == nil || key == nil {
			return false
		}
		a.token, a.key = token[1], key[1]
		return true
	})
	if strings.Contains(p.stderr.String(), a.token) || strings.Contains(p.stderr.String(), a.key) {
		t.Fatal("the log shows the admin token or the source key")
	}
	api, err := adminapi.NewClientWithResponses(p.AdminURL, adminapi.WithHTTPClient(apitest.Client(t)),
		adminapi.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+a.token)
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	a.api = api
	return a
}

// collect posts body to the collect API's path (/events or /events/batch) with site and key, and
// returns the 200's result.
func (a *adminServer) collect(t *testing.T, path, site, key, body string) gen.CollectResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.URL+path+"?tc_s="+site, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := apitest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	var r gen.CollectResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// entries lists the inspector's entries matching params (newest first, up to 1000).
func (a *adminServer) entries(t *testing.T, params adminapi.ListInspectorEventsParams) []adminapi.InspectorSummary {
	t.Helper()
	limit := 1000
	params.Limit = &limit
	r, err := a.api.ListInspectorEventsWithResponse(context.Background(), &params)
	if err != nil || r.JSON200 == nil {
		t.Fatalf("list inspector entries: %v %s", err, r.Body)
	}
	return r.JSON200.Items
}

// testUser is a user any event may carry, so that it meets the schema.
const testUser = `"user":{"consistent_anonymous_id":"visitor-1","consent_categories":["1"]}`

// validEvent is an event with no warning: its name, id and a fixed timestamp, and the
// properties a standard event requires (openapi.yaml's StandardEvents) with the value "x".
func validEvent(name, id string, extra ...string) string {
	members := append([]string{fmt.Sprintf(`"event_name":%q`, name), testUser,
		fmt.Sprintf(`"context":{"event_id":%q,"event_timestamp":1700000000000}`, id)}, extra...)
	standard, err := ingest.StandardEvents()
	if err != nil {
		panic(err)
	}
	for _, prop := range standard[name] {
		members = append(members, fmt.Sprintf(`%q:"x"`, prop))
	}
	return "{" + strings.Join(members, ",") + "}"
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// Inspector end to end with the real binary: events sent through the collect API with a wrong
// key, without event_name, with schema warnings, with a test_code, and in a batch each show up
// in GET /api/inspector/events within a few seconds, found by the filters (outcome, code and a
// reason as code, test_code, source_id=0 for the unattributed, event_name), with the right
// outcome, codes, paths and reason, the key's prefix and never the key, the client's address with
// its last octet zeroed; GET /api/inspector/events/{id} shows the body, its address masked too.
func TestAdminInspectorEndToEnd(t *testing.T) {
	a := startAdmin(t)
	wrongKey := "ffffffff-1111-4222-8333-444444444444"

	if r := a.collect(t, "/events", "1", wrongKey, validEvent("login", "wk-1")); r.Rejected != 1 || r.Errors[0].Code != gen.InvalidSource {
		t.Fatalf("wrong key: %+v", r)
	}
	if r := a.collect(t, "/events", "1", a.key, `{"page_type":"home",`+testUser+`,"context":{"event_id":"ne-1"}}`); r.Rejected != 1 {
		t.Fatalf("no event_name: %+v", r)
	}
	warned := a.collect(t, "/events", "1", a.key, `{"event_name":"signup","context":{"event_id":"sw-1","device":{"ip":"10.20.30.40"}}}`)
	if warned.Accepted != 1 || len(warned.Warnings) == 0 {
		t.Fatalf("schema warnings: %+v", warned)
	}
	if r := a.collect(t, "/events", "1", a.key, validEvent("purchase", "tc-1", `"test_code":"QA-7"`)); r.Accepted != 1 {
		t.Fatalf("test_code: %+v", r)
	}
	batch := `{"batch":[` + validEvent("page_view", "b-1") + `,{"page_type":"cart"},` + validEvent("page_view", "b-1") + `]}`
	if r := a.collect(t, "/events/batch", "1", a.key, batch); r.Accepted != 1 || r.Rejected != 1 || r.Duplicates != 1 {
		t.Fatalf("batch: %+v", r)
	}

	// The capture writes off the commit path: the seven entries come within a few seconds.
	var all []adminapi.InspectorSummary
	eventually(t, 10*time.Second, "seven inspector entries", func() bool {
		all = a.entries(t, adminapi.ListInspectorEventsParams{})
		return len(all) >= 7
	})
	if len(all) != 7 {
		t.Fatalf("%d entries, want 7: %+v", len(all), all)
	}
	for _, e := range all {
		if str(e.ClientIp) != "127.0.0.0" {
			t.Errorf("entry %d: client_ip %q, want 127.0.0.0 (the last octet zeroed)", e.Id, str(e.ClientIp))
		}
		if e.SourceId != 0 && (e.SourceId != 1 || str(e.KeyPrefix) != a.key[:8] || e.Site != "1") {
			t.Errorf("entry %d: source %d, key prefix %q, site %q; want source 1 and its key's prefix", e.Id, e.SourceId, str(e.KeyPrefix), e.Site)
		}
	}

	codes := func(e adminapi.InspectorSummary) string { return strings.Join(e.Codes, ",") }
	paths := func(e adminapi.InspectorSummary) []string {
		var out []string
		for _, p := range e.Problems {
			out = append(out, p.Path)
		}
		return out
	}
	one := func(what string, params adminapi.ListInspectorEventsParams) adminapi.InspectorSummary {
		t.Helper()
		list := a.entries(t, params)
		if len(list) != 1 {
			t.Fatalf("%s: %d entries, want 1: %+v", what, len(list), list)
		}
		return list[0]
	}
	ptr := func(s string) *string { return &s }
	rejected, accepted := adminapi.InspectorOutcomeRejected, adminapi.InspectorOutcomeAccepted
	var unattributed int64

	// The wrong key: no source, the site and the key's prefix only, reason unknown_key.
	wrong := one("source_id=0", adminapi.ListInspectorEventsParams{SourceId: &unattributed})
	if wrong.Outcome != rejected || codes(wrong) != "invalid_source" || str(wrong.Reason) != "unknown_key" ||
		str(wrong.KeyPrefix) != "ffffffff" || wrong.Site != "1" || str(wrong.EventName) != "login" {
		t.Errorf("wrong key's entry: %+v", wrong)
	}
	if byReason := one("code=unknown_key", adminapi.ListInspectorEventsParams{Code: ptr("unknown_key")}); byReason.Id != wrong.Id {
		t.Errorf("code=unknown_key found entry %d, want %d", byReason.Id, wrong.Id)
	}
	// Without event_name, alone and in the batch.
	missing := a.entries(t, adminapi.ListInspectorEventsParams{Code: ptr("missing_event_name"), Outcome: &rejected})
	if len(missing) != 2 {
		t.Fatalf("code=missing_event_name: %+v", missing)
	}
	for _, e := range missing {
		if e.SourceId != 1 || !slices.Equal(paths(e), []string{"/event_name"}) || e.EventName != nil || e.Reason != nil {
			t.Errorf("missing event_name's entry: %+v", e)
		}
	}
	if missing[0].BatchIndex == nil || *missing[0].BatchIndex != 1 || missing[1].BatchIndex != nil {
		t.Errorf("batch_index of the missing names (newest first): %v, %v; want 1 and none", missing[0].BatchIndex, missing[1].BatchIndex)
	}
	// The schema warnings: the entry's problems are the collect answer's warnings.
	signup := one("code=schema_violation", adminapi.ListInspectorEventsParams{Code: ptr("schema_violation")})
	if signup.Outcome != adminapi.InspectorOutcomeWarned || str(signup.EventName) != "signup" || str(signup.EventId) != "sw-1" {
		t.Errorf("warned entry: %+v", signup)
	}
	var wantProblems []adminapi.Problem
	for _, w := range warned.Warnings {
		wantProblems = append(wantProblems, adminapi.Problem{Code: string(w.Code), Path: w.Path, Message: w.Message})
	}
	if !slices.Equal(signup.Problems, wantProblems) || !slices.Contains(paths(signup), "/user") {
		t.Errorf("warned entry's problems %+v, want the collect answer's %+v (with /user)", signup.Problems, wantProblems)
	}
	full, err := a.api.GetInspectorEventWithResponse(context.Background(), signup.Id)
	if err != nil || full.JSON200 == nil {
		t.Fatalf("get entry %d: %v %s", signup.Id, err, full.Body)
	}
	body, _ := json.Marshal(full.JSON200.Body)
	if !strings.Contains(string(body), `"ip":"10.20.30.0"`) || strings.Contains(string(full.Body), "10.20.30.40") ||
		!strings.Contains(string(body), `"event_id":"sw-1"`) {
		t.Errorf("the warned entry's body, as stored with the device address masked: %s", body)
	}
	// The test code.
	tc := one("test_code=QA-7", adminapi.ListInspectorEventsParams{TestCode: ptr("QA-7")})
	if tc.Outcome != accepted || str(tc.EventName) != "purchase" || str(tc.TestCode) != "QA-7" || len(tc.Codes) != 0 {
		t.Errorf("test_code entry: %+v", tc)
	}
	// The batch's page_views: accepted at index 0, duplicate at index 2.
	views := a.entries(t, adminapi.ListInspectorEventsParams{EventName: ptr("page_view")})
	if len(views) != 2 || views[0].Outcome != adminapi.InspectorOutcomeDuplicate || views[1].Outcome != accepted ||
		views[0].BatchIndex == nil || *views[0].BatchIndex != 2 || views[1].BatchIndex == nil || *views[1].BatchIndex != 0 {
		t.Errorf("event_name=page_view: %+v", views)
	}
	if n := len(a.entries(t, adminapi.ListInspectorEventsParams{Outcome: &accepted, SourceId: ptr64(1)})); n != 2 {
		t.Errorf("outcome=accepted&source_id=1: %d entries, want 2 (purchase, page_view)", n)
	}
	// No key anywhere in what the inspector shows.
	for _, e := range all {
		r, err := a.api.GetInspectorEventWithResponse(context.Background(), e.Id)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("get entry %d: %v %s", e.Id, err, r.Body)
		}
		if strings.Contains(string(r.Body), a.key) || strings.Contains(string(r.Body), wrongKey) || strings.Contains(string(r.Body), "127.0.0.1") {
			t.Errorf("entry %d shows a key or the unmasked address: %s", e.Id, r.Body)
		}
	}
	if r, _ := a.api.GetInspectorEventWithResponse(context.Background(), 999999); r.JSON404 == nil {
		t.Errorf("an unknown entry: %d %s, want 404", r.StatusCode(), r.Body)
	}
}

func ptr64(n int64) *int64 { return &n }

// Sampling keeps errors visible under a flood: 300 valid page_views of source 1 in batches, with
// 3 page_views rejected (the source's key with another site) between them. Every rejected one is
// listed; of the accepted ones, at most the budget of their (source, event name) is: 6 a minute
// plus 30 an hour. The data-quality counts stay exact.
func TestAdminInspectorSamplingKeepsErrors(t *testing.T) {
	a := startAdmin(t)
	first := time.Now()
	for b := range 3 {
		var events []string
		for i := range 100 {
			events = append(events, validEvent("page_view", fmt.Sprintf("flood-%d-%d", b, i)))
		}
		if r := a.collect(t, "/events/batch", "1", a.key, `{"batch":[`+strings.Join(events, ",")+`]}`); r.Accepted != 100 {
			t.Fatalf("batch %d: %+v", b, r)
		}
		r := a.collect(t, "/events", "2", a.key, validEvent("page_view", fmt.Sprintf("mismatch-%d", b)))
		if r.Rejected != 1 || r.Errors[0].Code != gen.InvalidSource {
			t.Fatalf("another site's event: %+v", r)
		}
	}
	last := time.Now()
	name, source := "page_view", int64(1)
	rejected, accepted := adminapi.InspectorOutcomeRejected, adminapi.InspectorOutcomeAccepted
	var errs []adminapi.InspectorSummary
	eventually(t, 10*time.Second, "the three rejected page_views are listed", func() bool {
		errs = a.entries(t, adminapi.ListInspectorEventsParams{SourceId: &source, EventName: &name, Outcome: &rejected})
		return len(errs) >= 3
	})
	if len(errs) != 3 {
		t.Fatalf("%d rejected entries, want 3", len(errs))
	}
	for _, e := range errs {
		if str(e.Reason) != "site_mismatch" || e.Site != "2" || strings.Join(e.Codes, ",") != "invalid_source" {
			t.Errorf("rejected entry: %+v", e)
		}
	}
	// Entries are written in the order they were captured: the last request's is written, so
	// are the batches'.
	kept := len(a.entries(t, adminapi.ListInspectorEventsParams{SourceId: &source, EventName: &name, Outcome: &accepted}))
	minutes := int(last.Unix()/60 - first.Unix()/60 + 1) // each minute the sends touched has its 6
	budget := 6*minutes + 30
	t.Logf("300 accepted page_views in %s: %d entries kept (budget %d), 3 of 3 rejected kept", last.Sub(first).Round(time.Millisecond), kept, budget)
	if kept < 6 || kept > budget {
		t.Errorf("%d accepted entries kept of 300, want 6 to %d", kept, budget)
	}
	// The counts are exact, not sampled.
	eventually(t, 10*time.Second, "the data-quality counts of the flood", func() bool {
		r, err := a.api.GetSourceDataQualityWithResponse(context.Background(), 1, nil)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("data quality: %v %s", err, r.Body)
		}
		for _, q := range r.JSON200.EventNames {
			if q.EventName == "page_view" {
				return q.Collected == 300 && q.Rejected == 3
			}
		}
		return false
	})
}

// Key rotation through the config API: a source created with POST /api/sources, its key rotated
// with a 2 s overlap; the old key works during the overlap, and after it (and the server's 2 s
// cache) its events are rejected as invalid_source, shown in the inspector with reason
// key_expired under the source, found by code=invalid_source and by code=key_expired.
func TestAdminKeyRotationThroughAPI(t *testing.T) {
	a := startAdmin(t)
	c := context.Background()
	name := "rotating"
	created, err := a.api.CreateSourceWithResponse(c, adminapi.CreateSourceJSONRequestBody{Site: "77", Name: &name})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("create source: %v %s", err, created.Body)
	}
	src, old := created.JSON201.Source, created.JSON201.Key.Key
	n := 0
	if !works(t, a.URL, "77", old, &n) {
		t.Fatal("a source made through the API does not take its key")
	}
	overlap := 2
	rotatedAt := time.Now()
	rotated, err := a.api.RotateSourceKeyWithResponse(c, src.Id, adminapi.RotateSourceKeyJSONRequestBody{ExpirePreviousAfterSeconds: &overlap})
	if err != nil || rotated.JSON201 == nil {
		t.Fatalf("rotate: %v %s", err, rotated.Body)
	}
	key := *rotated.JSON201
	if key.Key == old || key.PreviousExpireAt == nil || key.PreviousExpireAt.Sub(key.CreatedAt) != 2*time.Second {
		t.Fatalf("rotated key %+v", key)
	}
	// The old key's overlap counts from the server's clock, which reads after rotatedAt.
	stillWorks := works(t, a.URL, "77", old, &n)
	if !stillWorks && time.Since(rotatedAt) < 2*time.Second {
		t.Fatal("the previous key stopped during its overlap")
	}
	if !works(t, a.URL, "77", key.Key, &n) {
		t.Fatal("the new key does not work at once")
	}
	eventually(t, 10*time.Second, "the previous key expires", func() bool { return !works(t, a.URL, "77", old, &n) })
	if since := time.Since(rotatedAt); since < 2*time.Second {
		t.Errorf("the previous key stopped %s after the rotation, before its 2 s overlap", since)
	}
	if !works(t, a.URL, "77", key.Key, &n) {
		t.Fatal("the new key stopped with the old one")
	}

	code := "invalid_source"
	var refused []adminapi.InspectorSummary
	eventually(t, 10*time.Second, "the expired key's rejection in the inspector", func() bool {
		refused = a.entries(t, adminapi.ListInspectorEventsParams{SourceId: &src.Id, Code: &code})
		return len(refused) > 0
	})
	for _, e := range refused {
		if str(e.Reason) != "key_expired" || str(e.KeyPrefix) != old[:8] || e.Outcome != adminapi.InspectorOutcomeRejected || e.Site != "77" {
			t.Errorf("a rejection of the expired key: %+v", e)
		}
	}
	// Listed later, code=key_expired finds at least the same entries (more may have been written
	// since), all of the expired key.
	reason := "key_expired"
	byReason := map[int64]bool{}
	for _, e := range a.entries(t, adminapi.ListInspectorEventsParams{SourceId: &src.Id, Code: &reason}) {
		byReason[e.Id] = true
		if str(e.Reason) != "key_expired" || str(e.KeyPrefix) != old[:8] {
			t.Errorf("code=key_expired listed %+v", e)
		}
	}
	for _, e := range refused {
		if !byReason[e.Id] {
			t.Errorf("code=key_expired does not list entry %d", e.Id)
		}
	}
	keys, err := a.api.ListSourceKeysWithResponse(c, src.Id)
	if err != nil || keys.JSON200 == nil || len(keys.JSON200.Items) != 2 || !keys.JSON200.Items[0].Live || keys.JSON200.Items[1].Live {
		t.Errorf("keys after the overlap: %v %s", err, keys.Body)
	}
}

// hook is a webhook receiver on 127.0.0.1 that answers 400 to a request with an event named
// "bad" (unless told to take them), 503 to its first fail503 other requests, and 200 otherwise;
// it checks every request's signature with the secret the config API gave.
type hook struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	secret      string
	fail503     int
	acceptBad   bool
	answered503 int
	accepted    map[string]string // envelope id → event name, of the events answered 200
	signatures  []string          // the Webhook-Signature headers received
	unsigned    int
}

// badAnswer is the body of the receiver's 400, which the issue samples must show as it is.
const badAnswer = `{"error":"the test receiver refuses events named bad"}`

func newHook(t *testing.T, fail503 int) *hook {
	h := &hook{t: t, fail503: fail503, accepted: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	var payload struct {
		Events []struct {
			ID    string `json:"id"`
			Event struct {
				Name string `json:"event_name"`
			} `json:"event"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		h.t.Errorf("webhook body: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.signatures = append(h.signatures, req.Header.Get(webhook.HeaderSignature))
	if webhook.Verify(h.secret, req.Header, body, time.Now(), webhook.DefaultTolerance) != nil {
		h.unsigned++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	bad := false
	for _, e := range payload.Events {
		bad = bad || e.Event.Name == "bad"
	}
	switch {
	case bad && !h.acceptBad:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, badAnswer)
		return
	case h.answered503 < h.fail503:
		h.answered503++
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "busy, try later")
		return
	}
	for _, e := range payload.Events {
		h.accepted[e.ID] = e.Event.Name
	}
	w.WriteHeader(http.StatusOK)
}

func (h *hook) set(f func(h *hook)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(h)
}

// count returns how many events of name the receiver took.
func (h *hook) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, got := range h.accepted {
		if got == name {
			n++
		}
	}
	return n
}

// The delivery API against the real delivery engine: a webhook made through the config API
// delivers to a receiver that answers 503 to its first requests and 400 to events named "bad".
// The stats count every outcome, the issues group the 400s (with the bad events' name) and the
// 503s, the samples show the exchange with the signature and the URL's secret redacted, the bad
// events are dead letters; once the receiver takes them, a replay delivers them and empties the
// list; a purge deletes dead letters without sending them.
func TestAdminDeliveryAPI(t *testing.T) {
	a := startAdmin(t, "--delivery-timeout", "2s", "--delivery-backoff", "50ms", "--delivery-backoff-max", "200ms")
	c := context.Background()
	const fail503 = 3
	h := newHook(t, fail503)
	url := h.srv.URL + "/in?auth=hook-secret"
	allow, batchSize, sources := true, 1, []int64{1}
	created, err := a.api.CreateDestinationWithResponse(c, adminapi.CreateDestinationJSONRequestBody{
		Name: "faulty", Type: adminapi.Webhook, Url: &url, AllowPrivate: &allow, BatchSize: &batchSize, Sources: &sources})
	if err != nil || created.JSON201 == nil || created.JSON201.SigningSecret == nil {
		t.Fatalf("create destination: %v %s", err, created.Body)
	}
	dest := created.JSON201.Destination.Id
	h.set(func(h *hook) { h.secret = *created.JSON201.SigningSecret })

	// Four good events first, so that the first requests (four at once) are good ones.
	names := []string{"good", "good", "good", "good", "bad", "good", "bad", "good", "bad", "good"}
	var events []string
	for i, name := range names {
		events = append(events, validEvent(name, fmt.Sprintf("d-%d", i)))
	}
	if r := a.collect(t, "/events/batch", "1", a.key, `{"batch":[`+strings.Join(events, ",")+`]}`); r.Accepted != len(names) {
		t.Fatalf("send: %+v", r)
	}
	stats := func() adminapi.DeliveryStats {
		t.Helper()
		r, err := a.api.GetDeliveryStatsWithResponse(c, dest, nil)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("delivery stats: %v %s", err, r.Body)
		}
		return *r.JSON200
	}
	var st adminapi.DeliveryStats
	eventually(t, 30*time.Second, "7 good events delivered and 3 bad ones rejected", func() bool {
		st = stats()
		return h.count("good") == 7 && st.Total.Delivered+st.Total.DeliveredAfterRetry == 7 && st.Total.Rejected == 3
	})
	h.mu.Lock()
	answered503, unsigned := h.answered503, h.unsigned
	signatures := slices.Clone(h.signatures)
	h.mu.Unlock()
	if unsigned > 0 {
		t.Errorf("%d requests not signed with the secret the config API gave", unsigned)
	}
	if answered503 != fail503 || st.Total.Retried != int64(answered503) || st.Total.DeliveredAfterRetry < 1 ||
		st.Total.Failed != 0 || st.State.DeadLetters != 3 || st.State.Retries != 0 {
		t.Errorf("after %d answers 503: stats %+v, state %+v", answered503, st.Total, st.State)
	}
	var bucketDelivered int64
	for _, b := range st.Buckets {
		bucketDelivered += b.Counts.Delivered + b.Counts.DeliveredAfterRetry
	}
	if bucketDelivered != 7 {
		t.Errorf("the buckets count %d delivered, the total 7", bucketDelivered)
	}

	issues, err := a.api.ListDeliveryIssuesWithResponse(c, dest, nil)
	if err != nil || issues.JSON200 == nil {
		t.Fatalf("issues: %v %s", err, issues.Body)
	}
	var rejectedIssue, errorIssue *adminapi.DeliveryIssue
	for i, is := range issues.JSON200.Items {
		switch {
		case is.Type == adminapi.DeliveryIssueTypeRejected && is.Reason == "http_400":
			rejectedIssue = &issues.JSON200.Items[i]
		case is.Type == adminapi.DeliveryIssueTypeError && is.Reason == "http_503":
			errorIssue = &issues.JSON200.Items[i]
		}
	}
	if rejectedIssue == nil || rejectedIssue.Count != 3 || !slices.Equal(rejectedIssue.EventNames, []string{"bad"}) {
		t.Fatalf("the rejected issue: %+v in %s", rejectedIssue, issues.Body)
	}
	if errorIssue == nil || errorIssue.Count != int64(answered503) || !slices.Equal(errorIssue.EventNames, []string{"good"}) {
		t.Errorf("the error issue: %+v in %s", errorIssue, issues.Body)
	}
	typ := adminapi.ListDeliveryIssuesParamsTypeRejected
	if only, _ := a.api.ListDeliveryIssuesWithResponse(c, dest, &adminapi.ListDeliveryIssuesParams{Type: &typ}); only.JSON200 == nil ||
		len(only.JSON200.Items) != 1 || only.JSON200.Items[0].Id != rejectedIssue.Id {
		t.Errorf("type=rejected: %s", only.Body)
	}

	samples, err := a.api.ListIssueSamplesWithResponse(c, dest, rejectedIssue.Id)
	if err != nil || samples.JSON200 == nil || len(samples.JSON200.Items) == 0 {
		t.Fatalf("samples: %v %s", err, samples.Body)
	}
	for _, s := range samples.JSON200.Items {
		if !strings.Contains(s.Request.Body, `"event_name":"bad"`) || s.Response == nil || s.Response.Status != 400 || s.Response.Body != badAnswer {
			t.Errorf("sample of the rejected issue: request body %.200s, response %+v", s.Request.Body, s.Response)
		}
		if sig := s.Request.Headers[http.CanonicalHeaderKey(webhook.HeaderSignature)]; sig != "REDACTED" {
			t.Errorf("the sample's %s header is %q, want it redacted", webhook.HeaderSignature, sig)
		}
		if strings.Contains(s.Request.Url, "hook-secret") || s.Request.Method != http.MethodPost {
			t.Errorf("the sample's request: %s %s", s.Request.Method, s.Request.Url)
		}
	}
	for _, sig := range signatures {
		if sig == "" || strings.Contains(string(samples.Body), sig) {
			t.Errorf("a sample shows a signature that was sent: %s", samples.Body)
		}
	}

	letters := func(params *adminapi.ListDeadLettersParams) adminapi.DeadLetterPage {
		t.Helper()
		r, err := a.api.ListDeadLettersWithResponse(c, dest, params)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("dead letters: %v %s", err, r.Body)
		}
		return *r.JSON200
	}
	dead := letters(nil)
	if len(dead.Items) != 3 {
		t.Fatalf("%d dead letters, want 3: %+v", len(dead.Items), dead.Items)
	}
	for _, d := range dead.Items {
		if d.Kind != adminapi.DeadLetterKindRejected || d.Reason != "http_400" || d.EventName != "bad" || d.Attempts < 1 || !strings.Contains(d.Error, "400") {
			t.Errorf("dead letter %+v", d)
		}
	}
	if dead.Next != nil {
		t.Errorf("the only page of dead letters has a next: %q", *dead.Next)
	}
	// Two a page: a first page with a next, then the last with one and none (also when the page
	// size is exactly what is left: a page with a next is not the last).
	for _, size := range []int{2, 3} {
		page := letters(&adminapi.ListDeadLettersParams{Limit: &size})
		switch {
		case size == 3 && (len(page.Items) != 3 || page.Next != nil):
			t.Errorf("dead letters three a page: %d items, next %q; want 3 and no next", len(page.Items), str(page.Next))
		case size == 2 && (len(page.Items) != 2 || page.Next == nil):
			t.Errorf("dead letters two a page: %d items, next %q; want 2 and a next", len(page.Items), str(page.Next))
		case size == 2:
			last := letters(&adminapi.ListDeadLettersParams{Limit: &size, After: page.Next})
			if len(last.Items) != 1 || last.Next != nil || last.Items[0].Seq <= page.Items[1].Seq {
				t.Errorf("the second page of two: %+v", last)
			}
		}
	}

	// The receiver takes them now: a replay delivers them and empties the list.
	h.set(func(h *hook) { h.acceptBad = true })
	replayed, err := a.api.ReplayDeadLettersWithResponse(c, dest, adminapi.ReplayDeadLettersJSONRequestBody{})
	if err != nil || replayed.JSON200 == nil || replayed.JSON200.Count != 3 {
		t.Fatalf("replay: %v %s", err, replayed.Body)
	}
	before := st.Total.DeliveredAfterRetry
	eventually(t, 30*time.Second, "the replayed dead letters are delivered", func() bool {
		return h.count("bad") == 3 && len(letters(nil).Items) == 0
	})
	eventually(t, 10*time.Second, "the replay counted as delivered after retry", func() bool {
		st = stats()
		return st.Total.DeliveredAfterRetry == before+3
	})
	if st.Total.Rejected != 3 || st.State.DeadLetters != 0 {
		t.Errorf("after the replay: %+v, state %+v", st.Total, st.State)
	}

	// A purge deletes dead letters without sending them.
	h.set(func(h *hook) { h.acceptBad = false })
	more := `{"batch":[` + validEvent("bad", "d-10") + "," + validEvent("bad", "d-11") + `]}`
	if r := a.collect(t, "/events/batch", "1", a.key, more); r.Accepted != 2 {
		t.Fatalf("send: %+v", r)
	}
	eventually(t, 30*time.Second, "two new dead letters", func() bool { return len(letters(nil).Items) == 2 })
	purged, err := a.api.PurgeDeadLettersWithResponse(c, dest, nil)
	if err != nil || purged.JSON200 == nil || purged.JSON200.Count != 2 {
		t.Fatalf("purge: %v %s", err, purged.Body)
	}
	if n := len(letters(nil).Items); n != 0 {
		t.Errorf("%d dead letters after the purge", n)
	}
	got, err := a.api.GetDestinationWithResponse(c, dest)
	if err != nil || got.JSON200 == nil || got.JSON200.State.DeadLetters != 0 || got.JSON200.State.Retries != 0 {
		t.Errorf("destination after the purge: %v %s", err, got.Body)
	}
	if h.count("bad") != 3 {
		t.Errorf("the receiver took %d bad events, want the 3 replayed (not the purged)", h.count("bad"))
	}
}

// /metrics is served on the admin listener only, and counts the public listener's traffic;
// /healthz and /readyz on both.
func TestAdminMetricsAndHealth(t *testing.T) {
	a := startAdmin(t)
	n := 0
	if !works(t, a.URL, "1", a.key, &n) || works(t, a.URL, "1", "0b5d3c1a-0000-4000-8000-000000000000", &n) {
		t.Fatal("the first source's key")
	}
	checked := apitest.Client(t)
	resp, err := checked.Get(a.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics on the admin listener: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for series, want := range map[string]float64{
		`trackapi_source_authentications_total{result="ok"}`:          1,
		`trackapi_source_authentications_total{result="unknown_key"}`: 1,
		`trackapi_requests_total{endpoint="single",outcome="ok"}`:     2,
	} {
		if got := metricValue(t, string(page), series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The public listener has no /metrics; it is outside its spec, so a plain client asks.
	resp, err = http.Get(a.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "trackapi_") {
		t.Errorf("GET /metrics on the public listener: %d %.200s, want 404", resp.StatusCode, body)
	}
	for _, base := range []string{a.URL, a.AdminURL} {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := checked.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s%s: %d", base, path, resp.StatusCode)
			}
		}
	}
}

// The live stream with the real binary: an event sent comes as an entry within seconds; after a
// disconnection, a stream resumed with Last-Event-ID gets first exactly the two entries written
// meanwhile; a SIGTERM ends an open stream (EOF, after a comment saying why) and the process
// exits 0 without the drain running out its 30 s.
func TestAdminInspectorStreamResumesAndEndsOnSIGTERM(t *testing.T) {
	a := startAdmin(t)
	client := apitest.StreamClient(t)
	open := func(headers ...string) *apitest.Stream {
		t.Helper()
		s, status, body := apitest.OpenStream(t, client, a.AdminURL+"/api/inspector/stream",
			append([]string{"Authorization", "Bearer " + a.token}, headers...)...)
		if s == nil {
			t.Fatalf("stream: %d %s", status, body)
		}
		if f, ok := s.Next(10 * time.Second); !ok || f.Comment == "" {
			t.Fatalf("the stream's first line: %+v", f)
		}
		return s
	}
	entry := func(s *apitest.Stream) adminapi.InspectorEntry {
		t.Helper()
		f := s.NextEvent(10 * time.Second)
		var e adminapi.InspectorEntry
		if f.Event != "entry" || json.Unmarshal([]byte(f.Data), &e) != nil || f.ID != fmt.Sprint(e.Id) {
			t.Fatalf("stream event %+v, want an entry with its id", f)
		}
		return e
	}
	send := func(id string) {
		t.Helper()
		if r := a.collect(t, "/events", "1", a.key, validEvent("live", id)); r.Accepted != 1 {
			t.Fatalf("send %s: %+v", id, r)
		}
	}

	s := open()
	send("live-1")
	first := entry(s)
	if str(first.EventId) != "live-1" || first.Outcome != adminapi.InspectorOutcomeAccepted || first.Body == nil {
		t.Fatalf("the live entry: %+v", first)
	}
	s.Close()
	send("live-2")
	send("live-3")
	resumed := open("Last-Event-ID", fmt.Sprint(first.Id))
	for _, want := range []string{"live-2", "live-3"} {
		if got := entry(resumed); str(got.EventId) != want || got.Id <= first.Id {
			t.Fatalf("resumed after %d: entry %d %q, want %s", first.Id, got.Id, str(got.EventId), want)
		}
	}

	// SIGTERM with the stream open.
	stopped := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- a.stop(t, syscall.SIGTERM) }()
	comments, ended := resumed.Ended(25 * time.Second)
	if !ended {
		t.Fatal("the stream is still open 25 s after SIGTERM")
	}
	if len(comments) == 0 || !strings.Contains(comments[len(comments)-1], "shutting down") {
		t.Errorf("the stream ended with comments %q, want the last to say the server is shutting down", comments)
	}
	if err := <-exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, a.stderr)
	}
	took := time.Since(stopped)
	t.Logf("SIGTERM with an open stream: the process exited after %s", took.Round(time.Millisecond))
	if log := a.stderr.String(); strings.Contains(log, "did not finish in time") || !strings.Contains(log, "msg=stopped") {
		t.Errorf("the drain ran out or the stop was not clean:\n%s", log)
	}
	if took >= 30*time.Second {
		t.Errorf("the process took %s to exit: the stream held the drain", took)
	}
}
