package sqlite_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// t0 is the tests' clock: the start of a minute, so that minutes are easy to tell apart.
var t0 = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

// newDestination creates a destination of the webhook kind, every source, active, with what
// change sets on top.
func newDestination(t testing.TB, db *sqlite.DB, name string, change ...func(*trackapi.Destination)) trackapi.Destination {
	t.Helper()
	dest := trackapi.Destination{Name: name, Type: trackapi.DestinationWebhook, Config: trackapi.DestinationConfig{URL: "https://example.com/hook"}}
	for _, c := range change {
		c(&dest)
	}
	created, err := db.CreateDestination(context.Background(), dest)
	if err != nil {
		t.Fatalf("create destination %q: %v", name, err)
	}
	return created
}

func settle(t testing.TB, db *sqlite.DB, s trackapi.Settlement) {
	t.Helper()
	if err := db.SettleDelivery(context.Background(), s); err != nil {
		t.Fatalf("settle %+v: %v", s, err)
	}
}

func state(t testing.TB, db *sqlite.DB, id int64) trackapi.DeliveryState {
	t.Helper()
	st, err := db.DeliveryState(context.Background(), id)
	if err != nil {
		t.Fatalf("delivery state of %d: %v", id, err)
	}
	return st
}

// storeAt stores new events of source with these ids, received at receivedAt, and returns their
// seqs.
func storeAt(t testing.TB, db *sqlite.DB, source trackapi.Source, receivedAt time.Time, ids ...string) []int64 {
	t.Helper()
	evs := events(source, ids...)
	for i := range evs {
		evs[i].ReceivedAt = receivedAt.UnixMilli()
	}
	stored, err := db.StoreEvents(context.Background(), evs)
	if err != nil {
		t.Fatalf("store %v: %v", ids, err)
	}
	for i, ok := range stored {
		if !ok {
			t.Fatalf("event %s is a duplicate", ids[i])
		}
	}
	last := lastSeq(t, db)
	seqs := make([]int64, len(ids))
	for i := range seqs {
		seqs[i] = last - int64(len(ids)-1-i)
	}
	return seqs
}

// lastSeq is the seq of the newest stored event, 0 when there is none.
func lastSeq(t testing.TB, db *sqlite.DB) int64 {
	t.Helper()
	var last int64
	after := int64(0)
	for {
		page, next, err := db.ReadEvents(context.Background(), after, everything, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return last
		}
		last, after = next, next
	}
}

func ids(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestDestinations(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	s1 := newSource(t, db, "site1")
	s2 := newSource(t, db, "site2")

	if list, err := db.Destinations(ctx); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("destinations of a new file = %#v, %v; want an empty list", list, err)
	}

	full := trackapi.Destination{
		Name: "everything",
		Type: trackapi.DestinationForward,
		Config: trackapi.DestinationConfig{
			URL:          "https://collector.example.com",
			AllowPrivate: true,
			Secrets: []trackapi.SigningSecret{
				{Secret: "whsec_bmV3"},
				{Secret: "whsec_b2xk", ExpiresAt: time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)},
			},
			Site: "far", Token: "tok", Brokers: []string{"k1:9092", "k2:9092"}, Topic: "events", Path: "/var/out",
		},
		Sources:         []int64{s2.ID, s1.ID, s2.ID},
		ConsentCategory: "analytics",
		Filter:          json.RawMessage(`{"event_names":["page_view"],"conditions":[{"path":"$.x","op":"eq","value":1}]}`),
		BatchSize:       250,
		Status:          trackapi.DestinationPaused,
		CreatedAt:       t0,
	}
	created, err := db.CreateDestination(ctx, full)
	if err != nil {
		t.Fatal(err)
	}
	want := full
	want.ID = created.ID
	want.Sources = []int64{s1.ID, s2.ID} // without the repeat, in order
	want.UpdatedAt = t0                  // zero: CreatedAt
	if !reflect.DeepEqual(created, want) {
		t.Fatalf("created\n%+v\nwant\n%+v", created, want)
	}
	got, err := db.Destination(ctx, created.ID)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v, %v\nwant\n%+v", got, err, want)
	}

	// The zero values: every source, no filter, active, created now.
	before := time.Now().Add(-time.Millisecond)
	plain := newDestination(t, db, "plain")
	if plain.Sources != nil || plain.Filter != nil || plain.Status != trackapi.DestinationActive ||
		plain.ConsentCategory != "" || plain.BatchSize != 0 || plain.CreatedAt.Before(before) ||
		plain.UpdatedAt != plain.CreatedAt || plain.Config.URL != "https://example.com/hook" {
		t.Fatalf("plain destination = %+v", plain)
	}
	list, err := db.Destinations(ctx)
	if err != nil || !reflect.DeepEqual(list, []trackapi.Destination{want, plain}) {
		t.Fatalf("destinations = %+v, %v\nwant %+v", list, err, []trackapi.Destination{want, plain})
	}

	// Update changes every field but ID and CreatedAt, sources and filter included.
	change := plain
	change.Name = "renamed"
	change.Type = trackapi.DestinationKafka
	change.Config = trackapi.DestinationConfig{Brokers: []string{"k:9092"}, Topic: "t"}
	change.Sources = []int64{s2.ID}
	change.ConsentCategory = "marketing"
	change.Filter = json.RawMessage(`{"exclude_event_names":["search"]}`)
	change.BatchSize = 10
	change.Status = trackapi.DestinationPaused
	change.CreatedAt = t0.Add(-time.Hour) // ignored
	change.UpdatedAt = t0.Add(time.Hour)  // ignored too: an update is stamped now
	updated, err := db.UpdateDestination(ctx, change)
	if err != nil {
		t.Fatal(err)
	}
	if !updated.UpdatedAt.After(plain.UpdatedAt) || updated.UpdatedAt.Equal(change.UpdatedAt) {
		t.Errorf("UpdatedAt %v after an update of a destination updated at %v", updated.UpdatedAt, plain.UpdatedAt)
	}
	wantUpdated := change
	wantUpdated.CreatedAt, wantUpdated.UpdatedAt = plain.CreatedAt, updated.UpdatedAt
	if !reflect.DeepEqual(updated, wantUpdated) {
		t.Fatalf("updated\n%+v\nwant\n%+v", updated, wantUpdated)
	}
	if got, err := db.Destination(ctx, plain.ID); err != nil || !reflect.DeepEqual(got, wantUpdated) {
		t.Fatalf("read back after update\n%+v, %v\nwant\n%+v", got, err, wantUpdated)
	}
	// And back: no sources, no filter.
	change = wantUpdated
	change.Sources, change.Filter, change.Status = nil, nil, trackapi.DestinationActive
	if updated, err = db.UpdateDestination(ctx, change); err != nil || updated.Sources != nil || updated.Filter != nil ||
		updated.Status != trackapi.DestinationActive {
		t.Fatalf("update to every source, no filter = %+v, %v", updated, err)
	}

	// Bad values are refused, as permanent errors.
	for name, dest := range map[string]trackapi.Destination{
		"unknown source": {Name: "x", Type: "webhook", Sources: []int64{s1.ID, 999}},
		"bad status":     {Name: "x", Type: "webhook", Status: "sleeping"},
		"bad batch size": {Name: "x", Type: "webhook", BatchSize: -1},
		"bad filter":     {Name: "x", Type: "webhook", Filter: json.RawMessage(`{"event_names":`)},
	} {
		_, err := db.CreateDestination(ctx, dest)
		if err == nil || errors.Is(err, trackapi.ErrUnavailable) {
			t.Errorf("create with %s: %v, want a permanent error", name, err)
		}
		if name == "unknown source" && !errors.Is(err, trackapi.ErrNotFound) {
			t.Errorf("create with %s: %v, want ErrNotFound", name, err)
		}
	}
	if list, _ := db.Destinations(ctx); len(list) != 2 {
		t.Fatalf("%d destinations after refused creates, want 2", len(list))
	}

	// Delete removes the destination and everything it owns.
	settle(t, db, trackapi.Settlement{
		DestinationID: created.ID, Cursor: 5,
		Retries:     []trackapi.Retry{{Seq: 1, Attempt: 1, FirstFailedAt: t0, NextAt: t0, Reason: "timeout"}},
		DeadLetters: []trackapi.DeadLetter{{Seq: 2, Kind: trackapi.DeadLetterRejected, Reason: "http_400", Attempts: 1, FirstFailedAt: t0, FailedAt: t0}},
		Stats:       []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Retried: 1, Rejected: 1}}},
		Issues: []trackapi.IssueReport{{Kind: "error", Reason: "timeout", At: t0, Seq: 1, Attempt: 1,
			Sample: &trackapi.DeliverySample{Request: trackapi.SampleRequest{Method: "POST", URL: "https://x"}}}},
	})
	if err := db.DeleteDestination(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Destination(ctx, created.ID); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("deleted destination: %v, want ErrNotFound", err)
	}
	raw := rawDB(t, path)
	for _, table := range []string{"destination_sources", "delivery_cursors", "delivery_retries", "dead_letters",
		"delivery_stats", "delivery_issues", "issue_samples"} {
		if n := queryInt(t, raw, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", table, ownedBy(table, created.ID))); n != 0 {
			t.Errorf("%d rows of the deleted destination left in %s", n, table)
		}
	}
	if list, _ := db.Destinations(ctx); len(list) != 1 || list[0].ID != plain.ID {
		t.Fatalf("destinations after delete = %+v, want the plain one", list)
	}
}

// ownedBy is the condition of a delivery table's rows that belong to destination id.
func ownedBy(table string, id int64) string {
	if table == "issue_samples" {
		return "1" // the only issue was the deleted destination's
	}
	return fmt.Sprintf("destination_id = %d", id)
}

func TestDeliveryUnknownDestination(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	other := newDestination(t, db, "other")
	settle(t, db, trackapi.Settlement{DestinationID: other.ID, Issues: []trackapi.IssueReport{{Kind: "error", Reason: "dns", At: t0}}})
	issues, err := db.DeliveryIssues(ctx, other.ID)
	if err != nil || len(issues) != 1 {
		t.Fatalf("issues = %+v, %v", issues, err)
	}
	const unknown = 999
	for name, call := range map[string]func() error{
		"Destination": func() error { _, err := db.Destination(ctx, unknown); return err },
		"UpdateDestination": func() error {
			_, err := db.UpdateDestination(ctx, trackapi.Destination{ID: unknown, Name: "x", Type: "webhook", Status: "active"})
			return err
		},
		"DeleteDestination": func() error { return db.DeleteDestination(ctx, unknown) },
		"DeliveryState":     func() error { _, err := db.DeliveryState(ctx, unknown); return err },
		"SettleDelivery": func() error {
			return db.SettleDelivery(ctx, trackapi.Settlement{DestinationID: unknown, Cursor: 1,
				Retries: []trackapi.Retry{{Seq: 1, Attempt: 1, FirstFailedAt: t0, NextAt: t0}}})
		},
		"DueRetries": func() error { _, err := db.DueRetries(ctx, unknown, t0, 10); return err },
		"DeadLetters": func() error {
			_, _, err := db.DeadLetters(ctx, unknown, trackapi.DeadLetterFilter{}, 0, 10)
			return err
		},
		"ReplayDeadLetters": func() error {
			_, err := db.ReplayDeadLetters(ctx, unknown, trackapi.DeadLetterFilter{}, t0)
			return err
		},
		"PurgeDeadLetters": func() error { _, err := db.PurgeDeadLetters(ctx, unknown, trackapi.DeadLetterFilter{}); return err },
		"DeliveryStats":    func() error { _, err := db.DeliveryStats(ctx, unknown, t0, t0.Add(time.Hour)); return err },
		"DeliveryIssues":   func() error { _, err := db.DeliveryIssues(ctx, unknown); return err },
		"IssueSamples":     func() error { _, err := db.IssueSamples(ctx, unknown, issues[0].ID); return err },
		"IssueSamples of an unknown issue": func() error {
			_, err := db.IssueSamples(ctx, other.ID, issues[0].ID+1)
			return err
		},
	} {
		if err := call(); !errors.Is(err, trackapi.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	// Nothing of the refused settlement was written.
	if n := queryInt(t, rawDB(t, path), "SELECT count(*) FROM delivery_retries"); n != 0 {
		t.Fatalf("%d retry rows after a refused settlement", n)
	}
	// The known destination's empty listings are empty lists, not errors.
	if r, err := db.DueRetries(ctx, other.ID, t0, 10); err != nil || r == nil || len(r) != 0 {
		t.Fatalf("due retries = %#v, %v; want an empty list", r, err)
	}
	if l, next, err := db.DeadLetters(ctx, other.ID, trackapi.DeadLetterFilter{}, 7, 10); err != nil || l == nil || len(l) != 0 || next != 7 {
		t.Fatalf("dead letters = %#v, %d, %v; want an empty list and the cursor given", l, next, err)
	}
	if n, err := db.PurgeDeadLetters(ctx, other.ID, trackapi.DeadLetterFilter{}); err != nil || n != 0 {
		t.Fatalf("purge nothing = %d, %v", n, err)
	}
	if s, err := db.IssueSamples(ctx, other.ID, issues[0].ID); err != nil || s == nil || len(s) != 0 {
		t.Fatalf("samples of an issue without any = %#v, %v; want an empty list", s, err)
	}
}

func TestCreateDestinationCursorAtEndOfLog(t *testing.T) {
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	src := newSource(t, db, "site1")

	empty := newDestination(t, db, "on an empty log")
	if st := state(t, db, empty.ID); st.Cursor != 0 || st.LagEvents != 0 || !st.LagSince.IsZero() {
		t.Fatalf("state on an empty log = %+v", st)
	}

	seqs := storeAt(t, db, src, t0, "a", "b", "c", "d", "e")
	last := seqs[len(seqs)-1]
	dest := newDestination(t, db, "after five events")
	if st := state(t, db, dest.ID); st.Cursor != last || st.LagEvents != 0 || !st.LagSince.IsZero() {
		t.Fatalf("state after five events = %+v, want cursor %d and no lag", st, last)
	}
	if st := state(t, db, empty.ID); st.Cursor != 0 || st.LagEvents != 5 || !st.LagSince.Equal(t0) {
		t.Fatalf("state of the first destination = %+v, want 5 events of lag since %v", st, t0)
	}

	// The newest events deleted, the end of the log is still the highest seq handed out.
	raw := rawDB(t, path)
	if _, err := raw.Exec(`DELETE FROM events WHERE seq > ?`, seqs[2]); err != nil {
		t.Fatal(err)
	}
	afterDelete := newDestination(t, db, "after the newest were deleted")
	if st := state(t, db, afterDelete.ID); st.Cursor != last {
		t.Fatalf("cursor after the newest events were deleted = %d, want %d", st.Cursor, last)
	}
	newer := storeAt(t, db, src, t0.Add(time.Minute), "f")
	if newer[0] <= last {
		t.Fatalf("new event got seq %d, not above %d", newer[0], last)
	}
	if st := state(t, db, afterDelete.ID); st.LagEvents != 1 || !st.LagSince.Equal(t0.Add(time.Minute)) {
		t.Fatalf("state after one more event = %+v", st)
	}
}

func TestSettleDelivery(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	dest := newDestination(t, db, "hook")
	other := newDestination(t, db, "other")

	// The cursor moves forward only.
	for _, c := range []struct{ settle, want int64 }{{10, 10}, {5, 10}, {10, 10}, {12, 12}, {0, 12}} {
		settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: c.settle})
		if st := state(t, db, dest.ID); st.Cursor != c.want {
			t.Fatalf("after settling cursor %d: cursor %d, want %d", c.settle, st.Cursor, c.want)
		}
	}
	if st := state(t, db, other.ID); st.Cursor != 0 {
		t.Fatalf("other destination's cursor moved to %d", st.Cursor)
	}

	retry := func(seq int64, attempt int, next time.Time) trackapi.Retry {
		return trackapi.Retry{Seq: seq, Attempt: attempt, FirstFailedAt: t0, NextAt: next, Reason: "http_503", Error: fmt.Sprintf("attempt %d", attempt)}
	}
	due := func(id int64) []trackapi.Retry {
		t.Helper()
		r, err := db.DueRetries(ctx, id, t0.Add(24*time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Retries are upserted.
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 12, Retries: []trackapi.Retry{
		retry(3, 1, t0.Add(time.Second)), retry(4, 1, t0.Add(time.Second)), retry(5, 1, t0.Add(time.Second))}})
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 12, Retries: []trackapi.Retry{retry(3, 2, t0.Add(time.Minute))}})
	if got, want := due(dest.ID), []trackapi.Retry{retry(3, 2, t0.Add(time.Minute)), retry(4, 1, t0.Add(time.Second)), retry(5, 1, t0.Add(time.Second))}; !reflect.DeepEqual(got, want) {
		t.Fatalf("retries = %+v\nwant %+v", got, want)
	}
	if got := due(other.ID); len(got) != 0 {
		t.Fatalf("other destination has retries %+v", got)
	}
	if st := state(t, db, dest.ID); st.Retries != 3 || !st.NextRetryAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("state = %+v, want 3 retries, next at %v", st, t0.Add(time.Second))
	}

	// Delivered seqs lose their retry rows; dead letters do too.
	dead := trackapi.DeadLetter{Seq: 5, DestinationID: dest.ID, Kind: trackapi.DeadLetterFailed, Reason: "http_503",
		Error: "budget spent", Attempts: 7, FirstFailedAt: t0, FailedAt: t0.Add(time.Hour), EventName: "search"}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 12, Delivered: []int64{4, 99}, DeadLetters: []trackapi.DeadLetter{dead}})
	if got, want := due(dest.ID), []trackapi.Retry{retry(3, 2, t0.Add(time.Minute))}; !reflect.DeepEqual(got, want) {
		t.Fatalf("retries after delivering 4 and dead-lettering 5 = %+v\nwant %+v", got, want)
	}
	letters, _, err := db.DeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{}, 0, 10)
	if err != nil || !reflect.DeepEqual(letters, []trackapi.DeadLetter{dead}) {
		t.Fatalf("dead letters = %+v, %v\nwant %+v", letters, err, dead)
	}
	// A dead letter is replaced by a later one of the same seq.
	dead.Kind, dead.Reason, dead.Attempts = trackapi.DeadLetterRejected, "http_400", 8
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 12, DeadLetters: []trackapi.DeadLetter{dead}})
	if letters, _, err = db.DeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{}, 0, 10); err != nil || !reflect.DeepEqual(letters, []trackapi.DeadLetter{dead}) {
		t.Fatalf("dead letters after replacing = %+v, %v\nwant %+v", letters, err, dead)
	}
	// In one settlement, delivered and dead win over a retry of the same seq.
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 12,
		Retries:     []trackapi.Retry{retry(6, 1, t0), retry(7, 1, t0)},
		Delivered:   []int64{6},
		DeadLetters: []trackapi.DeadLetter{{Seq: 7, Kind: trackapi.DeadLetterRejected, Reason: "http_400", Attempts: 1, FirstFailedAt: t0, FailedAt: t0}}})
	if got := due(dest.ID); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("retries after one settlement with 6 delivered and 7 dead = %+v, want only 3", got)
	}
	if st := state(t, db, dest.ID); st.Retries != 1 || st.DeadLetters != 2 {
		t.Fatalf("state = %+v, want 1 retry, 2 dead letters", st)
	}
}

func TestSettleDeliveryStats(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	dest := newDestination(t, db, "hook")
	other := newDestination(t, db, "other")

	c := func(delivered, afterRetry, retried, consent, condition, rejected, failed, expired, latency int64) trackapi.DeliveryCounts {
		return trackapi.DeliveryCounts{Delivered: delivered, DeliveredAfterRetry: afterRetry, Retried: retried,
			FilteredConsent: consent, FilteredCondition: condition, Rejected: rejected, Failed: failed,
			Expired: expired, LatencyMillisSum: latency}
	}
	for _, s := range [][]trackapi.DeliveryStats{
		{{Minute: t0, DeliveryCounts: c(1, 2, 3, 4, 5, 6, 7, 8, 9)}},
		// Same minute, a few seconds in: added into the same row.
		{{Minute: t0.Add(20 * time.Second), DeliveryCounts: c(10, 20, 30, 40, 50, 60, 70, 80, 90)},
			{Minute: t0.Add(2 * time.Minute), DeliveryCounts: c(1, 0, 0, 0, 0, 0, 0, 0, 5)}},
		// Nothing counted: no row.
		{{Minute: t0.Add(5 * time.Minute)}},
		{{Minute: t0.Add(59 * time.Second), DeliveryCounts: c(100, 0, 0, 0, 0, 0, 0, 0, 0)}},
	} {
		settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Stats: s})
	}
	settle(t, db, trackapi.Settlement{DestinationID: other.ID, Stats: []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: c(1000, 0, 0, 0, 0, 0, 0, 0, 0)}}})

	all := []trackapi.DeliveryStats{
		{Minute: t0, DeliveryCounts: c(111, 22, 33, 44, 55, 66, 77, 88, 99)},
		{Minute: t0.Add(2 * time.Minute), DeliveryCounts: c(1, 0, 0, 0, 0, 0, 0, 0, 5)},
	}
	for _, r := range []struct {
		name       string
		start, end time.Time
		want       []trackapi.DeliveryStats
	}{
		{"all", t0.Add(-time.Hour), t0.Add(time.Hour), all},
		{"from the first minute", t0, t0.Add(time.Hour), all},
		{"end is exclusive", t0.Add(-time.Hour), t0.Add(2 * time.Minute), all[:1]},
		{"start in the first minute", t0.Add(time.Second), t0.Add(time.Hour), all[1:]},
		{"none", t0.Add(3 * time.Minute), t0.Add(time.Hour), []trackapi.DeliveryStats{}},
	} {
		got, err := db.DeliveryStats(ctx, dest.ID, r.start, r.end)
		if err != nil || !reflect.DeepEqual(got, r.want) {
			t.Errorf("%s: stats = %+v, %v\nwant %+v", r.name, got, err, r.want)
		}
	}
}

func TestSettleDeliveryIssues(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	dest := newDestination(t, db, "hook")
	other := newDestination(t, db, "other")

	sample := func(n int) *trackapi.DeliverySample {
		return &trackapi.DeliverySample{
			Request:  trackapi.SampleRequest{Method: "POST", URL: "https://example.com/hook", Headers: map[string]string{"Content-Type": "application/json"}, Body: fmt.Sprintf(`[%d]`, n)},
			Response: &trackapi.SampleResponse{Status: 503, Headers: map[string]string{"Retry-After": "5"}, Body: "busy"},
		}
	}
	// A flood: 100 failures in one settlement, all with samples, in one minute, naming 12 events.
	var flood []trackapi.IssueReport
	for i := range 100 {
		flood = append(flood, trackapi.IssueReport{Kind: "error", Reason: "http_503", EventName: fmt.Sprintf("event%d", i%12),
			At: t0.Add(time.Duration(i) * 100 * time.Millisecond), Seq: int64(i + 1), Attempt: 1, Sample: sample(i)})
	}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Issues: flood})
	// Another settlement in the same minute, and a rejection.
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Issues: []trackapi.IssueReport{
		{Kind: "error", Reason: "http_503", EventName: "event0", At: t0.Add(30 * time.Second), Seq: 200, Attempt: 2, Sample: sample(200)},
		{Kind: "rejected", Reason: "http_400", At: t0.Add(40 * time.Second), Seq: 201, Attempt: 1, Sample: sample(201)},
	}})
	issues, err := db.DeliveryIssues(ctx, dest.ID)
	if err != nil || len(issues) != 2 {
		t.Fatalf("issues = %+v, %v; want 2", issues, err)
	}
	rejected, errs := issues[0], issues[1] // the rejection was seen last
	names := ids(10, "event")
	if errs.Kind != "error" || errs.Reason != "http_503" || errs.Count != 101 || !errs.FirstSeen.Equal(t0) ||
		!errs.LastSeen.Equal(t0.Add(30*time.Second)) || !reflect.DeepEqual(errs.EventNames, names) || errs.DestinationID != dest.ID {
		t.Fatalf("error issue = %+v; want 101 reports from %v to %v naming %v", errs, t0, t0.Add(30*time.Second), names)
	}
	if rejected.Kind != "rejected" || rejected.Reason != "http_400" || rejected.Count != 1 ||
		rejected.EventNames == nil || len(rejected.EventNames) != 0 {
		t.Fatalf("rejection issue = %+v", rejected)
	}
	samples, err := db.IssueSamples(ctx, dest.ID, errs.ID)
	want := []trackapi.IssueSample{{IssueID: errs.ID, At: t0, Seq: 1, Attempt: 1, Sample: *sample(0)}}
	if err != nil || !reflect.DeepEqual(samples, want) {
		t.Fatalf("samples after a flood in one minute = %+v, %v\nwant %+v", samples, err, want)
	}

	// One sample a minute, the newest 5 kept, newest first.
	for m := 1; m <= 7; m++ {
		var reports []trackapi.IssueReport
		for i := range 3 {
			at := t0.Add(time.Duration(m)*time.Minute + time.Duration(i)*time.Second)
			reports = append(reports, trackapi.IssueReport{Kind: "error", Reason: "http_503", At: at, Seq: int64(1000*m + i), Attempt: 1, Sample: sample(1000*m + i)})
		}
		settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Issues: reports})
	}
	samples, err = db.IssueSamples(ctx, dest.ID, errs.ID)
	if err != nil || len(samples) != 5 {
		t.Fatalf("samples = %+v, %v; want 5", samples, err)
	}
	for i, s := range samples {
		m := 7 - i
		if s.Seq != int64(1000*m) || !s.At.Equal(t0.Add(time.Duration(m)*time.Minute)) || s.Sample.Request.Body != fmt.Sprintf("[%d]", 1000*m) {
			t.Fatalf("sample %d = %+v, want the first of minute %d", i, s, m)
		}
	}
	if n := queryInt(t, rawDB(t, path), "SELECT count(*) FROM issue_samples"); n != 6 { // 5 + the rejection's
		t.Fatalf("%d sample rows, want 6", n)
	}
	issues, _ = db.DeliveryIssues(ctx, dest.ID)
	if issues[0].ID != errs.ID || issues[0].Count != 101+21 || !issues[0].LastSeen.Equal(t0.Add(7*time.Minute+2*time.Second)) {
		t.Fatalf("error issue after 7 more minutes = %+v", issues[0])
	}
	// Another destination's issue is not this one's.
	if _, err := db.IssueSamples(ctx, other.ID, errs.ID); !errors.Is(err, trackapi.ErrNotFound) {
		t.Fatalf("samples of another destination's issue: %v, want ErrNotFound", err)
	}
	if list, err := db.DeliveryIssues(ctx, other.ID); err != nil || len(list) != 0 {
		t.Fatalf("other destination's issues = %+v, %v", list, err)
	}
}

func TestDueRetries(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	dest := newDestination(t, db, "hook")
	// Due times out of seq order.
	next := map[int64]time.Duration{10: 1, 5: 3, 7: 2, 12: 2, 3: 10}
	var retries []trackapi.Retry
	for seq, d := range next {
		retries = append(retries, trackapi.Retry{Seq: seq, Attempt: 1, FirstFailedAt: t0, NextAt: t0.Add(d * time.Minute), Reason: "timeout"})
	}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 20, Retries: retries})
	for _, c := range []struct {
		now   time.Duration
		limit int
		want  []int64
	}{
		{0, 10, nil},
		{1, 10, []int64{10}},
		{2, 10, []int64{7, 10, 12}},
		{2, 2, []int64{7, 10}},
		{3, 10, []int64{5, 7, 10, 12}},
		{3, 1, []int64{5}},
		{10, 10, []int64{3, 5, 7, 10, 12}},
		{10, 3, []int64{3, 5, 7}},
	} {
		got, err := db.DueRetries(ctx, dest.ID, t0.Add(c.now*time.Minute), c.limit)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, r := range got {
			seqs = append(seqs, r.Seq)
		}
		if !reflect.DeepEqual(seqs, c.want) {
			t.Errorf("due at +%dm, limit %d: %v, want %v", c.now, c.limit, seqs, c.want)
		}
	}
	if _, err := db.DueRetries(ctx, dest.ID, t0, 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
	// The due ones are found on the index of due times, not by reading every retry row.
	plan := strings.Join(sqlite.DueRetriesPlan(t, db), "\n")
	if !strings.Contains(plan, "delivery_retries_due (destination_id=? AND next_at<?)") {
		t.Fatalf("DueRetries plan does not range over the due index:\n%s", plan)
	}
}

func TestEventsBySeq(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	seqs := storeAt(t, db, src, t0, "a", "b", "c", "d", "e")
	for _, c := range []struct {
		name string
		ask  []int64
		want []string
	}{
		{"none", nil, nil},
		{"all, out of order, repeated", []int64{seqs[4], seqs[0], seqs[2], seqs[2], seqs[1], seqs[3]}, []string{"a", "b", "c", "d", "e"}},
		{"some missing", []int64{seqs[4] + 100, seqs[3], 0, -1, seqs[1]}, []string{"b", "d"}},
		{"only missing", []int64{seqs[4] + 1}, nil},
	} {
		got, err := db.EventsBySeq(ctx, c.ask)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got == nil {
			t.Errorf("%s: nil, want a list", c.name)
		}
		var names []string
		for _, e := range got {
			names = append(names, e.EventID)
			var b body
			if err := json.Unmarshal(e.Event, &b); err != nil || b.ID != e.EventID || e.SourceID != src.ID ||
				e.Site != src.Site || e.ReceivedAt != t0.UnixMilli() || e.EventName != eventNameOf(e.EventID) || e.Warnings == nil {
				t.Errorf("%s: event %+v", c.name, e)
			}
		}
		if !reflect.DeepEqual(names, c.want) {
			t.Errorf("%s: events %v, want %v", c.name, names, c.want)
		}
	}
	// A few hundred at once, as the engine asks for retries.
	many := storeAt(t, db, src, t0, ids(400, "m")...)
	got, err := db.EventsBySeq(ctx, many)
	if err != nil || len(got) != 400 || got[0].Seq != many[0] || got[399].Seq != many[399] {
		t.Fatalf("400 events by seq: %d, %v", len(got), err)
	}
}

func TestDeadLettersFilterAndPages(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	dest := newDestination(t, db, "hook")
	other := newDestination(t, db, "other")
	// Ten dead letters: even seqs rejected with http_400, odd ones failed with timeout; failed_at
	// a minute apart.
	var letters []trackapi.DeadLetter
	for i := range 10 {
		l := trackapi.DeadLetter{Seq: int64(10 + i), DestinationID: dest.ID, Kind: trackapi.DeadLetterRejected, Reason: "http_400",
			Error: "bad request", Attempts: 1, FirstFailedAt: t0, FailedAt: t0.Add(time.Duration(i) * time.Minute), EventName: "page_view"}
		if i%2 == 1 {
			l.Kind, l.Reason, l.Error, l.Attempts = trackapi.DeadLetterFailed, "timeout", "deadline exceeded", 12
		}
		letters = append(letters, l)
	}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 20, DeadLetters: letters})
	settle(t, db, trackapi.Settlement{DestinationID: other.ID, Cursor: 20, DeadLetters: []trackapi.DeadLetter{letters[0], letters[1]}})

	for _, c := range []struct {
		name   string
		filter trackapi.DeadLetterFilter
		want   []int64
	}{
		{"all", trackapi.DeadLetterFilter{}, []int64{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}},
		{"kind", trackapi.DeadLetterFilter{Reason: trackapi.DeadLetterFailed}, []int64{11, 13, 15, 17, 19}},
		{"reason", trackapi.DeadLetterFilter{Reason: "http_400"}, []int64{10, 12, 14, 16, 18}},
		{"unknown reason", trackapi.DeadLetterFilter{Reason: "dns"}, nil},
		{"since", trackapi.DeadLetterFilter{Since: t0.Add(7 * time.Minute)}, []int64{17, 18, 19}},
		{"until is exclusive", trackapi.DeadLetterFilter{Until: t0.Add(3 * time.Minute)}, []int64{10, 11, 12}},
		{"since and until", trackapi.DeadLetterFilter{Since: t0.Add(2 * time.Minute), Until: t0.Add(5 * time.Minute)}, []int64{12, 13, 14}},
		{"seqs", trackapi.DeadLetterFilter{Seqs: []int64{19, 11, 99, 14}}, []int64{11, 14, 19}},
		{"everything at once", trackapi.DeadLetterFilter{Reason: "timeout", Since: t0.Add(time.Minute), Until: t0.Add(9 * time.Minute), Seqs: []int64{10, 11, 13, 19}}, []int64{11, 13}},
	} {
		// Pages of 3, following the cursor.
		var got []int64
		after := int64(0)
		for page := 0; ; page++ {
			list, next, err := db.DeadLetters(ctx, dest.ID, c.filter, after, 3)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(list) > 3 {
				t.Fatalf("%s: page of %d", c.name, len(list))
			}
			if len(list) == 0 {
				if next != after {
					t.Fatalf("%s: empty page: next %d, want %d", c.name, next, after)
				}
				break
			}
			for _, l := range list {
				if l != letters[l.Seq-10] {
					t.Fatalf("%s: dead letter %+v, want %+v", c.name, l, letters[l.Seq-10])
				}
				got = append(got, l.Seq)
			}
			if next != list[len(list)-1].Seq {
				t.Fatalf("%s: next %d, want the last seq %d", c.name, next, list[len(list)-1].Seq)
			}
			after = next
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if _, _, err := db.DeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{}, 0, 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

func TestReplayAndPurgeDeadLetters(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	dest := newDestination(t, db, "hook")
	other := newDestination(t, db, "other")
	var letters []trackapi.DeadLetter
	for i := range 6 {
		kind, reason := trackapi.DeadLetterRejected, "http_400"
		if i >= 3 {
			kind, reason = trackapi.DeadLetterFailed, "http_503"
		}
		letters = append(letters, trackapi.DeadLetter{Seq: int64(i + 1), Kind: kind, Reason: reason, Error: "e" + reason,
			Attempts: 5, FirstFailedAt: t0.Add(-time.Hour), FailedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: 6, DeadLetters: letters})
	settle(t, db, trackapi.Settlement{DestinationID: other.ID, Cursor: 6, DeadLetters: letters})

	now := t0.Add(time.Hour)
	n, err := db.ReplayDeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{Reason: "http_503"}, now)
	if err != nil || n != 3 {
		t.Fatalf("replay = %d, %v; want 3", n, err)
	}
	// A fresh start: attempt 0, first failure and next attempt now.
	if due, err := db.DueRetries(ctx, dest.ID, now.Add(-time.Millisecond), 10); err != nil || len(due) != 0 {
		t.Fatalf("due before now = %+v, %v; want none", due, err)
	}
	due, err := db.DueRetries(ctx, dest.ID, now, 10)
	want := []trackapi.Retry{
		{Seq: 4, Attempt: 0, FirstFailedAt: now, NextAt: now, Reason: "http_503", Error: "ehttp_503"},
		{Seq: 5, Attempt: 0, FirstFailedAt: now, NextAt: now, Reason: "http_503", Error: "ehttp_503"},
		{Seq: 6, Attempt: 0, FirstFailedAt: now, NextAt: now, Reason: "http_503", Error: "ehttp_503"},
	}
	if err != nil || !reflect.DeepEqual(due, want) {
		t.Fatalf("due after replay = %+v, %v\nwant %+v", due, err, want)
	}
	if st := state(t, db, dest.ID); st.DeadLetters != 3 || st.Retries != 3 {
		t.Fatalf("state after replay = %+v", st)
	}
	// Replaying what is not there moves nothing.
	if n, err := db.ReplayDeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{Reason: "http_503"}, now); err != nil || n != 0 {
		t.Fatalf("replay again = %d, %v; want 0", n, err)
	}

	n, err = db.PurgeDeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{Seqs: []int64{1, 3, 4}})
	if err != nil || n != 2 {
		t.Fatalf("purge = %d, %v; want 2 (4 was replayed)", n, err)
	}
	if list, _, err := db.DeadLetters(ctx, dest.ID, trackapi.DeadLetterFilter{}, 0, 10); err != nil || len(list) != 1 || list[0].Seq != 2 {
		t.Fatalf("dead letters after purge = %+v, %v; want seq 2", list, err)
	}
	// The other destination's are untouched.
	if st := state(t, db, other.ID); st.DeadLetters != 6 || st.Retries != 0 {
		t.Fatalf("other destination's state = %+v", st)
	}
	if n, err := db.PurgeDeadLetters(ctx, other.ID, trackapi.DeadLetterFilter{}); err != nil || n != 6 {
		t.Fatalf("purge all = %d, %v", n, err)
	}
}

func TestDeliveryStateLag(t *testing.T) {
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	storeAt(t, db, src, t0, "old")
	dest := newDestination(t, db, "hook")
	seqs := storeAt(t, db, src, t0.Add(time.Minute), "a")
	seqs = append(seqs, storeAt(t, db, src, t0.Add(2*time.Minute), "b", "c")...)

	st := state(t, db, dest.ID)
	if st.LagEvents != 3 || !st.LagSince.Equal(t0.Add(time.Minute)) || st.Retries != 0 || !st.NextRetryAt.IsZero() || st.DeadLetters != 0 {
		t.Fatalf("state = %+v; want 3 events behind since %v", st, t0.Add(time.Minute))
	}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: seqs[1],
		Retries:     []trackapi.Retry{{Seq: seqs[0], Attempt: 1, FirstFailedAt: t0, NextAt: t0.Add(time.Hour)}, {Seq: seqs[1], Attempt: 1, FirstFailedAt: t0, NextAt: t0.Add(time.Minute)}},
		DeadLetters: []trackapi.DeadLetter{{Seq: seqs[0] - 1, Kind: trackapi.DeadLetterFailed, FirstFailedAt: t0, FailedAt: t0}}})
	st = state(t, db, dest.ID)
	want := trackapi.DeliveryState{Cursor: seqs[1], Retries: 2, NextRetryAt: t0.Add(time.Minute), DeadLetters: 1, LagEvents: 1, LagSince: t0.Add(2 * time.Minute)}
	if st != want {
		t.Fatalf("state = %+v\nwant %+v", st, want)
	}
	settle(t, db, trackapi.Settlement{DestinationID: dest.ID, Cursor: seqs[2]})
	if st := state(t, db, dest.ID); st.LagEvents != 0 || !st.LagSince.IsZero() {
		t.Fatalf("state at the end of the log = %+v", st)
	}
}

func TestDeleteExpiredEvents(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	s1 := newSource(t, db, "site1")
	s2 := newSource(t, db, "site2")

	// All destinations exist before the events, so their cursors start at 0.
	past := newDestination(t, db, "cursor past the old events")
	behind := newDestination(t, db, "cursor behind")
	retrying := newDestination(t, db, "cursor past, one retrying, one dead")
	onlyS2 := newDestination(t, db, "cursor behind, source 2 only", func(d *trackapi.Destination) { d.Sources = []int64{s2.ID} })

	old := t0.Add(-48 * time.Hour)
	oldSeqs := storeAt(t, db, s1, old, "o1", "o2", "o3")                    // seqs 1-3
	oldSeqs = append(oldSeqs, storeAt(t, db, s2, old, "o4", "o5", "o6")...) // seqs 4-6
	newSeqs := storeAt(t, db, s1, t0, "n1", "n2")
	if len(oldSeqs) != 6 || oldSeqs[0] != 1 || oldSeqs[5] != 6 {
		t.Fatalf("old seqs = %v", oldSeqs)
	}

	settle(t, db, trackapi.Settlement{DestinationID: past.ID, Cursor: newSeqs[1]})
	settle(t, db, trackapi.Settlement{DestinationID: retrying.ID, Cursor: newSeqs[1],
		Retries: []trackapi.Retry{
			{Seq: 2, Attempt: 1, FirstFailedAt: old, NextAt: t0},
			{Seq: newSeqs[0], Attempt: 1, FirstFailedAt: t0, NextAt: t0}},
		DeadLetters: []trackapi.DeadLetter{
			{Seq: 3, Kind: trackapi.DeadLetterRejected, Reason: "http_400", FirstFailedAt: old, FailedAt: old},
			{Seq: newSeqs[1], Kind: trackapi.DeadLetterRejected, Reason: "http_400", FirstFailedAt: t0, FailedAt: t0}},
		// Old stats, to be deleted, and new ones, to be kept.
		Stats: []trackapi.DeliveryStats{
			{Minute: old, DeliveryCounts: trackapi.DeliveryCounts{Delivered: 5}},
			{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Delivered: 7}}},
	})

	now := t0.Add(30 * time.Second)
	cutoff := t0.Add(-24 * time.Hour)

	// The first four old events: 1-3 of source 1, 4 of source 2.
	deleted, expired, err := db.DeleteExpiredEvents(ctx, cutoff, cutoff, now, 4)
	if err != nil || deleted != 4 {
		t.Fatalf("first call deleted %d, %v; want 4", deleted, err)
	}
	want := map[int64]int64{behind.ID: 4, retrying.ID: 1, onlyS2.ID: 1}
	if !reflect.DeepEqual(expired, want) {
		t.Fatalf("expired = %v, want %v", expired, want)
	}
	if got := seqsOf(readAll(t, db, everything)); !reflect.DeepEqual(got, []int64{5, 6, newSeqs[0], newSeqs[1]}) {
		t.Fatalf("events left = %v", got)
	}
	// The retry row and dead letter of the deleted events are gone, those of new events stay.
	if due, err := db.DueRetries(ctx, retrying.ID, t0, 10); err != nil || len(due) != 1 || due[0].Seq != newSeqs[0] {
		t.Fatalf("retries left = %+v, %v; want only %d", due, err, newSeqs[0])
	}
	if list, _, err := db.DeadLetters(ctx, retrying.ID, trackapi.DeadLetterFilter{}, 0, 10); err != nil || len(list) != 1 || list[0].Seq != newSeqs[1] {
		t.Fatalf("dead letters left = %+v, %v; want only %d", list, err, newSeqs[1])
	}
	// Expired is counted in the minute of now; the old stats are gone.
	for _, c := range []struct {
		dest trackapi.Destination
		want []trackapi.DeliveryStats
	}{
		{past, []trackapi.DeliveryStats{}},
		{behind, []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Expired: 4}}}},
		{retrying, []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Delivered: 7, Expired: 1}}}},
		{onlyS2, []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Expired: 1}}}},
	} {
		got, err := db.DeliveryStats(ctx, c.dest.ID, old.Add(-time.Hour), now.Add(time.Hour))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("stats of %q = %+v, %v\nwant %+v", c.dest.Name, got, err, c.want)
		}
	}

	// The rest of the old ones, not the new ones, however high the limit.
	deleted, expired, err = db.DeleteExpiredEvents(ctx, cutoff, cutoff, now, 100)
	if err != nil || deleted != 2 || !reflect.DeepEqual(expired, map[int64]int64{behind.ID: 2, onlyS2.ID: 2}) {
		t.Fatalf("second call = %d, %v, %v; want 2 deleted, expired for behind and onlyS2", deleted, expired, err)
	}
	if st, _ := db.DeliveryStats(ctx, behind.ID, t0, now); len(st) != 1 || st[0].Expired != 6 {
		t.Fatalf("stats of behind = %+v, want 6 expired", st)
	}
	deleted, expired, err = db.DeleteExpiredEvents(ctx, cutoff, cutoff, now, 100)
	if err != nil || deleted != 0 || expired == nil || len(expired) != 0 {
		t.Fatalf("third call = %d, %v, %v; want nothing", deleted, expired, err)
	}
	if _, _, err := db.DeleteExpiredEvents(ctx, cutoff, cutoff, now, 0); err == nil {
		t.Fatal("limit 0 accepted")
	}

	// Every event deleted, the newest included: a new event still gets a seq above them all.
	if deleted, _, err := db.DeleteExpiredEvents(ctx, t0.Add(time.Hour), cutoff, now, 100); err != nil || deleted != 2 {
		t.Fatalf("delete the new events: %d, %v", deleted, err)
	}
	if left := readAll(t, db, everything); len(left) != 0 {
		t.Fatalf("events left: %v", seqsOf(left))
	}
	fresh := storeAt(t, db, s1, now, "fresh")
	page, _, err := db.ReadEvents(ctx, 0, everything, 10)
	if err != nil || len(page) != 1 || page[0].EventID != "fresh" || page[0].Seq <= newSeqs[1] {
		t.Fatalf("after emptying the log, new event = %+v (%v), want a seq above %d", page, fresh, newSeqs[1])
	}
	// And a destination created now starts after it.
	if st := state(t, db, newDestination(t, db, "late").ID); st.Cursor != page[0].Seq {
		t.Fatalf("cursor of a new destination = %d, want %d", st.Cursor, page[0].Seq)
	}
}

func seqsOf(evs []trackapi.StoredEvent) []int64 {
	var seqs []int64
	for _, e := range evs {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// TestDeleteExpiredEventsBoundedScan checks that a call examines a bounded number of events:
// old events behind a long run of new ones (a clock stepped back) wait for a later call rather
// than making every call read the whole log.
func TestDeleteExpiredEventsBoundedScan(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	storeAt(t, db, src, t0, ids(1011, "new")...)
	storeAt(t, db, src, t0.Add(-48*time.Hour), ids(5, "old")...)
	cutoff := t0.Add(-24 * time.Hour)
	// limit 10: the window is the 1010 oldest seqs, all new.
	if deleted, _, err := db.DeleteExpiredEvents(ctx, cutoff, cutoff, t0, 10); err != nil || deleted != 0 {
		t.Fatalf("limit 10: deleted %d, %v; want 0", deleted, err)
	}
	// limit 1000: the window is 2000 seqs, and reaches them.
	if deleted, _, err := db.DeleteExpiredEvents(ctx, cutoff, cutoff, t0, 1000); err != nil || deleted != 5 {
		t.Fatalf("limit 1000: deleted %d, %v; want 5", deleted, err)
	}
}

// TestDatabaseStopsGrowing checks that retention keeps the file's size: the pages freed by
// deleted events are reused by new ones, without VACUUM.
func TestDatabaseStopsGrowing(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	dest := newDestination(t, db, "hook")
	const n = 3000
	pad := strings.Repeat("x", 400)
	store := func(round int) {
		t.Helper()
		for start := 0; start < n; start += 500 {
			evs := make([]trackapi.Event, 500)
			for i := range evs {
				id := fmt.Sprintf("r%d-%d", round, start+i)
				b, _ := json.Marshal(body{ID: id, EventName: "page_view", Pad: pad})
				evs[i] = trackapi.Event{SourceID: src.ID, Site: src.Site, EventID: id, EventName: "page_view",
					ReceivedAt: t0.Add(time.Duration(round) * time.Hour).UnixMilli(), Body: b}
			}
			if _, err := db.StoreEvents(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	expire := func(round int) {
		t.Helper()
		before := t0.Add(time.Duration(round)*time.Hour + time.Minute)
		total := 0
		for {
			deleted, _, err := db.DeleteExpiredEvents(ctx, before, t0, t0, 700)
			if err != nil {
				t.Fatal(err)
			}
			if deleted == 0 {
				break
			}
			total += deleted
		}
		if total != n {
			t.Fatalf("round %d: %d events deleted, want %d", round, total, n)
		}
	}

	store(0)
	pages := sqlite.WriterPragma(t, db, "page_count")
	for round := 1; round <= 3; round++ {
		// The destination is behind, so every deleted event also writes an Expired count.
		expire(round - 1)
		if free := sqlite.WriterPragma(t, db, "freelist_count"); free < pages/2 {
			t.Fatalf("round %d: %d free pages of %d after deleting every event; want most of them", round, free, pages)
		}
		store(round)
		now := sqlite.WriterPragma(t, db, "page_count")
		t.Logf("round %d: %d pages, %d before", round, now, pages)
		if margin := pages/20 + 8; now > pages+margin {
			t.Fatalf("round %d: the file grew from %d to %d pages, more than %d", round, pages, now, margin)
		}
	}
	if st := state(t, db, dest.ID); st.LagEvents != n {
		t.Fatalf("lag = %d, want %d", st.LagEvents, n)
	}
}

// TestDeliveryMethodsAfterClose checks that every delivery method of a closed DB fails as
// unavailable, a failure a retry may fix, like the other methods.
func TestDeliveryMethodsAfterClose(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(tempPath(t))
	if err != nil {
		t.Fatal(err)
	}
	dest := newDestination(t, db, "hook")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f := trackapi.DeadLetterFilter{}
	for name, call := range map[string]func() error{
		"SettleDelivery": func() error {
			return db.SettleDelivery(ctx, trackapi.Settlement{DestinationID: dest.ID, Cursor: 1,
				Stats: []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Delivered: 1}}}})
		},
		"CreateDestination": func() error {
			_, err := db.CreateDestination(ctx, trackapi.Destination{Name: "x", Type: "webhook"})
			return err
		},
		"Destinations":      func() error { _, err := db.Destinations(ctx); return err },
		"Destination":       func() error { _, err := db.Destination(ctx, dest.ID); return err },
		"UpdateDestination": func() error { _, err := db.UpdateDestination(ctx, dest); return err },
		"DeleteDestination": func() error { return db.DeleteDestination(ctx, dest.ID) },
		"DeliveryState":     func() error { _, err := db.DeliveryState(ctx, dest.ID); return err },
		"DueRetries":        func() error { _, err := db.DueRetries(ctx, dest.ID, t0, 10); return err },
		"EventsBySeq":       func() error { _, err := db.EventsBySeq(ctx, []int64{1}); return err },
		"DeadLetters":       func() error { _, _, err := db.DeadLetters(ctx, dest.ID, f, 0, 10); return err },
		"ReplayDeadLetters": func() error { _, err := db.ReplayDeadLetters(ctx, dest.ID, f, t0); return err },
		"PurgeDeadLetters":  func() error { _, err := db.PurgeDeadLetters(ctx, dest.ID, f); return err },
		"DeliveryStats":     func() error { _, err := db.DeliveryStats(ctx, dest.ID, t0, t0); return err },
		"DeliveryIssues":    func() error { _, err := db.DeliveryIssues(ctx, dest.ID); return err },
		"IssueSamples":      func() error { _, err := db.IssueSamples(ctx, dest.ID, 1); return err },
		"DeleteExpiredEvents": func() error {
			_, _, err := db.DeleteExpiredEvents(ctx, t0, t0, t0, 10)
			return err
		},
	} {
		if err := call(); !errors.Is(err, trackapi.ErrUnavailable) {
			t.Errorf("%s after close: %v, want ErrUnavailable", name, err)
		}
	}
}

// TestSettleWhileStoring runs settlements, retention and event commits at once: they share the
// one writer connection, and none may fail or wait for ever.
func TestSettleWhileStoring(t *testing.T) {
	ctx := context.Background()
	db := open(t, tempPath(t), sqlite.Options{})
	src := newSource(t, db, "site1")
	dest := newDestination(t, db, "hook")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() {
		for i := range 50 {
			if _, err := db.StoreEvents(ctx, events(src, ids(20, fmt.Sprintf("e%d-", i))...)); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := range 50 {
			if err := db.SettleDelivery(ctx, trackapi.Settlement{DestinationID: dest.ID, Cursor: int64(i * 10),
				Retries: []trackapi.Retry{{Seq: int64(i), Attempt: 1, FirstFailedAt: t0, NextAt: t0}},
				Stats:   []trackapi.DeliveryStats{{Minute: t0, DeliveryCounts: trackapi.DeliveryCounts{Delivered: 1}}}}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for range 20 {
			if _, _, err := db.DeleteExpiredEvents(ctx, t0, t0, t0, 30); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st, err := db.DeliveryStats(ctx, dest.ID, t0, t0.Add(time.Minute)); err != nil || len(st) != 1 || st[0].Delivered != 50 {
		t.Fatalf("stats = %+v, %v; want 50 delivered", st, err)
	}
}
