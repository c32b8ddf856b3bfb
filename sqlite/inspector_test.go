package sqlite_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// inspectorBase is the time the inspector tests' entries are received around.
var inspectorBase = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

// entry is an inspector entry received at inspectorBase + at, with a body naming its event.
func entry(at time.Duration, sourceID int64, name, outcome string, codes ...string) trackapi.InspectorEntry {
	e := trackapi.InspectorEntry{
		At: inspectorBase.Add(at), SourceID: sourceID, Site: fmt.Sprint("site", sourceID), KeyPrefix: "abcd1234",
		EventName: name, EventID: "id-" + name, Outcome: outcome, ClientIP: "192.0.2.0",
		Body: json.RawMessage(`{"event_name":` + fmt.Sprintf("%q", name) + `}`), Codes: codes,
	}
	for _, c := range codes {
		e.Problems = append(e.Problems, trackapi.Problem{Code: c, Path: "/" + c, Message: "about " + c})
	}
	return e
}

func addEntries(t testing.TB, db *sqlite.DB, entries []trackapi.InspectorEntry) {
	t.Helper()
	if err := db.AddInspectorEntries(context.Background(), entries, trackapi.QualityReport{}); err != nil {
		t.Fatalf("add inspector entries: %v", err)
	}
}

func TestInspectorEntryRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	in := []trackapi.InspectorEntry{
		entry(0, 1, "page_view", trackapi.InspectorAccepted),
		entry(time.Second, 1, "search", trackapi.InspectorWarned, "schema_violation", "timestamp_generated"),
		{At: inspectorBase.Add(2 * time.Second), Site: "77", KeyPrefix: "deadbeef", Outcome: trackapi.InspectorRejected,
			Codes: []string{"invalid_source"}, Reason: "unknown_key", TestCode: "T-1", ClientIP: "2001:db8::",
			Problems: []trackapi.Problem{{Code: "invalid_source", Message: "no"}}, Body: json.RawMessage(`"cut text"`),
			Batch: true, Index: 3},
	}
	in[0].At = in[0].At.Add(123456789) // below the millisecond: not kept
	addEntries(t, db, in)
	if in[0].ID <= 0 || in[1].ID <= in[0].ID || in[2].ID <= in[1].ID {
		t.Fatalf("ids %d, %d, %d: want increasing from 1", in[0].ID, in[1].ID, in[2].ID)
	}
	for _, want := range in {
		got, err := db.InspectorEntry(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		want.At = ms(want.At)
		if want.Codes == nil {
			want.Codes = []string{}
		}
		if want.Problems == nil {
			want.Problems = []trackapi.Problem{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", want.ID, got, want)
		}
	}
	if _, err := db.InspectorEntry(ctx, in[2].ID+1); !errors.Is(err, trackapi.ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	}

	// A body that is not JSON fails the whole call: nothing of it is stored.
	bad := []trackapi.InspectorEntry{entry(0, 1, "ok", trackapi.InspectorAccepted), entry(0, 1, "bad", trackapi.InspectorAccepted)}
	bad[1].Body = json.RawMessage(`{"cut`)
	if err := db.AddInspectorEntries(ctx, bad, trackapi.QualityReport{}); err == nil {
		t.Fatal("an entry whose body is not JSON was stored")
	}
	if got, _, err := db.InspectorEntries(ctx, trackapi.InspectorFilter{EventName: "ok"}, 0, 10); err != nil || len(got) != 0 {
		t.Fatalf("after a failed add: %v entries, err %v; want none", len(got), err)
	}
}

// TestInspectorEntriesFilters lists a varied set of entries with every filter, page by page in
// both directions, and compares with what the filter selects from the list in memory.
func TestInspectorEntriesFilters(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	names := []string{"page_view", "search", "purchase"}
	outcomes := []string{trackapi.InspectorAccepted, trackapi.InspectorWarned, trackapi.InspectorDuplicate, trackapi.InspectorRejected, trackapi.InspectorRefused}
	codeSets := [][]string{nil, {"schema_violation"}, {"schema_violation", "timestamp_generated"}, {"missing_event_name"}, {"invalid_source"}}
	var all []trackapi.InspectorEntry
	for i := range 120 {
		e := entry(time.Duration(i)*time.Minute, int64(i%4), names[i%3], outcomes[i%5], codeSets[(i/2)%5]...)
		e.Site = fmt.Sprint("site", i%3)
		if i%7 == 0 {
			e.TestCode = fmt.Sprint("T", i%2)
		}
		all = append(all, e)
	}
	// Several calls, so that ids and times are not both in one transaction.
	for i := 0; i < len(all); i += 50 {
		addEntries(t, db, all[i:min(i+50, len(all))])
	}

	matches := func(f trackapi.InspectorFilter, e trackapi.InspectorEntry) bool {
		return (f.SourceID == 0 || e.SourceID == f.SourceID) && (!f.Unattributed || e.SourceID == 0) &&
			(f.Site == "" || e.Site == f.Site) && (f.EventName == "" || e.EventName == f.EventName) &&
			(f.Outcome == "" || e.Outcome == f.Outcome) && (f.Code == "" || slices.Contains(e.Codes, f.Code)) &&
			(f.TestCode == "" || e.TestCode == f.TestCode) &&
			(f.Since.IsZero() || !e.At.Before(f.Since)) && (f.Until.IsZero() || e.At.Before(f.Until))
	}
	filters := []trackapi.InspectorFilter{
		{},
		{SourceID: 2},
		{Unattributed: true},
		{Unattributed: true, Site: "site1"},
		{SourceID: 1, EventName: "search"},
		{EventName: "purchase"},
		{Outcome: trackapi.InspectorRejected},
		{Code: "schema_violation"},
		{Code: "schema_violation", SourceID: 3, Outcome: trackapi.InspectorWarned},
		{Code: "timestamp_generated", Since: inspectorBase.Add(30 * time.Minute), Until: inspectorBase.Add(90 * time.Minute)},
		{TestCode: "T0"},
		{TestCode: "T1", SourceID: 1},
		{Since: inspectorBase.Add(100 * time.Minute)},
		{Until: inspectorBase.Add(3 * time.Minute)},
		{Code: "no_such_code"},
	}
	for _, f := range filters {
		var want []int64
		for i := len(all) - 1; i >= 0; i-- {
			if matches(f, all[i]) {
				want = append(want, all[i].ID)
			}
		}
		for _, limit := range []int{1, 7, 1000} {
			var got []int64
			pages := 0
			for before := int64(0); ; {
				page, next, err := db.InspectorEntries(ctx, f, before, limit)
				if err != nil {
					t.Fatalf("%+v: %v", f, err)
				}
				if len(page) > limit {
					t.Fatalf("%+v: %d entries for limit %d", f, len(page), limit)
				}
				for _, e := range page {
					got = append(got, e.ID)
				}
				if pages++; next == 0 || pages > len(all)+1 {
					break
				}
				before = next
			}
			if !slices.Equal(got, want) {
				t.Errorf("%+v, limit %d, newest first:\n got %v\nwant %v", f, limit, got, want)
			}

			got = nil
			after := int64(0)
			for pages = 0; pages <= len(all)+1; pages++ {
				page, next, err := db.InspectorEntriesAfter(ctx, f, after, limit)
				if err != nil {
					t.Fatalf("%+v: %v", f, err)
				}
				if len(page) == 0 {
					if next != after {
						t.Fatalf("%+v: an empty page moved the cursor from %d to %d", f, after, next)
					}
					break
				}
				for _, e := range page {
					got = append(got, e.ID)
				}
				after = next
			}
			slices.Reverse(got)
			if !slices.Equal(got, want) {
				t.Errorf("%+v, limit %d, oldest first (reversed):\n got %v\nwant %v", f, limit, got, want)
			}
		}
	}
	if _, _, err := db.InspectorEntries(ctx, trackapi.InspectorFilter{}, 0, 0); err == nil {
		t.Error("limit 0 accepted")
	}
}

// TestInspectorQueryPlans holds the listings to their indexes: a source's entries, a code's and a
// test code's are found through an index, never by a scan of every entry, and in the order asked
// without a sort.
func TestInspectorQueryPlans(t *testing.T) {
	db := open(t, tempPath(t), sqlite.Options{})
	for _, tc := range []struct {
		f    trackapi.InspectorFilter
		want string
	}{
		{trackapi.InspectorFilter{SourceID: 3}, "inspector_entries_source"},
		{trackapi.InspectorFilter{SourceID: 3, EventName: "x"}, "inspector_entries_source_name"},
		{trackapi.InspectorFilter{Unattributed: true, Site: "1"}, "inspector_entries_source"},
		{trackapi.InspectorFilter{Code: "schema_violation"}, "SEARCH c USING PRIMARY KEY (code=? AND entry_id"},
		{trackapi.InspectorFilter{Code: "schema_violation", SourceID: 3}, "SEARCH c USING PRIMARY KEY (code=? AND entry_id"},
		{trackapi.InspectorFilter{TestCode: "T"}, "inspector_entries_test_code"},
	} {
		for _, ascending := range []bool{false, true} {
			plan := strings.Join(sqlite.InspectorEntriesPlan(t, db, tc.f, 5, ascending), "; ")
			if !strings.Contains(plan, tc.want) || strings.Contains(plan, "TEMP B-TREE") || strings.HasPrefix(plan, "SCAN e") {
				t.Errorf("%+v (ascending %t): plan %q; want a walk of %s without a sort", tc.f, ascending, plan, tc.want)
			}
		}
	}
}

func TestInspectorRetention(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	now := inspectorBase.Add(10 * 24 * time.Hour)
	old := entry(now.Sub(inspectorBase)-trackapi.InspectorKeep-time.Minute, 1, "old", trackapi.InspectorRejected, "missing_event_name")
	young := entry(now.Sub(inspectorBase)-trackapi.InspectorKeep+time.Minute, 1, "young", trackapi.InspectorRejected, "missing_event_name")
	oldTest := entry(now.Sub(inspectorBase)-trackapi.InspectorTestCodeKeep-time.Minute, 2, "old-test", trackapi.InspectorAccepted)
	oldTest.TestCode = "T"
	youngTest := entry(now.Sub(inspectorBase)-trackapi.InspectorTestCodeKeep+time.Minute, 2, "young-test", trackapi.InspectorAccepted)
	youngTest.TestCode = "T"
	fixed := []trackapi.InspectorEntry{old, young, oldTest, youngTest}
	addEntries(t, db, fixed)

	// Source 3 gets 40 entries over its cap, source 0 (no known source) exactly its cap, all
	// recent: the oldest 40 of source 3 go, and nothing of source 0.
	recent := now.Sub(inspectorBase) - time.Hour
	var three []trackapi.InspectorEntry
	for i := range trackapi.InspectorMaxPerSource + 40 {
		e := entry(recent, 3, "capped", trackapi.InspectorWarned, "schema_violation")
		e.Body = json.RawMessage(fmt.Sprint(i))
		three = append(three, e)
	}
	var zero []trackapi.InspectorEntry
	for range trackapi.InspectorMaxPerSource {
		zero = append(zero, entry(recent, 0, "unattributed", trackapi.InspectorRejected, "invalid_source"))
	}
	addEntries(t, db, three)
	addEntries(t, db, zero)

	q := trackapi.QualityReport{
		Events: []trackapi.EventQuality{
			{SourceID: 1, EventName: "a", Hour: now.Add(-trackapi.QualityKeep - time.Hour), Collected: 1},
			{SourceID: 1, EventName: "a", Hour: now.Add(-trackapi.QualityKeep + time.Hour), Collected: 2},
		},
		Anomalies: []trackapi.QualityAnomaly{
			{SourceID: 1, EventName: "a", Hour: now.Add(-trackapi.QualityKeep - time.Hour), Code: "c", Count: 1},
			{SourceID: 1, EventName: "a", Hour: now.Add(-trackapi.QualityKeep + time.Hour), Code: "c", Count: 2},
		},
	}
	if err := db.AddInspectorEntries(ctx, nil, q); err != nil {
		t.Fatal(err)
	}

	deleted, err := db.DeleteExpiredInspectorEntries(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 2+40 {
		t.Errorf("deleted %d entries, want %d", deleted, 2+40)
	}
	for _, e := range fixed {
		_, err := db.InspectorEntry(ctx, e.ID)
		gone := errors.Is(err, trackapi.ErrNotFound)
		if wantGone := e.EventName == "old" || e.EventName == "old-test"; gone != wantGone {
			t.Errorf("entry %q: gone %t (err %v), want %t", e.EventName, gone, err, wantGone)
		}
	}
	kept, _, err := db.InspectorEntries(ctx, trackapi.InspectorFilter{SourceID: 3}, 0, 2*trackapi.InspectorMaxPerSource)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != trackapi.InspectorMaxPerSource || kept[len(kept)-1].ID != three[40].ID || kept[0].ID != three[len(three)-1].ID {
		t.Errorf("source 3 keeps %d entries from id %d; want the newest %d, from id %d",
			len(kept), kept[len(kept)-1].ID, trackapi.InspectorMaxPerSource, three[40].ID)
	}
	if n, _, _ := db.InspectorEntries(ctx, trackapi.InspectorFilter{Unattributed: true}, 0, 2*trackapi.InspectorMaxPerSource); len(n) != trackapi.InspectorMaxPerSource {
		t.Errorf("entries without a source: %d kept, want %d", len(n), trackapi.InspectorMaxPerSource)
	}
	// The codes of deleted entries went with them.
	raw := rawDB(t, path)
	wantCodes := queryInt(t, raw, `SELECT count(*) FROM inspector_entries e, json_each(e.codes)`)
	if got := queryInt(t, raw, `SELECT count(*) FROM inspector_codes`); got != wantCodes {
		t.Errorf("inspector_codes holds %d rows, want %d (one for each code of each entry left)", got, wantCodes)
	}
	report, err := db.DataQuality(ctx, 1, now.Add(-2*trackapi.QualityKeep), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Events) != 1 || report.Events[0].Collected != 2 || len(report.Anomalies) != 1 || report.Anomalies[0].Count != 2 {
		t.Errorf("counts after retention: %+v; want only the hour younger than %v", report, trackapi.QualityKeep)
	}

	// Ids are not handed out again, also once every entry is gone.
	last := zero[len(zero)-1].ID
	if _, err := db.DeleteExpiredInspectorEntries(ctx, now.Add(2*trackapi.InspectorKeep)); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, raw, `SELECT count(*) FROM inspector_entries`); n != 0 {
		t.Fatalf("%d entries left, want none", n)
	}
	again := []trackapi.InspectorEntry{entry(0, 1, "again", trackapi.InspectorAccepted)}
	addEntries(t, db, again)
	if again[0].ID <= last {
		t.Errorf("new entry got id %d after every entry up to %d was deleted; ids must never be reused", again[0].ID, last)
	}
}

func TestDataQualityAddsUp(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	hour := inspectorBase
	add := func(q trackapi.QualityReport) {
		t.Helper()
		if err := db.AddInspectorEntries(ctx, nil, q); err != nil {
			t.Fatal(err)
		}
	}
	add(trackapi.QualityReport{
		Events: []trackapi.EventQuality{
			{SourceID: 1, EventName: "page_view", Hour: hour.Add(5 * time.Minute), Collected: 10, WithWarnings: 2, Duplicates: 1},
			{SourceID: 1, EventName: "", Hour: hour, Rejected: 3},
			{SourceID: 2, EventName: "page_view", Hour: hour, Collected: 100},
			{SourceID: 0, EventName: "page_view", Hour: hour, Rejected: 7},
		},
		Anomalies: []trackapi.QualityAnomaly{
			{SourceID: 1, EventName: "page_view", Hour: hour, Code: "schema_violation", Path: "/user", Count: 2, Message: "first", Sample: json.RawMessage(`{"n":1}`)},
			{SourceID: 1, EventName: "", Hour: hour, Code: "missing_event_name", Path: "/event_name", Count: 3, Message: "m", Sample: json.RawMessage(`{}`)},
		},
	})
	add(trackapi.QualityReport{
		Events: []trackapi.EventQuality{
			{SourceID: 1, EventName: "page_view", Hour: hour.Add(59 * time.Minute), Collected: 5, WithWarnings: 1, Duplicates: 2, Rejected: 1},
			{SourceID: 1, EventName: "page_view", Hour: hour.Add(time.Hour), Collected: 1},
		},
		Anomalies: []trackapi.QualityAnomaly{
			{SourceID: 1, EventName: "page_view", Hour: hour.Add(time.Minute), Code: "schema_violation", Path: "/user", Count: 1, Message: "second"},
		},
	})
	report, err := db.DataQuality(ctx, 1, hour, hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := trackapi.QualityReport{
		Events: []trackapi.EventQuality{
			{SourceID: 1, EventName: "", Hour: hour, Rejected: 3},
			{SourceID: 1, EventName: "page_view", Hour: hour, Collected: 15, WithWarnings: 3, Duplicates: 3, Rejected: 1},
		},
		Anomalies: []trackapi.QualityAnomaly{
			{SourceID: 1, EventName: "", Hour: hour, Code: "missing_event_name", Path: "/event_name", Count: 3, Message: "m", Sample: json.RawMessage(`{}`)},
			// The newer message replaces the older one; a missing sample keeps the stored one.
			{SourceID: 1, EventName: "page_view", Hour: hour, Code: "schema_violation", Path: "/user", Count: 3, Message: "second", Sample: json.RawMessage(`{"n":1}`)},
		},
	}
	if !reflect.DeepEqual(report, want) {
		t.Errorf("source 1, first hour:\n got %+v\nwant %+v", report, want)
	}
	unattributed, err := db.DataQuality(ctx, 0, hour, hour.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(unattributed.Events) != 1 || unattributed.Events[0].Rejected != 7 {
		t.Errorf("source 0: %+v, want the 7 rejections without a known source", unattributed)
	}
	empty, err := db.DataQuality(ctx, 9, hour, hour.Add(time.Hour))
	if err != nil || empty.Events == nil || empty.Anomalies == nil || len(empty.Events)+len(empty.Anomalies) != 0 {
		t.Errorf("unknown source: %+v, %v; want empty lists", empty, err)
	}
}
