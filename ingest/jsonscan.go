package ingest

import (
	"bytes"
	"encoding/json"

	"github.com/trackapi/trackapi/internal/jsonscan"
)

// This file walks the top level of JSON documents that json.Valid has already accepted, without
// decoding or copying them: a batch's elements and an event's root properties are sub-slices of
// the request body. encoding/json would validate each level again and copy every value, which
// made each byte of a batch be scanned about seven times (see the README's Performance section).
// Only valid input is ever passed here; on anything else the walkers stop early rather than fail.

// member is one property of a JSON object, as sent.
type member struct {
	rawKey []byte // the key with its quotes and escapes, as sent
	key    string // the key decoded
	value  []byte // the value's bytes, without surrounding space
}

// objectMembers returns the members of the valid JSON object data, in the order sent (duplicate
// keys included), or ok false when data is not an object.
func objectMembers(data []byte) (members []member, ok bool) {
	return appendMembers(nil, data)
}

// appendMembers is objectMembers appending to members, so that a caller can walk an object into a
// buffer on its stack rather than allocate.
func appendMembers(members []member, data []byte) (_ []member, ok bool) {
	i := jsonscan.SkipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return members, false
	}
	i = jsonscan.SkipSpace(data, i+1)
	for i < len(data) && data[i] != '}' {
		keyEnd := jsonscan.SkipValue(data, i)
		rawKey := data[i:keyEnd]
		i = jsonscan.SkipSpace(data, keyEnd)
		i = jsonscan.SkipSpace(data, i+1) // the colon
		valueEnd := jsonscan.SkipValue(data, i)
		members = append(members, member{rawKey: rawKey, key: decodeKey(rawKey), value: data[i:valueEnd]})
		i = jsonscan.SkipSpace(data, valueEnd)
		if i < len(data) && data[i] == ',' {
			i = jsonscan.SkipSpace(data, i+1)
		}
	}
	return members, true
}

// arrayElements returns the elements of the valid JSON array data as sent, or ok false when data
// is not an array.
func arrayElements(data []byte) (elements []json.RawMessage, ok bool) {
	i := jsonscan.SkipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, false
	}
	i = jsonscan.SkipSpace(data, i+1)
	for i < len(data) && data[i] != ']' {
		end := jsonscan.SkipValue(data, i)
		elements = append(elements, data[i:end])
		i = jsonscan.SkipSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = jsonscan.SkipSpace(data, i+1)
		}
	}
	return elements, true
}

// lastMember returns the value of the last member named key (encoding/json's rule for repeated
// keys), or nil.
func lastMember(members []member, key string) []byte {
	for i := len(members) - 1; i >= 0; i-- {
		if members[i].key == key {
			return members[i].value
		}
	}
	return nil
}

// decodeKey turns a raw JSON string into a Go string; most keys have no escape and need no decoder.
func decodeKey(raw []byte) string {
	if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	_ = json.Unmarshal(raw, &s) // valid input: a JSON string
	return s
}

// deeperThan tells whether the valid JSON value data nests more than limit levels of objects and
// arrays (a scalar is 0 levels, [] is 1). It stops at the first level over the limit, so its cost
// is at most one pass over data and nothing for a value too short to nest that deep.
func deeperThan(data []byte, limit int) bool {
	if len(data) <= 2*limit { // every level takes two bytes
		return false
	}
	depth := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '"':
			i = jsonscan.SkipString(data, i) - 1
		case '{', '[':
			if depth++; depth > limit {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// hasLoneSurrogate tells whether the raw JSON string s holds a \uXXXX escape of a UTF-16 surrogate
// that is not part of a pair. encoding/json decodes each such escape to U+FFFD, so strings that
// differ only there decode the same. A raw surrogate cannot occur: the body is valid UTF-8.
func hasLoneSurrogate(s []byte) bool {
	if bytes.IndexByte(s, '\\') < 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(s) || s[i] != 'u' {
			continue
		}
		r := hex4(s, i+1)
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF: // a low surrogate with no high one before it
			return true
		case r >= 0xD800 && r <= 0xDBFF: // a high surrogate: a low one must follow
			if i+2 >= len(s) || s[i+1] != '\\' || s[i+2] != 'u' {
				return true
			}
			if low := hex4(s, i+3); low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 6
		}
	}
	return false
}

// hex4 decodes the four hexadecimal digits at s[i:], or returns -1 when they are not there.
func hex4(s []byte, i int) rune {
	if i+4 > len(s) {
		return -1
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}
