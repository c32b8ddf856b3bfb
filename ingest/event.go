package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/spec"
)

// maxSchemaWarnings caps the schema_violation warnings reported for one event, so that a hostile
// event (say, 10 000 consent categories of the wrong type) cannot make the response explode.
const maxSchemaWarnings = 10

// eventProcessor turns one raw event into what is stored: it decodes the event
// once, normalises it, validates the result against the Event schema of the embedded spec with
// kin-openapi, and keeps the raw bytes when nothing had to change.
//
// Only the root properties the schema names (event_name, user, context, ...) are decoded into Go
// values for validation; the others stay raw bytes. The schema lets them be anything
// (additionalProperties: true), so validating without them gives the same findings, and an
// event's free-form payload (items, custom properties) costs no decoding. newEventProcessor
// refuses a schema for which that would not hold.
type eventProcessor struct {
	schema *openapi3.Schema
	known  []string // the root properties the schema describes
	quoted []string // the same names as JSON strings, for building the subset to decode
}

func newEventProcessor() (*eventProcessor, error) {
	doc, err := spec.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("loading the embedded spec: %w", err)
	}
	ref := doc.Components.Schemas["Event"]
	if ref == nil || ref.Value == nil {
		return nil, errors.New("the embedded spec has no Event schema")
	}
	schema := ref.Value
	free := schema.AdditionalProperties.Has != nil && *schema.AdditionalProperties.Has && schema.AdditionalProperties.Schema == nil
	if !free || schema.MinProps != 0 || schema.MaxProps != nil || len(schema.AllOf)+len(schema.AnyOf)+len(schema.OneOf) > 0 || schema.Not != nil {
		return nil, errors.New("the Event schema must keep its root open (additionalProperties: true, no min/maxProperties or combinators): " +
			"the validator decodes only the properties it names")
	}
	known := make([]string, 0, len(schema.Properties))
	for name := range schema.Properties {
		known = append(known, name)
	}
	slices.Sort(known)
	quoted := make([]string, len(known))
	for i, name := range known {
		quoted[i] = strconv.Quote(name)
	}
	return &eventProcessor{schema: schema, known: known, quoted: quoted}, nil
}

// processedEvent is the outcome for one event: either rejected, or a body and id to store with
// its warnings.
type processedEvent struct {
	body      []byte
	eventID   string
	eventName string
	warnings  []trackapi.Problem
	rejected  *trackapi.Problem
}

// process handles one event whose raw bytes are a valid JSON object. inBatch enables the batch-only
// normalisation (a root-level event_timestamp moves into context).
func (p *eventProcessor) process(raw []byte, inBatch bool, receivedAt time.Time) processedEvent {
	members, ok := objectMembers(raw)
	if !ok {
		// Callers pass only checked JSON objects, so this is not expected; without a decoded
		// event there is no event_name either.
		return processedEvent{rejected: &trackapi.Problem{Code: string(gen.MissingEventName), Message: "the event is not a JSON object"}}
	}
	event := p.decodeKnown(members)
	name, ok := event["event_name"].(string)
	if !ok {
		return processedEvent{rejected: &trackapi.Problem{
			Code: string(gen.MissingEventName), Path: "/event_name",
			Message: "event_name is missing or not a string; the event was not stored",
		}}
	}

	out := processedEvent{eventName: name}
	changed, timestampMoved := false, false
	warn := func(code gen.ProblemCode, path, format string, args ...any) {
		out.warnings = append(out.warnings, trackapi.Problem{Code: string(code), Path: path, Message: fmt.Sprintf(format, args...)})
		changed = true
	}

	context, contextIsObject := event["context"].(map[string]any)
	if event["context"] == nil { // missing or null
		context, contextIsObject = map[string]any{}, true
		event["context"] = context
	}

	if inBatch {
		if ts := lastMember(members, "event_timestamp"); ts != nil && contextIsObject && context["event_timestamp"] == nil {
			context["event_timestamp"] = decodeValue(ts)
			timestampMoved = true
			warn(gen.TimestampMoved, "/context/event_timestamp", "event_timestamp was at the event's root; moved into context")
		}
	}

	if contextIsObject {
		out.eventID = trackapi.EventIDOf(context["event_id"])
		if out.eventID == "" {
			out.eventID = trackapi.NewEventID()
			context["event_id"] = out.eventID
			warn(gen.EventIdGenerated, "/context/event_id", "context.event_id was missing or empty; the server assigned %s", out.eventID)
		}
		switch ts := context["event_timestamp"]; {
		case ts == nil:
			context["event_timestamp"] = receivedAt.UnixMilli()
			warn(gen.TimestampGenerated, "/context/event_timestamp", "context.event_timestamp was missing; the receive time was used")
		default:
			if ms, converted := epochMillis(ts); converted {
				context["event_timestamp"] = ms
				warn(gen.TimestampNormalized, "/context/event_timestamp", "context.event_timestamp %v was converted to epoch milliseconds %d", ts, ms)
			}
		}
	} else {
		// context is not an object: nothing can be added to it without destroying what was sent.
		// The schema check below reports it; the server id is used for deduplication only.
		out.eventID = trackapi.NewEventID()
	}

	out.warnings = append(out.warnings, p.validate(event)...)

	out.body = raw
	if changed {
		out.body = rebuildEvent(members, encodeJSON(context), timestampMoved)
	}
	return out
}

// rebuildEvent writes an event whose context changed: every other member is kept as sent, in its
// place; a root event_timestamp that moved into context is left out.
func rebuildEvent(members []member, context []byte, dropRootTimestamp bool) []byte {
	lastContext := -1
	size := len(context) + len(`{"context":}`)
	for i, m := range members {
		if m.key == "context" {
			lastContext = i
		}
		size += len(m.rawKey) + len(m.value) + 2
	}
	b := bytes.NewBuffer(make([]byte, 0, size))
	b.WriteByte('{')
	write := func(rawKey, value []byte) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.Write(rawKey)
		b.WriteByte(':')
		b.Write(value)
	}
	for i, m := range members {
		switch {
		case m.key == "context" && i == lastContext:
			write(m.rawKey, context)
		case m.key == "context": // an earlier repeat, which encoding/json would have ignored too
		case m.key == "event_timestamp" && dropRootTimestamp:
		default:
			write(m.rawKey, m.value)
		}
	}
	if lastContext < 0 {
		write([]byte(`"context"`), context)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// decodeKnown decodes the root properties the schema names, in one pass over an object made of
// just those (one decoder rather than one per property).
func (p *eventProcessor) decodeKnown(members []member) map[string]any {
	var subset bytes.Buffer
	subset.WriteByte('{')
	for i, name := range p.known {
		if value := lastMember(members, name); value != nil {
			if subset.Len() > 1 {
				subset.WriteByte(',')
			}
			subset.WriteString(p.quoted[i])
			subset.WriteByte(':')
			subset.Write(value)
		}
	}
	subset.WriteByte('}')
	event, _ := decodeValue(subset.Bytes()).(map[string]any)
	return event
}

// decodeValue decodes one valid JSON value, keeping numbers exactly as sent.
func decodeValue(raw json.RawMessage) any {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		// raw comes from a successful decode of the whole event, so it is valid JSON.
		panic(fmt.Sprintf("decoding a value of a decoded event: %v", err))
	}
	return v
}

// validate checks the normalised event against the Event schema; violations become warnings.
func (p *eventProcessor) validate(event map[string]any) []trackapi.Problem {
	err := p.schema.VisitJSON(event, openapi3.MultiErrors())
	if err == nil {
		return nil
	}
	var problems []trackapi.Problem
	total := 0
	for _, e := range flattenSchemaErrors(err) {
		total++
		if len(problems) < maxSchemaWarnings {
			problems = append(problems, e)
		}
	}
	if total > maxSchemaWarnings {
		problems = append(problems, trackapi.Problem{
			Code: string(gen.SchemaViolation), Path: "",
			Message: fmt.Sprintf("%d more schema violations not listed", total-maxSchemaWarnings),
		})
	}
	return problems
}

// flattenSchemaErrors turns kin-openapi's (possibly nested) errors into schema_violation problems.
func flattenSchemaErrors(err error) []trackapi.Problem {
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		var all []trackapi.Problem
		for _, e := range multi {
			all = append(all, flattenSchemaErrors(e)...)
		}
		return all
	}
	problem := trackapi.Problem{Code: string(gen.SchemaViolation), Message: err.Error()}
	var schemaErr *openapi3.SchemaError
	if errors.As(err, &schemaErr) {
		problem.Path = jsonPointer(schemaErr.JSONPointer())
		problem.Message = schemaErr.Reason
		if problem.Path != "" {
			problem.Message = strings.TrimPrefix(problem.Path, "/") + ": " + schemaErr.Reason
		}
	}
	return []trackapi.Problem{problem}
}

// jsonPointer joins path segments into an RFC 6901 pointer.
func jsonPointer(segments []string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(s))
	}
	return b.String()
}

// epochMillis converts the timestamp forms senders use into epoch milliseconds. converted is false
// when the value is already an integer, or when it is in no known form (left for the schema check).
func epochMillis(v any) (ms int64, converted bool) {
	switch ts := v.(type) {
	case json.Number:
		if _, err := ts.Int64(); err == nil {
			return 0, false
		}
		if f, err := ts.Float64(); err == nil {
			return int64(f), true
		}
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64); err == nil {
			return n, true
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
			if t, err := time.Parse(layout, ts); err == nil {
				return t.UnixMilli(), true
			}
		}
	}
	return 0, false
}

// encodeJSON encodes a decoded (part of an) event. HTML characters are kept as sent rather than
// escaped.
func encodeJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Values came from the JSON decoder, so they always encode.
		panic(fmt.Sprintf("re-encoding a decoded event: %v", err))
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}
