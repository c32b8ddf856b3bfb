package server

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The watcher notes each request's framing however the bytes are split across reads, skips
// Content-Length bodies by their length (whatever they contain), tolerates the blank lines
// clients put between requests, and stops at a Transfer-Encoding or at what it cannot follow.
func TestFramingWatcher(t *testing.T) {
	post := func(headers, body string) string {
		return "POST /events HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n" + body
	}
	fake := "\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
	long := "X-Long: " + strings.Repeat("a", 500) + "\r\n"
	cl, te, both := framing{contentLength: true}, framing{transferEncoding: true}, framing{true, true}
	tests := []struct {
		name   string
		stream string
		want   []framing
		lost   bool
	}{
		{"one request", post("Content-Length: 2\r\n", "{}"), []framing{cl}, false},
		{"no body", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n", []framing{{}, {}}, false},
		{"a body that looks like headers", post("Content-Length: "+strconv.Itoa(len(fake))+"\r\n", fake) + post("content-length: 2\r\n", "{}"), []framing{cl, cl}, false},
		{"blank lines and bare LF", post("Content-Length: 2\r\n", "{}") + "\r\n\r\n" + "POST / HTTP/1.1\nContent-Length:  0 \n\n", []framing{cl, cl}, false},
		{"a long header line", post(long+"Content-Length: 2\r\n", "{}"), []framing{cl}, false},
		{"both", post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nGET / HTTP/1.1\r\n\r\n"), []framing{both}, false},
		{"both, other case and order", post("TRANSFER-ENCODING: chunked\r\ncontent-length: 5\r\n", ""), []framing{both}, false},
		{"chunked stops the watch", post("Transfer-Encoding: chunked\r\n", "0\r\n\r\n") + post("Content-Length: 0\r\n", ""), []framing{te}, false},
		{"two different lengths", post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}"), nil, true},
		{"a folded length", post("Content-Length:\r\n 2\r\n", "{}"), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, split := range []int{len(tt.stream), 1, 7} {
				c := &framingConn{}
				for s := tt.stream; len(s) > 0; {
					n := min(split, len(s))
					c.scan([]byte(s[:n]))
					s = s[n:]
				}
				var got []framing
				for {
					f, ok := c.next()
					if !ok {
						break
					}
					got = append(got, f)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("reads of %d bytes: noted %+v, want %+v", split, got, tt.want)
				}
				if tt.lost && c.state != stopped {
					t.Errorf("reads of %d bytes: still watching what it cannot follow", split)
				}
			}
		})
	}
}
