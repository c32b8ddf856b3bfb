package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// Refusal is the refusal of a whole request: a 400 whose body is gen.Error, and nothing of the
// request is stored. The HTTP layer makes them for what it sees on the wire (a body over its limit,
// an unreadable gzip stream); Collect makes them for a body that is not usable JSON of the right
// shape.
type Refusal struct {
	Code    gen.ErrorCode
	Message string
	Index   *int // the batch element at fault, when one is
}

func (r *Refusal) Error() string { return string(r.Code) + ": " + r.Message }

// Refuse makes a Refusal with a formatted message.
func Refuse(code gen.ErrorCode, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Message: fmt.Sprintf(format, args...)}
}

func refuseElement(code gen.ErrorCode, index int, format string, args ...any) *Refusal {
	r := Refuse(code, format, args...)
	r.Index = &index
	return r
}

// checkJSON refuses what is not one valid JSON value. encoding/json would silently replace invalid
// UTF-8 with U+FFFD, so it is checked first: an event is stored as sent or not at all.
func checkJSON(body []byte) *Refusal {
	if len(bytes.TrimSpace(body)) == 0 {
		return Refuse(gen.ErrorCodeInvalidJson, "the request body is empty")
	}
	if !utf8.Valid(body) {
		return Refuse(gen.ErrorCodeInvalidJson, "the request body is not valid UTF-8")
	}
	if !json.Valid(body) {
		err := syntaxError(body)
		if syntax := (*json.SyntaxError)(nil); errors.As(err, &syntax) && strings.HasSuffix(syntax.Error(), "exceeded max depth") {
			return Refuse(gen.ErrorCodeInvalidJson, "the request body nests objects and arrays more than %d levels deep (at byte %d), deeper than the server reads",
				maxJSONDepth, syntax.Offset)
		}
		return Refuse(gen.ErrorCodeInvalidJson, "the request body is not valid JSON: %v", err)
	}
	return nil
}

// maxJSONDepth is the deepest nesting of objects and arrays that encoding/json reads (its scanner's
// maxNestingDepth, which it does not export): json.Valid refuses a deeper body, with a SyntaxError
// "exceeded max depth". Such a body is refused as a whole (400 invalid_json) like any body the
// server cannot read; TestDepthLimitOfJSON notices if Go changes the limit.
const maxJSONDepth = 10000

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
func splitSingle(body []byte) ([]json.RawMessage, *Refusal) {
	if !isObject(body) {
		return nil, Refuse(gen.ErrorCodeInvalidPayload, "an event must be a JSON object")
	}
	return []json.RawMessage{body}, nil
}

// splitBatch checks the shape of a batch body and returns its elements' raw bytes as sent (slices
// of body, not copies). A batch is all or nothing: the first element that is not an object or is
// too large refuses the request. body has passed checkJSON.
func splitBatch(body []byte) ([]json.RawMessage, *Refusal) {
	members, ok := objectMembers(body)
	if !ok {
		return nil, Refuse(gen.ErrorCodeInvalidPayload, `a batch must be a JSON object {"batch": [...]}`)
	}
	events, ok := arrayElements(lastMember(members, "batch"))
	if !ok {
		return nil, Refuse(gen.ErrorCodeInvalidPayload, `a batch must be a JSON object with a "batch" array`)
	}
	for i, raw := range events {
		if !isObject(raw) {
			return nil, refuseElement(gen.ErrorCodeInvalidPayload, i, "batch element %d is not a JSON object", i)
		}
		if len(raw) > trackapi.EventLimit {
			return nil, refuseElement(gen.ErrorCodeEventTooLarge, i, "batch element %d is %d bytes, over the %d-byte limit", i, len(raw), trackapi.EventLimit)
		}
	}
	return events, nil
}
