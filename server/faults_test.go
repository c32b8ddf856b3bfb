package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/sqlite"
)

// get sends a GET through the spec-checking client.
func (e *env) get(path string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(req)
}

// metrics reads the server's metrics as the admin listener's GET /metrics serves them (the
// public listener does not).
func (e *env) metrics() response {
	e.t.Helper()
	rec := httptest.NewRecorder()
	e.Metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

// check503 asserts the store-failure answer: 503, Retry-After, the unavailable code.
func check503(t *testing.T, r response) {
	t.Helper()
	if r.Status != http.StatusServiceUnavailable || r.Error.Code != gen.ErrorCodeUnavailable {
		t.Fatalf("got %d %s, want 503 unavailable", r.Status, r.Body)
	}
	if r.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", r.Header.Get("Retry-After"))
	}
}

func checkReady(t *testing.T, e *env, want int) {
	t.Helper()
	r := e.get("/readyz")
	if r.Status != want {
		t.Fatalf("GET /readyz: %d %s, want %d", r.Status, r.Body, want)
	}
	if want == http.StatusServiceUnavailable && r.Header.Get("Retry-After") == "" {
		t.Error("an unready answer without Retry-After")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	e := newEnv(t)
	if r := e.get("/healthz"); r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`"ok"`)) {
		t.Fatalf("GET /healthz: %d %s", r.Status, r.Body)
	}
	checkReady(t, e, http.StatusOK)
}

// A closed store: 503 with Retry-After, never 200, and unready; liveness stays.
func TestClosedStoreGives503(t *testing.T) {
	e := newEnv(t)
	if err := e.DB.Close(); err != nil {
		t.Fatal(err)
	}
	check503(t, e.post(e.url("/events"), mustJSON(t, validEvent("closed-1"))))
	check503(t, e.post(e.url("/events/batch"), batchOf(t, validEvent("closed-2"))))
	checkReady(t, e, http.StatusServiceUnavailable)
	if r := e.get("/healthz"); r.Status != http.StatusOK {
		t.Errorf("GET /healthz with a closed store: %d", r.Status)
	}
}

// Another process holds the database's write lock: requests get 503 once the busy timeout runs
// out, and the server recovers by itself when the lock is released.
func TestLockedDatabaseGives503AndRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trackapi.db")
	e := newEnvWith(t, testenv.Options{DBPath: path, Store: sqlite.Options{BusyTimeout: 100 * time.Millisecond}})
	checkCounts(t, e.post(e.url("/events"), mustJSON(t, validEvent("before-lock"))), 1, 1, 0, 0)

	// The other process waits for the server's writes in flight (a last-used time, say) rather
	// than failing at once.
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	check503(t, e.post(e.url("/events"), mustJSON(t, validEvent("during-lock"))))
	checkReady(t, e, http.StatusServiceUnavailable)

	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	checkReady(t, e, http.StatusOK)
	checkCounts(t, e.post(e.url("/events"), mustJSON(t, validEvent("during-lock"))), 1, 1, 0, 0)
	if n := len(e.stored()); n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
}

// A real full disk: the database lives on a small tmpfs made by the test. Load until the disk is
// full; every 200 is stored and nothing of a 503 is; readiness follows; growing the filesystem
// clears the fault and the server recovers without a restart. Mounting needs root (as in CI);
// elsewhere the test is skipped, and the injected SQLITE_FULL test of sqlite/ still runs.
func TestFullDiskGives503AndRecovers(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	e := newEnvWith(t, testenv.Options{DBPath: filepath.Join(dir, "trackapi.db")})

	pad := strings.Repeat("x", 900)
	acked, refused := map[string]bool{}, map[string]bool{}
	full := false
	for i := 0; i < 200 && !full; i++ {
		var events []any
		var ids []string
		for j := 0; j < 50; j++ {
			id := fmt.Sprintf("disk-%d-%d", i, j)
			ev := validEvent(id)
			ev["pad"] = pad
			events, ids = append(events, ev), append(ids, id)
		}
		r := e.post(e.url("/events/batch"), batchOf(t, events...))
		switch r.Status {
		case http.StatusOK:
			checkCounts(t, r, 50, 50, 0, 0)
			for _, id := range ids {
				acked[id] = true
			}
		case http.StatusServiceUnavailable:
			check503(t, r)
			for _, id := range ids {
				refused[id] = true
			}
			full = true
		default:
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
	}
	if !full {
		t.Fatal("the 1 MiB filesystem never filled up")
	}
	t.Logf("%d events acknowledged before the disk was full", len(acked))
	checkReady(t, e, http.StatusServiceUnavailable)

	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v: %s", err, out)
	}
	checkReady(t, e, http.StatusOK)
	retry := e.post(e.url("/events/batch"), batchOf(t, validEvent("after-disk-full")))
	checkCounts(t, retry, 1, 1, 0, 0)

	exported := map[string]int{}
	for _, ev := range e.stored() {
		exported[apitest.EventID(t, ev.Event)]++
	}
	for id := range acked {
		if exported[id] != 1 {
			t.Fatalf("acknowledged event %s stored %d times", id, exported[id])
		}
	}
	for id := range refused {
		if exported[id] != 0 {
			t.Fatalf("event %s of a 503 was stored", id)
		}
	}
	if exported["after-disk-full"] != 1 {
		t.Error("the event sent after recovery was not stored")
	}
}

// The source key never reaches a log line, whatever the outcome of the request.
func TestSourceKeyNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	e := newEnvWith(t, testenv.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.post(e.url("/events"), mustJSON(t, validEvent("log-1")))                      // 200
	e.post(e.url("/events"), []byte(`{`))                                           // 400
	e.post(e.url("/events/batch"), []byte(`[]`))                                    // 400
	e.post(e.URL+"/events?tc_s=29", []byte(`{}`), "Authorization", "Bearer "+e.Key) // header key
	e.post(e.url("/nowhere"), []byte(`{}`))                                         // 404
	if err := e.DB.Close(); err != nil {
		t.Fatal(err)
	}
	e.post(e.url("/events"), mustJSON(t, validEvent("log-2"))) // 503, logged as an error
	out := logs.String()
	if !strings.Contains(out, "path=/events") || !strings.Contains(out, "status=503") {
		t.Fatalf("the requests were not logged:\n%s", out)
	}
	if strings.Contains(out, e.Key) || strings.Contains(out, "token=") {
		t.Fatalf("the source key appears in the logs:\n%s", out)
	}
}

// /metrics counts requests and events by endpoint and outcome, commits and their group sizes.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.post(e.url("/events"), mustJSON(t, validEvent("m-1")))
	e.post(e.url("/events"), mustJSON(t, validEvent("m-1")))
	e.post(e.url("/events/batch"), []byte(`{"batch":[{"event_name":"a"},{"context":{}}]}`))
	e.post(e.URL+"/events?tc_s=29&token=wrong", mustJSON(t, validEvent("m-2")))
	e.post(e.url("/events/batch"), []byte(`{"batch":`))
	e.post(e.url("/events"), []byte(strings.Repeat(" ", 40000)))

	r := e.metrics()
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", r.Status)
	}
	text := string(r.Body)
	for _, want := range []string{
		`trackapi_requests_total{endpoint="single",outcome="ok"} 3`,
		`trackapi_requests_total{endpoint="batch",outcome="ok"} 1`,
		`trackapi_requests_total{endpoint="batch",outcome="invalid_json"} 1`,
		`trackapi_requests_total{endpoint="single",outcome="payload_too_large"} 1`,
		`trackapi_events_total{code="",endpoint="single",outcome="accepted"} 1`,
		`trackapi_events_total{code="",endpoint="single",outcome="duplicate"} 1`,
		`trackapi_events_total{code="invalid_source",endpoint="single",outcome="rejected"} 1`,
		`trackapi_events_total{code="",endpoint="batch",outcome="accepted"} 1`,
		`trackapi_events_total{code="missing_event_name",endpoint="batch",outcome="rejected"} 1`,
		`trackapi_commit_duration_seconds_count{result="ok"} 3`,
		`trackapi_commit_group_events_sum 3`,
		`trackapi_request_duration_seconds_count{endpoint="single",status="200"} 3`,
		`trackapi_request_body_bytes_count{endpoint="batch"} 2`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		os.Stderr.WriteString(text)
	}
}

// Bodies in flight are bounded: when they fill the budget, a further request waits at most
// BodyWait and then gets a deliberate 503, counted as overloaded; room comes back as soon as the
// bodies holding it are done.
func TestBodyBudgetGivesCounted503(t *testing.T) {
	e := newEnvWith(t, testenv.Options{BodyBudget: 40000, BodyWait: 200 * time.Millisecond})
	body := eventOfSize(t, "budget-1", 30000)

	// A slow client holds 30000 bytes of the budget: it sends its headers and half its body.
	conn, r := rawRequest(t, e, "/events", fmt.Sprintf("Content-Length: %d\r\n", len(body)))
	if _, err := conn.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	// Wait until the server has taken the reservation: then another 30000 cannot fit.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.post(e.url("/events"), eventOfSize(t, "budget-2", 30000))
		if r.Status == http.StatusServiceUnavailable {
			check503(t, r)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a second large body was never refused while the first held the budget")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A small body still fits beside the slow one.
	checkCounts(t, e.post(e.url("/events"), mustJSON(t, validEvent("budget-small"))), 1, 1, 0, 0)

	// The slow client finishes: its event is stored, and the budget is free again.
	if _, err := conn.Write(body[len(body)/2:]); err != nil {
		t.Fatal(err)
	}
	if resp, b := readRawResponse(t, conn, r, "/events"); resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"accepted":1`)) {
		t.Fatalf("the slow request got %d %s", resp.StatusCode, b)
	}
	checkCounts(t, e.post(e.url("/events"), eventOfSize(t, "budget-3", 30000)), 1, 1, 0, 0)

	metrics := string(e.metrics().Body)
	if !strings.Contains(metrics, `trackapi_requests_total{endpoint="single",outcome="overloaded"}`) {
		t.Errorf("the 503 was not counted as overloaded:\n%s", metrics)
	}
}
