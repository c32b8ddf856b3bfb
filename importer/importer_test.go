package importer_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/syncbuf"

	"github.com/trackapi/trackapi/importer"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/sqlite"
)

// collector is a real server (real handlers, real SQLite file) with one source, behind a proxy
// on 127.0.0.1 that checks every answer against openapi.yaml.
type collector struct {
	URL, Site, Key string
	db             *sqlite.DB
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	env := testenv.Start(t, testenv.Options{})
	real := httptest.NewServer(env.Handler)
	target, err := url.Parse(real.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = apitest.Client(t).Transport
	checked := httptest.NewServer(proxy)
	t.Cleanup(func() {
		checked.Close()
		real.Close()
	})
	return &collector{URL: checked.URL, Site: env.Site, Key: env.Key, db: env.DB}
}

// stored counts the stored events by event_id.
func (c *collector) stored(t *testing.T) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, ev := range testenv.Stored(t, c.db) {
		counts[apitest.EventID(t, ev.Event)]++
	}
	return counts
}

// config is a Config for the collector, with the summary and progress kept for the test.
func (c *collector) config(input string, stdout, stderr *bytes.Buffer) importer.Config {
	return importer.Config{BaseURL: c.URL, Site: c.Site, Token: c.Key, Input: input, Stdout: stdout, Stderr: stderr}
}

// downURL is a URL where nothing listens: connections are refused.
func downURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "http://" + ln.Addr().String()
}

func event(id string, i int) string {
	return fmt.Sprintf(`{"event_name":"page_view","page_name":"p%d","user":{"consistent_anonymous_id":"v%d","consent_categories":["1"]},"context":{"event_id":%q}}`, i, i, id)
}

func writeLines(t *testing.T, lines []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// records reads a failed file.
func records(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("failed-file line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// Every non-blank line ends in exactly one count: the good events are stored, the bad lines are
// in the failed file with their line numbers, the summary line is printed, and the error says
// that not everything was delivered.
func TestRunAccountsForEveryLine(t *testing.T) {
	c := newCollector(t)
	lines := []string{event("a", 1), "", "not json", event("b", 2), `  ` + event("c", 3) + "\t\r", `{"no_name":1}`, event("d", 4)}
	input := writeLines(t, lines)
	failed := filepath.Join(t.TempDir(), "failed.ndjson")
	var stdout, stderr bytes.Buffer
	cfg := c.config(input, &stdout, &stderr)
	cfg.FailedPath = failed
	sum, err := importer.Run(context.Background(), cfg)
	want := importer.Summary{Events: 6, Accepted: 4, Rejected: 2, Invalid: 2, FailedPath: failed}
	sum.Elapsed = 0
	if sum != want {
		t.Errorf("summary %+v, want %+v", sum, want)
	}
	if err == nil || !strings.Contains(err.Error(), "2 of 6 events not delivered") || !strings.Contains(err.Error(), failed) {
		t.Errorf("err = %v", err)
	}
	if got := stdout.String(); !strings.HasPrefix(got, "sent 6 events in ") || !strings.HasSuffix(got, ": 4 accepted, 0 duplicates, 2 rejected, 0 failed (2 invalid lines)\n") {
		t.Errorf("stdout %q", got)
	}
	bad := records(t, failed)
	if len(bad) != 2 || bad[0]["line"] != 3.0 || bad[0]["code"] != "invalid_payload" || bad[1]["line"] != 6.0 || bad[1]["code"] != "missing_event_name" {
		t.Errorf("failed records %v", bad)
	}
	if got := c.stored(t); len(got) != 4 || got["a"]+got["b"]+got["c"]+got["d"] != 4 {
		t.Errorf("stored %v", got)
	}

	// The same events again: duplicates, which count as delivered.
	stdout.Reset()
	sum, err = importer.Run(context.Background(), c.config(writeLines(t, []string{event("a", 1), event("d", 4)}), &stdout, &stderr))
	if err != nil || sum.Duplicates != 2 || sum.NotDelivered() != 0 {
		t.Errorf("sent again: %+v, %v", sum, err)
	}
}

// Standard input is read when Input is "-"; with everything delivered, the default failed file
// is not created.
func TestRunFromStdin(t *testing.T) {
	t.Chdir(t.TempDir())
	c := newCollector(t)
	var stdout, stderr bytes.Buffer
	cfg := c.config("-", &stdout, &stderr)
	cfg.Stdin = strings.NewReader(event("s1", 1) + "\n" + event("s2", 2)) // no final newline
	sum, err := importer.Run(context.Background(), cfg)
	if err != nil || sum.Accepted != 2 || sum.FailedPath != "stdin.failed.ndjson" {
		t.Fatalf("%+v, %v", sum, err)
	}
	if _, err := os.Stat("stdin.failed.ndjson"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the default failed file was created with nothing to put in it: %v", err)
	}
}

// A Config that cannot work is refused before anything is read, sent or printed.
func TestRunRefusesABadConfig(t *testing.T) {
	good := importer.Config{BaseURL: "http://127.0.0.1:1", Site: "1", Token: "k", Input: "-", Stdin: strings.NewReader("")}
	for name, change := range map[string]func(*importer.Config){
		"no URL":         func(c *importer.Config) { c.BaseURL = "" },
		"no site":        func(c *importer.Config) { c.Site = "" },
		"no token":       func(c *importer.Config) { c.Token = "" },
		"no input":       func(c *importer.Config) { c.Input = "" },
		"no stdin":       func(c *importer.Config) { c.Stdin = nil },
		"bad URL":        func(c *importer.Config) { c.BaseURL = "ftp://x" },
		"negative queue": func(c *importer.Config) { c.QueueSize = -1 },
		"missing file":   func(c *importer.Config) { c.Input = filepath.Join(t.TempDir(), "none") },
		"failed in a missing dir": func(c *importer.Config) {
			c.FailedPath = filepath.Join(t.TempDir(), "none", "failed")
		},
	} {
		cfg := good
		var stdout bytes.Buffer
		cfg.Stdout = &stdout
		change(&cfg)
		sum, err := importer.Run(context.Background(), cfg)
		if err == nil || sum != (importer.Summary{}) || stdout.Len() > 0 {
			t.Errorf("%s: %+v, %v, stdout %q", name, sum, err, stdout.String())
		}
	}
}

// With the server down, the import stops after one batch's retry budget, not later, and every
// line is in the failed file: the batch that failed, then the lines not sent.
func TestRunStopsWhenTheServerIsDown(t *testing.T) {
	var lines []string
	for i := range 100 {
		lines = append(lines, event(fmt.Sprintf("down-%d", i), i))
	}
	failed := filepath.Join(t.TempDir(), "failed.ndjson")
	var stdout, stderr bytes.Buffer
	cfg := importer.Config{BaseURL: downURL(t), Site: "1", Token: "k", Input: writeLines(t, lines), FailedPath: failed,
		RetryFor: 300 * time.Millisecond, QueueSize: 10, Concurrency: 1, Stdout: &stdout, Stderr: &stderr}
	start := time.Now()
	sum, err := importer.Run(context.Background(), cfg)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s with a 300 ms retry budget", took)
	}
	if err == nil || sum.Failed != 100 || sum.Events != 100 {
		t.Fatalf("%+v, %v", sum, err)
	}
	if n := len(records(t, failed)); n != 100 {
		t.Errorf("%d failed records, want 100", n)
	}
}

// The end of the context interrupts the import at once, even in the middle of retries: the
// events are in the failed file, and the error says it was interrupted.
func TestRunInterrupted(t *testing.T) {
	var lines []string
	for i := range 100 {
		lines = append(lines, event(fmt.Sprintf("int-%d", i), i))
	}
	failed := filepath.Join(t.TempDir(), "failed.ndjson")
	cfg := importer.Config{BaseURL: downURL(t), Site: "1", Token: "k", Input: writeLines(t, lines), FailedPath: failed,
		RetryFor: 10 * time.Minute, QueueSize: 10, Concurrency: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	sum, err := importer.Run(ctx, cfg)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to stop", took)
	}
	if err == nil || !strings.HasPrefix(err.Error(), "interrupted: 100 of 100 events not delivered") || sum.Failed != 100 {
		t.Fatalf("%+v, %v", sum, err)
	}
	if n := len(records(t, failed)); n != 100 {
		t.Errorf("%d failed records, want 100", n)
	}
}

// retryLine is a progress line while retrying: the reason, and when the next attempt is.
var retryLine = regexp.MustCompile(`(?m)^progress: .* pending; retrying after (.+), attempt \d+ (in \d+\.\d+s|under way)$`)

// With the server down, the progress lines say why nothing moves, and when the next attempt is;
// they never show the key.
func TestProgressSaysWhyItIsRetrying(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cfg := importer.Config{BaseURL: downURL(t), Site: "1", Token: "SECRET-KEY", Input: writeLines(t, []string{event("r", 1)}),
		FailedPath: filepath.Join(t.TempDir(), "failed"), RetryFor: time.Second, ProgressInterval: 20 * time.Millisecond,
		Stdout: &stdout, Stderr: &stderr}
	if _, err := importer.Run(context.Background(), cfg); err == nil {
		t.Fatal("no error with the server down")
	}
	m := retryLine.FindAllStringSubmatch(stderr.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no progress line says why it is retrying:\n%s", stderr.String())
	}
	for _, line := range m {
		if line[1] != "connection refused" {
			t.Errorf("reason %q, want connection refused", line[1])
		}
	}
	if strings.Contains(stderr.String()+stdout.String(), "SECRET") {
		t.Errorf("the key was printed:\n%s", stderr.String())
	}
}

// An HTTP error is named by its status. Once the retry succeeded, the progress no longer
// mentions it.
func TestProgressForgetsARetryThatSucceeded(t *testing.T) {
	c := newCollector(t)
	target, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var requests atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"code":"unavailable","message":"injected"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	in, feed := io.Pipe()
	var stdout bytes.Buffer
	var stderr syncbuf.Buffer
	cfg := importer.Config{BaseURL: front.URL, Site: c.Site, Token: c.Key, Input: "-", Stdin: in,
		FailedPath: filepath.Join(t.TempDir(), "failed"), ProgressInterval: 20 * time.Millisecond, Stdout: &stdout, Stderr: &stderr}
	done := make(chan error, 1)
	go func() {
		_, err := importer.Run(context.Background(), cfg)
		done <- err
	}()
	fmt.Fprintln(feed, event("ok", 1))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), " 1 sent ") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a few more progress lines
	feed.Close()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var retrying, after int
	for _, l := range lines {
		switch {
		case strings.Contains(l, "retrying after HTTP 503, attempt 2 "):
			retrying++
		case strings.Contains(l, " 1 sent "):
			after++
			if strings.Contains(l, "retrying") {
				t.Errorf("after the retry succeeded: %q", l)
			}
		}
	}
	if retrying == 0 || after == 0 {
		t.Errorf("%d lines while retrying, %d after, want some of each:\n%s", retrying, after, stderr.String())
	}
}
