package inspector

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMaskIP(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.77", "192.0.2.0"},
		{" 203.0.113.255 ", "203.0.113.0"},
		{"10.1.2.3:8080", "10.1.2.0"},
		{"0.0.0.0", "0.0.0.0"},
		// IPv6: the first 48 bits stay, the last 80 are zeroed.
		{"2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"},
		{"2001:db8:1234:ffff::1", "2001:db8:1234::"},
		{"2001:db8:12ff::", "2001:db8:12ff::"},
		{"[2001:db8:1:2::3]:443", "2001:db8:1::"},
		{"[2001:db8:1:2::3]", "2001:db8:1::"},
		{"fe80::1%eth0", "fe80::"},
		{"::1", "::"},
		// IPv4-mapped IPv6 is IPv4.
		{"::ffff:192.0.2.77", "192.0.2.0"},
		// Not an address: nothing is shown.
		{"", ""},
		{"unknown", ""},
		{"192.0.2", ""},
		{"192.0.2.77, 10.0.0.1", ""},
		{"1.2.3.4.5", ""},
	} {
		if got := MaskIP(tc.in); got != tc.want {
			t.Errorf("MaskIP(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMaskDeviceIP(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ipv4", `{"event_name":"e","context":{"device":{"ip":"102.3.4.56","lang":"fr"}}}`,
			`{"event_name":"e","context":{"device":{"ip":"102.3.4.0","lang":"fr"}}}`},
		{"ipv6 with spaces", `{ "context" : { "device" : { "ip" : "2001:db8:aa:bb::1" } } }`,
			`{ "context" : { "device" : { "ip" : "2001:db8:aa::" } } }`},
		{"escaped key and value", `{"context":{"dev\u0069ce":{"\u0069p":"1.2.3.\u0034"}}}`,
			`{"context":{"dev\u0069ce":{"\u0069p":"1.2.3.0"}}}`},
		{"every repeat", `{"context":{"device":{"ip":"1.1.1.1","ip":"2.2.2.2"},"device":{"ip":"3.3.3.3"}}}`,
			`{"context":{"device":{"ip":"1.1.1.0","ip":"2.2.2.0"},"device":{"ip":"3.3.3.0"}}}`},
		{"not an address", `{"context":{"device":{"ip":"localhost"}}}`, `{"context":{"device":{"ip":""}}}`},
		{"not a string", `{"context":{"device":{"ip":{"v4":"1.2.3.4"}}}}`, `{"context":{"device":{"ip":""}}}`},
		{"number", `{"context":{"device":{"ip":16909060}}}`, `{"context":{"device":{"ip":""}}}`},
		{"elsewhere is left", `{"ip":"1.2.3.4","device":{"ip":"1.2.3.4"},"context":{"ip":"1.2.3.4","page":{"ip":"1.2.3.4"}}}`,
			`{"ip":"1.2.3.4","device":{"ip":"1.2.3.4"},"context":{"ip":"1.2.3.4","page":{"ip":"1.2.3.4"}}}`},
		{"strings holding braces", `{"a":"}{\"","context":{"x":"{","device":{"y":"]","ip":"5.6.7.8"}}}`,
			`{"a":"}{\"","context":{"x":"{","device":{"y":"]","ip":"5.6.7.0"}}}`},
		{"context not an object", `{"context":["device",{"ip":"1.2.3.4"}]}`, `{"context":["device",{"ip":"1.2.3.4"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := maskDeviceIP([]byte(tc.in))
			if string(got) != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

// TestPrepareBody: what an entry keeps is always valid JSON, with the addresses masked, however
// the body was cut.
func TestPrepareBody(t *testing.T) {
	whole := `{"event_name":"e","context":{"device":{"ip":"198.51.100.23"}}}`
	if got := string(prepareBody([]byte(whole), false, false)); got != `{"event_name":"e","context":{"device":{"ip":"198.51.100.0"}}}` {
		t.Errorf("whole body: %s", got)
	}
	// Cut anywhere, also in the middle of the address: never more of it than masked shows.
	var text string
	for n := len(whole) - 25; n < len(whole); n++ {
		got := prepareBody([]byte(whole[:n]), true, false)
		if err := json.Unmarshal(got, &text); err != nil {
			t.Fatalf("body cut at %d: %s is not a JSON string: %v", n, got, err)
		}
		if strings.Contains(text, "100.2") {
			t.Errorf("body cut at %d: %q", n, text)
		}
		if n >= len(whole)-3 && !strings.Contains(text, `"ip":"198.51.100.0"`) {
			t.Errorf("body cut at %d after the address: %q", n, text)
		}
	}
	// A refused body with invalid UTF-8 and addresses anywhere.
	refused := []byte("{\"batch\":[{\"ip\":\"203.0.113.9:80\",\"v6\":\"[2001:db8:5:6::7]\"}\xff\xfe, at 2026-03-10T12:30:45 v1.2")
	got := prepareBody(refused, false, true)
	if err := json.Unmarshal(got, &text); err != nil {
		t.Fatalf("refused body %s is not a JSON string: %v", got, err)
	}
	for _, gone := range []string{"203.0.113.9", "2001:db8:5:6"} {
		if strings.Contains(text, gone) {
			t.Errorf("refused body keeps %q: %q", gone, text)
		}
	}
	for _, kept := range []string{`"203.0.113.0"`, "2001:db8:5::", "\uFFFD", "12:30:45", "v1.2"} {
		if !strings.Contains(text, kept) {
			t.Errorf("refused body lacks %q: %q", kept, text)
		}
	}
	// A body that claims to be whole but is not JSON is kept as text.
	if got := prepareBody([]byte(`{"a":`), false, false); string(got) != `"{\"a\":"` {
		t.Errorf("broken body: %s", got)
	}
	// A refused body is text, also when it is JSON.
	if got := prepareBody([]byte(`{"a":1}`), false, true); string(got) != `"{\"a\":1}"` {
		t.Errorf("refused JSON body: %s", got)
	}
}

func TestCutUTF8(t *testing.T) {
	s := "aé€😀"
	for n := 0; n <= len(s)+1; n++ {
		got := cutUTF8([]byte(s), n)
		if len(got) > n || !strings.HasPrefix(s, string(got)) || !json.Valid(appendJSONString(nil, string(got))) {
			t.Errorf("cutUTF8(%q, %d) = %q", s, n, got)
		}
		if cutString(s, n) != string(got) {
			t.Errorf("cutString(%q, %d) = %q, cutUTF8 %q", s, n, cutString(s, n), got)
		}
	}
}
