package main_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/trackapi/trackapi/internal/apitest"
)

// Each pixel form and each alias against the real binary: the event `trackapi events export`
// reads back is exactly the one sent.
func TestPixelAndAliasesEndToEnd(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	key := firstKey(t, p)
	creds := "?tc_s=1&token=" + key
	const ctx = `"context":{"event_id":"%s","event_timestamp":1718003600000}`
	tests := []struct {
		id, method, path, query, body, want string
	}{
		{"e2e-pixel", http.MethodGet, "/events",
			"&event_name=page_view&page_type=home&user[consistent_anonymous_id]=a1&user[consent_categories][]=1&user[consent_categories][]=3" +
				"&context[event_id]=e2e-pixel&context[event_timestamp]=1718003600000", "",
			`{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"a1","consent_categories":["1","3"]},` + ctx + `}`},
		{"e2e-pixel-items", http.MethodGet, "/cdp/events/",
			"&event_name=purchase&items[0][id]=S1&items[0][product][id]=P1&items[1][id]=S2&items[1][product][colors][]=red" +
				"&context%5Bevent_id%5D=e2e-pixel-items&context%5Bevent_timestamp%5D=1718003600000", "",
			`{"event_name":"purchase","items":[{"id":"S1","product":{"id":"P1"}},{"id":"S2","product":{"colors":["red"]}}],` + ctx + `}`},
		{"e2e-cdp", http.MethodPost, "/cdp/events", "",
			`{"event_name":"search","search_term":"t-shirts","context":{"event_id":"e2e-cdp","event_timestamp":1718003600000}}`,
			`{"event_name":"search","search_term":"t-shirts",` + ctx + `}`},
		{"e2e-cdp-batch", http.MethodPost, "/cdp/events/batch", "",
			`{"batch":[{"event_name":"login","context":{"event_id":"e2e-cdp-batch"},"event_timestamp":1718003600000}]}`,
			`{"event_name":"login","context":{"event_id":"e2e-cdp-batch","event_timestamp":1718003600000}}`},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, p.URL+tt.path+creds+tt.query, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := apitest.Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: status %d", tt.method, tt.path, resp.StatusCode)
		}
	}
	_, events := export(t, data)
	stored := map[string]string{}
	for _, ev := range events {
		stored[apitest.EventID(t, ev.Event)] = string(ev.Event)
	}
	for _, tt := range tests {
		want := strings.Replace(tt.want, "%s", tt.id, 1)
		if got := stored[tt.id]; got != want {
			t.Errorf("%s %s stored\n %s\nwant\n %s", tt.method, tt.path, got, want)
		}
	}
}
