package ingest_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/trackapi/trackapi/internal/testenv"

	_ "modernc.org/sqlite" // the driver of the test's own read connection
)

// maxDiskPerByte is the most the event store may grow, in bytes on disk, for each byte of request
// body received (bound of issue #13).
const maxDiskPerByte = 15

// TestBytesOnDiskPerByteReceived stores events of the shapes that cost the most disk for their
// size and divides the growth of the database (PRAGMA page_count × page_size, after minus before)
// by the request bytes received (bodies as decompressed).
//
// The worst case is the smallest event that gets every server-filled field: {"event_name":""} or
// {"event_name":"a"} (17 or 18 bytes) gets a server id (a UUIDv7, 36 bytes), a timestamp (13
// digits) and three warnings. Its row holds the id twice (the event_id column and its unique
// index), the body, the warnings and a body hash. Worst case measured (2026-12-07, this test):
// 11.6 bytes on disk a byte received, for 17-byte events sent one a request (197 bytes an event);
// 11.2 for 18-byte ones sent one a request, 10.5 in full batches (199 bytes an event), 4.5 for
// events with a dozen schema warnings, 6.9 for moved and converted timestamps, 1.4 for typical
// 330-byte events with their own id and timestamp. Before migration 0005 (warnings as JSON with
// their messages, server-filled members in the body) the same shapes cost 37.6, 35.5, 33.6, 47.8,
// 21.3 and 1.4: the JSON warnings of an 18-byte event took 396 bytes, 639 bytes on disk an event.
// A gzipped body can be far smaller on the wire than the bytes counted here.
func TestBytesOnDiskPerByteReceived(t *testing.T) {
	if testing.Short() {
		t.Skip("stores about 2 MB of events")
	}
	shapes := []struct {
		name    string
		single  bool
		element string
		n       int // events, in batches of at most 512000 bytes
	}{
		{"18-byte events in batches", false, `{"event_name":"a"}`, 26946},
		{"18-byte events one a request", true, `{"event_name":"a"}`, 1000},
		{"17-byte events one a request", true, `{"event_name":""}`, 1000},
		{"11 schema warnings", false, `{"event_name":"a","user":{"consent_categories":[{},{},{},{},{},{},{},{},{},{},{},{}]}}`, 6000},
		{"timestamp moved and converted", false, `{"event_name":"a","event_timestamp":"1"}`, 10000},
		{"330-byte events with id and timestamp", false, "", 3000},
	}
	worst := 0.0
	for _, shape := range shapes {
		t.Run(shape.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "trackapi.db")
			s := testenv.New(t, testenv.Options{DBPath: path})
			raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_query_only=1")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			size := func() int64 {
				var pages, pageSize int64
				if err := raw.QueryRow("PRAGMA page_count").Scan(&pages); err != nil {
					t.Fatal(err)
				}
				if err := raw.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
					t.Fatal(err)
				}
				return pages * pageSize
			}
			element := func(i int) string {
				if shape.element != "" {
					return shape.element
				}
				return fmt.Sprintf(`{"event_name":"page_view","page_type":"product","user":{"consistent_anonymous_id":"67892-%d",`+
					`"consent_categories":["1","3"]},"context":{"event_id":"%d-0192f0c4-6d2b-7cc1-9a57","event_timestamp":1639044446636,`+
					`"page":{"title":"A product page","url":"https://shop.example.com/p/12345?ref=home","lang":"en"},`+
					`"device":{"user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}}}`, i, i)
			}

			before := size()
			received := 0
			if shape.single {
				url := s.URL + "/events?tc_s=" + s.Site + "&token=" + s.Key
				for i := range shape.n {
					body := []byte(element(i))
					if r := post(t, url, body, false).result; r.Accepted != 1 {
						t.Fatalf("%+v", r)
					}
					received += len(body)
				}
			} else {
				url := s.URL + "/events/batch?tc_s=" + s.Site + "&token=" + s.Key
				for i := 0; i < shape.n; {
					var elements []string
					size := len(`{"batch":[]}`)
					for ; i < shape.n && size+len(element(i))+1 <= 512000; i++ {
						elements = append(elements, element(i))
						size += len(element(i)) + 1
					}
					body := batchOf(elements...)
					if r := post(t, url, body, false).result; r.Accepted != len(elements) {
						t.Fatalf("accepted %d of %d", r.Accepted, len(elements))
					}
					received += len(body)
				}
			}
			grown := size() - before
			ratio := float64(grown) / float64(received)
			worst = max(worst, ratio)
			t.Logf("%d events, %d bytes received, the database grew %d bytes: %.1f bytes on disk a byte received, %.0f an event",
				shape.n, received, grown, ratio, float64(grown)/float64(shape.n))
			if ratio > maxDiskPerByte {
				t.Errorf("%.1f bytes on disk a byte received, want at most %d", ratio, maxDiskPerByte)
			}
		})
	}
	t.Logf("worst: %.1f bytes on disk a byte received", worst)
}
