package server

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/trackapi/trackapi/gen"
)

// The limits of DESIGN.md §2, also stated in openapi.yaml.
const (
	// SingleBodyLimit is the largest body POST /events accepts.
	SingleBodyLimit = 32768
	// BatchBodyLimit is the largest body POST /events/batch accepts.
	BatchBodyLimit = 512000
	// EventLimit is the largest raw batch element, counted as sent.
	EventLimit = 32768
)

// requestError is a refusal of a whole request: a 400 whose body is gen.Error.
type requestError struct {
	code    gen.ErrorCode
	message string
	index   *int
}

func (e *requestError) Error() string { return string(e.code) + ": " + e.message }

func refuse(code gen.ErrorCode, format string, args ...any) *requestError {
	return &requestError{code: code, message: fmt.Sprintf(format, args...)}
}

func refuseElement(code gen.ErrorCode, index int, format string, args ...any) *requestError {
	e := refuse(code, format, args...)
	e.index = &index
	return e
}

// readBody reads at most limit+1 bytes of the request body, so that neither a lying nor a missing
// Content-Length (chunked bodies) lets a client make the server hold more than the limit. A
// declared length over the limit is refused before anything is read. A gzip body (Content-Encoding:
// gzip) has the limit applied twice: to the bytes on the wire, and to the bytes it decompresses to,
// of which no more than limit+1 are ever produced, so a gzip bomb costs nothing.
func readBody(req *http.Request, limit int64) ([]byte, *requestError) {
	if req.ContentLength > limit {
		return nil, refuse(gen.ErrorCodePayloadTooLarge, "request body is %d bytes, over the %d-byte limit", req.ContentLength, limit)
	}
	encoding := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding")))
	if encoding != "" && encoding != "identity" && encoding != "gzip" {
		return nil, refuse(gen.ErrorCodeInvalidJson, "Content-Encoding %q is not supported; send gzip or uncompressed JSON", encoding)
	}
	if req.Body == nil {
		return nil, refuse(gen.ErrorCodeInvalidJson, "the request body is empty")
	}
	body, err := readAll(io.LimitReader(req.Body, limit+1), req.ContentLength)
	if err != nil {
		// A client that stops sending or goes away: nothing to store, nobody to answer well.
		return nil, refuse(gen.ErrorCodeInvalidJson, "reading the request body failed: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, refuse(gen.ErrorCodePayloadTooLarge, "request body is larger than %d bytes", limit)
	}
	if encoding == "gzip" {
		return gunzip(body, limit)
	}
	return body, nil
}

// gunzip decompresses a gzip body, refusing it as soon as it would exceed limit.
func gunzip(compressed []byte, limit int64) ([]byte, *requestError) {
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return nil, refuse(gen.ErrorCodeInvalidJson, "the gzip body cannot be read: %v", err)
	}
	body, err := readAll(io.LimitReader(zr, limit+1), -1)
	if err != nil {
		return nil, refuse(gen.ErrorCodeInvalidJson, "the gzip body cannot be read: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, refuse(gen.ErrorCodePayloadTooLarge, "the gzip body decompresses to more than %d bytes", limit)
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

// checkJSON refuses what is not one valid JSON value. encoding/json would silently replace invalid
// UTF-8 with U+FFFD, so it is checked first: an event is stored as sent or not at all.
func checkJSON(body []byte) *requestError {
	if len(bytes.TrimSpace(body)) == 0 {
		return refuse(gen.ErrorCodeInvalidJson, "the request body is empty")
	}
	if !utf8.Valid(body) {
		return refuse(gen.ErrorCodeInvalidJson, "the request body is not valid UTF-8")
	}
	if !json.Valid(body) {
		return refuse(gen.ErrorCodeInvalidJson, "the request body is not valid JSON: %v", syntaxError(body))
	}
	return nil
}

// syntaxError says where the JSON breaks, for the 400's message.
func syntaxError(body []byte) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("unexpected data after the JSON value at offset %d", dec.InputOffset())
	}
	return fmt.Errorf("invalid JSON")
}

// isObject tells whether a JSON value (valid, without leading space) is an object.
func isObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// splitSingle checks the shape of a single-event body: one JSON object.
func splitSingle(body []byte) ([]json.RawMessage, *requestError) {
	if !isObject(body) {
		return nil, refuse(gen.ErrorCodeInvalidPayload, "an event must be a JSON object")
	}
	return []json.RawMessage{body}, nil
}

// splitBatch checks the shape of a batch body and returns its elements' raw bytes as sent (slices
// of body, not copies). A batch is all or nothing: the first element that is not an object or is
// too large refuses the request. body has passed checkJSON.
func splitBatch(body []byte) ([]json.RawMessage, *requestError) {
	members, ok := objectMembers(body)
	if !ok {
		return nil, refuse(gen.ErrorCodeInvalidPayload, `a batch must be a JSON object {"batch": [...]}`)
	}
	events, ok := arrayElements(lastMember(members, "batch"))
	if !ok {
		return nil, refuse(gen.ErrorCodeInvalidPayload, `a batch must be a JSON object with a "batch" array`)
	}
	for i, raw := range events {
		if !isObject(raw) {
			return nil, refuseElement(gen.ErrorCodeInvalidPayload, i, "batch element %d is not a JSON object", i)
		}
		if len(raw) > EventLimit {
			return nil, refuseElement(gen.ErrorCodeEventTooLarge, i, "batch element %d is %d bytes, over the %d-byte limit", i, len(raw), EventLimit)
		}
	}
	return events, nil
}
