package sqlite

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/trackapi/trackapi"
)

// How an event's warnings are stored (migration 0005 says why): the events.warnings column is
//   - NULL when the event has none;
//   - TEXT holding a JSON array of trackapi.Problem, as rows written before migration 0005 have
//     it (it starts with '['); read as it is;
//   - a BLOB in the compact form, which starts with compactV1.
//
// The compact form is compactV1 followed by one entry a warning, in order:
//
//	code      1 byte: its number in storedCodes; 0: the code's text follows (a string)
//	flags     1 byte:
//	          bit 0        the path follows; else it is the code's defaultPath
//	          bits 1-2     the message: msgTemplate (the code's template, filled from the row),
//	                       msgText (the message follows, a string), msgAfterPath (it is the path
//	                       without its leading "/", ": " and the string that follows) or
//	                       msgAfterPathAgain (the same, with the previous entry's string)
//	          bits 3-4     cutNone, or how the member the server filled in (see cutSegment) was
//	                       cut out of the stored body: with the comma after it (cutCommaAfter), the
//	                       comma before it (cutCommaBefore) or alone (cutAlone); its offset follows
//	[code]    string, when code is 0
//	[path]    when bit 0 is set: how many of its first bytes are the previous entry's path's
//	          (uvarint), then the rest (a string)
//	[message] string, for msgText and msgAfterPath
//	[offset]  uvarint, when cut: where the cut bytes were, in the body as it was before this
//	          entry's cut and after the cuts of the entries before it
//
// A string is its length (uvarint) and its bytes. "The previous entry's string" is the last one an
// entry stored or repeated for its message. Reading restores the cuts from the last entry to the
// first, so the body read is byte for byte the body given to StoreEvents. The shared path prefix
// and the repeated string make the schema warnings of arrays cheap: ten warnings
// "/user/consent_categories/N" "user/consent_categories/N: doesn't match any schema from "anyOf""
// take 68 bytes for the first and 5 for each next one.
//
// With this form, the worst case measured is 11.6 bytes on disk a byte received (17-byte events
// that get a server id, a timestamp and three warnings; 33.6 to 47.8 before): see
// TestBytesOnDiskPerByteReceived in ingest/disk_test.go.
//
// Nothing here depends on what ingest writes: a message that is not its code's template is
// stored as text, and a member is cut only when its exact bytes are in the body. The templates and
// cuts only make the common warnings small.
const compactV1 = 0x01

// storedCodes numbers the codes the compact form knows. The numbers are on disk: append only.
var storedCodes = [...]string{
	1: "event_id_generated",
	2: "timestamp_generated",
	3: "timestamp_normalized",
	4: "timestamp_moved",
	5: "schema_violation",
	6: "missing_event_name",
	7: "invalid_source",
	8: "event_id_reused",
}

const (
	codeIDGenerated        = 1
	codeTimestampGenerated = 2
	codeTimestampMoved     = 4
)

// Flags of an entry.
const (
	flagPath = 1 << 0

	msgShift          = 1
	msgMask           = 3 << msgShift
	msgTemplate       = 0 << msgShift
	msgText           = 1 << msgShift
	msgAfterPath      = 2 << msgShift
	msgAfterPathAgain = 3 << msgShift

	cutShift       = 3
	cutMask        = 3 << cutShift
	cutNone        = 0 << cutShift
	cutCommaAfter  = 1 << cutShift
	cutCommaBefore = 2 << cutShift
	cutAlone       = 3 << cutShift
)

// defaultPath is the path an entry of code number c has unless it says otherwise.
func defaultPath(c int) string {
	switch c {
	case codeIDGenerated:
		return "/context/event_id"
	case codeTimestampGenerated, 3, codeTimestampMoved:
		return "/context/event_timestamp"
	}
	return ""
}

// The templates of the messages ingest writes for these codes, rebuilt from the row when read.
const (
	idGeneratedPrefix     = "context.event_id was missing or empty; the server assigned " // + the event id
	timestampGeneratedMsg = "context.event_timestamp was missing; the receive time was used"
	timestampMovedMsg     = "event_timestamp was at the event's root; moved into context"
)

// isTemplate tells whether msg is the template of code number c for the event.
func isTemplate(c int, msg, eventID string) bool {
	switch c {
	case codeIDGenerated:
		return strings.HasPrefix(msg, idGeneratedPrefix) && msg[len(idGeneratedPrefix):] == eventID
	case codeTimestampGenerated:
		return msg == timestampGeneratedMsg
	case codeTimestampMoved:
		return msg == timestampMovedMsg
	}
	return false
}

func template(c int, eventID string) (string, bool) {
	switch c {
	case codeIDGenerated:
		return idGeneratedPrefix + eventID, true
	case codeTimestampGenerated:
		return timestampGeneratedMsg, true
	case codeTimestampMoved:
		return timestampMovedMsg, true
	}
	return "", false
}

// cutSegment appends to dst the bytes of the member the server filled in for a warning of code
// number c, which the row holds elsewhere: a generated context.event_id is the row's event_id, a
// generated context.event_timestamp its received_at. ok is false for other codes.
func cutSegment(dst []byte, c int, eventID string, receivedAt int64) (_ []byte, ok bool) {
	switch c {
	case codeIDGenerated:
		dst = append(dst, `"event_id":"`...)
		dst = append(dst, eventID...)
		return append(dst, '"'), true
	case codeTimestampGenerated:
		dst = append(dst, `"event_timestamp":`...)
		return strconv.AppendInt(dst, receivedAt, 10), true
	}
	return dst, false
}

// encoder turns the events of one StoreEvents call into what is stored, appending bodies that
// lost a member and warnings into one buffer rather than allocating each.
type encoder struct {
	buf     []byte // what encode returned so far; never changed, only appended to
	scratch []byte // the warnings being encoded
	seg     []byte // the member being cut
}

// encode returns the body to store and the warnings column's value (nil for NULL) of e. body is
// e.Body itself when nothing was cut; e is not changed.
func (enc *encoder) encode(e trackapi.Event) (body []byte, warnings []byte) {
	body = e.Body
	if len(e.Warnings) == 0 {
		return body, nil
	}
	owned := false // whether body is a copy at the end of buf, which the cuts may change in place
	w := append(enc.scratch[:0], compactV1)
	var cut [len(storedCodes)]bool
	prevPath, prevText := "", ""
	for _, p := range e.Warnings {
		c := codeNumber(p.Code)
		w = append(w, byte(c), 0)
		flagsAt := len(w) - 1
		if c == 0 {
			w = appendString(w, p.Code)
		}
		var flags byte
		if p.Path != defaultPath(c) {
			flags |= flagPath
			shared := sharedPrefix(prevPath, p.Path)
			w = binary.AppendUvarint(w, uint64(shared))
			w = appendString(w, p.Path[shared:])
		}
		prevPath = p.Path
		switch {
		case isTemplate(c, p.Message, e.EventID):
			flags |= msgTemplate
		case afterPath(p.Path, p.Message) && p.Message[len(p.Path)+1:] == prevText:
			flags |= msgAfterPathAgain
		case afterPath(p.Path, p.Message):
			flags |= msgAfterPath
			prevText = p.Message[len(p.Path)+1:]
			w = appendString(w, prevText)
		default:
			flags |= msgText
			prevText = p.Message
			w = appendString(w, prevText)
		}
		var ok bool
		if enc.seg, ok = cutSegment(enc.seg[:0], c, e.EventID, e.ReceivedAt); ok && !cut[c] {
			if at := bytes.LastIndex(body, enc.seg); at >= 0 {
				cut[c] = true
				how, from, to := cutAlone, at, at+len(enc.seg)
				switch {
				case to < len(body) && body[to] == ',':
					how, to = cutCommaAfter, to+1
				case from > 0 && body[from-1] == ',':
					how, from = cutCommaBefore, from-1
				}
				flags |= byte(how)
				w = binary.AppendUvarint(w, uint64(from))
				if owned {
					n := from + copy(body[from:], body[to:])
					enc.buf = enc.buf[:len(enc.buf)-(len(body)-n)]
					body = body[:n]
				} else {
					at := len(enc.buf)
					enc.buf = append(append(enc.buf, body[:from]...), body[to:]...)
					body = enc.buf[at:len(enc.buf):len(enc.buf)]
					owned = true
				}
			}
		}
		w[flagsAt] = flags
	}
	enc.scratch = w
	at := len(enc.buf)
	enc.buf = append(enc.buf, w...)
	return body, enc.buf[at:len(enc.buf):len(enc.buf)]
}

// afterPath tells whether msg is path without its leading "/", ": " and more: how ingest words
// schema warnings.
func afterPath(path, msg string) bool {
	return len(path) > 0 && path[0] == '/' && len(msg) >= len(path)+1 &&
		msg[:len(path)-1] == path[1:] && msg[len(path)-1:len(path)+1] == ": "
}

// sharedPrefix is how many first bytes a and b share.
func sharedPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// codeNumber is code's number in storedCodes, or 0.
func codeNumber(code string) int {
	for i, c := range storedCodes {
		if i > 0 && c == code {
			return i
		}
	}
	return 0
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decode is encode backwards: the body as given to StoreEvents and its warnings, an empty
// non-nil slice when there are none. body may be changed.
func decode(eventID string, receivedAt int64, body, warnings []byte) ([]byte, []trackapi.Problem, error) {
	problems := []trackapi.Problem{}
	switch {
	case len(warnings) == 0:
		return body, problems, nil
	case warnings[0] != compactV1: // JSON, written before migration 0005
		if err := json.Unmarshal(warnings, &problems); err != nil {
			return nil, nil, err
		}
		if problems == nil { // the text "null"
			problems = []trackapi.Problem{}
		}
		return body, problems, nil
	}
	type cutAt struct {
		code, how int
		offset    uint64
	}
	var cuts []cutAt
	r := reader{b: warnings[1:]}
	prevPath, prevText := "", ""
	for !r.done() {
		c := int(r.byte())
		flags := r.byte()
		var p trackapi.Problem
		switch {
		case c == 0:
			p.Code = r.string()
		case c < len(storedCodes):
			p.Code = storedCodes[c]
		default:
			return nil, nil, fmt.Errorf("unknown warning code number %d", c)
		}
		p.Path = defaultPath(c)
		if flags&flagPath != 0 {
			shared := r.uvarint()
			if shared > uint64(len(prevPath)) {
				return nil, nil, fmt.Errorf("a path sharing %d bytes of a %d-byte one", shared, len(prevPath))
			}
			p.Path = prevPath[:shared] + r.string()
		}
		prevPath = p.Path
		switch flags & msgMask {
		case msgTemplate:
			msg, ok := template(c, eventID)
			if !ok {
				return nil, nil, fmt.Errorf("warning code %q has no message template", p.Code)
			}
			p.Message = msg
		case msgText:
			prevText = r.string()
			p.Message = prevText
		case msgAfterPath:
			prevText = r.string()
			p.Message = strings.TrimPrefix(p.Path, "/") + ": " + prevText
		case msgAfterPathAgain:
			p.Message = strings.TrimPrefix(p.Path, "/") + ": " + prevText
		}
		if how := int(flags & cutMask); how != cutNone {
			cuts = append(cuts, cutAt{code: c, how: how, offset: r.uvarint()})
		}
		if r.err != nil {
			return nil, nil, r.err
		}
		problems = append(problems, p)
	}
	for i := len(cuts) - 1; i >= 0; i-- {
		c := cuts[i]
		seg, ok := cutSegment(nil, c.code, eventID, receivedAt)
		if !ok || c.offset > uint64(len(body)) {
			return nil, nil, fmt.Errorf("bad cut of code %d at %d in a body of %d bytes", c.code, c.offset, len(body))
		}
		switch c.how {
		case cutCommaAfter:
			seg = append(seg, ',')
		case cutCommaBefore:
			seg = append([]byte{','}, seg...)
		}
		at := int(c.offset)
		restored := make([]byte, 0, len(body)+len(seg))
		restored = append(append(append(restored, body[:at]...), seg...), body[at:]...)
		body = restored
	}
	return body, problems, nil
}

// reader reads the compact form; the first error sticks.
type reader struct {
	b   []byte
	err error
}

var errTruncated = errors.New("truncated compact warnings")

func (r *reader) done() bool { return r.err != nil || len(r.b) == 0 }

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.err = errTruncated
		return 0
	}
	b := r.b[0]
	r.b = r.b[1:]
	return b
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errTruncated
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errTruncated
		r.b = nil
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
