package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
)

// eventOfSize is a valid event of exactly size bytes, padded with a custom property.
func eventOfSize(t testing.TB, id string, size int) []byte {
	t.Helper()
	head := fmt.Sprintf(`{"event_name":"x","user":{"consistent_anonymous_id":"1"},"context":{"event_id":%q,"event_timestamp":1},"pad":"`, id)
	pad := size - len(head) - len(`"}`)
	if pad < 0 {
		t.Fatalf("size %d too small", size)
	}
	return []byte(head + strings.Repeat("a", pad) + `"}`)
}

// batchOfSize is a batch body of exactly size bytes whose elements are at most EventLimit bytes.
func batchOfSize(t testing.TB, prefix string, size int) []byte {
	t.Helper()
	const element = 30000
	var b bytes.Buffer
	b.WriteString(`{"batch":[`)
	for i := 0; ; i++ {
		remaining := size - b.Len() - len(`]}`)
		if i > 0 {
			remaining-- // the comma
		}
		n := min(element, remaining)
		if remaining-n > 0 && remaining-n < 200 {
			n = remaining - 200 // leave room for one more valid event
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(eventOfSize(t, fmt.Sprintf("%s-%d", prefix, i), n))
		if n == remaining {
			break
		}
	}
	b.WriteString(`]}`)
	if b.Len() != size {
		t.Fatalf("built a batch of %d bytes, want %d", b.Len(), size)
	}
	return b.Bytes()
}

// Each limit at its boundary, with and without Content-Length.
func TestLimitsAtTheirBoundaries(t *testing.T) {
	e := newEnv(t)
	elementBatch := func(id string, size int) []byte {
		// Spaces around the element are not part of it: the limit counts the element as sent.
		return []byte(`{"batch":[ ` + string(eventOfSize(t, id, size)) + ` ]}`)
	}
	tests := []struct {
		name     string
		path     string
		body     []byte
		accepted int
		code     gen.ErrorCode
	}{
		{"single at the limit", "/events", eventOfSize(t, "s-ok", trackapi.SingleBodyLimit), 1, ""},
		{"single one byte over", "/events", eventOfSize(t, "s-over", trackapi.SingleBodyLimit+1), 0, gen.ErrorCodePayloadTooLarge},
		{"batch at the limit", "/events/batch", batchOfSize(t, "b-ok", trackapi.BatchBodyLimit), 18, ""},
		{"batch one byte over", "/events/batch", batchOfSize(t, "b-over", trackapi.BatchBodyLimit+1), 0, gen.ErrorCodePayloadTooLarge},
		{"batch element at the limit", "/events/batch", elementBatch("e-ok", trackapi.EventLimit), 1, ""},
		{"batch element one byte over", "/events/batch", elementBatch("e-over", trackapi.EventLimit+1), 0, gen.ErrorCodeEventTooLarge},
	}
	for _, tt := range tests {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s chunked=%t", tt.name, chunked), func(t *testing.T) {
				var body io.Reader = bytes.NewReader(tt.body)
				if chunked {
					body = io.MultiReader(body) // hides the length: sent chunked, no Content-Length
				}
				req, err := http.NewRequest(http.MethodPost, e.url(tt.path), body)
				if err != nil {
					t.Fatal(err)
				}
				if chunked != (req.ContentLength <= 0) {
					t.Fatalf("ContentLength %d for chunked=%t", req.ContentLength, chunked)
				}
				r := e.do(req)
				if tt.code == "" {
					received := tt.accepted
					if chunked {
						checkCounts(t, r, received, 0, received, 0) // the same events again
					} else {
						checkCounts(t, r, received, received, 0, 0)
					}
					return
				}
				if r.Status != http.StatusBadRequest || r.Error.Code != tt.code {
					t.Fatalf("got %d %s, want 400 %s", r.Status, r.Body, tt.code)
				}
			})
		}
	}
}

// rawRequest writes a request by hand on a new connection, so that the test controls exactly what
// is sent and when, and returns the connection and a reader for the response.
func rawRequest(t *testing.T, e *env, path string, header string) (net.Conn, *bufio.Reader) {
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
	fmt.Fprintf(conn, "POST %s?tc_s=%s&token=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s\r\n", path, e.Site, e.Key, u.Host, header)
	return conn, bufio.NewReader(conn)
}

func readRawResponse(t *testing.T, conn net.Conn, r *bufio.Reader, path string) (*http.Response, []byte) {
	t.Helper()
	// If the server waited for the body, this deadline would expire: the test would fail.
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	req := httptestRequest(path)
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	apitest.CheckResponse(t, req, resp.StatusCode, resp.Header, body)
	return resp, body
}

func httptestRequest(path string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1"+path, nil)
	return req
}

// A declared Content-Length over the limit is answered at once, without reading a byte of body:
// the test never sends one.
func TestContentLengthOverLimitRefusedBeforeReading(t *testing.T) {
	e := newEnv(t)
	for path, limit := range map[string]int{"/events": trackapi.SingleBodyLimit, "/events/batch": trackapi.BatchBodyLimit} {
		conn, r := rawRequest(t, e, path, fmt.Sprintf("Content-Length: %d\r\n", limit+1))
		resp, body := readRawResponse(t, conn, r, path)
		if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte(`"payload_too_large"`)) {
			t.Errorf("%s: got %d %s", path, resp.StatusCode, body)
		}
	}
}

// An endless chunked body is cut off after limit+1 bytes and refused; the sender is bounded so
// that the test stops by itself even if the server kept reading.
func TestEndlessChunkedBodyIsCutOff(t *testing.T) {
	e := newEnv(t)
	conn, r := rawRequest(t, e, "/events/batch", "Transfer-Encoding: chunked\r\n")
	const bound = 64 << 20
	sent := make(chan int, 1)
	go func() {
		chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", 8192, strings.Repeat(" ", 8192)))
		total := 0
		_, _ = conn.Write([]byte("2\r\n{\"\r\n"))
		for total < bound {
			if _, err := conn.Write(chunk); err != nil {
				break
			}
			total += 8192
		}
		sent <- total
	}()
	resp, body := readRawResponse(t, conn, r, "/events/batch")
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte(`"payload_too_large"`)) {
		t.Errorf("got %d %s", resp.StatusCode, body)
	}
	conn.Close()
	if n := <-sent; n >= bound {
		t.Errorf("the server let the client send all %d bytes", n)
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A gzip body has the limit applied to what it decompresses to: at the exact boundary, for a bomb
// (10 MB of JSON whitespace in about 10 KB), and a corrupt or unknown encoding is a clear 400.
func TestGzipBodies(t *testing.T) {
	e := newEnv(t)
	bomb := append(append([]byte(`{"event_name":"x","pad":"`), bytes.Repeat([]byte(" "), 10<<20)...), `"}`...)
	tests := []struct {
		name     string
		path     string
		encoding string
		body     []byte
		code     gen.ErrorCode // "" for a 200 with one event accepted
	}{
		{"single at the limit once decompressed", "/events", "gzip", gzipped(t, eventOfSize(t, "gz-ok", trackapi.SingleBodyLimit)), ""},
		{"single one byte over once decompressed", "/events", "gzip", gzipped(t, eventOfSize(t, "gz-over", trackapi.SingleBodyLimit+1)), gen.ErrorCodePayloadTooLarge},
		{"batch", "/events/batch", "GZIP", gzipped(t, batchOf(t, validEvent("gz-batch"))), ""},
		{"gzip bomb", "/events/batch", "gzip", gzipped(t, bomb), gen.ErrorCodePayloadTooLarge},
		{"corrupt gzip", "/events", "gzip", []byte("not gzip at all"), gen.ErrorCodeInvalidJson},
		{"truncated gzip", "/events", "gzip", gzipped(t, mustJSON(t, validEvent("gz-cut")))[:20], gen.ErrorCodeInvalidJson},
		{"unknown encoding", "/events", "br", mustJSON(t, validEvent("br")), gen.ErrorCodeInvalidJson},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "gzip bomb" && len(tt.body) > 64<<10 {
				t.Fatalf("the bomb is %d bytes compressed", len(tt.body))
			}
			r := e.post(e.url(tt.path), tt.body, "Content-Encoding", tt.encoding)
			if tt.code == "" {
				checkCounts(t, r, 1, 1, 0, 0)
				return
			}
			if r.Status != http.StatusBadRequest || r.Error.Code != tt.code {
				t.Fatalf("got %d %s, want 400 %s", r.Status, r.Body, tt.code)
			}
		})
	}
}
