package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
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
// fresh source, and checks the invariants of openapi.yaml: a status in {200, 400, 503}, a body the
// spec describes, received = accepted + duplicates + rejected, and every accepted event stored.
func fuzzCollect(f *testing.F, path string) {
	env := testenv.Start(f, testenv.Options{})
	handler := env.Handler

	f.Fuzz(func(t *testing.T, body []byte, withKey bool) {
		source, key := env.AddSource(t, "1", "fuzz") // a fresh source: nothing counts as a duplicate
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
		events, _, err := env.DB.ReadEvents(context.Background(), 0, trackapi.EventFilter{SourceID: source.ID}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if !json.Valid(ev.Event) {
				t.Errorf("stored event is not JSON: %.200s", ev.Event)
			}
		}
		if stored := len(events); stored != result.Accepted {
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
