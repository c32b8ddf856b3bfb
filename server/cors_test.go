package server_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/server"
)

// preflight sends the OPTIONS request a browser sends before a cross-origin POST with a JSON
// body and a Bearer key.
func (e *env) preflight(path, origin string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodOptions, e.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", http.MethodPost)
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	return e.do(req)
}

// headerList splits a comma-separated header (all its lines) into lower-cased items.
func headerList(h http.Header, name string) []string {
	var out []string
	for _, line := range h.Values(name) {
		for item := range strings.SplitSeq(line, ",") {
			if item = strings.ToLower(strings.TrimSpace(item)); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// checkAllowed asserts the headers that let a page of origin read an answer sent with
// credentials: the origin itself (never *), credentials allowed, and Vary: Origin for caches.
func checkAllowed(t *testing.T, h http.Header, origin string) {
	t.Helper()
	if got := h.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != origin {
		t.Errorf("Access-Control-Allow-Origin %q, want %q alone", got, origin)
	}
	if got := h.Get("Access-Control-Allow-Credentials"); got != "true" {
		t.Errorf("Access-Control-Allow-Credentials %q, want true", got)
	}
	if !slices.Contains(headerList(h, "Vary"), "origin") {
		t.Errorf("Vary %q lacks Origin", h.Values("Vary"))
	}
}

// A browser's preflight before a cross-origin POST (JSON body, Bearer key, gzip) is answered with
// the page's origin reflected, credentials, the methods and headers a tracker uses, and a long
// max-age, on every collect path.
func TestCORSPreflight(t *testing.T) {
	e := newEnv(t)
	const origin = "https://shop.example"
	for _, path := range []string{"/events", "/events/", "/events/batch", "/cdp/events", "/cdp/events/batch"} {
		t.Run(path, func(t *testing.T) {
			r := e.preflight(path, origin)
			if r.Status != http.StatusNoContent {
				t.Fatalf("status %d, want 204; body %s", r.Status, r.Body)
			}
			checkAllowed(t, r.Header, origin)
			methods := headerList(r.Header, "Access-Control-Allow-Methods")
			for _, m := range []string{"post", "get", "options"} {
				if !slices.Contains(methods, m) {
					t.Errorf("Access-Control-Allow-Methods %q lacks %s", methods, m)
				}
			}
			headers := headerList(r.Header, "Access-Control-Allow-Headers")
			for _, h := range []string{"content-type", "authorization", "content-encoding"} {
				if !slices.Contains(headers, h) {
					t.Errorf("Access-Control-Allow-Headers %q lacks %s", headers, h)
				}
			}
			if got := r.Header.Get("Access-Control-Max-Age"); got != "86400" {
				t.Errorf("Access-Control-Max-Age %q, want 86400", got)
			}
		})
	}
}

// The answers themselves carry the origin and credentials, a 400 too (a tracker reads why it was
// refused), and expose no header but Retry-After.
func TestCORSAnswers(t *testing.T) {
	e := newEnv(t)
	const origin = "http://127.0.0.1:9"
	ok := e.post(e.url("/events"), mustJSON(t, validEvent("cors-1")), "Origin", origin)
	checkCounts(t, ok, 1, 1, 0, 0)
	checkAllowed(t, ok.Header, origin)
	if got := headerList(ok.Header, "Access-Control-Expose-Headers"); len(got) > 1 || (len(got) == 1 && got[0] != "retry-after") {
		t.Errorf("Access-Control-Expose-Headers %q: only Retry-After may be exposed", got)
	}
	bad := e.post(e.url("/events/batch"), []byte(`{"batch":`), "Origin", origin)
	if bad.Status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", bad.Status)
	}
	checkAllowed(t, bad.Header, origin)
	// Without an Origin (not a browser), no CORS header but Vary.
	plain := e.post(e.url("/events"), mustJSON(t, validEvent("cors-2")))
	if got := plain.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("Access-Control-Allow-Origin %q on a request without Origin", got)
	}
}

// With an allow-list, listed origins are reflected and others get no CORS header at all, on the
// preflight and on the answer (which is still processed: the browser, not the server, withholds
// it from the page).
func TestCORSAllowList(t *testing.T) {
	e := newEnvWith(t, testenv.Options{CORSOrigins: []string{"https://a.example", "HTTPS://B.example:443/"}})
	for _, origin := range []string{"https://a.example", "https://b.example"} {
		r := e.preflight("/events", origin)
		if r.Status != http.StatusNoContent {
			t.Fatalf("%s: status %d", origin, r.Status)
		}
		checkAllowed(t, r.Header, origin)
	}
	for _, origin := range []string{"https://c.example", "https://a.example.evil", "http://a.example", "null"} {
		r := e.preflight("/events", origin)
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("preflight from %s: Access-Control-Allow-Origin %q", origin, got)
		}
		if got := r.Header.Get("Access-Control-Allow-Credentials"); got != "" {
			t.Errorf("preflight from %s: Access-Control-Allow-Credentials %q", origin, got)
		}
	}
	r := e.post(e.url("/events"), mustJSON(t, validEvent("list-1")), "Origin", "https://c.example")
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("answer to https://c.example: Access-Control-Allow-Origin %q", got)
	}
}

// The origins of an allow-list must be origins: scheme and host (and port), nothing else.
func TestCORSOriginsChecked(t *testing.T) {
	for _, bad := range []string{"a.example", "https://a.example/path", "https://", "ftp://a.example", "*", "https://a.example?x=1", "https://user@a.example"} {
		if _, err := server.ParseCORSOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted as an origin", bad)
		}
	}
	got, err := server.ParseCORSOrigins([]string{" https://A.example ", "http://localhost:8080", "https://b.example:443", "http://c.example:80/"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://a.example", "http://localhost:8080", "https://b.example", "http://c.example"}
	if !slices.Equal(got, want) {
		t.Errorf("ParseCORSOrigins = %q, want %q", got, want)
	}
}

// Browsers' sendBeacon and "simple" cross-origin requests (which need no preflight) send the JSON
// as text/plain: the collect endpoints take it as JSON.
func TestTextPlainBody(t *testing.T) {
	e := newEnv(t)
	for i, ct := range []string{"text/plain;charset=UTF-8", "text/plain", "application/x-www-form-urlencoded", ""} {
		id := "plain-" + string(rune('a'+i))
		req, err := http.NewRequest(http.MethodPost, e.url("/events"), strings.NewReader(string(mustJSON(t, validEvent(id)))))
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		checkCounts(t, e.do(req), 1, 1, 0, 0)
	}
	batch := e.post(e.url("/events/batch"), batchOf(t, validEvent("plain-batch")), "Content-Type", "text/plain;charset=UTF-8")
	checkCounts(t, batch, 1, 1, 0, 0)
}
