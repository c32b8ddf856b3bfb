package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/server"
	"github.com/trackapi/trackapi/sqlite"
)

// seedFromTestdata adds every file of ../testdata/events as a seed.
func seedFromTestdata(f *testing.F, pattern string) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "events", pattern))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files %s: %v", pattern, err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	f.Add([]byte(`{}`), false)
}

// fuzzCollect posts each input to path on an in-process server over a real SQLite file, as a
// fresh source, and checks the invariants of DESIGN.md §3: a status in {200, 400, 503}, a body the
// spec describes, received = accepted + duplicates + rejected, and every accepted event stored.
func fuzzCollect(f *testing.F, path string) {
	db, err := sqlite.Open(filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	srv, err := server.New(server.Config{Events: db, Sources: db, Logger: quietLogger})
	if err != nil {
		f.Fatal(err)
	}
	handler := srv.Handler()
	n := 0

	f.Fuzz(func(t *testing.T, body []byte, withKey bool) {
		n++
		key := fmt.Sprintf("fuzz-key-%d-%d", os.Getpid(), n)
		source, err := db.CreateSource(context.Background(), "1", "fuzz", trackapi.HashKey(key))
		if err != nil {
			t.Fatal(err)
		}
		target := path + "?tc_s=1"
		if withKey {
			target += "&token=" + key
		}
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)

		apitest.CheckResponse(t, req, rec.Code, rec.Header(), rec.Body.Bytes())
		switch rec.Code {
		case http.StatusBadRequest, http.StatusServiceUnavailable:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var result gen.CollectResult
		if err := json.Unmarshal(rec.Body.Bytes(), &result); err != nil {
			t.Fatal(err)
		}
		if result.Received != result.Accepted+result.Duplicates+result.Rejected {
			t.Fatalf("received %d != %d + %d + %d", result.Received, result.Accepted, result.Duplicates, result.Rejected)
		}
		stored := 0
		err = db.ExportEvents(context.Background(), source.ID, func(ev trackapi.StoredEvent) error {
			stored++
			if !json.Valid(ev.Event) {
				t.Errorf("stored event is not JSON: %.200s", ev.Event)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if stored != result.Accepted {
			t.Fatalf("%d events stored for %d accepted", stored, result.Accepted)
		}
	})
}

func FuzzCollectEvent(f *testing.F) {
	seedFromTestdata(f, "single-*.json")
	fuzzCollect(f, "/events")
}

func FuzzCollectBatch(f *testing.F) {
	seedFromTestdata(f, "batch-*.json")
	fuzzCollect(f, "/events/batch")
}
