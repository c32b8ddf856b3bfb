package admin_test

import (
	"slices"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// The code filter also takes the reason of an invalid_source, as admin.yaml says (key_expired
// finds the events of an expired key), and pages through them like any other filter: each page
// full but the last, which has no next, the pages together exactly the matching entries.
func TestInspectorCodeFilterTakesReasons(t *testing.T) {
	e := newEnv(t)
	var entries []trackapi.InspectorEntry
	at := time.Now().Add(-time.Minute)
	for i := range 15 {
		entry := trackapi.InspectorEntry{At: at, SourceID: 1, Site: "29", KeyPrefix: "0b5d3c1a", EventName: "login",
			Outcome: trackapi.InspectorRejected, Codes: []string{"invalid_source"}, ClientIP: "203.0.113.0",
			Problems: []trackapi.Problem{{Code: "invalid_source", Message: "tc_s and token do not match an active source"}},
			Body:     []byte(`{"event_name":"login"}`)}
		switch i % 3 {
		case 0:
			entry.Reason = "key_expired"
		case 1:
			entry.Reason = "key_revoked"
		default:
			entry.Outcome, entry.Codes, entry.Problems = trackapi.InspectorAccepted, []string{}, nil
		}
		entries = append(entries, entry)
	}
	if err := e.DB.AddInspectorEntries(ctx(t), entries, trackapi.QualityReport{}); err != nil {
		t.Fatal(err)
	}
	var want []int64 // newest first
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Reason == "key_expired" {
			want = append(want, entries[i].ID)
		}
	}
	code, limit := "key_expired", 2
	var got []int64
	var after *string
	for pages := 0; ; pages++ {
		page, err := e.ReadAPI.ListInspectorEventsWithResponse(ctx(t), &adminapi.ListInspectorEventsParams{Code: &code, Limit: &limit, After: after})
		if err != nil || page.JSON200 == nil {
			t.Fatalf("page %d: %v %s", pages, err, page.Body)
		}
		for _, item := range page.JSON200.Items {
			if item.Reason == nil || *item.Reason != "key_expired" {
				t.Errorf("code=key_expired listed entry %d with reason %v", item.Id, item.Reason)
			}
			got = append(got, item.Id)
		}
		if page.JSON200.Next == nil {
			break
		}
		if len(page.JSON200.Items) != limit || pages > 10 {
			t.Fatalf("page %d has %d items and a next", pages, len(page.JSON200.Items))
		}
		after = page.JSON200.Next
	}
	if !slices.Equal(got, want) {
		t.Errorf("code=key_expired listed %v, want %v", got, want)
	}
	// A code is still a code: invalid_source lists both reasons.
	code = "invalid_source"
	all, err := e.ReadAPI.ListInspectorEventsWithResponse(ctx(t), &adminapi.ListInspectorEventsParams{Code: &code})
	if err != nil || all.JSON200 == nil || len(all.JSON200.Items) != 10 {
		t.Errorf("code=invalid_source: %v %s, want 10 entries", err, all.Body)
	}
}
