package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/syncbuf"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/server"
)

// newBoundedEnv serves the collect API as `trackapi serve` does, through NewHTTPServer and its
// listener on 127.0.0.1; cfg (when set) changes the server's Config. Logs go to logs (nil: none).
func newBoundedEnv(t *testing.T, logs io.Writer, opts server.HTTPOptions, cfg func(*server.Config)) (*env, *server.HTTPServer) {
	t.Helper()
	logger := testenv.Quiet
	if logs != nil {
		logger = debugLogger(logs)
	}
	ts := testenv.Start(t, testenv.Options{Logger: logger})
	collector, err := ingest.New(ingest.Config{Store: ts.DB, Sources: ts.Sources})
	if err != nil {
		t.Fatal(err)
	}
	c := server.Config{Collector: collector, Ready: ts.DB.Ping, Metrics: ts.Metrics, Logger: logger}
	if cfg != nil {
		cfg(&c)
	}
	srv, err := server.New(c)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = logger
	}
	if opts.Metrics == nil {
		opts.Metrics = ts.Metrics
	}
	hs := server.NewHTTPServer(srv.Handler(), ln, opts)
	served := make(chan error, 1)
	go func() { served <- hs.Serve() }()
	t.Cleanup(func() {
		hs.Close()
		<-served
	})
	ts.URL = "http://" + ln.Addr().String()
	return &env{Server: ts, t: t, client: apitest.Client(t)}, hs
}

// A request with both Content-Length and Transfer-Encoding is refused (400) and its connection
// closed, in either order of the headers, in any case, and in HTTP/1.0 (where net/http goes by
// Content-Length): the request hidden after the chunked body never gets an answer, and nothing is
// stored. Before it, on the same connection, requests framed by Content-Length keep the connection
// alive, even with a body that looks like such headers.
func TestContentLengthWithTransferEncodingRefused(t *testing.T) {
	e, _ := newBoundedEnv(t, nil, server.HTTPOptions{}, nil)
	body := string(mustJSON(t, validEvent("smuggle-1")))
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	hiddenBody := strings.Replace(body, "smuggle-1", "smuggle-hidden", 1)
	hidden := fmt.Sprintf("POST /events?tc_s=%s&token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", e.Site, e.Key, len(hiddenBody), hiddenBody)
	smuggling := func(proto, headers string) string {
		return fmt.Sprintf("POST /events?tc_s=%s&token=%s %s\r\nHost: x\r\n%s\r\n%s%s", e.Site, e.Key, proto,
			strings.ReplaceAll(headers, "N", fmt.Sprint(len(chunked)+len(hidden))), chunked, hidden)
	}
	check := func(t *testing.T, answer *http.Response) {
		t.Helper()
		b, _ := io.ReadAll(answer.Body)
		if answer.StatusCode != http.StatusBadRequest || !bytes.Contains(b, []byte(`"invalid_payload"`)) ||
			!bytes.Contains(b, []byte("Content-Length and Transfer-Encoding")) {
			t.Errorf("got %d %s, want 400 invalid_payload naming both headers", answer.StatusCode, b)
		}
		if !answer.Close {
			t.Error("the refusal does not close the connection")
		}
	}
	for name, request := range map[string]string{
		"Content-Length first":    smuggling("HTTP/1.1", "Content-Length: N\r\nTransfer-Encoding: chunked\r\n"),
		"Transfer-Encoding first": smuggling("HTTP/1.1", "transfer-encoding: chunked\r\ncontent-length: N\r\n"),
		"HTTP/1.0 keep-alive":     smuggling("HTTP/1.0", "Connection: keep-alive\r\nContent-Length: N\r\nTransfer-Encoding: chunked\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			conn := dialServer(t, e)
			if _, err := io.WriteString(conn, request); err != nil {
				t.Fatal(err)
			}
			answers := readAllResponses(t, conn, "/events")
			if len(answers) != 1 {
				t.Fatalf("%d answers, want 1: the hidden request ran", len(answers))
			}
			check(t, answers[0])
		})
	}

	t.Run("after requests framed by Content-Length", func(t *testing.T) {
		conn := dialServer(t, e)
		fake := "x\r\n\r\nPOST /events HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
		one := string(mustJSON(t, validEvent("framed-1")))
		two := string(mustJSON(t, validEvent("framed-2")))
		post := func(b string) string {
			return fmt.Sprintf("POST /events?tc_s=%s&token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", e.Site, e.Key, len(b), b)
		}
		// Pipelined in one write: a body that is not JSON but looks like a smuggling header block,
		// then two events.
		if _, err := io.WriteString(conn, post(fake)+post(one)+post(two)); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		for i, want := range []int{http.StatusBadRequest, http.StatusOK, http.StatusOK} {
			resp, b := readRawResponse(t, conn, r, "/events")
			if resp.StatusCode != want || resp.Close {
				t.Fatalf("answer %d: %d (close %t) %s, want %d on an open connection", i, resp.StatusCode, resp.Close, b, want)
			}
		}
		if _, err := io.WriteString(conn, smuggling("HTTP/1.1", "Content-Length: N\r\nTransfer-Encoding: chunked\r\n")); err != nil {
			t.Fatal(err)
		}
		answers := readAllResponses(t, conn, "/events")
		if len(answers) != 1 {
			t.Fatalf("%d answers, want 1", len(answers))
		}
		check(t, answers[0])
	})
	for _, ev := range e.stored() {
		if bytes.Contains(ev.Event, []byte("smuggle")) {
			t.Errorf("stored %s", ev.Event)
		}
	}
	if n := len(e.stored()); n != 2 {
		t.Errorf("%d events stored, want 2 (framed-1, framed-2)", n)
	}
}

// With --trusted-proxies, X-Forwarded-For is believed from those proxies only: the nearest
// address in it that is not a trusted proxy is the client's.
func TestForwardedForFromTrustedProxy(t *testing.T) {
	for _, tt := range []struct {
		trusted string
		want    string
	}{
		{"127.0.0.0/8", "remote_ip=203.0.113.7"},
		{"10.0.0.0/8", "remote_ip=127.0.0.1"}, // the peer is no trusted proxy
	} {
		t.Run(tt.trusted, func(t *testing.T) {
			_, network, err := net.ParseCIDR(tt.trusted)
			if err != nil {
				t.Fatal(err)
			}
			logs := &syncbuf.Buffer{}
			e, _ := newBoundedEnv(t, logs, server.HTTPOptions{}, func(c *server.Config) { c.TrustedProxies = []*net.IPNet{network} })
			e.post(e.url("/events"), mustJSON(t, validEvent("xff")), "X-Forwarded-For", "198.51.100.1, 203.0.113.7")
			if out := logs.String(); !strings.Contains(out, tt.want) {
				t.Errorf("want %s in the log:\n%s", tt.want, out)
			}
		})
	}
}

// httpGet sends GET path on conn (keep-alive) and reads the answer, waiting at most within.
func httpGet(conn net.Conn, r *bufio.Reader, path string, within time.Duration) (*http.Response, error) {
	if err := conn.SetDeadline(time.Now().Add(within)); err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp, err
}

// The connection cap is reached by idle keep-alive connections: they are closed under pressure
// (from 80% of the cap), so a new connection's /healthz is answered within a second; once the
// connections are gone, keep-alives come back.
func TestIdleConnectionsClosedUnderPressure(t *testing.T) {
	const max = 20
	e, hs := newBoundedEnv(t, nil, server.HTTPOptions{MaxConnections: max}, nil)
	if hs.MaxConnections != max {
		t.Fatalf("MaxConnections %d, want %d", hs.MaxConnections, max)
	}
	var idle []net.Conn
	for i := range max {
		conn := dialServer(t, e)
		if _, err := httpGet(conn, bufio.NewReader(conn), "/healthz", 5*time.Second); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		idle = append(idle, conn) // kept open, idle
	}
	start := time.Now()
	fresh := dialServer(t, e)
	resp, err := httpGet(fresh, bufio.NewReader(fresh), "/healthz", 5*time.Second)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz on a new connection with %d idle ones: %v %v", max, resp, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("GET /healthz on a new connection took %s with %d idle ones, want at most 1 s", took, max)
	}
	closed := 0
	for _, conn := range idle {
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
		conn.Close()
	}
	if closed == 0 {
		t.Error("no idle connection was closed by the server")
	}
	// Under the low mark again, answers keep their connections.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.get("/healthz")
		if r.Header.Get("Connection") != "close" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("keep-alives stayed off after the connections were closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// At most MaxConnections are accepted at once: one more waits, unanswered, while that many send
// their requests' headers, and is answered as soon as one of them goes.
func TestConnectionCap(t *testing.T) {
	const max = 5
	e, _ := newBoundedEnv(t, nil, server.HTTPOptions{MaxConnections: max}, nil)
	var busy []net.Conn
	for range max {
		conn := dialServer(t, e)
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\n"); err != nil { // and the rest never
			t.Fatal(err)
		}
		busy = append(busy, conn)
	}
	extra := dialServer(t, e)
	answered := make(chan error, 1)
	go func() {
		_, err := httpGet(extra, bufio.NewReader(extra), "/healthz", 10*time.Second)
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a connection past the cap was served (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	busy[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("the waiting connection was not served within a second of a slot freeing")
	}
}

// A body that stops arriving is cut off after BodyIdleTimeout (a 400 on a closed connection),
// and what it held of the budget is given back.
func TestStalledBodyIsCutOff(t *testing.T) {
	e, _ := newBoundedEnv(t, nil, server.HTTPOptions{}, func(c *server.Config) { c.BodyIdleTimeout = 200 * time.Millisecond })
	body := mustJSON(t, validEvent("stall-1"))
	conn, r := rawRequest(t, e, "/events", fmt.Sprintf("Content-Length: %d\r\n", len(body)))
	if _, err := conn.Write(body[:10]); err != nil {
		t.Fatal(err)
	}
	resp, b := readRawResponse(t, conn, r, "/events")
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(b, []byte(`"invalid_json"`)) || !bytes.Contains(b, []byte("stalled")) || !resp.Close {
		t.Fatalf("got %d (close %t) %s, want 400 invalid_json about a stalled body, closing", resp.StatusCode, resp.Close, b)
	}
	if held := metricValue(t, e, "trackapi_request_body_budget_held_bytes"); held != 0 {
		t.Errorf("%v bytes of the budget still held", held)
	}
	checkCounts(t, e.post(e.url("/events"), body), 1, 1, 0, 0)
}

// An overload is answered as one: 503 with Retry-After and a message that says so, not that the
// store cannot commit, and logged at warn level, not as an error.
func TestOverloadSaysSo(t *testing.T) {
	logs := &syncbuf.Buffer{}
	e, _ := newBoundedEnv(t, logs, server.HTTPOptions{}, func(c *server.Config) {
		c.BodyBudget, c.BodyWait = 20000, 100*time.Millisecond
	})
	// A client holds most of the budget: it sent 10 000 bytes of a 15 000-byte body.
	big := eventOfSize(t, "holder", 15000)
	conn, r := rawRequest(t, e, "/events", fmt.Sprintf("Content-Length: %d\r\n", len(big)))
	if _, err := conn.Write(big[:10000]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, e, "trackapi_request_body_budget_held_bytes") < 10000 {
		if time.Now().After(deadline) {
			t.Fatal("the holder's bytes never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp := e.post(e.url("/events"), eventOfSize(t, "refused", 15000))
	check503(t, resp)
	if resp.Error.Message != "the server is overloaded: too many request bodies in flight; retry later" {
		t.Errorf("message %q", resp.Error.Message)
	}
	if _, err := conn.Write(big[10000:]); err != nil {
		t.Fatal(err)
	}
	if resp, b := readRawResponse(t, conn, r, "/events"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the holder got %d %s", resp.StatusCode, b)
	}
	out := logs.String()
	if strings.Contains(out, "level=ERROR") || !strings.Contains(out, "level=WARN msg=request method=POST path=/events status=503") {
		t.Errorf("the overload was not logged (once, at warn level):\n%s", out)
	}
	if !strings.Contains(string(e.metrics().Body), `trackapi_requests_total{endpoint="single",outcome="overloaded"} 1`) {
		t.Error("the overload was not counted")
	}
	_ = gen.ErrorCodeUnavailable
}
