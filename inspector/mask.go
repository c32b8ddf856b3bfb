package inspector

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/trackapi/trackapi/internal/jsonscan"
)

// MaskIP returns addr with its host part zeroed, so that the inspector shows where a request came
// from (a network, a provider) without telling one device from its neighbours:
//   - IPv4: the last octet, a.b.c.0;
//   - IPv6: the last 80 bits, keeping the first 48 (the prefix a site is usually given), so
//     2001:db8:1234:5678::1 becomes 2001:db8:1234::. An IPv4-mapped IPv6 address is masked, and
//     shown, as IPv4.
//
// A zone is dropped, and so are brackets and a port ("192.0.2.7:443", "[2001:db8::1]:443"). Anything that is not
// an address gives "": what cannot be read cannot be masked, and might still hold an address.
func MaskIP(addr string) string {
	addr = strings.TrimSpace(addr)
	if len(addr) > 2 && addr[0] == '[' && addr[len(addr)-1] == ']' {
		addr = addr[1 : len(addr)-1] // [2001:db8::1], as in a URL
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		host, _, splitErr := net.SplitHostPort(addr)
		if splitErr != nil {
			return ""
		}
		if ip, err = netip.ParseAddr(host); err != nil {
			return ""
		}
	}
	ip = ip.Unmap().WithZone("")
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	prefix, err := ip.Prefix(bits)
	if err != nil {
		return ""
	}
	return prefix.Addr().String()
}

// deviceIPPath is where an event carries the address of the device that sent it.
var deviceIPPath = []string{"context", "device", "ip"}

// maskDeviceIP returns the valid JSON event body with every value at context.device.ip masked by
// MaskIP: a string is replaced by its masked form (or "" when it is no address), any other value
// by "" (it is no address, and might hold one). Repeated keys are all masked, whichever one a
// reader would take. body is not changed; it is returned as it is when it has no such value.
func maskDeviceIP(body []byte) []byte {
	var spans [][2]int
	findPath(body, 0, deviceIPPath, &spans)
	if len(spans) == 0 {
		return body
	}
	out := make([]byte, 0, len(body)+8)
	last := 0
	for _, sp := range spans {
		out = append(out, body[last:sp[0]]...)
		masked := ""
		var s string
		if body[sp[0]] == '"' && json.Unmarshal(body[sp[0]:sp[1]], &s) == nil {
			masked = MaskIP(s)
		}
		out = appendJSONString(out, masked)
		last = sp[1]
	}
	return append(out, body[last:]...)
}

// findPath appends to spans the bounds of every value at path in the valid JSON value that
// starts at data[i] (the members of an object named path[0], in them path[1], and so on), in the
// order of the bytes.
func findPath(data []byte, i int, path []string, spans *[][2]int) {
	i = jsonscan.SkipSpace(data, i)
	if i >= len(data) || data[i] != '{' {
		return
	}
	i = jsonscan.SkipSpace(data, i+1)
	for i < len(data) && data[i] != '}' {
		keyEnd := jsonscan.SkipValue(data, i)
		key := data[i:keyEnd]
		i = jsonscan.SkipSpace(data, keyEnd)
		i = jsonscan.SkipSpace(data, i+1) // the colon
		valueEnd := jsonscan.SkipValue(data, i)
		if keyIs(key, path[0]) {
			if len(path) == 1 {
				*spans = append(*spans, [2]int{i, valueEnd})
			} else {
				findPath(data[:valueEnd], i, path[1:], spans)
			}
		}
		i = jsonscan.SkipSpace(data, valueEnd)
		if i < len(data) && data[i] == ',' {
			i = jsonscan.SkipSpace(data, i+1)
		}
	}
}

// keyIs tells whether the raw JSON string key decodes to name.
func keyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return len(key) == len(name)+2 && string(key[1:len(key)-1]) == name
	}
	var s string
	return json.Unmarshal(key, &s) == nil && s == name
}

// maskText masks, with MaskIP, every word of s that reads as an IP address (with a port or not):
// for text that is not JSON, or JSON cut short (a refused request's body, an event's cut body),
// where context.device.ip cannot be found by its path. A word is a run of the characters
// addresses are written with (hexadecimal digits, '.', ':', '[' and ']').
func maskText(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if !addressChar(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && addressChar(s[j]) {
			j++
		}
		word := s[i:j]
		if len(word) >= 3 && strings.ContainsAny(word, ".:") {
			if masked := MaskIP(word); masked != "" {
				b.WriteString(s[last:i])
				b.WriteString(masked)
				last = j
			}
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func addressChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':' || c == '[' || c == ']'
}

// cutUTF8 returns the first n bytes of b at most, backing off to the start of a character so
// that valid UTF-8 stays valid.
func cutUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// cutString is cutUTF8 for a string.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// textBody is how a body that cannot be kept as JSON is kept: as a JSON string of its text, with
// invalid UTF-8 replaced by U+FFFD and the addresses in it masked.
func textBody(b []byte) []byte {
	return appendJSONString(nil, maskText(strings.ToValidUTF8(string(b), "\uFFFD")))
}

// appendJSONString appends s as a JSON string, without escaping HTML characters (the body is read
// by people, not put in a page).
func appendJSONString(dst []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(dst, bytes.TrimRight(buf.Bytes(), "\n")...)
}
