package inspector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/sqlite"
)

// TestServerRefusals: the 400s the HTTP layer makes before the collect path (a body over its
// limit, an encoding it does not take, a parameter given twice), on every path and for the pixel,
// get their entry too, attributed
// by the key, with the client address masked and the start of what was read of the body.
func TestServerRefusals(t *testing.T) {
	var capturer *inspector.Capturer
	env := testenv.New(t, testenv.Options{Inspector: func(db *sqlite.DB) ingest.Inspector {
		var err error
		if capturer, err = inspector.New(inspector.Config{Store: db, Logger: quiet}); err != nil {
			t.Fatal(err)
		}
		return capturer
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- capturer.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { _ = stop() }) // before the store closes

	post := func(path string, body io.Reader, header ...string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, env.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	query := "?tc_s=" + env.Site + "&token=" + env.Key
	big := `{"event_name":"big","pad":"` + strings.Repeat("x", trackapi.SingleBodyLimit) + `"}`
	// Declared too large: nothing is read. Sent without a length: the limit is read.
	post("/events"+query, strings.NewReader(big))
	post("/events"+query, io.MultiReader(strings.NewReader(big)))
	post("/events/batch"+query, strings.NewReader(`{"batch":[]}`), "Content-Encoding", "br")
	post("/events?tc_s=1&tc_s=2&token="+env.Key, strings.NewReader(`{}`))
	// (Authorization given twice is no refusal: its events are rejected as invalid_source.)
	post("/events?token="+env.Key+"&token=x", strings.NewReader(`{}`))
	// The aliases and the pixel: Echo's refusal (a parameter twice), the pixel's own.
	post("/cdp/events/batch"+query, strings.NewReader(`{"batch":[]}`), "Content-Encoding", "br")
	for _, path := range []string{"/events" + query + "&event_name=a&event_name=b", "/cdp/events" + query + "&event_name=a&user[id=1"} {
		resp, err := http.Get(env.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("GET %s: status %d", path, resp.StatusCode)
		}
	}
	// A refusal of the collect path, and an accepted event, for comparison.
	if status := post("/events"+query, bytes.NewReader([]byte(`[]`))); status != http.StatusBadRequest {
		t.Fatalf("a JSON array: status %d", status)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	entries, _, err := env.DB.InspectorEntriesAfter(context.Background(), trackapi.InspectorFilter{}, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		code, site string
		source     int64
		batch      bool
		body       string // its start
	}{
		{"payload_too_large", env.Site, env.Source.ID, false, ``},
		{"payload_too_large", env.Site, env.Source.ID, false, `{"event_name":"big","pad":"xxx`},
		{"invalid_json", env.Site, env.Source.ID, true, ``},
		{"invalid_payload", "1", env.Source.ID, false, ``}, // the key is known: its source, site mismatch
		{"invalid_payload", "", 0, false, ``},              // no tc_s: missing credentials
		{"invalid_json", env.Site, env.Source.ID, true, ``},
		{"invalid_payload", env.Site, env.Source.ID, false, ``}, // the pixel's event_name twice
		{"invalid_payload", env.Site, env.Source.ID, false, ``}, // the pixel's brackets
		{"invalid_payload", env.Site, env.Source.ID, false, `[]`},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, e := range entries {
		w := want[i]
		var body string
		if err := json.Unmarshal(e.Body, &body); err != nil {
			t.Errorf("entry %d: body %s is not a JSON string", i, e.Body)
		}
		if e.Outcome != trackapi.InspectorRefused || len(e.Codes) != 1 || e.Codes[0] != w.code || e.Site != w.site ||
			e.SourceID != w.source || e.Batch != w.batch || e.ClientIP != "127.0.0.0" || !strings.HasPrefix(body, w.body) ||
			len(body) > trackapi.InspectorRefusalBodyLimit || (w.body == "" && body != "") {
			t.Errorf("entry %d: %+v\nwant %+v", i, e, w)
		}
		if strings.Contains(string(e.Body)+e.KeyPrefix, env.Key) || (w.source != 0 && e.KeyPrefix != env.Key[:8]) {
			t.Errorf("entry %d: key prefix %q", i, e.KeyPrefix)
		}
	}
}
