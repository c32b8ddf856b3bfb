package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/syncbuf"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
)

// debugLogger logs everything, requests that succeed included, into buf.
func debugLogger(buf io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// dialServer opens a connection to the env's server, closed when the test ends.
func dialServer(t *testing.T, e *env) net.Conn {
	t.Helper()
	u, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// metricValue reads one sample of /metrics (-1 when it is not there).
func metricValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(e.metrics().Body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// 300 senders announce large bodies (512 000 bytes by Content-Length, chunked, or gzip, which may
// decompress to the limit) and then send nothing, or very little, holding their connections. They
// hold nothing but their first small buffer of the body budget, or twice what they sent, so an
// honest sender's requests, small and large, each get their 200 within a second. (Before, each stalled sender reserved what it
// announced, or the whole limit: 130 of them filled the 64 MiB budget and every other request
// waited 10 s for a 503 that blamed the store.)
func TestStalledSendersDoNotStarveOthers(t *testing.T) {
	e := newEnv(t) // the default budget: 64 MiB
	const stalled = 300
	kinds := []struct {
		headers string
		sent    int   // bytes of body sent before stalling
		holds   int64 // of the budget: 1 KiB, then twice what was sent
	}{
		{"Content-Length: 512000\r\n", 0, 1024},
		{"Transfer-Encoding: chunked\r\n", 0, 1024},
		{"Content-Encoding: gzip\r\nContent-Length: 512000\r\n", 0, 1024},
		{"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 0, 1024},
		{"Content-Length: 512000\r\n", 1500, 2048},
	}
	var holding int64
	for i := range stalled {
		k := kinds[i%len(kinds)]
		conn := dialServer(t, e)
		fmt.Fprintf(conn, "POST /events/batch?tc_s=%s&token=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n%s",
			e.Site, e.Key, k.headers, `{"batch":[`+strings.Repeat(" ", max(0, k.sent-10)))
		holding += k.holds
	}

	var slowest time.Duration
	send := func(name, path string, body []byte, header ...string) {
		t.Helper()
		start := time.Now()
		r := e.post(e.url(path), body, header...)
		took := time.Since(start)
		slowest = max(slowest, took)
		if r.Status != http.StatusOK {
			t.Fatalf("%s: %d %.300s after %s, with %d stalled senders", name, r.Status, r.Body, took, stalled)
		}
		if took > time.Second {
			t.Fatalf("%s took %s with %d stalled senders, want at most 1 s", name, took, stalled)
		}
	}
	for i := range 20 {
		send(fmt.Sprintf("single event %d", i), "/events", mustJSON(t, validEvent(fmt.Sprintf("honest-%d", i))))
	}
	send("100 KB batch", "/events/batch", batchOfSize(t, "honest-100k", 100_000))
	send("500 KB batch", "/events/batch", batchOfSize(t, "honest-500k", 512_000))
	send("gzip batch", "/events/batch", gzipped(t, batchOfSize(t, "honest-gz", 512_000)), "Content-Encoding", "gzip")

	t.Logf("the slowest honest request took %s beside %d stalled senders", slowest, stalled)

	// They were all being read meanwhile, each holding its first 1 KiB buffer, or twice what it
	// sent: nothing more.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		held := metricValue(t, e, "trackapi_request_body_budget_held_bytes")
		if held == float64(holding) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled senders hold %v bytes of the body budget, want %d", held, holding)
		}
	}
}

// A client that sends a complete request and then half-closes its side (shutdown(SHUT_WR), as
// some clients and proxies do) gets its answer: net/http cancels the request's context when it
// reads the end of the stream, but the events were handed to the store and are committed and
// answered. Nothing is logged as a store failure. (Before, every such request got a 503 logged at
// ERROR, while some of the events were stored.)
func TestHalfClosedClientGetsItsAnswer(t *testing.T) {
	logs := &syncbuf.Buffer{}
	e := newEnvWith(t, testenv.Options{Logger: debugLogger(logs)})
	const n = 20
	for i := range n {
		path := "/events/batch"
		body := batchOf(t, validEvent(fmt.Sprintf("half-%d", i)))
		if i%2 == 1 {
			path, body = "/events", mustJSON(t, validEvent(fmt.Sprintf("half-%d", i)))
		}
		conn := dialServer(t, e)
		fmt.Fprintf(conn, "POST %s?tc_s=%s&token=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			path, e.Site, e.Key, len(body), body)
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		resp, b := readRawResponse(t, conn, bufio.NewReader(conn), path)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"accepted":1`)) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if got := len(e.stored()); got != n {
		t.Errorf("%d events stored, want %d", got, n)
	}
	if out := logs.String(); strings.Contains(out, "level=ERROR") {
		t.Errorf("a client's half-close was logged as an error:\n%s", out)
	}
}

// Content-Encoding given twice, or as a list, is refused like any other encoding the server does
// not take: each would have to be undone in turn, and no tracker sends that. (Before, two "gzip"
// lines were read as one gzip.)
func TestRepeatedContentEncodingRefused(t *testing.T) {
	e := newEnv(t)
	body := gzipped(t, mustJSON(t, validEvent("enc-1")))
	for name, values := range map[string][]string{
		"two gzip lines":       {"gzip", "gzip"},
		"gzip and identity":    {"gzip", "identity"},
		"a list in one line":   {"gzip, gzip"},
		"identity, gzip":       {"identity, gzip"},
		"two lines, one empty": {"gzip", ""},
	} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.url("/events"), bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range values {
				req.Header.Add("Content-Encoding", v)
			}
			r := e.do(req)
			if r.Status != http.StatusBadRequest || r.Error.Code != gen.ErrorCodeInvalidJson || !strings.Contains(r.Error.Message, "Content-Encoding") {
				t.Fatalf("got %d %s, want 400 invalid_json about Content-Encoding", r.Status, r.Body)
			}
		})
	}
	if n := len(e.stored()); n != 0 {
		t.Errorf("%d events stored", n)
	}
	// One gzip line still works.
	checkCounts(t, e.post(e.url("/events"), body, "Content-Encoding", "gzip"), 1, 1, 0, 0)
}

// HEAD /healthz and /readyz answer like GET, without a body: checkers that send HEAD see the
// process alive and the store ready, or not. (Before: 405.)
func TestHeadOperations(t *testing.T) {
	e := newEnv(t)
	head := func(path string) response {
		t.Helper()
		req, err := http.NewRequest(http.MethodHead, e.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := e.do(req)
		if len(r.Body) != 0 {
			t.Errorf("HEAD %s has a body: %q", path, r.Body)
		}
		return r
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := head(path); r.Status != http.StatusOK {
			t.Errorf("HEAD %s: %d, want 200", path, r.Status)
		}
	}
	if err := e.DB.Close(); err != nil {
		t.Fatal(err)
	}
	if r := head("/readyz"); r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Errorf("HEAD /readyz with a closed store: %d, Retry-After %q; want 503 with Retry-After", r.Status, r.Header.Get("Retry-After"))
	}
	if r := head("/healthz"); r.Status != http.StatusOK {
		t.Errorf("HEAD /healthz with a closed store: %d, want 200", r.Status)
	}
}

// X-Forwarded-For and X-Real-IP are not believed from a client that is no trusted proxy (none is,
// by default): the log carries the connection's address. (Before, whatever the headers said.)
func TestForwardedForNotTrustedByDefault(t *testing.T) {
	logs := &syncbuf.Buffer{}
	e := newEnvWith(t, testenv.Options{Logger: debugLogger(logs)})
	e.post(e.url("/events"), mustJSON(t, validEvent("xff-1")), "X-Forwarded-For", "203.0.113.7", "X-Real-IP", "203.0.113.8")
	out := logs.String()
	if !strings.Contains(out, "remote_ip=127.0.0.1") || strings.Contains(out, "203.0.113.") {
		t.Errorf("the client address was not the connection's:\n%s", out)
	}
}

// A request hidden after a chunked body never runs: the connection closes after a chunked
// request, whatever else its headers say, so the bytes after the body are never read as a
// request. (This holds without the listener of NewHTTPServer, which also refuses a request with
// both Content-Length and Transfer-Encoding: see TestContentLengthWithTransferEncodingRefused.)
func TestNothingRunsAfterAChunkedBody(t *testing.T) {
	e := newEnv(t)
	body := string(mustJSON(t, validEvent("chunk-1")))
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	hidden := "POST /events?tc_s=" + e.Site + "&token=" + e.Key + " HTTP/1.1\r\nHost: x\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + strings.Replace(body, "chunk-1", "chunk-2", 1)
	conn := dialServer(t, e)
	fmt.Fprintf(conn, "POST /events?tc_s=%s&token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s%s",
		e.Site, e.Key, len(chunked)+len(hidden), chunked, hidden)
	answers := readAllResponses(t, conn, "/events")
	if len(answers) != 1 {
		t.Fatalf("%d answers, want 1: the request after the chunked body ran", len(answers))
	}
	if n := len(e.stored()); n > 1 {
		t.Errorf("%d events stored: the hidden request was run", n)
	}
}

// readAllResponses reads answers until the server closes the connection (or 5 s pass, which
// fails the test: the server kept it open).
func readAllResponses(t *testing.T, conn net.Conn, path string) []*http.Response {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	var answers []*http.Response
	for {
		resp, err := http.ReadResponse(r, httptestRequest(path))
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the connection stayed open after %d answers", len(answers))
			}
			return answers // closed
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		apitest.CheckResponse(t, httptestRequest(path), resp.StatusCode, resp.Header, b)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		answers = append(answers, resp)
	}
}
