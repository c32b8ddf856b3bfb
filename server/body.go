package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
)

// Bounds of reading one body.
const (
	// DefaultBodyIdleTimeout is how long a body may send nothing before it is cut off: a stalled
	// sender gives back its connection and what it holds of the budget.
	DefaultBodyIdleTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds the whole body, however steadily it trickles (as ReadTimeout
	// bounds the whole request).
	DefaultBodyTimeout = 30 * time.Second
	// firstBodyBuffer is what a body holds before its first byte arrives; after that it holds
	// at most twice what it has sent (its buffer doubles when full).
	firstBodyBuffer = 1 << 10
	// firstGunzipBuffer is where the buffer of a decompressed body starts.
	firstGunzipBuffer = 4 << 10
)

// readBody reads the request body within the endpoint's limit, holding of the body budget only
// what has arrived (see bodyBudget), and decompresses a gzip body. The claim it returns (nil when
// nothing was read) holds the body's bytes until the caller closes it, once the request is
// answered. Its errors: an
// *ingest.Refusal (400), errOverloaded (503: no room in the budget in time), or the request
// context's error (the client went away while the body waited for room). With the refusal of a
// body that is not gzip, it returns what was read of it (maybe nothing), for the inspector.
//
// A declared Content-Length over the limit is refused before anything is read. Neither a lying
// nor a missing Content-Length (chunked bodies) lets a client make the server hold more than the
// limit: at most limit+1 bytes are read. A gzip body (Content-Encoding: gzip) has the limit applied
// twice: to the bytes on the wire, and to the bytes it decompresses to, of which no more than
// limit+1 are ever produced, so a gzip bomb costs nothing.
func (s *Server) readBody(c echo.Context, limit int64) ([]byte, *claim, error) {
	req := c.Request()
	if req.ContentLength > limit {
		return nil, nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "request body is %d bytes, over the %d-byte limit", req.ContentLength, limit)
	}
	encoding, refusal := contentEncoding(req.Header)
	if refusal != nil {
		return nil, nil, refusal
	}
	if req.Body == nil {
		return nil, nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "the request body is empty")
	}
	wire := limit + 1 // chunked: read up to one byte past the limit, to see it is over
	if req.ContentLength >= 0 {
		wire = req.ContentLength + 1 // +1 to see the end without growing the buffer
	}
	most := wire
	if encoding == "gzip" {
		most += limit + 1 // and what it decompresses to
	}
	cl := s.bodies.claim(c.RealIP(), most)

	deadlines := s.bodyDeadlines(c)
	body, err := readGrowing(req.Context(), io.LimitReader(req.Body, limit+1), cl, firstBodyBuffer, wire, deadlines.beforeRead)
	deadlines.done()
	if err != nil {
		// What is left of the body is not wanted, if it ever comes: close rather than read it.
		c.Response().Header().Set("Connection", "close")
		if encoding == "gzip" {
			body = nil // compressed bytes say nothing to a reader
		}
		return body, cl, bodyReadError(err, s.bodyIdle)
	}
	if int64(len(body)) > limit {
		if encoding == "gzip" {
			body = nil
		}
		return body, cl, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "request body is larger than %d bytes", limit)
	}
	cl.lower(int64(cap(body)) + limit + 1)
	if encoding != "gzip" {
		cl.lower(int64(cap(body)))
		return body, cl, nil
	}
	plain, err := gunzip(req.Context(), body, cl, limit)
	cl.release(int64(cap(body))) // the compressed bytes are no longer held
	return plain, cl, err
}

// contentEncoding returns the body's encoding ("" or "gzip"), or the refusal of any other: one
// that is not gzip, or several (repeated Content-Encoding lines, or a list in one), which would
// each have to be undone in turn and are never what a tracker sends.
func contentEncoding(h http.Header) (string, *ingest.Refusal) {
	values := h.Values("Content-Encoding")
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", ingest.Refuse(gen.ErrorCodeInvalidJson, "Content-Encoding is given %d times; send it once, gzip, or not at all for uncompressed JSON", len(values))
	}
	encoding := strings.ToLower(strings.TrimSpace(values[0]))
	if strings.Contains(encoding, ",") {
		return "", ingest.Refuse(gen.ErrorCodeInvalidJson, "Content-Encoding %q lists several encodings; send gzip or uncompressed JSON", encoding)
	}
	switch encoding {
	case "", "identity":
		return "", nil
	case "gzip":
		return "gzip", nil
	}
	return "", ingest.Refuse(gen.ErrorCodeInvalidJson, "Content-Encoding %q is not supported; send gzip or uncompressed JSON", encoding)
}

// bodyReadError turns an error of reading the body into the handler's error.
func bodyReadError(err error, idle time.Duration) error {
	switch {
	case errors.Is(err, errOverloaded), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		// A client that stops sending: nothing to store, and probably nobody to read the answer.
		return ingest.Refuse(gen.ErrorCodeInvalidJson, "the request body stalled (nothing for %s, or not complete in time); it was cut off", idle)
	}
	// A client that goes away: nothing to store, nobody to answer well.
	return ingest.Refuse(gen.ErrorCodeInvalidJson, "reading the request body failed: %v", err)
}

// gunzip decompresses a gzip body, refusing it as soon as it would exceed limit.
func gunzip(ctx context.Context, compressed []byte, cl *claim, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "the gzip body cannot be read: %v", err)
	}
	body, err := readGrowing(ctx, io.LimitReader(zr, limit+1), cl, firstGunzipBuffer, limit+1, nil)
	if err != nil {
		if errors.Is(err, errOverloaded) || ctx.Err() != nil {
			return nil, err
		}
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "the gzip body cannot be read: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "the gzip body decompresses to more than %d bytes", limit)
	}
	return body, nil
}

// readGrowing reads r to its end into a buffer that starts at first bytes and doubles when full,
// up to most; each growth is taken from the claim before the buffer is made, so that what is held
// follows what has arrived (at most twice it, or first before anything has). beforeRead, when
// set, runs before each read. It stops at most bytes without an error: the caller checks the
// limit.
func readGrowing(ctx context.Context, r io.Reader, cl *claim, first, most int64, beforeRead func()) ([]byte, error) {
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= most {
				return buf, nil
			}
			size := min(most, max(first, 2*int64(cap(buf))))
			if err := cl.grow(ctx, size-int64(cap(buf))); err != nil {
				return nil, err
			}
			grown := make([]byte, len(buf), size)
			copy(grown, buf)
			buf = grown
		}
		if beforeRead != nil {
			beforeRead()
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// bodyDeadlines sets the connection's read deadline before each read of a body: at most the idle
// timeout from now, and never past the body's own deadline. net/http's ReadTimeout alone would let
// a sender that stalls hold its connection (and what it sent) for the whole 30 s.
type bodyDeadlines struct {
	rc               *http.ResponseController
	idle             time.Duration
	deadline         time.Time
	set, unsupported bool
}

func (s *Server) bodyDeadlines(c echo.Context) *bodyDeadlines {
	return &bodyDeadlines{rc: http.NewResponseController(c.Response()), idle: s.bodyIdle, deadline: time.Now().Add(s.bodyTimeout)}
}

func (d *bodyDeadlines) beforeRead() {
	if d.unsupported {
		return
	}
	next := time.Now().Add(d.idle)
	if next.After(d.deadline) {
		next = d.deadline
	}
	if err := d.rc.SetReadDeadline(next); err != nil {
		d.unsupported = true // not a net/http connection (a test recorder): no deadline to set
		return
	}
	d.set = true
}

// done clears the deadline once the body is read. net/http then waits in the background for the
// client's next bytes, and a read deadline passing while the events are stored would look to it
// like the client going away.
func (d *bodyDeadlines) done() {
	if d.set {
		_ = d.rc.SetReadDeadline(time.Time{})
	}
}
