package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/apitest"
)

// checked puts a reverse proxy on 127.0.0.1 in front of a server, which checks each of its answers
// against openapi.yaml on the way to the trackapi binary under test.
func checked(t *testing.T, p *process) string {
	t.Helper()
	target, err := url.Parse(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = apitest.Client(t).Transport
	ts := httptest.NewServer(proxy)
	t.Cleanup(ts.Close)
	return ts.URL
}

// firstKey is the key of the source the server created on its first start (site 1), which it
// printed once.
func firstKey(t *testing.T, p *process) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+([0-9a-f-]{36})$`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no key in the first start's output:\n%s", p.stdout)
	}
	return m[1]
}

// sendResult is what a `trackapi send` run printed and how it ended.
type sendResult struct {
	stdout, stderr string
	code           int
}

// runSend runs `trackapi send` with args and stdin, in dir, to completion.
func runSend(t *testing.T, dir string, stdin io.Reader, args ...string) sendResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, append([]string{"send"}, args...)...)
	cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = dir, stdin, &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("trackapi send: %v", err)
	}
	return sendResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// ndjsonEvent is one event line with the given id ("" leaves context out).
func ndjsonEvent(id string, i int) string {
	ctx := ""
	if id != "" {
		ctx = fmt.Sprintf(`,"context":{"event_id":%q,"event_timestamp":%d}`, id, 1718003215123+i)
	}
	return fmt.Sprintf(`{"event_name":"page_view","page_type":"product","page_name":"p%d","user":{"consistent_anonymous_id":"v%d","consent_categories":["1"]}%s}`, i, i%97, ctx)
}

func writeFile(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// failedLines reads a --failed file.
func failedLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("--failed line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

var summary = regexp.MustCompile(`(?m)^sent (\d+) events in [\d.]+s \(\d+/s\): (\d+) accepted, (\d+) duplicates, (\d+) rejected, (\d+) failed( \(\d+ invalid lines\))?$`)

// checkSummary asserts the summary line's counts.
func checkSummary(t *testing.T, r sendResult, events, accepted, duplicates, rejected, failed int) {
	t.Helper()
	m := summary.FindStringSubmatch(r.stdout)
	want := fmt.Sprintf("%d %d %d %d %d", events, accepted, duplicates, rejected, failed)
	if m == nil || strings.Join(m[1:6], " ") != want {
		t.Fatalf("summary %q, want counts %s\nstderr:\n%s", r.stdout, want, r.stderr)
	}
}

// A file of events, with blank lines, padding and bad lines among them: every good event is
// stored exactly once, every bad line is in --failed with its line number and reason, and the exit
// code says that not everything was delivered. Sending the file of good events again stores
// nothing new and exits 0.
func TestSendImportsAFileExactlyOnce(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	key := firstKey(t, p)
	dir := t.TempDir()

	var lines, good []string
	var ids []string
	for i := range 1000 {
		id := fmt.Sprintf("imp-%d", i)
		if i%100 == 7 {
			id = "" // the client gives these an id
		} else {
			ids = append(ids, id)
		}
		lines = append(lines, ndjsonEvent(id, i))
		if id != "" {
			good = append(good, lines[len(lines)-1])
		}
		switch i {
		case 10:
			lines = append(lines, "") // blank: skipped, not an event
		case 20:
			lines = append(lines, "this is not json") // line 23
		case 30:
			lines = append(lines, `["an","array"]`) // line 34
		case 40:
			lines = append(lines, fmt.Sprintf(`{"event_name":"big","pad":%q}`, strings.Repeat("x", 40000))) // line 45
		case 50:
			lines = append(lines, "   "+ndjsonEvent("imp-padded", i)+"\t\r") // line 56
			ids = append(ids, "imp-padded")
		}
	}
	file := filepath.Join(dir, "events.ndjson")
	writeFile(t, file, lines)
	failed := filepath.Join(dir, "failed.ndjson")

	r := runSend(t, dir, nil, "--url", checked(t, p), "--site", "1", "--token", key, "--failed", failed, file)
	if r.code == 0 {
		t.Errorf("exit code 0 with 3 invalid lines")
	}
	checkSummary(t, r, 1004, 1001, 0, 3, 0)
	if !strings.Contains(r.stdout, "(3 invalid lines)") || !strings.Contains(r.stderr, "3 of 1004 events not delivered") {
		t.Errorf("stdout %q\nstderr %q", r.stdout, r.stderr)
	}
	bad := failedLines(t, failed)
	want := map[float64]string{23: "invalid_payload", 34: "invalid_payload", 45: "event_too_large"}
	if len(bad) != 3 {
		t.Fatalf("--failed has %d lines: %v", len(bad), bad)
	}
	for _, b := range bad {
		if want[b["line"].(float64)] != b["code"] || b["status"] != "invalid" || b["reason"] == "" || b["event"] == nil {
			t.Errorf("--failed record %.300v", b)
		}
	}

	counts, events := export(t, data, "--source", "1")
	if len(events) != 1001 {
		t.Errorf("%d events stored, want 1001", len(events))
	}
	for _, id := range ids {
		if counts[id] != 1 {
			t.Errorf("event %s stored %d times", id, counts[id])
		}
	}

	again := filepath.Join(dir, "good.ndjson")
	writeFile(t, again, good)
	r = runSend(t, dir, nil, "--url", checked(t, p)+"/events", "--site", "1", "--token", key, again)
	if r.code != 0 {
		t.Errorf("exit code %d for a run where every event was delivered:\n%s", r.code, r.stderr)
	}
	checkSummary(t, r, len(good), 0, len(good), 0, 0)
	if _, err := os.Stat(again + ".failed.ndjson"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a default --failed file was created with nothing to put in it: %v", err)
	}
	if _, events := export(t, data, "--source", "1"); len(events) != 1001 {
		t.Errorf("%d events stored after sending the same events again, want 1001", len(events))
	}
}

// Events from standard input with a wrong key are all rejected by the server: each is in the
// default --failed file with the server's code, nothing is stored, the exit code is not 0.
func TestSendFromStdinWithAWrongKey(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	dir := t.TempDir()
	var lines []string
	for i := range 50 {
		lines = append(lines, ndjsonEvent(fmt.Sprintf("wrong-%d", i), i))
	}
	r := runSend(t, dir, strings.NewReader(strings.Join(lines, "\n")), "--url", checked(t, p)+"/events/", "--site", "1", "--token", "not-a-key", "-")
	if r.code == 0 {
		t.Error("exit code 0 when every event was rejected")
	}
	checkSummary(t, r, 50, 0, 0, 50, 0)
	bad := failedLines(t, filepath.Join(dir, "stdin.failed.ndjson"))
	if len(bad) != 50 {
		t.Fatalf("%d records in the default --failed file, want 50", len(bad))
	}
	for i, b := range bad {
		if b["status"] != "rejected" || b["code"] != "invalid_source" || b["event_id"] == nil || b["line"] == nil {
			t.Errorf("record %d: %v", i, b)
		}
	}
	if _, events := export(t, data); len(events) != 0 {
		t.Errorf("%d events stored with a wrong key", len(events))
	}
}

// With no server, the run ends after its retry budget, not later: the batches in flight fail,
// the reading stops, and every line is in --failed (failed after attempts, or not sent), each
// with the event_id the client gave it. Sent again (twice) once a server is up, those records
// store every event exactly once.
func TestSendToAServerThatIsDownThenResend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused

	dir := t.TempDir()
	var lines []string
	for i := range 400 {
		id := fmt.Sprintf("down-%d", i)
		if i%2 == 0 {
			id = ""
		}
		lines = append(lines, ndjsonEvent(id, i))
	}
	file := filepath.Join(dir, "events.ndjson")
	writeFile(t, file, lines)
	failed := filepath.Join(dir, "failed.ndjson")
	start := time.Now()
	r := runSend(t, dir, nil, "--url", down, "--site", "1", "--token", "k", "--retry-for", "500ms",
		"--queue", "10", "--concurrency", "1", "--failed", failed, file)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s with a 500 ms retry budget", took)
	}
	if r.code == 0 {
		t.Error("exit code 0 with the server down")
	}
	checkSummary(t, r, 400, 0, 0, 0, 400)
	records := failedLines(t, failed)
	seen := map[float64]bool{}
	reasons := map[string]int{}
	var resend []string
	for _, rec := range records {
		seen[rec["line"].(float64)] = true
		reason := rec["reason"].(string)
		if strings.HasPrefix(reason, "not sent: stopped after a batch could not be delivered") {
			reasons["not sent"]++
		} else {
			reasons["sent, failed"]++
		}
		ev := rec["event"].(map[string]any)
		if ev["context"].(map[string]any)["event_id"] == "" {
			t.Errorf("record without an event_id: %v", rec)
		}
		b, _ := json.Marshal(ev)
		resend = append(resend, string(b))
	}
	if len(records) != 400 || len(seen) != 400 {
		t.Fatalf("%d records for %d lines, want each of the 400 lines once", len(records), len(seen))
	}
	if reasons["not sent"] == 0 || reasons["sent, failed"] == 0 {
		t.Errorf("reasons %v: want batches that failed, then lines not sent at all", reasons)
	}

	data := t.TempDir()
	p := startServer(t, data)
	key := firstKey(t, p)
	r = runSend(t, dir, strings.NewReader(strings.Join(resend, "\n")), "--url", checked(t, p), "--site", "1", "--token", key, "-")
	if r.code != 0 {
		t.Fatalf("resending: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runSend(t, dir, strings.NewReader(strings.Join(resend, "\n")), "--url", checked(t, p), "--site", "1", "--token", key, "-")
	checkSummary(t, r, 400, 0, 400, 0, 0)
	counts, events := export(t, data)
	if len(events) != 400 || len(counts) != 400 {
		t.Errorf("%d events stored with %d ids, want 400 once each", len(events), len(counts))
	}
}

// While the server is down, the progress lines say why nothing moves and when the next attempt
// is, not only "0 sent". The key is never printed, even when it is given in the URL (which is
// refused).
func TestSendShowsWhyItIsRetrying(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "events.ndjson")
	writeFile(t, file, []string{ndjsonEvent("why-1", 1), ndjsonEvent("why-2", 2)})
	const key = "SECRET-source-key"

	r := runSend(t, dir, nil, "--url", down, "--site", "1", "--token", key, "--retry-for", "1s",
		"--progress-interval", "20ms", file)
	if r.code == 0 {
		t.Error("exit code 0 with the server down")
	}
	checkSummary(t, r, 2, 0, 0, 0, 2)
	retrying := regexp.MustCompile(`(?m)^progress: 2 events read, 0 sent \(0/s\), 0 errors, 2 pending; retrying after connection refused, attempt \d+ (in \d+\.\ds|under way)$`)
	if !retrying.MatchString(r.stderr) {
		t.Errorf("no progress line names the reason and the next attempt:\n%s", r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, "SECRET") {
		t.Errorf("the key was printed:\n%s\n%s", r.stdout, r.stderr)
	}

	r = runSend(t, dir, nil, "--url", down+"/events?token="+key, "--site", "1", "--token", key, file)
	if r.code == 0 || !strings.Contains(r.stderr, "no query or fragment expected") || strings.Contains(r.stdout+r.stderr, "SECRET") {
		t.Errorf("a key in --url: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// SIGINT stops a run that is retrying at once: nothing waits for the retry budget, the events
// in flight and the lines not read yet are all in --failed, and the exit code is not 0.
func TestSendInterruptWritesEverythingToFailed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	var lines []string
	for i := range 400 {
		lines = append(lines, ndjsonEvent(fmt.Sprintf("int-%d", i), i))
	}
	file := filepath.Join(dir, "events.ndjson")
	writeFile(t, file, lines)
	failed := filepath.Join(dir, "failed.ndjson")
	cmd := exec.Command(binary, "send", "--url", down, "--site", "1", "--token", "k", "--retry-for", "10m",
		"--queue", "10", "--concurrency", "1", "--progress-interval", "20ms", "--failed", failed, file)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "progress:") {
		t.Fatalf("first line on stderr: %q", sc.Text())
	}
	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stderr)
	err = cmd.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to stop after SIGINT", took)
	}
	if err == nil {
		t.Error("exit code 0 after an interrupt")
	}
	checkSummary(t, sendResult{stdout: stdout.String()}, 400, 0, 0, 0, 400)
	if records := failedLines(t, failed); len(records) != 400 {
		t.Errorf("%d records in --failed, want 400", len(records))
	}
}

// Without a terminal, progress is a plain line on stderr every --progress-interval.
func TestSendPrintsProgressLinesWithoutATerminal(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	key := firstKey(t, p)
	cmd := exec.Command(binary, "send", "--url", checked(t, p), "--site", "1", "--token", key, "--progress-interval", "50ms", "--failed", filepath.Join(t.TempDir(), "f"), "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	progress := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			progress <- sc.Text()
		}
		close(progress)
	}()
	for i := range 10 {
		fmt.Fprintln(stdin, ndjsonEvent(fmt.Sprintf("stream-%d", i), i))
	}
	// The input stays open: the events are sent after the flush interval, and progress shows it.
	line := regexp.MustCompile(`^progress: 10 events read, 10 sent \(\d+/s\), 0 errors, 0 pending$`)
	deadline := time.After(20 * time.Second)
	for found := false; !found; {
		select {
		case l, ok := <-progress:
			if !ok {
				t.Fatal("stderr ended before a progress line showed the 10 events sent")
			}
			if strings.ContainsAny(l, "\r\x1b") {
				t.Errorf("terminal control characters without a terminal: %q", l)
			}
			found = line.MatchString(l)
		case <-deadline:
			t.Fatal("no progress line with the 10 events sent within 20 s")
		}
	}
	stdin.Close()
	for range progress {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stdout.String())
	}
	checkSummary(t, sendResult{stdout: stdout.String()}, 10, 10, 0, 0, 0)
}

// Missing flags or file: a usage message and a non-zero exit, before anything is sent.
func TestSendUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"--url", "http://127.0.0.1:1", "--site", "1", "--token", "k"},
		{"--site", "1", "--token", "k", "file"},
		{"--url", "http://127.0.0.1:1", "--token", "k", "file"},
		{"--url", "ftp://127.0.0.1:1", "--site", "1", "--token", "k", "file"},
		{"--url", "http://127.0.0.1:1", "--site", "1", "--token", "k", "no-such-file"},
	} {
		r := runSend(t, dir, nil, args...)
		if r.code == 0 || r.stderr == "" || r.stdout != "" {
			t.Errorf("send %v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}
