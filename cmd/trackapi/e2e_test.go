package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/syncbuf"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
)

// binary is the real trackapi binary, built once for all tests of this package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trackapi-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "trackapi")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building trackapi:", err)
		os.Exit(1)
	}
	// A race-enabled binary sleeps a second at exit by default (the race detector's
	// atexit_sleep_ms), which every CLI call of these tests would pay.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	// Servers started by the tests run side by side: each takes a free port for its admin
	// listener too (startProcess reads it from the log).
	os.Setenv("TRACKAPI_ADMIN_ADDR", "127.0.0.1:0")
	// The commands given --data must not be sent to a server of the developer's environment.
	os.Unsetenv("TRACKAPI_SERVER")
	os.Unsetenv("TRACKAPI_ADMIN_TOKEN")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running `trackapi serve`.
type process struct {
	cmd *exec.Cmd
	URL string
	// AdminURL is its admin listener's: the config API, /metrics.
	AdminURL string
	data     string // its --data directory
	stdout   *syncbuf.Buffer
	stderr   *syncbuf.Buffer
	done     chan error
}

var listening = regexp.MustCompile(`msg=listening addr=(127\.0\.0\.1:\d+) admin_addr=(127\.0\.0\.1:\d+)`)

// startServer runs the binary on a free port of 127.0.0.1 and waits until it listens.
func startServer(t *testing.T, data string) *process {
	t.Helper()
	return startServerWith(t, data, "--addr", "127.0.0.1:0")
}

// startServerWith starts `trackapi serve --data data` with more flags (--addr among them).
func startServerWith(t *testing.T, data string, flags ...string) *process {
	t.Helper()
	return startBinary(t, binary, data, flags...)
}

// startBinary starts `bin serve --data data` with more flags.
func startBinary(t *testing.T, bin, data string, flags ...string) *process {
	t.Helper()
	return startProcess(t, data, exec.Command(bin, append([]string{"serve", "--data", data}, flags...)...))
}

// startProcess starts cmd, a `trackapi serve` on data, and waits until it listens; it is killed
// when the test ends if it still runs.
func startProcess(t *testing.T, data string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, data: data, stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := listening.FindStringSubmatch(p.stderr.String()); m != nil {
			p.URL, p.AdminURL = "http://"+m[1], "http://"+m[2]
			return p
		}
		select {
		case err := <-p.done:
			t.Fatalf("trackapi serve exited early: %v\n%s", err, p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("trackapi serve did not listen within 30 s:\n%s", p.stderr)
	return nil
}

// stop sends sig and waits for the process to end.
func (p *process) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("trackapi did not stop within 60 s after %v:\n%s", sig, p.stderr)
		return nil
	}
}

// cli runs a trackapi command to completion and returns its standard output.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("trackapi %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// export runs `trackapi events export` and counts the stored events by event id.
func export(t *testing.T, data string, args ...string) (map[string]int, []trackapi.StoredEvent) {
	t.Helper()
	out := cli(t, append([]string{"events", "export", "--data", data}, args...)...)
	counts := map[string]int{}
	var events []trackapi.StoredEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev trackapi.StoredEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		counts[apitest.EventID(t, ev.Event)]++
		events = append(events, ev)
	}
	return counts, events
}

// The first start creates a source and prints a curl command that works as printed.
func TestFirstStartPrintsAWorkingCommand(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	curl := regexp.MustCompile(`curl -sS -X POST '([^']+)' \\\n\s+-H 'Content-Type: application/json' \\\n\s+-d '([^']+)'`).FindStringSubmatch(p.stdout.String())
	if curl == nil {
		t.Fatalf("no curl command in:\n%s", p.stdout)
	}
	if strings.Contains(p.stderr.String(), strings.SplitN(strings.SplitN(curl[1], "token=", 2)[1], "&", 2)[0]) {
		t.Error("the source key appears in the log")
	}
	resp, err := apitest.Client(t).Post(curl[1], "application/json", strings.NewReader(curl[2]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"accepted":1`)) {
		t.Fatalf("the printed command got %d %s", resp.StatusCode, body)
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr)
	}
	// A second start has a source already and prints nothing.
	again := startServer(t, data)
	if strings.Contains(again.stdout.String(), "curl") {
		t.Errorf("second start printed a new key:\n%s", again.stdout)
	}
	counts, _ := export(t, data)
	if counts["first-event"] != 1 {
		t.Errorf("export: %v", counts)
	}
}

// sources create/list/deactivate, while a server runs on the same directory.
func TestSourcesCommands(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "42", "--name", "shop"))
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(key) {
		t.Fatalf("sources create printed %q, want the key alone", key)
	}
	list := cli(t, "sources", "list", "--data", data)
	if !regexp.MustCompile(`(?m)^2\s+42\s+shop\s+true`).MatchString(list) || strings.Contains(list, key) {
		t.Fatalf("sources list:\n%s", list)
	}
	send := func(id string) gen.CollectResult {
		body := fmt.Sprintf(`{"event_name":"x","context":{"event_id":%q}}`, id)
		resp, err := apitest.Client(t).Post(p.URL+"/events?tc_s=42&token="+key, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r gen.CollectResult
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send("new-source-1"); r.Accepted != 1 {
		t.Fatalf("a source just created: %+v", r)
	}
	cli(t, "sources", "deactivate", "--data", data, "2")
	if list := cli(t, "sources", "list", "--data", data); !regexp.MustCompile(`(?m)^2\s+42\s+shop\s+false`).MatchString(list) {
		t.Fatalf("after deactivate:\n%s", list)
	}
	// The server re-reads sources within a few seconds.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		r := send(fmt.Sprintf("after-deactivate-%d", i))
		if r.Rejected == 1 && r.Errors[0].Code == gen.InvalidSource {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a deactivated source still works after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Events acknowledged before a SIGTERM are all exported after the next start, exactly once, and
// the SIGTERM drains in-flight requests: the server exits cleanly.
func TestRestartKeepsAcknowledgedEvents(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "7", "--name", "load"))

	var mu sync.Mutex
	acked := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := apitest.Client(t)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				var ids []string
				var path, body string
				if i%2 == 0 {
					id := fmt.Sprintf("w%d-%d", w, i)
					ids, path = []string{id}, "/events"
					body = fmt.Sprintf(`{"event_name":"x","user":{"consistent_anonymous_id":"u"},"context":{"event_id":%q,"event_timestamp":1}}`, id)
				} else {
					path = "/events/batch"
					var parts []string
					for j := 0; j < 20; j++ {
						id := fmt.Sprintf("w%d-%d-%d", w, i, j)
						ids = append(ids, id)
						parts = append(parts, fmt.Sprintf(`{"event_name":"x","user":{"consistent_anonymous_id":"u"},"context":{"event_id":%q,"event_timestamp":1}}`, id))
					}
					body = `{"batch":[` + strings.Join(parts, ",") + `]}`
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+path+"?tc_s=7", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				var r gen.CollectResult
				ok := resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&r) == nil
				resp.Body.Close()
				if ok && r.Accepted+r.Duplicates == len(ids) {
					mu.Lock()
					for _, id := range ids {
						acked[id] = true
					}
					mu.Unlock()
				}
			}
		}()
	}
	// Let the load run, then stop the server under it.
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 2000 {
			break
		}
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr)
	}
	wg.Wait()
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log:\n%s", p.stderr)
	}
	if len(acked) == 0 {
		t.Fatal("no event was acknowledged before the SIGTERM")
	}

	startServer(t, data) // export works while a server runs on the same directory
	counts, _ := export(t, data, "--source", "2")
	missing, twice := 0, 0
	for id := range acked {
		switch counts[id] {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	t.Logf("%d events acknowledged before SIGTERM, %d exported", len(acked), len(counts))
	if missing > 0 || twice > 0 {
		t.Errorf("of %d acknowledged events, %d are missing and %d stored more than once", len(acked), missing, twice)
	}
	for id, n := range counts {
		if n != 1 {
			t.Errorf("event %s exported %d times", id, n)
		}
	}
}
