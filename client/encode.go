package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// encoded is one event encoded once, with its id filled: the exact bytes every attempt sends.
type encoded struct {
	index int    // the caller's index (Result.Index)
	slot  int    // its place in the BatchResult being filled
	id    string // context.event_id
	raw   []byte
}

const reasonNoName = "event_name is missing or not a string"

// encodeEvent fills the event's id and timestamp when missing and encodes it once. The event is
// a copy, so the caller's value is not changed.
func encodeEvent(e gen.Event, index int, now time.Time) (encoded, error) {
	if e.EventName == "" {
		return encoded{index: index}, &EventError{Index: index, Reason: "event_name is empty", Err: ErrInvalidEvent}
	}
	if e.Context.EventId == "" {
		e.Context.EventId = trackapi.NewEventID() // a UUIDv7, like the ids the server assigns
	}
	if e.Context.EventTimestamp == 0 {
		e.Context.EventTimestamp = int(now.UnixMilli())
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return encoded{index: index, id: e.Context.EventId}, &EventError{Index: index, Reason: err.Error(), Err: ErrInvalidEvent}
	}
	enc := encoded{index: index, id: e.Context.EventId, raw: raw}
	if len(raw) > MaxEventBytes {
		return enc, &EventError{Index: index, Size: len(raw), Err: ErrEventTooLarge}
	}
	return enc, nil
}

// encodeRaw checks an event given as JSON the way the server will, and adds context.event_id and
// context.event_timestamp when missing. When nothing is missing the event is sent as given,
// compacted; otherwise it is re-encoded with its keys sorted, its values byte for byte as given.
func encodeRaw(raw []byte, index int, now time.Time) (encoded, error) {
	invalid := func(reason string) (encoded, error) {
		return encoded{index: index}, &EventError{Index: index, Size: len(raw), Reason: reason, Err: ErrInvalidEvent}
	}
	// The server refuses a whole request with invalid UTF-8 (encoding/json would not notice it).
	if !utf8.Valid(raw) {
		return invalid("not valid UTF-8")
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return invalid("not valid JSON: " + err.Error())
	}
	compact := buf.Bytes()
	if len(compact) == 0 || compact[0] != '{' {
		return invalid("not a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(compact, &fields); err != nil {
		return invalid("not a JSON object: " + err.Error())
	}
	if name := fields["event_name"]; len(name) == 0 || name[0] != '"' {
		return invalid(reasonNoName)
	}

	cx := map[string]json.RawMessage{}
	if c, ok := fields["context"]; ok && !isNull(c) {
		if c[0] != '{' {
			return invalid("context is not an object, so it cannot carry the event_id that makes retries safe")
		}
		if err := json.Unmarshal(c, &cx); err != nil {
			return invalid("context: " + err.Error())
		}
	}
	changed := false
	id := trackapi.EventIDOfJSON(cx["event_id"]) // the id the server will deduplicate on
	if id == "" {
		id = trackapi.NewEventID()
		cx["event_id"], _ = json.Marshal(id)
		changed = true
	}
	if isNullOrMissing(cx, "event_timestamp") {
		if !isNullOrMissing(fields, "event_timestamp") {
			// The vendor's batch quirk, a root event_timestamp: moved into context as the server
			// does for batches, so that the single endpoint keeps it too.
			cx["event_timestamp"] = fields["event_timestamp"]
			delete(fields, "event_timestamp")
		} else {
			cx["event_timestamp"] = []byte(fmt.Sprint(now.UnixMilli()))
		}
		changed = true
	}
	out := compact
	if changed {
		c, err := marshalObject(cx)
		if err != nil {
			return invalid(err.Error())
		}
		fields["context"] = c
		if out, err = marshalObject(fields); err != nil {
			return invalid(err.Error())
		}
	} else {
		out = bytes.Clone(compact)
	}
	enc := encoded{index: index, id: id, raw: out}
	if len(out) > MaxEventBytes {
		return enc, &EventError{Index: index, Size: len(out), Err: ErrEventTooLarge}
	}
	return enc, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func isNullOrMissing(fields map[string]json.RawMessage, key string) bool {
	v, ok := fields[key]
	return !ok || isNull(v)
}

// marshalObject encodes an object of raw values without escaping HTML characters, so that the
// values stay as given (json.Marshal would turn "<" into "\u003c").
func marshalObject(m map[string]json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Prepare returns the event as the client sends it: encoded once, with context.event_id and
// context.event_timestamp filled when missing, and checked as Send checks it. Events kept in this
// form (a spool on disk, a dead-letter file) can be sent later with SendRaw, SendRawBatch or
// EnqueueRaw under the same id, so that sending one more than once still stores it once.
func Prepare(event gen.Event) (json.RawMessage, error) {
	enc, err := encodeEvent(event, 0, time.Now())
	if err != nil {
		return nil, err
	}
	return enc.raw, nil
}

// PrepareRaw is Prepare for an event already in JSON (see Client.SendRaw).
func PrepareRaw(event []byte) (json.RawMessage, error) {
	enc, err := encodeRaw(event, 0, time.Now())
	if err != nil {
		return nil, err
	}
	return enc.raw, nil
}
