package server

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
)

// Request smuggling. A request with both Content-Length and Transfer-Encoding: chunked has two
// ends: a proxy in front that goes by Content-Length forwards bytes that net/http, going by the
// chunked coding as RFC 9112 §6.3 says, reads as a second request on the same connection, which
// the proxy never sent as one (and whose answer it gives to someone else). net/http drops the
// Content-Length header before a handler sees the request and keeps the connection open, so the
// handler cannot tell and the hidden request runs. RFC 9112 §6.1 lets a server refuse such a
// request and requires it to close the connection either way.
//
// framingConn watches the bytes net/http reads for the header block of each request and notes
// whether it had Content-Length, Transfer-Encoding or both; checkFraming then refuses a request
// that had both (400, connection closed), and closes the connection after any request with a
// Transfer-Encoding: the watcher follows a connection by Content-Length only, so it stops at a
// chunked body, and nothing after one is ever read. Connections whose requests all have a
// Content-Length (every tracker and the partners' client) keep alive.

// framing is what one request's header block said about its body.
type framing struct {
	contentLength    bool
	transferEncoding bool
}

type framingKey struct{}

// framingState is where the watcher is in the connection's bytes.
type framingState uint8

const (
	awaitRequest  framingState = iota // between requests: CR and LF skipped
	inRequestLine                     // the request line
	inHeaders                         // header lines, until an empty one
	inBody                            // a Content-Length body, skipped
	stopped                           // after a Transfer-Encoding, or lost: the connection closes after its request
)

// lineKeep is how much of a line is kept: enough for any header name and Content-Length value.
const lineKeep = 64

// maxPending bounds the header blocks noted ahead of the handlers (pipelined requests read in
// one go). More is lost track of, and the connection then closes after its current request.
const maxPending = 64

// framingConn is a connection as net/http reads it, with the watcher; closing it gives its slot
// back to the listener.
type framingConn struct {
	net.Conn
	release   func()
	closeOnce sync.Once

	mu       sync.Mutex
	state    framingState
	line     [lineKeep]byte
	lineLen  int
	lineLong bool
	block    framing
	length   int64 // the block's Content-Length
	lastCL   bool  // the previous header line was Content-Length (a folded line would continue it)
	skip     int64 // body bytes left to skip
	pending  []framing
}

func (c *framingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.scan(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *framingConn) Close() error {
	err := c.Conn.Close()
	if c.release != nil {
		c.closeOnce.Do(c.release)
	}
	return err
}

// CloseWrite lets net/http half-close the connection before closing it when it refuses a request
// whose body it did not read (its "lingering close"), so that the client reads the answer before
// the reset that unread bytes cause.
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// next returns what the header block of the request now being handled said, and false when the
// watcher lost track of the connection.
func (c *framingConn) next() (framing, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return framing{}, false
	}
	f := c.pending[0]
	c.pending = c.pending[1:]
	return f, true
}

func (c *framingConn) scan(b []byte) {
	for len(b) > 0 {
		switch c.state {
		case stopped:
			return
		case inBody:
			k := min(int64(len(b)), c.skip)
			c.skip -= k
			b = b[k:]
			if c.skip == 0 {
				c.state = awaitRequest
			}
		case awaitRequest:
			i := 0
			for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
				i++
			}
			b = b[i:]
			if len(b) > 0 {
				c.state, c.block, c.lastCL = inRequestLine, framing{}, false
				c.lineLen, c.lineLong = 0, false
			}
		default: // a line of the header block
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				c.keep(b)
				return
			}
			c.keep(b[:i])
			b = b[i+1:]
			c.endLine()
			c.lineLen, c.lineLong = 0, false
		}
	}
}

func (c *framingConn) keep(b []byte) {
	n := copy(c.line[c.lineLen:], b)
	c.lineLen += n
	if n < len(b) {
		c.lineLong = true
	}
}

func (c *framingConn) endLine() {
	line := c.line[:c.lineLen]
	if !c.lineLong {
		line = bytes.TrimSuffix(line, []byte("\r"))
	}
	if c.state == inRequestLine {
		c.state = inHeaders
		return
	}
	if len(line) == 0 && !c.lineLong {
		c.endBlock()
		return
	}
	if line[0] == ' ' || line[0] == '\t' { // obs-fold: continues the previous field
		if c.lastCL {
			c.lose() // a folded Content-Length: not worth following
		}
		return
	}
	c.lastCL = false
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return // net/http refuses the request and closes the connection
	}
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		n, ok := parseLength(bytes.Trim(value, " \t"))
		if !ok || c.lineLong || (c.block.contentLength && n != c.length) {
			c.lose() // net/http refuses these, or the watcher cannot tell the length
			return
		}
		c.block.contentLength, c.length, c.lastCL = true, n, true
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		c.block.transferEncoding = true
	}
}

func (c *framingConn) endBlock() {
	if len(c.pending) >= maxPending {
		c.lose()
		return
	}
	c.pending = append(c.pending, c.block)
	switch {
	case c.block.transferEncoding:
		c.state = stopped // the connection closes after this request
	case c.block.contentLength && c.length > 0:
		c.state, c.skip = inBody, c.length
	default:
		c.state = awaitRequest
	}
}

// lose stops watching: requests whose header block was not noted find nothing and close the
// connection after their answer.
func (c *framingConn) lose() {
	c.state = stopped
}

func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}

// checkFraming refuses a request that came with both Content-Length and Transfer-Encoding, and
// closes the connection after any request whose framing the server did not follow. Requests served
// without framingConn (NewHTTPServer's listener), as in tests through httptest, only get the
// latter for chunked bodies.
func checkFraming(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		fc, watched := req.Context().Value(framingKey{}).(*framingConn)
		var f framing
		noted := false
		if watched {
			f, noted = fc.next()
		}
		switch {
		case f.contentLength && f.transferEncoding:
			c.Response().Header().Set("Connection", "close")
			return echo.NewHTTPError(http.StatusBadRequest, "the request has both Content-Length and Transfer-Encoding, "+
				"which would end its body in different places (RFC 9112 section 6.1); it is refused and the connection closed")
		case len(req.TransferEncoding) > 0, f.transferEncoding, watched && !noted:
			c.Response().Header().Set("Connection", "close")
		}
		return next(c)
	}
}

// framingContext is http.Server.ConnContext: it lets checkFraming find the connection.
func framingContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framingConn); ok {
		return context.WithValue(ctx, framingKey{}, fc)
	}
	return ctx
}
