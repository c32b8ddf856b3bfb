package ingest

import (
	"bytes"
	"encoding/json"
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
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	i = skipSpace(data, i+1)
	for i < len(data) && data[i] != '}' {
		keyEnd := skipValue(data, i)
		rawKey := data[i:keyEnd]
		i = skipSpace(data, keyEnd)
		i = skipSpace(data, i+1) // the colon
		valueEnd := skipValue(data, i)
		members = append(members, member{rawKey: rawKey, key: decodeKey(rawKey), value: data[i:valueEnd]})
		i = skipSpace(data, valueEnd)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return members, true
}

// arrayElements returns the elements of the valid JSON array data as sent, or ok false when data
// is not an array.
func arrayElements(data []byte) (elements []json.RawMessage, ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, false
	}
	i = skipSpace(data, i+1)
	for i < len(data) && data[i] != ']' {
		end := skipValue(data, i)
		elements = append(elements, data[i:end])
		i = skipSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
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

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index just after the JSON value starting at data[i].
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // a number, true, false or null
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just after the JSON string starting at data[i] (its opening quote).
func skipString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++ // the escaped character; \uXXXX's digits need no care
		case '"':
			return i + 1
		}
	}
	return i
}
