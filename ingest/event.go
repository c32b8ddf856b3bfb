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
	schema   *openapi3.Schema
	known    []string       // the root properties the schema describes
	quoted   []string       // the same names as JSON strings, for building the subset to decode
	standard standardEvents // the standard events' required properties (standard.go)
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
	if err := checkArraySchemas(schema, "Event", map[*openapi3.Schema]bool{}); err != nil {
		return nil, err
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
	standard, err := loadStandardEvents(doc)
	if err != nil {
		return nil, err
	}
	return &eventProcessor{schema: schema, known: known, quoted: quoted, standard: standard}, nil
}

// processedEvent is the outcome for one event: either rejected, or a body and id to store with
// its warnings.
type processedEvent struct {
	body      []byte
	eventID   string
	eventName string
	// testCode is the event's top-level test_code when it is a non-empty string, for the
	// inspector (also for a rejected event).
	testCode string
	warnings []trackapi.Problem
	rejected *trackapi.Problem
}

// process handles one event whose raw bytes are a valid JSON object. inBatch enables the batch-only
// normalisation (a root-level event_timestamp moves into context). A legacy event is converted
// first (legacy.go), and everything after reads the converted event, which is what is stored.
//
// A key repeated at the event's root or in its context is read as encoding/json reads it, the last
// one winning, and the stored body keeps only that last one (duplicate_key), so that every reader
// of the stored event, whatever its rule for repeated keys, sees the id the server deduplicated on.
// Repeats deeper down are stored as sent: the server reads nothing there.
func (p *eventProcessor) process(raw []byte, inBatch bool, receivedAt time.Time) processedEvent {
	var rootBuf, contextBuf [24]member // most events fit, so walking them allocates nothing
	members, ok := appendMembers(rootBuf[:0], raw)
	if !ok {
		// Callers pass only checked JSON objects, so this is not expected; without a decoded
		// event there is no event_name either.
		return processedEvent{rejected: &trackapi.Problem{Code: string(gen.MissingEventName), Message: "the event is not a JSON object"}}
	}
	// A legacy event is converted, then read again (legacy.go): its root says so before anything
	// is decoded, its context once decoded.
	var event map[string]any
	var tooDeep string
	var knownSize int
	legacy := legacyRoot(members)
	if !legacy {
		event, tooDeep, knownSize = p.decodeKnown(members)
		context, _ := event["context"].(map[string]any)
		legacy = legacyContext(context)
	}
	var converted []trackapi.Problem // the legacy conversion's warnings
	if legacy {
		raw, converted = convertLegacy(members)
		members, _ = appendMembers(rootBuf[:0], raw)
		event, tooDeep, knownSize = p.decodeKnown(members)
	}
	testCode := stringMember(members, "test_code")
	name, ok := event["event_name"].(string)
	if !ok {
		return processedEvent{testCode: testCode, rejected: &trackapi.Problem{
			Code: string(gen.MissingEventName), Path: "/event_name",
			Message: "event_name is missing or not a string; the event was not stored",
		}}
	}

	out := processedEvent{eventName: name, testCode: testCode, warnings: converted}
	contextChanged, timestampMoved, timestampOutside := false, false, false
	warn := func(code gen.ProblemCode, path, format string, args ...any) {
		out.warnings = append(out.warnings, trackapi.Problem{Code: string(code), Path: path, Message: fmt.Sprintf(format, args...)})
	}

	rootDropped := supersededMembers(members)
	var duplicates duplicateReport
	duplicates.add("", members, rootDropped)

	context, contextIsObject := event["context"].(map[string]any)
	if event["context"] == nil { // missing or null
		context, contextIsObject = map[string]any{}, true
		event["context"] = context
	}
	// context's own members as sent, for its repeated keys and the raw text of its event_id.
	var contextMembers []member
	var contextDropped []bool
	if contextIsObject {
		contextMembers, _ = appendMembers(contextBuf[:0], lastMember(members, "context"))
		contextDropped = supersededMembers(contextMembers)
		duplicates.add("/context", contextMembers, contextDropped)
	}
	out.warnings = duplicates.warnings(out.warnings)

	if inBatch {
		if ts := lastMember(members, "event_timestamp"); ts != nil && contextIsObject && context["event_timestamp"] == nil {
			context["event_timestamp"] = decodeValue(ts)
			contextChanged, timestampMoved = true, true
			warn(gen.TimestampMoved, "/context/event_timestamp", "event_timestamp was at the event's root; moved into context")
		}
	}

	if contextIsObject {
		if id := lastMember(contextMembers, "event_id"); len(id) > 0 && id[0] == '"' && hasLoneSurrogate(id) {
			// encoding/json, like most decoders, turns every lone surrogate into U+FFFD, so
			// "a\ud800" and "a\ud801" would be one id: the second event would be dropped as a
			// duplicate of the first, and readers of the stored events could not tell them apart.
			out.eventID = trackapi.NewEventID()
			context["event_id"] = out.eventID
			contextChanged = true
			warn(gen.InvalidEventId, "/context/event_id",
				"context.event_id %s holds an escaped lone UTF-16 surrogate, which decoders turn into U+FFFD, so it cannot tell events apart; the server assigned %s",
				clip(string(id), maxValueInMessage), out.eventID)
		} else {
			out.eventID = trackapi.EventIDOf(context["event_id"])
		}
		if out.eventID == "" {
			out.eventID = trackapi.NewEventID()
			context["event_id"] = out.eventID
			contextChanged = true
			warn(gen.EventIdGenerated, "/context/event_id", "context.event_id was missing or empty; the server assigned %s", out.eventID)
		}
		switch ts := context["event_timestamp"]; {
		case ts == nil:
			context["event_timestamp"] = receivedAt.UnixMilli()
			contextChanged = true
			warn(gen.TimestampGenerated, "/context/event_timestamp", "context.event_timestamp was missing; the receive time was used")
		default:
			switch ms, outcome := epochMillis(ts); outcome {
			case timestampConverted:
				context["event_timestamp"] = ms
				contextChanged = true
				warn(gen.TimestampNormalized, "/context/event_timestamp", "context.event_timestamp %s was converted to epoch milliseconds %d",
					clip(fmt.Sprint(ts), maxValueInMessage), ms)
			case timestampOutOfRange:
				// Reported here, once, whatever the schema check does: kin-openapi compares float64s
				// and sees an integer in 2^63, fails on a number past float64 with a message of its
				// own, and does not run at all on an event too deep to check.
				timestampOutside = true
				warn(gen.SchemaViolation, "/context/event_timestamp",
					"context.event_timestamp %s is outside the range of epoch milliseconds (a 64-bit signed integer); it was stored as sent",
					clip(fmt.Sprint(ts), maxValueInMessage))
			}
		}
	} else {
		// context is not an object: nothing can be added to it without destroying what was sent.
		// The schema check below reports it; the server id is used for deduplication only.
		out.eventID = trackapi.NewEventID()
	}

	out.body = raw
	var contextJSON []byte // the context to store, when not the one sent
	switch {
	case contextChanged:
		contextJSON = encodeJSON(context) // a map: repeated keys are gone
	case contextDropped != nil:
		contextJSON = rebuildObject(contextMembers, contextDropped, "", nil, "")
	}
	if contextJSON != nil || rootDropped != nil {
		omit := ""
		if timestampMoved {
			omit = "event_timestamp"
		}
		out.body = rebuildObject(members, rootDropped, "context", contextJSON, omit)
	}

	// Validation runs once the body is built: an out-of-range timestamp, already reported, is
	// then replaced in the decoded event (not in what is stored) so that the check does not report
	// it again.
	if timestampOutside {
		context["event_timestamp"] = json.Number("0")
	}
	out.warnings = append(out.warnings, p.validate(event, tooDeep, knownSize > 2*maxValidatedItems)...)
	out.warnings = p.standard.missingRequired(out.warnings, name, members)
	return out
}

// rebuildObject writes the object made of members as sent, in their places, except: a member with
// dropped[i] (dropped nil: none) and every member named omit are left out; when value is not nil,
// the last member named replace gets value (and is added at the end when there is none).
func rebuildObject(members []member, dropped []bool, replace string, value []byte, omit string) []byte {
	last := -1
	size := len(value) + len(replace) + len(`{"":}`)
	for i, m := range members {
		if value != nil && m.key == replace {
			last = i
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
		case dropped != nil && dropped[i], omit != "" && m.key == omit:
		case i == last:
			write(m.rawKey, value)
		case value != nil && m.key == replace: // an earlier repeat
		default:
			write(m.rawKey, m.value)
		}
	}
	if value != nil && last < 0 {
		write([]byte(strconv.Quote(replace)), value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// decodeKnown decodes the root properties the schema names, in one pass over an object made of
// just those (one decoder rather than one per property). tooDeep is the path of the first of them
// that nests deeper than maxValidationDepth, or ""; size is their length in bytes.
func (p *eventProcessor) decodeKnown(members []member) (event map[string]any, tooDeep string, size int) {
	var subset bytes.Buffer
	subset.WriteByte('{')
	for i, name := range p.known {
		if value := lastMember(members, name); value != nil {
			if tooDeep == "" && deeperThan(value, maxValidationDepth-1) { // the event is the first level
				tooDeep = jsonPointer([]string{name})
			}
			if subset.Len() > 1 {
				subset.WriteByte(',')
			}
			subset.WriteString(p.quoted[i])
			subset.WriteByte(':')
			subset.Write(value)
		}
	}
	subset.WriteByte('}')
	event, _ = decodeValue(subset.Bytes()).(map[string]any)
	return event, tooDeep, subset.Len()
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
// tooDeep (from decodeKnown) skips the check: one warning says why. long says that the event may
// hold an array longer than maxValidatedItems (it is too short to hold one otherwise), which is
// then cut for the check, with a warning.
func (p *eventProcessor) validate(event map[string]any, tooDeep string, long bool) []trackapi.Problem {
	if tooDeep != "" {
		return []trackapi.Problem{{
			Code: string(gen.SchemaViolation), Path: tooDeep,
			Message: fmt.Sprintf("%s nests deeper than %d levels (the event being the first); the event was not checked against the schema",
				clip(strings.TrimPrefix(tooDeep, "/"), maxValueInMessage), maxValidationDepth),
		}}
	}
	var problems []trackapi.Problem
	var view any = event
	if long {
		var cut arrayCut
		view, _ = cut.view(p.schema, event, nil)
		if cut.first != "" {
			problems = append(problems, trackapi.Problem{
				Code: string(gen.SchemaViolation), Path: cut.first,
				Message: fmt.Sprintf("%s has %d items; only the first %d items of an array are checked against the schema",
					clip(strings.TrimPrefix(cut.first, "/"), maxValueInMessage), cut.items, maxValidatedItems),
			})
		}
	}
	// Without DisableSchemaErrorDetails, the message of a SchemaError embeds the schema and the
	// whole offending value, pretty-printed: quadratic in the value's depth. No message of
	// kin-openapi is used here, but one formatted elsewhere (a log, a wrapped error) stays cheap.
	err := p.schema.VisitJSON(view, openapi3.MultiErrors(), openapi3.DisableSchemaErrorDetails())
	if err == nil {
		return problems
	}
	total, listed := 0, 0
	walkSchemaErrors(err, func(e error) {
		total++
		if listed++; listed <= maxSchemaWarnings {
			problems = append(problems, schemaProblem(e))
		}
	})
	if total > maxSchemaWarnings {
		problems = append(problems, trackapi.Problem{
			Code: string(gen.SchemaViolation), Path: "",
			Message: fmt.Sprintf("%d more schema violations not listed", total-maxSchemaWarnings),
		})
	}
	return problems
}

// walkSchemaErrors calls f for each error of kin-openapi's (possibly nested) MultiErrors.
func walkSchemaErrors(err error, f func(error)) {
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		for _, e := range multi {
			walkSchemaErrors(e, f)
		}
		return
	}
	f(err)
}

// schemaProblem turns one schema error into a schema_violation warning. Its message is made of the
// error's path and Reason, never of err.Error(), which may render the value; and it is cut, so
// that a warning costs a few hundred bytes whatever the event holds.
func schemaProblem(err error) trackapi.Problem {
	var schemaErr *openapi3.SchemaError
	if !errors.As(err, &schemaErr) {
		// Not expected from a decoded value and a loaded spec (an unresolved $ref, say).
		return trackapi.Problem{Code: string(gen.SchemaViolation), Message: clip(err.Error(), maxReasonInMessage)}
	}
	reason := schemaErr.Reason
	if reason == "" {
		reason = fmt.Sprintf("doesn't match schema %q", schemaErr.SchemaField)
	}
	problem := trackapi.Problem{
		Code:    string(gen.SchemaViolation),
		Path:    jsonPointer(schemaErr.JSONPointer()),
		Message: clip(reason, maxReasonInMessage),
	}
	if problem.Path != "" {
		problem.Message = clip(strings.TrimPrefix(problem.Path, "/"), maxValueInMessage) + ": " + problem.Message
	}
	return problem
}

// jsonPointer joins path segments into an RFC 6901 pointer.
func jsonPointer(segments []string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		if strings.ContainsAny(s, "~/") {
			_, _ = pointerEscaper.WriteString(&b, s) // a strings.Builder does not fail
		} else {
			b.WriteString(s)
		}
	}
	return b.String()
}

// pointerEscaper escapes a JSON pointer's segment. It is built once: building a Replacer costs
// kilobytes, which made each schema warning cost more than the rest of its event.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// What epochMillis made of a timestamp.
type timestampOutcome uint8

const (
	timestampAsSent     timestampOutcome = iota // already epoch milliseconds, or in no known form (left for the schema check)
	timestampConverted                          // converted into epoch milliseconds
	timestampOutOfRange                         // a number whose integer part does not fit in an int64: stored as sent
)

// epochMillis converts the timestamp forms senders use into epoch milliseconds: a number with a
// fraction or an exponent (its integer part), a numeric string, an ISO 8601 string. A number whose
// integer part is outside the int64 range (2^63, -2^63-1, 1e30) is never converted: Go's conversion
// of such a float64 is undefined (it gave -2^63 on amd64), and a float64 cannot even tell 2^63 from
// 2^63-1, so the number is read exactly, from its digits.
func epochMillis(v any) (int64, timestampOutcome) {
	switch ts := v.(type) {
	case json.Number:
		if _, err := ts.Int64(); err == nil {
			return 0, timestampAsSent
		}
		if ms, ok := integerPart(string(ts)); ok {
			return ms, timestampConverted
		}
		return 0, timestampOutOfRange
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64); err == nil {
			return n, timestampConverted
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
			if t, err := time.Parse(layout, ts); err == nil {
				return t.UnixMilli(), timestampConverted // years 0 to 9999 only: always in range
			}
		}
	}
	return 0, timestampAsSent
}

// integerPart is the integer part (towards zero) of a valid JSON number, exactly, and false when it
// does not fit in an int64. It moves the decimal point along the digits rather than computing, so
// it costs one pass whatever the number's length or exponent.
func integerPart(number string) (int64, bool) {
	sign := ""
	if strings.HasPrefix(number, "-") {
		sign, number = "-", number[1:]
	}
	mantissa, exponent, hasExponent := strings.Cut(strings.ToLower(number), "e")
	whole, fraction, _ := strings.Cut(mantissa, ".")
	digits := strings.TrimLeft(whole+fraction, "0")
	if digits == "" {
		return 0, true // zero, whatever its exponent
	}
	point := len(whole) - (len(whole+fraction) - len(digits)) // the point's place in digits
	if hasExponent {
		e, err := strconv.Atoi(exponent) // "+5" and "-5" parse
		if err != nil {
			// Too many digits for an int: a huge exponent. Positive, the number is huge;
			// negative, its integer part is zero.
			return 0, strings.HasPrefix(exponent, "-")
		}
		if e > 1<<30 || e < -1<<30 { // far past what the number's length can make up for
			return 0, e < 0
		}
		point += e
	}
	switch {
	case point <= 0:
		return 0, true
	case point > 19: // at least 10^19 > 2^63
		return 0, false
	case point > len(digits):
		digits += strings.Repeat("0", point-len(digits))
	}
	n, err := strconv.ParseInt(sign+digits[:point], 10, 64)
	return n, err == nil
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
