package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"reflect"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

func hashed(e trackapi.Event, hash string) trackapi.Event {
	if hash != "" {
		e.BodyHash = []byte(hash)
	}
	return e
}

// A duplicate whose body hash differs from the stored event's is a reused id; the same hash, or
// no hash on either side, is a plain duplicate. Within one call too. Nothing but the first is
// stored.
func TestStoreEventOutcomes(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	db := open(t, path, sqlite.Options{})
	src := newSource(t, db, "site1")

	got, err := db.StoreEventOutcomes(ctx, []trackapi.Event{
		hashed(event(src, "a"), "hash-a-1"),
		hashed(event(src, "b"), ""),
		hashed(event(src, "a"), "hash-a-1"), // a retry in the same call
		hashed(event(src, "a"), "hash-a-2"), // another event with a's id
		hashed(event(src, "c"), "hash-c-1"),
	})
	want := []trackapi.StoreOutcome{trackapi.OutcomeStored, trackapi.OutcomeStored, trackapi.OutcomeDuplicate,
		trackapi.OutcomeIDReused, trackapi.OutcomeStored}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("first call: %v, %v; want %v", got, err, want)
	}
	got, err = db.StoreEventOutcomes(ctx, []trackapi.Event{
		hashed(event(src, "a"), "hash-a-1"), // a retry
		hashed(event(src, "a"), "hash-a-3"), // another event with a's id
		hashed(event(src, "a"), ""),         // no hash: cannot tell
		hashed(event(src, "b"), "hash-b-1"), // b was stored without a hash: cannot tell
		hashed(event(src, "d"), "hash-d-1"),
	})
	want = []trackapi.StoreOutcome{trackapi.OutcomeDuplicate, trackapi.OutcomeIDReused, trackapi.OutcomeDuplicate,
		trackapi.OutcomeDuplicate, trackapi.OutcomeStored}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("second call: %v, %v; want %v", got, err, want)
	}
	// StoreEvents says the same in bools.
	stored, err := db.StoreEvents(ctx, []trackapi.Event{hashed(event(src, "a"), "hash-a-9"), hashed(event(src, "e"), "x")})
	if err != nil || !reflect.DeepEqual(stored, []bool{false, true}) {
		t.Fatalf("StoreEvents = %v, %v", stored, err)
	}
	if ids := storedIDs(t, db, everything); !reflect.DeepEqual(ids, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("stored %v", ids)
	}
	var h []byte
	if err := rawDB(t, path).QueryRow(`SELECT body_hash FROM events WHERE event_id = 'a'`).Scan(&h); err != nil || string(h) != "hash-a-1" {
		t.Fatalf("a's stored hash %q, %v; want the first one's", h, err)
	}
}

// A file of the previous schema (0004) keeps its events readable, warnings and all, and a
// duplicate of one of its events, which have no hash, is a plain duplicate.
func TestMigrateFrom0004(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	old, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(ON)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"migrations/0001_init.sql", "migrations/0002_health.sql", "migrations/0003_keys_names_seq.sql", "migrations/0004_delivery.sql"} {
		script, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.Exec(string(script)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	body := `{"event_name":"a","context":{"event_id":"01a24e84-de6e-7e65-9d10-54069cbfdde8","event_timestamp":1796613660270}}`
	warnings := `[{"code":"event_id_generated","path":"/context/event_id","message":"context.event_id was missing or empty; the server assigned 01a24e84-de6e-7e65-9d10-54069cbfdde8"},` +
		`{"code":"schema_violation","path":"/user","message":"user: property \"user\" is missing"}]`
	for _, q := range []string{
		`PRAGMA user_version = 4`,
		`INSERT INTO sources(id, site, name, active, created_at) VALUES(1, 'site1', 'shop', 1, 1700000000000)`,
		`INSERT INTO events(seq, source_id, site, event_id, event_name, received_at, body, warnings) VALUES
			(1, 1, 'site1', '01a24e84-de6e-7e65-9d10-54069cbfdde8', 'a', 1796613660270, '` + body + `', '` + warnings + `'),
			(2, 1, 'site1', 'plain', 'b', 1796613660271, '{"event_name":"b"}', NULL)`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	old.Close()

	db := open(t, path, sqlite.Options{})
	all := readAll(t, db, everything, func(trackapi.StoredEvent) bool { return true })
	want := []trackapi.Problem{
		{Code: "event_id_generated", Path: "/context/event_id", Message: "context.event_id was missing or empty; the server assigned 01a24e84-de6e-7e65-9d10-54069cbfdde8"},
		{Code: "schema_violation", Path: "/user", Message: `user: property "user" is missing`},
	}
	if len(all) != 2 || string(all[0].Event) != body || !reflect.DeepEqual(all[0].Warnings, want) ||
		string(all[1].Event) != `{"event_name":"b"}` || len(all[1].Warnings) != 0 {
		t.Fatalf("events read after the migration: %+v", all)
	}
	src := trackapi.Source{ID: 1, Site: "site1"}
	got, err := db.StoreEventOutcomes(ctx, []trackapi.Event{hashed(event(src, "plain"), "h"), hashed(event(src, "new"), "h")})
	if err != nil || !reflect.DeepEqual(got, []trackapi.StoreOutcome{trackapi.OutcomeDuplicate, trackapi.OutcomeStored}) {
		t.Fatalf("after the migration: %v, %v", got, err)
	}
}
