package server

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
)

// The pixel (GET /events): one event in the query string, in the vendor's bracket form, built
// here into the JSON a POST would have carried and then collected as one. openapi.yaml's
// collectPixel describes the rules; in short:
//
//   - every parameter but tc_s and token is a property; names and values are URL-decoded and
//     values stay strings (no guessing: "007" is an id, not 7);
//   - name[key] is a property of an object, name[] appends to an array, name[n] is the element
//     of index n of an array (elements ordered by index, no gaps);
//   - a name given again adds the property again (a repeated key in the JSON, which the event
//     rules treat as in a POSTed body: the last one counts); a path going through a name uses its
//     last property when it is of the kind the path needs (an object for [key], an array for []
//     and [n]), else adds one; at an array index, a later value replaces an earlier one.
//
// Hostile queries are bounded before anything grows with them: the query's size, the number of
// parameters, the bracket levels of one name and the array indices (an index is a key into a
// sorted list of the indices given, so items[999] costs one element, not a thousand; indices
// over trackapi.PixelMaxIndex are refused all the same, as no honest pixel sends them). The JSON
// written stops at the single event's limit.

// pixelKind is what a node of the event being built holds.
type pixelKind uint8

const (
	pixelString pixelKind = iota
	pixelObject
	pixelArray
)

// pixelNode is a value of the event being built: a string, or an object's members in order of
// first appearance (repeats kept), or an array's elements sorted by index.
type pixelNode struct {
	kind     pixelKind
	value    string
	children []pixelChild
}

type pixelChild struct {
	key   string // of a member
	index int    // of an element
	node  *pixelNode
}

// pixelStep is one bracket of a name: a key, an index, or [] (appendIndex).
type pixelStep struct {
	key   string
	index int // -1: a key; appendIndex: []
}

const appendIndex = -2

// pixelEvent builds the event of a pixel's raw query (URL.RawQuery), or refuses the query: over
// its size or the built event over the single event's limit (payload_too_large), or unreadable or
// over a bound (invalid_payload).
func pixelEvent(rawQuery string) ([]byte, *ingest.Refusal) {
	if len(rawQuery) > trackapi.PixelQueryLimit {
		return nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "the query string is %d bytes, over the %d-byte limit", len(rawQuery), trackapi.PixelQueryLimit)
	}
	root := &pixelNode{kind: pixelObject}
	var steps []pixelStep // one name's brackets, reused
	n := 0
	for rest := rawQuery; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" {
			continue
		}
		n++
		if n > trackapi.PixelMaxParameters {
			return nil, ingest.Refuse(gen.ErrorCodeInvalidPayload, "the query has more than %d parameters", trackapi.PixelMaxParameters)
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil || !utf8.ValidString(name) {
			return nil, ingest.Refuse(gen.ErrorCodeInvalidPayload, "the name of parameter %d is not URL-encoded UTF-8 text", n)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil || !utf8.ValidString(value) {
			return nil, ingest.Refuse(gen.ErrorCodeInvalidPayload, "the value of parameter %d (%.40q) is not URL-encoded UTF-8 text", n, name)
		}
		if name == "tc_s" || name == "token" {
			continue // the request's, not the event's
		}
		var base string
		var refusal *ingest.Refusal
		base, steps, refusal = pixelName(name, steps[:0])
		if refusal != nil {
			return nil, refusal
		}
		root.put(pixelStep{key: base, index: -1}, steps, value)
	}
	// Room for what the query usually builds (names quoted, brackets made braces), and never
	// more than the limit needs: writing stops just past it.
	out, ok := root.appendJSON(make([]byte, 0, min(2*len(rawQuery)+16, trackapi.SingleBodyLimit+8)), trackapi.SingleBodyLimit)
	if !ok {
		return nil, ingest.Refuse(gen.ErrorCodePayloadTooLarge, "the event built from the query is larger than %d bytes", trackapi.SingleBodyLimit)
	}
	return out, nil
}

// pixelClaim is the most building the event of rawQuery may allocate (TestPixelEventCost holds
// it to that): a node and its place in its parent for each parameter and each bracket (counted
// on the raw query, where a bracket may be encoded, and never more than the bounds allow), and,
// for the decoded text and the JSON written, a few times the query. At most about 1.7 MB.
func pixelClaim(rawQuery string) int64 {
	nodes := 1 + strings.Count(rawQuery, "&") + strings.Count(rawQuery, "[") +
		strings.Count(rawQuery, "%5B") + strings.Count(rawQuery, "%5b")
	nodes = min(nodes, 1+trackapi.PixelMaxParameters*(1+trackapi.PixelMaxNameDepth))
	return int64(128*nodes + 8*min(len(rawQuery), trackapi.PixelQueryLimit) + 1024)
}

// pixelName splits a parameter's name into its base and its brackets, appended to steps.
func pixelName(name string, steps []pixelStep) (string, []pixelStep, *ingest.Refusal) {
	bad := func(why string) (string, []pixelStep, *ingest.Refusal) {
		return "", nil, ingest.Refuse(gen.ErrorCodeInvalidPayload, "parameter %.60q: %s", name, why)
	}
	open := strings.IndexByte(name, '[')
	if open < 0 {
		open = len(name)
	}
	base, rest := name[:open], name[open:]
	if base == "" {
		return bad("a parameter needs a name before its brackets")
	}
	if strings.IndexByte(base, ']') >= 0 {
		return bad("its brackets do not pair up")
	}
	for rest != "" {
		end := strings.IndexByte(rest, ']')
		if rest[0] != '[' || end < 0 {
			return bad("its brackets do not pair up")
		}
		inner := rest[1:end]
		rest = rest[end+1:]
		if strings.IndexByte(inner, '[') >= 0 {
			return bad("its brackets do not pair up")
		}
		if len(steps) == trackapi.PixelMaxNameDepth {
			return bad("more than " + strconv.Itoa(trackapi.PixelMaxNameDepth) + " bracket levels")
		}
		step, ok := pixelStepOf(inner)
		if !ok {
			return bad("an array index over " + strconv.Itoa(trackapi.PixelMaxIndex))
		}
		steps = append(steps, step)
	}
	return base, steps, nil
}

// pixelStepOf reads what is between two brackets: nothing ([]), digits (an index, at most
// PixelMaxIndex: false over it), or a key.
func pixelStepOf(inner string) (pixelStep, bool) {
	if inner == "" {
		return pixelStep{index: appendIndex}, true
	}
	index := 0
	for i := 0; i < len(inner); i++ {
		d := inner[i]
		if d < '0' || d > '9' {
			return pixelStep{key: inner, index: -1}, true
		}
		index = index*10 + int(d-'0')
		if index > trackapi.PixelMaxIndex {
			// Digits all the way? Then an index too large; else a key that starts with digits.
			for _, d := range []byte(inner[i+1:]) {
				if d < '0' || d > '9' {
					return pixelStep{key: inner, index: -1}, true
				}
			}
			return pixelStep{}, false
		}
	}
	return pixelStep{index: index}, true
}

// kindFor is the kind of container a step goes into.
func (s pixelStep) kindFor() pixelKind {
	if s.index == -1 {
		return pixelObject
	}
	return pixelArray
}

// put places value at step, then steps, under n, whose kind is step.kindFor().
func (n *pixelNode) put(step pixelStep, steps []pixelStep, value string) {
	var child *pixelNode
	if len(steps) == 0 {
		child = &pixelNode{kind: pixelString, value: value}
	} else {
		child = &pixelNode{kind: steps[0].kindFor()}
	}
	if n.kind == pixelObject {
		last := -1 // the last member of that name, which a path goes through
		if len(steps) > 0 {
			for i := len(n.children) - 1; i >= 0; i-- {
				if n.children[i].key == step.key {
					last = i
					break
				}
			}
		}
		if last >= 0 && n.children[last].node.kind == child.kind {
			child = n.children[last].node
		} else {
			n.children = append(n.children, pixelChild{key: step.key, node: child})
		}
	} else {
		index := step.index
		if index == appendIndex {
			index = 0
			if len(n.children) > 0 {
				index = n.children[len(n.children)-1].index + 1
			}
		}
		i, found := slices.BinarySearchFunc(n.children, index, func(e pixelChild, index int) int { return e.index - index })
		switch {
		case !found:
			n.children = slices.Insert(n.children, i, pixelChild{index: index, node: child})
		case len(steps) > 0 && n.children[i].node.kind == child.kind:
			child = n.children[i].node
		default:
			n.children[i].node = child // a later value replaces the earlier
		}
	}
	if len(steps) > 0 {
		child.put(steps[0], steps[1:], value)
	}
}

// appendJSON appends n as JSON to b, and reports false as soon as b would pass limit bytes.
func (n *pixelNode) appendJSON(b []byte, limit int) ([]byte, bool) {
	switch n.kind {
	case pixelString:
		b = appendJSONString(b, n.value, limit)
	case pixelObject, pixelArray:
		open, end := byte('{'), byte('}')
		if n.kind == pixelArray {
			open, end = '[', ']'
		}
		b = append(b, open)
		for i, child := range n.children {
			if i > 0 {
				b = append(b, ',')
			}
			if n.kind == pixelObject {
				b = appendJSONString(b, child.key, limit)
				b = append(b, ':')
			}
			var ok bool
			if b, ok = child.node.appendJSON(b, limit); !ok {
				return b, false
			}
		}
		b = append(b, end)
	}
	return b, len(b) <= limit
}

// appendJSONString appends s, valid UTF-8, as a JSON string: quotes, backslashes and control
// characters escaped, the rest as is (encoding/json would also escape <, > and &, which the
// stored event would then show escaped). It stops once b is past limit.
func appendJSONString(b []byte, s string, limit int) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if len(b) > limit {
			return b
		}
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// transparentGIF is the pixel's answer: a 1×1 GIF whose one pixel is transparent (43 bytes).
var transparentGIF = []byte{
	'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, // header, 1×1, a 2-colour table
	0, 0, 0, 0xff, 0xff, 0xff, // the colour table
	0x21, 0xf9, 4, 1, 0, 0, 0, 0, // graphic control: colour 0 is transparent
	0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, // image descriptor
	2, 2, 0x44, 1, 0, // the image: one pixel of colour 0
	0x3b, // trailer
}

// acceptsJSON reports whether an Accept header names application/json with a q above 0 (*/*
// does not count: a browser loading an image sends it too).
func acceptsJSON(accept []string) bool {
	for _, line := range accept {
		for item := range strings.SplitSeq(line, ",") {
			mediaType, params, _ := strings.Cut(item, ";")
			if !strings.EqualFold(strings.TrimSpace(mediaType), "application/json") {
				continue
			}
			acceptable := true
			for p := range strings.SplitSeq(params, ";") {
				k, v, _ := strings.Cut(p, "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") {
					q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
					acceptable = err == nil && q > 0
				}
			}
			if acceptable {
				return true
			}
		}
	}
	return false
}
