package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// startServerLimited starts `trackapi serve` under a shell that first sets the open-file limit
// (soft and hard, so that Go cannot raise it) to files.
func startServerLimited(t *testing.T, data string, files int, flags ...string) *process {
	t.Helper()
	args := append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, files), binary, "serve", "--data", data, "--addr", "127.0.0.1:0"}, flags...)
	return startProcess(t, data, exec.Command("sh", args...))
}

// getOn sends GET path on conn, keeping it alive, and reads the answer within the given time.
func getOn(conn net.Conn, path string, within time.Duration) (*http.Response, error) {
	if err := conn.SetDeadline(time.Now().Add(within)); err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp, err
}

// With a low open-file limit, idle keep-alive connections do not keep new ones out: the
// connection cap is lowered to fit the limit, and idle connections are closed when the open ones
// near the cap, so /healthz on a new connection is answered within a second while 200 clients
// hold keep-alive connections open. (Before, the descriptors ran out, accept failed with EMFILE,
// and new connections waited, unanswered, for the idle ones' 2 minutes.)
func TestLowOpenFileLimit(t *testing.T) {
	p := startServerLimited(t, t.TempDir(), 128)
	if !strings.Contains(p.stderr.String(), "max_connections=64") {
		t.Errorf("the connection cap was not lowered to fit 128 files (less 64 kept for the rest):\n%s", p.stderr)
	}
	addr := strings.TrimPrefix(p.URL, "http://")

	const clients = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	answered := 0
	for range clients {
		wg.Go(func() {
			conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			if resp, err := getOn(conn, "/healthz", 3*time.Second); err == nil && resp.StatusCode == http.StatusOK {
				mu.Lock()
				answered++
				mu.Unlock()
			}
			// The connection stays open: idle, unless the server closed it.
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	t.Logf("%d of %d clients answered", answered, clients)

	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := getOn(conn, "/healthz", 5*time.Second)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz on a new connection beside %d clients' connections: %v %v\n%s", clients, resp, err, p.stderr)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("GET /healthz on a new connection took %s beside %d clients' connections, want at most 1 s", took, clients)
	}
	if strings.Contains(p.stderr.String(), "too many open files") {
		t.Errorf("the server ran out of file descriptors:\n%s", p.stderr)
	}
}

// `serve --trusted-proxies` makes X-Forwarded-For the client address from those proxies only;
// a value that is no address is a usage error.
func TestTrustedProxiesFlag(t *testing.T) {
	cmd := exec.Command(binary, "serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0", "--trusted-proxies", "10.0.0.0/8,nonsense")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "nonsense") {
		t.Errorf("a bad --trusted-proxies: %v\n%s", err, out)
	}

	data := t.TempDir()
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "5", "--name", "proxied"))
	p := startServerWith(t, data, "--addr", "127.0.0.1:0", "--log-level", "debug", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1")
	for _, xff := range []string{"203.0.113.7", "198.51.100.9, 10.1.2.3"} {
		req, err := http.NewRequest(http.MethodPost, p.URL+"/events?tc_s=5", strings.NewReader(`{"event_name":"page_view"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "remote_ip=198.51.100.9") {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	logs := p.stderr.String()
	for _, want := range []string{"remote_ip=203.0.113.7", "remote_ip=198.51.100.9"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s in the log:\n%s", want, logs)
		}
	}
}
