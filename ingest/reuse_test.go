package ingest_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/internal/testenv"
)

// A test order with a made-up id, then the real purchase with the same id: the purchase is a
// duplicate and is not stored, but no longer silently: it gets event_id_reused. A plain retry
// (the same bytes, even when the server fills in a different timestamp each time) does not.
func TestEventIDReused(t *testing.T) {
	s := testenv.New(t, testenv.Options{})
	url := s.URL + "/events?tc_s=" + s.Site + "&token=" + s.Key
	test := `{"event_name":"purchase","value":0.01,"currency":"EUR","context":{"event_id":"ORDER-2026-0001"}}`
	real := `{"event_name":"purchase","value":131.4,"currency":"EUR","context":{"event_id":"ORDER-2026-0001"}}`

	if r := post(t, url, []byte(test), false).result; r.Accepted != 1 {
		t.Fatalf("test order: %+v", r)
	}
	r := post(t, url, []byte(real), false).result
	reused := func(r gen.CollectResult) []gen.Problem {
		var found []gen.Problem
		for _, w := range r.Warnings {
			if w.Code == gen.EventIdReused {
				found = append(found, w)
			}
		}
		return found
	}
	if got := reused(r); r.Duplicates != 1 || r.Accepted != 0 || len(got) != 1 || got[0].Index != 0 || got[0].Path != "/context/event_id" {
		t.Fatalf("real purchase with the test order's id: %+v", r)
	}
	if _, warnings := ingest.ProblemCounts(r); warnings[string(gen.EventIdReused)] != 1 {
		t.Fatalf("ProblemCounts: %v", warnings)
	}
	// Retries of the first: the same bytes (the timestamp the server fills in differs), or with
	// other white space around the event.
	for _, retry := range []string{test, "\n  " + test + "\n"} {
		if r := post(t, url, []byte(retry), false).result; r.Duplicates != 1 || len(reused(r)) != 0 {
			t.Fatalf("retry of the test order: %+v", r)
		}
	}
	// The same event in a batch is the same event.
	batchURL := s.URL + "/events/batch?tc_s=" + s.Site + "&token=" + s.Key
	if r := post(t, batchURL, batchOf(test), false).result; r.Duplicates != 1 || len(reused(r)) != 0 {
		t.Fatalf("the test order in a batch: %+v", r)
	}
	// Within one batch: the second event with an id is compared with the first; the warning
	// follows the event's own warnings.
	r = post(t, batchURL, batchOf(`{"event_name":"a","context":{"event_id":"B-1"}}`, `{"event_name":"b","context":{"event_id":"B-1"}}`,
		`{"event_name":"a","context":{"event_id":"B-1"}}`), false).result
	if got := reused(r); r.Accepted != 1 || r.Duplicates != 2 || len(got) != 1 || got[0].Index != 1 {
		t.Fatalf("one batch, ids repeated: %+v", r)
	}
	for i, w := range r.Warnings {
		if w.Code == gen.EventIdReused && (r.Warnings[i-1].Index != 1 || r.Warnings[i+1].Index != 2) {
			t.Fatalf("event_id_reused is not the last warning of its event: %+v", r.Warnings)
		}
	}

	stored := testenv.Stored(t, s.DB)
	if len(stored) != 2 || !bytes.Contains(stored[0].Event, []byte(`"value":0.01`)) {
		t.Fatalf("stored: %+v", stored)
	}
}

// Each reused id leaves a line in the log (info) with the source and the event id, never the
// body; a request reusing ids in bulk leaves a bounded number of lines.
func TestEventIDReusedIsLogged(t *testing.T) {
	s := testenv.New(t, testenv.Options{})
	var logged bytes.Buffer
	collector, err := ingest.New(ingest.Config{Store: s.DB, Sources: s.Sources,
		Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	collect := func(body string) gen.CollectResult {
		t.Helper()
		r, err := collector.Collect(ctx, ingest.Request{Batch: true, Site: s.Site, Key: s.Key, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var first, second []string
	for i := range 25 {
		id := `"context":{"event_id":"ORDER-` + strings.Repeat("9", i+1) + `"}`
		first = append(first, `{"event_name":"purchase","value":0.01,`+id+`}`)
		second = append(second, `{"event_name":"purchase","value":131.4,"secret":"do-not-log",`+id+`}`)
	}
	collect(string(batchOf(first...)))
	if logged.Len() != 0 {
		t.Fatalf("logged before any reuse: %s", logged.String())
	}
	r := collect(string(batchOf(second...)))
	if r.Duplicates != 25 {
		t.Fatalf("%+v", r)
	}
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	if len(lines) != 11 || !strings.Contains(lines[0], "level=INFO") || !strings.Contains(lines[0], "source_id="+strconv.FormatInt(s.Source.ID, 10)) ||
		!strings.HasSuffix(lines[0], "event_id=ORDER-9") || !strings.Contains(lines[10], "count=15") {
		t.Fatalf("log:\n%s", logged.String())
	}
	if strings.Contains(logged.String(), "do-not-log") || strings.Contains(logged.String(), "131.4") {
		t.Fatalf("the body reached the log:\n%s", logged.String())
	}
}
