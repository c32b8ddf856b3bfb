package server

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
)

// readBody reads at most limit+1 bytes of the request body, so that neither a lying nor a missing
// Content-Length (chunked bodies) lets a client make the server hold more than the limit. A
// declared length over the limit is refused before anything is read. A gzip body (Content-Encoding:
// gzip) has the limit applied twice: to the bytes on the wire, and to the bytes it decompresses to,
// of which no more than limit+1 are ever produced, so a gzip bomb costs nothing.
func readBody(req *http.Request, limit int64) ([]byte, *ingest.Refusal) {
	if req.ContentLength > limit {
		return nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "request body is %d bytes, over the %d-byte limit", req.ContentLength, limit)
	}
	encoding := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding")))
	if encoding != "" && encoding != "identity" && encoding != "gzip" {
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "Content-Encoding %q is not supported; send gzip or uncompressed JSON", encoding)
	}
	if req.Body == nil {
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "the request body is empty")
	}
	body, err := readAll(io.LimitReader(req.Body, limit+1), req.ContentLength)
	if err != nil {
		// A client that stops sending or goes away: nothing to store, nobody to answer well.
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "reading the request body failed: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "request body is larger than %d bytes", limit)
	}
	if encoding == "gzip" {
		return gunzip(body, limit)
	}
	return body, nil
}

// gunzip decompresses a gzip body, refusing it as soon as it would exceed limit.
func gunzip(compressed []byte, limit int64) ([]byte, *ingest.Refusal) {
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "the gzip body cannot be read: %v", err)
	}
	body, err := readAll(io.LimitReader(zr, limit+1), -1)
	if err != nil {
		return nil, ingest.Refuse(gen.ErrorCodeInvalidJson, "the gzip body cannot be read: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "the gzip body decompresses to more than %d bytes", limit)
	}
	return body, nil
}

// readAll is io.ReadAll that starts with a buffer of the declared length (plus one byte to see the
// end), so that a body with a Content-Length is read without growing and copying the buffer.
func readAll(r io.Reader, declared int64) ([]byte, error) {
	size := int64(512)
	if declared > 0 {
		size = declared + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow, as io.ReadAll does
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
