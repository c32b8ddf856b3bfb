package main_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The hostile cases run the real binary, built without the race detector (which would multiply
// its memory and CPU), under attacks from 127.0.0.1, and bound what each costs the server: its
// CPU time and peak memory, the size of its answers, and an honest sender's latency meanwhile.
// `make hostile` runs only these; `make test` runs them with everything else.

var (
	plainBinaryOnce sync.Once
	plainBinary     string
	plainBinaryErr  error
)

// hostileServer starts the plain binary with flags and a source, and returns it with the key.
func hostileServer(t *testing.T, flags ...string) (*process, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("hostile cases run the real binary under load")
	}
	plainBinaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trackapi-hostile")
		if err != nil {
			plainBinaryErr = err
			return
		}
		plainBinary = filepath.Join(dir, "trackapi")
		out, err := exec.Command("go", "build", "-o", plainBinary, ".").CombinedOutput()
		if err != nil {
			plainBinaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if plainBinaryErr != nil {
		t.Fatal(plainBinaryErr)
	}
	data := t.TempDir()
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "5", "--name", "target"))
	return startBinary(t, plainBinary, data, append([]string{"--addr", "127.0.0.1:0"}, flags...)...), key
}

// usage is a process's CPU time and peak resident memory, from /proc.
type usage struct {
	cpu  time.Duration
	peak int64 // bytes (VmHWM)
	rss  int64 // bytes (VmRSS)
}

func processUsage(t *testing.T, pid int) usage {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): utime is the 14th field, stime the 15th.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	var u usage
	u.cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch name {
		case "VmHWM":
			u.peak = kb << 10
		case "VmRSS":
			u.rss = kb << 10
		}
	}
	return u
}

// honest sends one small event every 50 ms until stopped and records the slowest answer and any
// failure: the service an honest sender gets while an attack runs.
type honest struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	slowest time.Duration
	failed  []string
	sent    int
}

func startHonest(t *testing.T, baseURL, key string) *honest {
	h := &honest{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		c := &http.Client{Timeout: 5 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-h.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			start := time.Now()
			body := fmt.Sprintf(`{"event_name":"page_view","user":{"consistent_anonymous_id":"h"},"context":{"event_id":"honest-%d-%d"}}`, time.Now().UnixNano(), i)
			resp, err := c.Post(baseURL+"/events?tc_s=5&token="+key, "application/json", strings.NewReader(body))
			took := time.Since(start)
			h.mu.Lock()
			h.sent++
			if took > h.slowest {
				h.slowest = took
			}
			switch {
			case err != nil:
				h.failed = append(h.failed, err.Error())
			case resp.StatusCode != http.StatusOK:
				h.failed = append(h.failed, fmt.Sprintf("status %d", resp.StatusCode))
			}
			h.mu.Unlock()
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	return h
}

// check stops the honest sender and fails the test unless every request succeeded within limit.
func (h *honest) check(t *testing.T, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		h.mu.Lock()
		enough := h.sent >= 5
		h.mu.Unlock()
		if enough {
			break
		}
	}
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	t.Logf("honest sender: %d requests, slowest %s, %d failed", h.sent, h.slowest.Round(time.Millisecond), len(h.failed))
	if h.sent == 0 {
		t.Error("the honest sender sent nothing")
	}
	if len(h.failed) > 0 {
		t.Errorf("honest requests failed during the attack: %v", h.failed[:min(len(h.failed), 5)])
	}
	if h.slowest > limit {
		t.Errorf("an honest request took %s, over %s", h.slowest, limit)
	}
}

// post sends body to path and returns the status and the answer's size.
func hostilePost(t *testing.T, url string, body []byte, gzipped bool) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", req.URL.Path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, answer
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// deepEvent is an event of at most size bytes whose context nests arrays as deep as fits and as
// JSON decoders take (Go's stops at 10 000 levels), and that breaks the schema: it has no user,
// which the schema requires, and kin-openapi's message for that quotes the whole event.
func deepEvent(id string, size int) []byte {
	head := fmt.Sprintf(`{"event_name":"x","context":{"event_id":%q,"x":`, id)
	depth := min((size-len(head)-2)/2, 9990)
	return []byte(head + strings.Repeat("[", depth) + strings.Repeat("]", depth) + "}}")
}

// Deep nesting with a schema violation: one request costs under 0.5 s of CPU and 100 MB of
// memory, for a single event and for a batch of such events.
func TestHostileDeepNesting(t *testing.T) {
	p, key := hostileServer(t)
	h := startHonest(t, p.URL, key)
	pid := p.cmd.Process.Pid
	for _, tc := range []struct {
		name, path string
		body       []byte
	}{
		{"single", "/events", deepEvent("deep-1", 32768)},
		{"batch", "/events/batch", func() []byte {
			var b bytes.Buffer
			b.WriteString(`{"batch":[`)
			for i := 0; i < 14; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				b.Write(deepEvent(fmt.Sprintf("deep-b%d", i), 20100))
			}
			b.WriteString(`]}`)
			return b.Bytes()
		}()},
	} {
		before := processUsage(t, pid)
		status, answer := hostilePost(t, p.URL+tc.path+"?tc_s=5&token="+key, tc.body, false)
		after := processUsage(t, pid)
		cpu, grew := after.cpu-before.cpu, after.peak-before.rss
		t.Logf("%s: %d bytes → status %d, %d-byte answer, %s of CPU, peak memory +%d MB",
			tc.name, len(tc.body), status, len(answer), cpu, grew>>20)
		if status != http.StatusOK && status != http.StatusBadRequest {
			t.Errorf("%s: status %d: %.300s", tc.name, status, answer)
		}
		if cpu > 500*time.Millisecond {
			t.Errorf("%s: %s of CPU for one request, over 0.5 s", tc.name, cpu)
		}
		if grew > 100<<20 {
			t.Errorf("%s: peak memory grew by %d MB, over 100 MB", tc.name, grew>>20)
		}
	}
	h.check(t, time.Second)
}

// Amplification: a 569-byte gzipped request with a wrong key gets at most 64 KB back, and with a
// valid key no 200 is more than twice the size of its request.
func TestHostileAnswerSizes(t *testing.T) {
	p, key := hostileServer(t)
	h := startHonest(t, p.URL, key)
	defer h.check(t, time.Second)
	empties := []byte(`{"batch":[` + strings.Repeat("{},", 170662)[:170662*3-1] + `]}`)
	status, answer := hostilePost(t, p.URL+"/events/batch?tc_s=5&token=wrong", gzipBytes(t, empties), true)
	t.Logf("wrong key, %d empty events (%d bytes, %d gzipped): status %d, %d-byte answer", 170662, len(empties), len(gzipBytes(t, empties)), status, len(answer))
	if status == http.StatusOK && len(answer) > 64<<10 {
		t.Errorf("a rejected-key answer of %d bytes, over 64 KB", len(answer))
	}
	n := 27000
	names := []byte(`{"batch":[` + strings.Repeat(`{"event_name":"a"},`, n)[:n*19-1] + `]}`)
	for len(names) > 512000 {
		n -= 100
		names = []byte(`{"batch":[` + strings.Repeat(`{"event_name":"a"},`, n)[:n*19-1] + `]}`)
	}
	status, answer = hostilePost(t, p.URL+"/events/batch?tc_s=5&token="+key, names, false)
	t.Logf("valid key, %d minimal events (%d bytes): status %d, %d-byte answer", n, len(names), status, len(answer))
	if status != http.StatusOK {
		t.Fatalf("status %d: %.300s", status, answer)
	}
	if len(answer) > 2*len(names) {
		t.Errorf("a %d-byte answer to a %d-byte request, over twice its size", len(answer), len(names))
	}
}

// Disk: minimal events that gain a server id and timestamp cost at most 15 bytes on disk per
// byte received.
func TestHostileDiskPerByte(t *testing.T) {
	p, key := hostileServer(t)
	h := startHonest(t, p.URL, key)
	defer h.check(t, time.Second)
	dbSize := func() int64 {
		var total int64
		for _, f := range []string{"trackapi.db", "trackapi.db-wal"} {
			if st, err := os.Stat(filepath.Join(p.data, f)); err == nil {
				total += st.Size()
			}
		}
		return total
	}
	before := dbSize()
	sent := 0
	for b := 0; b < 4; b++ {
		n := 26900
		var buf bytes.Buffer
		buf.WriteString(`{"batch":[`)
		for i := 0; i < n; i++ {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(`{"event_name":"a"}`)
		}
		buf.WriteString(`]}`)
		status, answer := hostilePost(t, p.URL+"/events/batch?tc_s=5&token="+key, buf.Bytes(), false)
		if status != http.StatusOK {
			t.Fatalf("status %d: %.200s", status, answer)
		}
		sent += buf.Len()
	}
	// The log's pages land in the database file at the next checkpoint; the WAL counts meanwhile.
	grew := dbSize() - before
	ratio := float64(grew) / float64(sent)
	t.Logf("%d bytes received, database and log grew by %d bytes: %.1f bytes on disk per byte received", sent, grew, ratio)
	if ratio > 15 {
		t.Errorf("%.1f bytes on disk per byte received, over 15", ratio)
	}
}

// Stalled senders: 300 connections announce 512 000-byte bodies and send nothing; an honest
// sender's requests each succeed within a second all the while.
func TestHostileStalledSenders(t *testing.T) {
	p, key := hostileServer(t)
	addr := strings.TrimPrefix(p.URL, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("stalled sender %d: %v", i, err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /events/batch?tc_s=5&token=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 512000\r\n\r\n{\"batch\":[", key, addr)
	}
	h := startHonest(t, p.URL, key)
	time.Sleep(5 * time.Second)
	h.check(t, time.Second)
	if u := processUsage(t, p.cmd.Process.Pid); u.peak > 300<<20 {
		t.Errorf("peak memory %d MB with 300 stalled senders", u.peak>>20)
	}
}

// Smuggling, half-closed clients and HEAD on the health checks, on raw connections to the real
// binary: a request hiding another after a chunked body (both Content-Length and
// Transfer-Encoding) is refused and its connection closed, so the hidden one never runs; a client
// that half-closes after a complete request still gets its 200; HEAD /healthz is answered.
func TestHostileProtocol(t *testing.T) {
	p, key := hostileServer(t)
	h := startHonest(t, p.URL, key)
	defer h.check(t, time.Second)
	addr := strings.TrimPrefix(p.URL, "http://")
	exchange := func(raw string, halfClose bool) string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		if halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
		out, _ := io.ReadAll(c)
		return string(out)
	}
	event := `{"event_name":"page_view","context":{"event_id":"smuggle-1"}}`
	hidden := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(event), event)
	out := exchange(fmt.Sprintf("POST /events?tc_s=5&token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"+
		"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n%s%s", key, chunked, hidden), false)
	if !strings.HasPrefix(out, "HTTP/1.1 400") || strings.Count(out, "HTTP/1.1 ") != 1 {
		t.Errorf("a request with both Content-Length and Transfer-Encoding:\n%s", out)
	}
	body := `{"event_name":"page_view","context":{"event_id":"half-closed-1"}}`
	out = exchange(fmt.Sprintf("POST /events?tc_s=5&token=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s", key, len(body), body), true)
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, `"accepted":1`) {
		t.Errorf("a half-closed client:\n%s", out)
	}
	out = exchange("HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false)
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("HEAD /healthz:\n%s", out)
	}
}
