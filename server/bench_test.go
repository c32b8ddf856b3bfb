package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/sqlite"
)

// The hot path of a collect request, in-process: the Echo handler reads, checks, authenticates,
// processes and stores the request, and encodes the answer. "sqlite" is the real store in
// b.TempDir() (fsync on, so a lone request waits for its own sync); "nostore" answers at once,
// which leaves the handler's own CPU cost. The parallel variants keep as many requests in flight
// as the end-to-end benchmark's connections (go run ./bench), so that commits are grouped.

func BenchmarkCollectEvent1KB(b *testing.B) {
	for _, store := range []string{"sqlite", "nostore"} {
		b.Run(store, func(b *testing.B) { benchCollect(b, store, "/events", 1, 1024, 1) })
	}
}

// 50 requests in flight, as in the single-event scenario of `make bench` at 50 connections.
func BenchmarkCollectEvent1KBParallel50(b *testing.B) {
	benchCollect(b, "sqlite", "/events", 1, 1024, 50)
}

func BenchmarkCollectBatch100x330B(b *testing.B) {
	for _, store := range []string{"sqlite", "nostore"} {
		b.Run(store, func(b *testing.B) { benchCollect(b, store, "/events/batch", 100, 330, 1) })
	}
}

// 20 batches in flight, as in the batch scenario of `make bench` at 20 connections.
func BenchmarkCollectBatch100x330BParallel20(b *testing.B) {
	benchCollect(b, "sqlite", "/events/batch", 100, 330, 20)
}

// benchCollect sends requests of events events of about size bytes each to path, inFlight at a
// time, every event with a new id so that each one is really stored.
func benchCollect(b *testing.B, store, path string, events, size, inFlight int) {
	h, key, commits := benchHandler(b, store)
	body, idAt := benchBody(path, events, size)
	target := path + "?tc_s=" + benchSite + "&token=" + key
	want := []byte(`"accepted":` + strconv.Itoa(events) + `,`)

	// One request through the spec check first: the benchmark must measure a correct answer.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(benchStamp(bytes.Clone(body), idAt, 0)))
	h.ServeHTTP(rec, req)
	apitest.CheckResponse(b, req, rec.Code, rec.Header(), rec.Body.Bytes())
	if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), want) || !bytes.Contains(rec.Body.Bytes(), []byte(`"warnings":[]`)) {
		b.Fatalf("status %d, body %s; want every event accepted without a warning", rec.Code, rec.Body)
	}

	var next atomic.Uint64 // request counter, for unique event ids
	next.Store(1)
	send := func(mine []byte) bool {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(benchStamp(mine, idAt, next.Add(1))))
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), want) {
			b.Errorf("status %d, body %.300s", rec.Code, rec.Body)
			return false
		}
		return true
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	if inFlight <= 1 {
		mine := bytes.Clone(body)
		for i := 0; i < b.N && send(mine); i++ {
		}
	} else {
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		b.SetParallelism(max(1, inFlight/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			mine := bytes.Clone(body)
			for pb.Next() && send(mine) {
			}
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
	if n := commits.groups.Load(); n > 0 && store == "sqlite" {
		b.ReportMetric(float64(commits.requests.Load())/float64(n), "requests/commit")
		b.ReportMetric(float64(commits.nanos.Load())/float64(n)/1e6, "ms/commit")
	}
}

// benchCommits counts the store's transactions, to show how many requests share one fsync.
type benchCommits struct {
	groups, requests, nanos atomic.Int64
}

func (c *benchCommits) onCommit(groupRequests, _ int, took time.Duration, err error) {
	if err == nil {
		c.groups.Add(1)
		c.requests.Add(int64(groupRequests))
		c.nanos.Add(int64(took))
	}
}

// benchSite is the site of the benchmarks' source.
const benchSite = testenv.Site

// benchHandler is the collect handler over a source of benchSite, and that source's key. Events
// go to a real SQLite store in b.TempDir() ("sqlite") or to one that stores nothing ("nostore");
// sources are always in SQLite. The commits are counted from the first request on.
func benchHandler(b *testing.B, store string) (http.Handler, string, *benchCommits) {
	b.Helper()
	commits := &benchCommits{}
	opts := testenv.Options{Store: sqlite.Options{OnCommit: commits.onCommit}}
	if store == "nostore" {
		opts.Events = noStore{}
	}
	env := testenv.Start(b, opts)
	return env.Handler, env.Key, commits
}

// noStore acknowledges every event at once without keeping it.
type noStore struct{}

func (noStore) StoreEvents(_ context.Context, events []trackapi.Event) ([]bool, error) {
	stored := make([]bool, len(events))
	for i := range stored {
		stored[i] = true
	}
	return stored, nil
}

// benchIDWidth is the length of the benchmarks' event ids.
const benchIDWidth = 24

// benchBody is a request body for path: one event, or a batch of events, each of about size
// bytes and valid against the Event schema, with where each event id is.
func benchBody(path string, events, size int) ([]byte, []int) {
	placeholder := strings.Repeat("0", benchIDWidth)
	head := `{"event_name":"page_view","page_type":"product",` +
		`"user":{"consistent_anonymous_id":"6f1c2ad0-67892","consent_categories":["1","3"]},` +
		`"context":{"event_id":"` + placeholder + `","event_timestamp":1700000000000,"page":{"url":"https://shop.example.com/p/1234","lang":"en"}},` +
		`"note":"`
	event := head + strings.Repeat("x", max(0, size-len(head)-2)) + `"}`
	idAt := strings.Index(event, placeholder)
	if path == "/events" {
		return []byte(event), []int{idAt}
	}
	var body []byte
	var ids []int
	body = append(body, `{"batch":[`...)
	for i := range events {
		if i > 0 {
			body = append(body, ',')
		}
		ids = append(ids, len(body)+idAt)
		body = append(body, event...)
	}
	return append(body, "]}"...), ids
}

// benchStamp writes ids unique to request n into body and returns it.
func benchStamp(body []byte, idAt []int, n uint64) []byte {
	for i, at := range idAt {
		copy(body[at:at+benchIDWidth], fmt.Sprintf("%016d-%07d", n, i))
	}
	return body
}
