package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// TestMigrateFrom0002 opens a file made by the previous version of the schema (migrations 0001
// and 0002 only: one key a source in sources.key_hash, no event names, seq reused after
// deletes) and checks what migration 0003 makes of it.
func TestMigrateFrom0002(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)

	// The previous schema, as the previous version created it, with its data.
	old, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(ON)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"migrations/0001_init.sql", "migrations/0002_health.sql"} {
		script, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.Exec(string(script)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	shopHash, blogHash := trackapi.HashKey("shop-key"), trackapi.HashKey("blog-key")
	shopCreated, blogCreated := int64(1700000000000), int64(1700000100000)
	for _, q := range []struct {
		query string
		args  []any
	}{
		{`PRAGMA user_version = 2`, nil},
		{`INSERT INTO sources(id, site, name, key_hash, active, created_at) VALUES(1, 'site1', 'shop', ?, 1, ?)`, []any{shopHash, shopCreated}},
		{`INSERT INTO sources(id, site, name, key_hash, active, created_at) VALUES(2, 'site2', 'blog', ?, 0, ?)`, []any{blogHash, blogCreated}},
		{`INSERT INTO events(seq, source_id, site, event_id, received_at, body, warnings) VALUES
			(1, 1, 'site1', 'a', 1700000000001, '{"id":"a","event_name":"page_view"}', NULL),
			(2, 1, 'site1', 'b', 1700000000002, '{"id":"b","event_name":"search"}', '[{"code":"c","path":"/p","message":"m"}]'),
			(3, 2, 'site2', 'c', 1700000000003, '{"id":"c","event_name":7}', NULL),
			(4, 2, 'site2', 'not-json', 1700000000004, 'not JSON', NULL),
			(100, 1, 'site1', 'd', 1700000000005, '{"id":"d","event_name":"page_view"}', NULL)`, nil},
	} {
		if _, err := old.Exec(q.query, q.args...); err != nil {
			t.Fatalf("%s: %v", q.query, err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db := open(t, path, sqlite.Options{})
	raw := rawDB(t, path)
	if v := queryInt(t, raw, "PRAGMA user_version"); v != schemaVersion {
		t.Fatalf("user_version = %d, want %d", v, schemaVersion)
	}

	// The sources, without their keys, and each old key in source_keys: live, no prefix.
	sources, err := db.Sources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []trackapi.Source{
		{ID: 1, Site: "site1", Name: "shop", Active: true, CreatedAt: time.UnixMilli(shopCreated).UTC()},
		{ID: 2, Site: "site2", Name: "blog", Active: false, CreatedAt: time.UnixMilli(blogCreated).UTC()},
	}
	if !reflect.DeepEqual(sources, want) {
		t.Fatalf("sources = %+v\nwant %+v", sources, want)
	}
	if n := queryInt(t, raw, `SELECT count(*) FROM pragma_table_info('sources') WHERE name = 'key_hash'`); n != 0 {
		t.Fatal("sources still has key_hash")
	}
	now := time.Now()
	for _, c := range []struct {
		hash    []byte
		source  int64
		created int64
	}{{shopHash, 1, shopCreated}, {blogHash, 2, blogCreated}} {
		k, err := db.SourceKeyByHash(ctx, c.hash)
		if err != nil {
			t.Fatalf("old key of source %d: %v", c.source, err)
		}
		if k.SourceID != c.source || k.Prefix != "" || !bytes.Equal(k.Hash, c.hash) || !k.Live(now) ||
			k.CreatedAt != time.UnixMilli(c.created).UTC() || !k.LastUsedAt.IsZero() {
			t.Fatalf("old key of source %d = %+v", c.source, k)
		}
	}
	if live, err := db.LiveSourceKeys(ctx, now); err != nil || len(live) != 2 {
		t.Fatalf("live keys = %+v, %v; want the two old ones", live, err)
	}

	// The events, with their sequence numbers and warnings, and event_name backfilled where the
	// body has a string one.
	all := readAll(t, db, everything, func(e trackapi.StoredEvent) bool { return e.EventID == "not-json" })
	type short struct {
		Seq       int64
		EventID   string
		EventName string
		Warnings  int
	}
	var got []short
	for _, e := range all {
		got = append(got, short{e.Seq, e.EventID, e.EventName, len(e.Warnings)})
	}
	wantEvents := []short{{1, "a", "page_view", 0}, {2, "b", "search", 1}, {3, "c", "", 0}, {4, "not-json", "", 0}, {100, "d", "page_view", 0}}
	if !reflect.DeepEqual(got, wantEvents) {
		t.Fatalf("events = %+v\nwant %+v", got, wantEvents)
	}
	if ids := storedIDs(t, db, trackapi.EventFilter{EventName: "page_view"}); !reflect.DeepEqual(ids, []string{"a", "d"}) {
		t.Fatalf("page_view events = %v, want a d", ids)
	}

	// The newest old event deleted, new events still get numbers above it: the floor starts at
	// the highest seq of the migrated file.
	if _, err := raw.Exec(`DELETE FROM events WHERE seq = 100`); err != nil {
		t.Fatal(err)
	}
	shop := sources[0]
	if stored, err := db.StoreEvents(ctx, events(shop, "e", "f")); err != nil || !reflect.DeepEqual(stored, []bool{true, true}) {
		t.Fatalf("store after migrating: %v, %v", stored, err)
	}
	page, _, err := db.ReadEvents(ctx, 4, everything, 10)
	if err != nil || len(page) != 2 || page[0].Seq <= 100 || page[1].Seq <= page[0].Seq {
		t.Fatalf("new events = %+v, %v; want two with seq above 100", page, err)
	}
	// Deduplication still works on migrated events.
	if stored, err := db.StoreEvents(ctx, events(shop, "a")); err != nil || stored[0] {
		t.Fatalf("store a migrated event again: %v, %v; want a duplicate", stored, err)
	}

	// Foreign keys survived the new sources table: nothing dangles, events and keys still name
	// sources, and an unknown source is still refused, by the store and by a plain connection.
	rows, err := raw.Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Fatal("PRAGMA foreign_key_check reports broken references")
	}
	rows.Close()
	for _, table := range []string{"events", "source_keys"} {
		var parent string
		if err := raw.QueryRow(`SELECT "table" FROM pragma_foreign_key_list(?)`, table).Scan(&parent); err != nil || parent != "sources" {
			t.Fatalf("%s references %q (%v), want sources", table, parent, err)
		}
	}
	if _, err := db.StoreEvents(ctx, events(trackapi.Source{ID: 99, Site: "x"}, "g")); err == nil || errors.Is(err, trackapi.ErrUnavailable) {
		t.Fatalf("store for an unknown source: %v, want a permanent error", err)
	}
	checked, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(ON)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer checked.Close()
	if _, err := checked.Exec(`INSERT INTO events(seq, source_id, site, event_id, received_at, body) VALUES(1000, 99, 'x', 'h', 0, '{}')`); err == nil {
		t.Fatal("a plain connection stored an event of an unknown source")
	}
	if _, err := checked.Exec(`INSERT INTO source_keys(source_id, prefix, key_hash, created_at) VALUES(99, '', x'00', 0)`); err == nil {
		t.Fatal("a plain connection stored a key of an unknown source")
	}
	var integrity string
	if err := raw.QueryRow(`PRAGMA integrity_check`).Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check = %q, %v", integrity, err)
	}

	// New sources continue the ids.
	s3, _ := newSourceWithKey(t, db, "site3")
	if s3.ID != 3 {
		t.Fatalf("new source id %d, want 3", s3.ID)
	}
}
