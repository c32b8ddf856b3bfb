package apidocs_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/trackapi/trackapi/internal/apidocs"
)

// Scalars keep their YAML types, keys their order, and strings their bytes.
func TestJSON(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"key order", "b: 1\na: 2\nc: 3", `{"b":1,"a":2,"c":3}`},
		{"numbers", "i: 42\nneg: -7\nf: 3.5\nexp: 1e3\nhex: 0x10\nbig: 9007199254740993", `{"i":42,"neg":-7,"f":3.5,"exp":1000,"hex":16,"big":9007199254740993}`},
		{"quoted numbers stay strings", "'200': {description: ok}\nv: '1.0'", `{"200":{"description":"ok"},"v":"1.0"}`},
		{"unquoted status codes are keys as written", "200: ok\n404: gone", `{"200":"ok","404":"gone"}`},
		{"booleans and nulls", "a: true\nb: false\nc: null\nd: ~\ne:", `{"a":true,"b":false,"c":null,"d":null,"e":null}`},
		{"strings as they are", "s: \"<a href='x'>&</a>\"\nu: héllo ✓\nq: 'say \"hi\"'", `{"s":"<a href='x'>&</a>","u":"héllo ✓","q":"say \"hi\""}`},
		{"block scalars", "d: |\n  line 1\n  line 2\nf: >\n  folded\n  text\n", `{"d":"line 1\nline 2\n","f":"folded text\n"}`},
		{"a timestamp is the text written", "day: 2024-01-02", `{"day":"2024-01-02"}`},
		{"sequences and flow style", "l: [1, two, {three: 3}]\nm: {}\nn: []", `{"l":[1,"two",{"three":3}],"m":{},"n":[]}`},
		{"aliases expanded", "a: &x {k: v}\nb: *x", `{"a":{"k":"v"},"b":{"k":"v"}}`},
		{"empty document", "", `null`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := apidocs.JSON([]byte(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(got), "\n") {
				t.Errorf("no newline at the end: %q", got)
			}
			var compact strings.Builder
			enc := json.NewEncoder(&compact)
			enc.SetEscapeHTML(false)
			var raw json.RawMessage = got
			if err := enc.Encode(raw); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, got)
			}
			if s := strings.TrimSpace(compact.String()); s != c.want {
				t.Errorf("got  %s\nwant %s", s, c.want)
			}
		})
	}
}

// What JSON cannot hold is an error, and an alias bomb does not expand.
func TestJSONRefuses(t *testing.T) {
	bomb := "a: &a [x, x, x, x, x, x, x, x, x]\n"
	for i, prev := 1, "a"; i < 20; i++ {
		name := string(rune('a' + i))
		bomb += name + ": &" + name + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = name
	}
	for name, doc := range map[string]string{
		"not YAML":            "a: [1, 2",
		"a merge key":         "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2",
		"a key that is a map": "? {a: 1}\n: v",
		"infinity":            "x: .inf",
		"not a number":        "x: .nan",
		"an alias bomb":       bomb,
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := apidocs.JSON([]byte(doc)); err == nil {
				t.Errorf("no error; got %.200s", got)
			}
		})
	}
}

// The repository's specs convert to the same documents, keys in the same order.
func TestJSONOfTheSpecs(t *testing.T) {
	for _, name := range []string{"openapi.yaml", "admin.yaml", "ops.yaml"} {
		t.Run(name, func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join("..", "..", name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := apidocs.JSON(doc)
			if err != nil {
				t.Fatal(err)
			}
			var fromYAML, fromJSON any
			if err := yaml.Unmarshal(doc, &fromYAML); err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(fromYAML)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &fromYAML); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &fromJSON); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromYAML, fromJSON) {
				t.Error("the JSON is not the YAML's document")
			}
			if !strings.HasPrefix(string(got), "{\n  \"openapi\": \"3.0.") {
				t.Errorf("the JSON does not start as the YAML does: %.80s", got)
			}
		})
	}
}

// serve serves docs at /docs/ on 127.0.0.1, as the listeners do.
func serve(t *testing.T, docs *apidocs.Docs) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /docs/{$}", func(w http.ResponseWriter, r *http.Request) { docs.ServePage(w) })
	mux.HandleFunc("GET /docs/{asset}", func(w http.ResponseWriter, r *http.Request) {
		if !docs.ServeAsset(w, r, r.PathValue("asset")) {
			http.Error(w, "not found", http.StatusNotFound)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent gzip: the test sees the bytes
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

var (
	attrURL      = regexp.MustCompile(`(?:src|href)="([^"]*)"`)
	inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
)

// The page loads only files of its own listener, reads the spec at the URL given, and its
// policy allows exactly its inline scripts; its files are served, gzip'ed to a client that takes
// it, with their types; other names are not found.
func TestDocs(t *testing.T) {
	docs, err := apidocs.New(apidocs.Config{Title: "Test API", SpecURL: "/test.json", BasePath: "/docs/", ServerPath: "/events"})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, docs)
	resp, page := get(t, base+"/docs/")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("the page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, m := range attrURL.FindAllStringSubmatch(string(page), -1) {
		if !strings.HasPrefix(m[1], "/docs/") {
			t.Errorf("the page loads %s, not from /docs/", m[1])
		}
	}
	for _, want := range []string{`"swaggerJsonUrl":"/test.json"`, "<title>Test API", `window.location.origin + "/events"`, "persistAuthorization: false"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	scripts := inlineScript.FindAllStringSubmatch(string(page), -1)
	if len(scripts) == 0 {
		t.Fatal("no inline script in the page")
	}
	for _, s := range scripts {
		sum := sha256.Sum256([]byte(s[1]))
		if !strings.Contains(csp, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") {
			t.Errorf("the policy %q does not allow the inline script %.100s", csp, s[1])
		}
	}
	for _, want := range []string{"default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("the policy %q lacks %s", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-eval") || strings.Contains(strings.Split(csp, "style-src")[0], "unsafe-inline") {
		t.Errorf("the policy allows scripts it need not: %q", csp)
	}

	for name, ctype := range map[string]string{
		"swagger-ui-bundle.js":            "application/javascript",
		"swagger-ui-standalone-preset.js": "application/javascript",
		"swagger-ui.css":                  "text/css",
		"favicon-16x16.png":               "image/png",
	} {
		resp, plain := get(t, base+"/docs/"+name)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) ||
			resp.Header.Get("Content-Encoding") != "" || len(plain) < 100 {
			t.Errorf("%s: %d %s %q, %d bytes", name, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"), len(plain))
		}
		if !strings.HasSuffix(name, ".png") {
			resp, zipped := get(t, base+"/docs/"+name, "Accept-Encoding", "gzip")
			if resp.Header.Get("Content-Encoding") != "gzip" || len(zipped) >= len(plain) {
				t.Errorf("%s asked gzip'ed: %q, %d bytes of %d", name, resp.Header.Get("Content-Encoding"), len(zipped), len(plain))
			}
		}
	}
	for _, name := range []string{"nope.js", "swagger-ui.css.gz", "embed.go", "index.html", "..%2Fapidocs.go"} {
		if resp, _ := get(t, base+"/docs/"+name); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", name, resp.StatusCode)
		}
	}
}

func TestDocsBasePath(t *testing.T) {
	for _, base := range []string{"", "docs/", "/docs"} {
		if _, err := apidocs.New(apidocs.Config{Title: "x", SpecURL: "/x.json", BasePath: base}); err == nil {
			t.Errorf("BasePath %q: no error", base)
		}
	}
}
