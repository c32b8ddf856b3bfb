// Package jsonscan walks valid JSON on its bytes, without decoding it: the event rules (ingest/)
// find an event's members with it, and the inspector (inspector/) finds the addresses it masks.
// Every function expects valid JSON (checked before, with json.Valid): on other input they return
// an index, never panic, but the index means nothing.
package jsonscan

// SkipSpace returns the index of the first byte at or after i that is not JSON white space.
func SkipSpace(data []byte, i int) int {
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

// SkipValue returns the index just after the JSON value starting at data[i].
func SkipValue(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	switch data[i] {
	case '"':
		return SkipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = SkipString(data, i)
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

// SkipString returns the index just after the JSON string starting at data[i] (its opening quote).
func SkipString(data []byte, i int) int {
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
