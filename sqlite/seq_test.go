package sqlite_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// TestSeqNeverReused checks the rule readers rely on: every new event's sequence number is above
// every number handed out before, also after the newest events were deleted, the table was
// emptied, the file reopened, and with duplicates and failed requests in between.
func TestSeqNeverReused(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	src := newSource(t, db, "site1")
	raw := rawDB(t, path) // deletes come from another connection, as from a retention job
	var highest int64     // the highest seq ever handed out
	round := 0

	// storeAndCheck stores n new events (and a duplicate of the first, which takes no number) and
	// checks that their numbers are all above highest and increasing.
	storeAndCheck := func(db *sqlite.DB, n int) {
		t.Helper()
		round++
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("r%d-%d", round, i)
		}
		evs := events(src, append(ids, ids[0])...)
		stored, err := db.StoreEvents(ctx, evs)
		if err != nil || stored[n] {
			t.Fatalf("round %d: stored %v, %v", round, stored, err)
		}
		page, _, err := db.ReadEvents(ctx, 0, everything, 1000000)
		if err != nil {
			t.Fatal(err)
		}
		var fresh []int64
		for _, e := range page {
			if strings.HasPrefix(e.EventID, fmt.Sprintf("r%d-", round)) {
				fresh = append(fresh, e.Seq)
			}
		}
		if len(fresh) != n {
			t.Fatalf("round %d: %d new events in the log, want %d", round, len(fresh), n)
		}
		for _, seq := range fresh {
			if seq <= highest {
				t.Fatalf("round %d: new event got seq %d, but %d was handed out before", round, seq, highest)
			}
			highest = seq
		}
	}
	deleteWhere := func(where string, args ...any) {
		t.Helper()
		if _, err := raw.Exec("DELETE FROM events WHERE "+where, args...); err != nil {
			t.Fatal(err)
		}
	}

	storeAndCheck(db, 5)
	deleteWhere("seq > ?", highest-2) // the two newest
	storeAndCheck(db, 3)
	deleteWhere("seq = ?", highest) // the newest alone
	storeAndCheck(db, 1)
	deleteWhere("1") // everything
	if n := queryInt(t, raw, "SELECT count(*) FROM events"); n != 0 {
		t.Fatalf("%d events left after deleting all", n)
	}
	storeAndCheck(db, 4)

	// A request that fails alone (an unknown source) in a group with good ones, right after the
	// table was emptied: the bad request's first event took floor+1 before its second failed,
	// and was undone, so the good one must be given that number again, not max(seq)+1 = 1.
	deleteWhere("1")
	release := sqlite.HoldWriter(t, db)
	waitBad, err := sqlite.Enqueue(ctx, db, []trackapi.Event{event(src, "bad-1"), event(trackapi.Source{ID: src.ID + 100}, "bad-2")})
	if err != nil {
		t.Fatal(err)
	}
	waitGood, err := sqlite.Enqueue(ctx, db, events(src, "good"))
	if err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := waitBad(); err == nil {
		t.Fatal("bad request stored")
	}
	if _, err := waitGood(); err != nil {
		t.Fatal(err)
	}
	page, _, err := db.ReadEvents(ctx, highest, everything, 10)
	if err != nil || len(page) != 1 || page[0].EventID != "good" {
		t.Fatalf("events after %d = %+v, %v; want the good one", highest, page, err)
	}
	highest = page[0].Seq

	// The floor is in the file: emptied, closed and reopened, the numbers still go on.
	deleteWhere("1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, path, sqlite.Options{})
	storeAndCheck(db, 2)
	// Deleting old rows only (not the newest) changes nothing either.
	deleteWhere("seq < ?", highest)
	storeAndCheck(db, 2)
}
