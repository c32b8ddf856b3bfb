package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
)

// Send fills a UUIDv7 event_id and an epoch-ms timestamp, leaves the caller's event alone, and
// the server stores the event once; sending the same bytes again is a duplicate, not a second copy.
func TestSendFillsIDAndTimestampAndStoresOnce(t *testing.T) {
	e := newEnv(t)
	c := e.client("")
	ctx := context.Background()
	ev := client.PageView("home", client.NewUser("anon-1", "1", "3"))
	before := time.Now().UnixMilli()
	r, err := c.Send(ctx, ev)
	after := time.Now().UnixMilli()
	if err != nil || r.Status != client.StatusDelivered {
		t.Fatalf("Send: %+v, %v", r, err)
	}
	if id, err := uuid.Parse(r.EventID); err != nil || id.Version() != 7 {
		t.Errorf("event id %q is not a UUIDv7 (%v)", r.EventID, err)
	}
	if ev.Context.EventId != "" || ev.Context.EventTimestamp != 0 {
		t.Errorf("Send changed the caller's event: %+v", ev.Context)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("a page_view from the constructor got warnings: %+v", r.Warnings)
	}
	stored := e.storedEvents()
	if len(stored) != 1 {
		t.Fatalf("%d events stored, want 1", len(stored))
	}
	var back gen.Event
	if err := json.Unmarshal(stored[0].Event, &back); err != nil {
		t.Fatal(err)
	}
	if ts := int64(back.Context.EventTimestamp); ts < before || ts > after || back.Context.EventId != r.EventID {
		t.Errorf("stored context %+v; want id %s and a timestamp in [%d, %d]", back.Context, r.EventID, before, after)
	}
	if !bytes.Equal(stored[0].Event, r.Event) {
		t.Errorf("stored %s, sent %s", stored[0].Event, r.Event)
	}

	again, err := c.SendRawBatch(ctx, [][]byte{r.Event})
	if err != nil || again.Duplicates != 1 || again.Accepted != 0 || again.Results[0].Status != client.StatusDelivered {
		t.Fatalf("sending the same event again: %+v, %v", again, err)
	}
	e.exactlyOnce([]string{r.EventID})
}

// paddedRaw is a raw event of exactly size bytes, with the given id and, when withUser is false,
// no user (which the server stores with a schema warning).
func paddedRaw(t testing.TB, id string, size int, withUser bool) []byte {
	t.Helper()
	user := `"user":{"consistent_anonymous_id":"a"},`
	if !withUser {
		user = ""
	}
	head := fmt.Sprintf(`{"event_name":"pad",%s"context":{"event_id":%q,"event_timestamp":1},"pad":"`, user, id)
	pad := size - len(head) - len(`"}`)
	if pad < 0 {
		t.Fatalf("size %d is too small", size)
	}
	raw := head + strings.Repeat("x", pad) + `"}`
	if len(raw) != size {
		t.Fatalf("built %d bytes, want %d", len(raw), size)
	}
	return []byte(raw)
}

// A SendBatch spread over several requests maps the server's warnings (whose index is the
// position in one request) back to the caller's indices.
func TestSendBatchMapsWarningsToCallerIndices(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	var events [][]byte
	var want []string
	for i := range 60 {
		id := fmt.Sprintf("w-%d", i)
		events = append(events, paddedRaw(t, id, 20000, i != 3 && i != 40))
		want = append(want, id)
	}
	res, err := c.SendRawBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 3 || len(f.seen()) != 3 {
		t.Errorf("%d requests (%d seen), want 3 (25 events of 20000 bytes fit in 512000)", res.Requests, len(f.seen()))
	}
	for i, r := range res.Results {
		if r.Index != i || r.Status != client.StatusDelivered || r.EventID != want[i] {
			t.Errorf("result %d: %+v", i, r)
		}
		if (i == 3 || i == 40) != (len(r.Warnings) > 0) {
			t.Errorf("event %d has warnings %+v", i, r.Warnings)
		}
		for _, w := range r.Warnings {
			if w.Index != i || w.Code != gen.SchemaViolation {
				t.Errorf("event %d: warning %+v, want index %d", i, w, i)
			}
		}
	}
	if res.Accepted != 60 || res.Delivered() != 60 {
		t.Errorf("counts %+v", res)
	}
	e.exactlyOnce(want)
}

// Per-event rejections in a 200 are mapped to the caller's events across requests. The trackapi
// server has no per-event rejection a correct client can trigger (the client refuses those events
// itself), so this server rejects the second element of every batch.
func TestSendBatchMapsRejectionsToCallerIndices(t *testing.T) {
	rejecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Batch []json.RawMessage }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("decoding the batch: %v", err)
		}
		n := len(body.Batch)
		writeJSON(w, http.StatusOK, gen.CollectResult{
			Received: n, Accepted: n - 1, Rejected: 1, Warnings: []gen.Problem{},
			Errors: []gen.Problem{{Index: 1, Code: gen.MissingEventName, Path: "/event_name", Message: "injected"}},
		})
	}))
	defer rejecting.Close()
	c, err := client.New(rejecting.URL, "29", "key", client.WithHTTPClient(apitest.Client(t)), client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	var events [][]byte
	for i := range 60 {
		events = append(events, paddedRaw(t, fmt.Sprintf("r-%d", i), 20000, true))
	}
	res, err := c.SendRawBatch(context.Background(), events)
	if !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("err = %v, want ErrNotDelivered", err)
	}
	// Requests hold events 0–24, 25–49 and 50–59: their second elements are 1, 26 and 51.
	for i, r := range res.Results {
		rejected := i == 1 || i == 26 || i == 51
		if rejected != (r.Status == client.StatusRejected) {
			t.Errorf("event %d: %v", i, r.Status)
		}
		var re *client.RejectedError
		if rejected && (r.Code != string(gen.MissingEventName) || !errors.As(r.Err, &re) || re.Problem.Index != i) {
			t.Errorf("event %d: code %q, err %v", i, r.Code, r.Err)
		}
	}
	if res.Rejected != 3 || res.Accepted != 57 || res.Failed != 0 {
		t.Errorf("counts %+v", res)
	}
}

// A wrong key gets every event rejected as invalid_source in one request: a 200 is final, never
// retried, and the error says the events were not delivered.
func TestWrongKeyIsRejectedNotRetried(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c, err := client.New(f.URL, e.Site, "not-the-key", client.WithLogger(quiet), client.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SendBatch(context.Background(), searches("k", 5))
	if !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("err = %v, want ErrNotDelivered", err)
	}
	for _, r := range res.Results {
		if r.Status != client.StatusRejected || r.Code != string(gen.InvalidSource) {
			t.Errorf("result %+v", r)
		}
	}
	if n := len(f.seen()); n != 1 || res.Requests != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if n := len(e.stored()); n != 0 {
		t.Errorf("%d events stored with a wrong key", n)
	}
}

// The constructors make events with their required properties, which the server stores without
// a single schema warning.
func TestStandardEventsAreStoredWithoutWarnings(t *testing.T) {
	e := newEnv(t)
	c := e.client("")
	user := client.NewUser("anon-7", "1", "2")
	items := []client.Item{{ID: "SKU-1", Quantity: 2, Product: client.Product{ID: "P-1", Name: "Blue runner", Price: 49.92, Brand: "Stride"}}}
	cases := []struct {
		event    gen.Event
		name     string
		required []string
	}{
		{client.PageView("product", user), "page_view", []string{"page_type"}},
		{client.Search("rain jacket", user), "search", []string{"search_term"}},
		{client.ViewItem(99.84, "EUR", items, user), "view_item", []string{"value", "currency", "items"}},
		{client.AddToCart(99.84, "EUR", items, user), "add_to_cart", []string{"value", "currency", "items"}},
		{client.BeginCheckout(105.84, 88.2, "EUR", items, user), "begin_checkout", []string{"value", "revenue", "currency", "items"}},
		{client.Purchase("ORD-1", "online", 105.84, 88.2, "EUR", client.PaymentCard, client.OrderInProgress, items, user), "purchase",
			[]string{"id", "type", "value", "revenue", "currency", "payment_method", "status", "items"}},
		{client.Refund("ORD-1", "online", 105.84, 88.2, "EUR", nil, user), "refund", []string{"id", "type", "value", "revenue", "currency"}},
		{client.Login("password", user), "login", []string{"method"}},
		{client.SignUp("", user), "sign_up", nil},
		{client.Custom("store_visit", map[string]any{"store_id": "PAR-03", "visits": 3}, user), "store_visit", []string{"store_id", "visits"}},
	}
	events := make([]gen.Event, len(cases))
	for i, tc := range cases {
		events[i] = tc.event
	}
	res, err := c.SendBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]map[string]any{}
	for _, s := range e.storedEvents() {
		var m map[string]any
		if err := json.Unmarshal(s.Event, &m); err != nil {
			t.Fatal(err)
		}
		if len(s.Warnings) != 0 {
			t.Errorf("stored with warnings: %s %+v", s.Event, s.Warnings)
		}
		byID[eventID(t, s.Event)] = m
	}
	for i, tc := range cases {
		r := res.Results[i]
		if r.Status != client.StatusDelivered || len(r.Warnings) != 0 {
			t.Errorf("%s: %+v", tc.name, r)
		}
		m := byID[r.EventID]
		if m == nil || m["event_name"] != tc.name {
			t.Errorf("%s: stored as %v", tc.name, m)
			continue
		}
		for _, key := range tc.required {
			if v, ok := m[key]; !ok || v == nil || v == "" {
				t.Errorf("%s: required property %s is %v", tc.name, key, v)
			}
		}
		if tc.name == "sign_up" && m["method"] != nil {
			t.Errorf("sign_up with an empty method sent %v", m["method"])
		}
	}
	if got := byID[res.Results[5].EventID]["items"]; fmt.Sprint(got) != "[map[id:SKU-1 product:map[brand:Stride id:P-1 name:Blue runner price:49.92] quantity:2]]" {
		t.Errorf("purchase items stored as %v", got)
	}
}

// Raw events are sent as given, compacted and with nothing escaped, with what the server would add
// added by the client; events the server would refuse or reject are refused locally, unsent.
func TestRawEvents(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	ctx := context.Background()

	given := `{ "event_name" : "c", "note": "<b>&amp;</b> é",
		"user": {"consistent_anonymous_id": "u"}, "context": {"event_id": "c-1", "event_timestamp": 1} }`
	r, err := c.SendRaw(ctx, []byte(given))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	json.Compact(&compact, []byte(given))
	if !bytes.Equal(r.Event, compact.Bytes()) {
		t.Errorf("sent %s, want the event as given, compacted: %s", r.Event, compact.Bytes())
	}

	res, err := c.SendRawBatch(ctx, [][]byte{
		[]byte(`{"event_name":"a","event_timestamp":1700000000000,"user":{"consistent_anonymous_id":"u"}}`),
		[]byte(`{"event_name":"b","user":{"consistent_anonymous_id":"u"},"context":{"event_id":12345,"event_timestamp":1700000000001}}`),
		[]byte(`{"event_name":"d","user":{"consistent_anonymous_id":"u"},"context":null}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]map[string]any{}
	for _, s := range e.storedEvents() {
		var m map[string]any
		json.Unmarshal(s.Event, &m)
		stored[fmt.Sprint(m["event_name"])] = m
		for _, w := range s.Warnings {
			if w.Code != string(gen.SchemaViolation) || !strings.Contains(w.Path, "event_id") {
				t.Errorf("%s stored with warning %+v", s.Event, w)
			}
		}
	}
	a := stored["a"]["context"].(map[string]any)
	if a["event_timestamp"] != 1700000000000.0 || stored["a"]["event_timestamp"] != nil || a["event_id"] != res.Results[0].EventID {
		t.Errorf("a root event_timestamp was not moved into context: %v", stored["a"])
	}
	if res.Results[1].EventID != "12345" {
		t.Errorf("a numeric event_id became %q", res.Results[1].EventID)
	}
	if d := stored["d"]["context"].(map[string]any); d["event_id"] != res.Results[2].EventID || d["event_timestamp"] == nil {
		t.Errorf("a null context was not filled: %v", stored["d"])
	}

	requests := len(f.seen())
	for _, bad := range []string{
		`[1]`, `"str"`, `{"x":1}`, `{"event_name":5}`, `{"event_name":null}`,
		`{"event_name":"x","context":"oops"}`, "{\"event_name\":\"\xff\"}", `{bad json`, ``,
	} {
		_, err := c.SendRaw(ctx, []byte(bad))
		var ee *client.EventError
		if !errors.As(err, &ee) || !errors.Is(err, client.ErrInvalidEvent) || ee.Index != 0 {
			t.Errorf("SendRaw(%q): %v, want an *EventError for ErrInvalidEvent", bad, err)
		}
		_, err = c.SendRawBatch(ctx, [][]byte{[]byte(`{"event_name":"ok"}`), []byte(bad)})
		if !errors.As(err, &ee) || ee.Index != 1 {
			t.Errorf("SendRawBatch with %q second: %v, want an *EventError naming index 1", bad, err)
		}
	}
	if n := len(f.seen()); n != requests {
		t.Errorf("%d requests were made for events refused locally", n-requests)
	}
}

// New takes the server's base with or without /events, refuses what cannot work, and every
// accepted form reaches the server.
func TestNewBaseURLs(t *testing.T) {
	e := newEnv(t)
	for _, url := range []string{e.URL, e.URL + "/", e.URL + "/events", e.URL + "/events/"} {
		c := e.client(url)
		if r, err := c.Send(context.Background(), client.Login("", client.NewUser("u"))); err != nil {
			t.Errorf("%s: %+v %v", url, r, err)
		}
		if res, err := c.SendBatch(context.Background(), []gen.Event{client.Login("", client.NewUser("u"))}); err != nil {
			t.Errorf("%s: batch: %+v %v", url, res, err)
		}
	}
	if n := len(e.stored()); n != 8 {
		t.Errorf("%d events stored, want 8", n)
	}
	for _, bad := range []struct{ url, site, key string }{
		{"", "1", "k"}, {"ftp://x/events", "1", "k"}, {"http://", "1", "k"}, {"http://x/events?tc_s=1", "1", "k"},
		{"http://x", "", "k"}, {"http://x", "1", ""}, {"::", "1", "k"},
	} {
		if _, err := client.New(bad.url, bad.site, bad.key); err == nil {
			t.Errorf("New(%q, %q, %q) accepted", bad.url, bad.site, bad.key)
		}
	}
	// A key put in the URL, as browsers may send it, is not repeated by the refusal.
	for _, url := range []string{"http://x/events?token=SECRET", "ftp://x/events?token=SECRET", "http://u:SECRET@x/events?tc_s=1",
		"http://x/events#SECRET", "http://x/ev ents?token=SECRET\x7f", "http://x:port/?token=SECRET"} {
		_, err := client.New(url, "1", "k")
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("New(%q): %v", url, err)
		}
	}
}
