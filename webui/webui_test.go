package webui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

// get fetches path from the UI's handler mounted at /ui/, as the admin listener mounts it.
func get(t *testing.T, path string) *http.Response {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ui/", Handler("/ui/"))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Result()
}

// Every file of the UI, and the page itself, is served with the Content-Security-Policy that keeps
// the pages to their own scripts and styles and to the config API, and with nosniff.
func TestFilesAreServedWithTheirPolicy(t *testing.T) {
	paths := []string{"/ui/"}
	err := fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		paths = append(paths, "/ui/"+strings.TrimPrefix(name, "static/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantType := map[string]string{".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
	for _, p := range paths {
		resp := get(t, p)
		if p == "/ui/index.html" { // http.FileServer sends it to its directory, "/ui/"
			if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "./" {
				t.Errorf("%s: %d to %q, want a redirect to ./", p, resp.StatusCode, resp.Header.Get("Location"))
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", p, resp.StatusCode)
			continue
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, directive := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, directive) {
				t.Errorf("%s: the Content-Security-Policy %q lacks %q", p, csp, directive)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: the Content-Security-Policy allows inline code: %q", p, csp)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", p, got)
		}
		ext := path.Ext(p)
		if p == "/ui/" {
			ext = ".html"
		}
		if want := wantType[ext]; want != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), want) {
			t.Errorf("%s: Content-Type %q, want %s", p, resp.Header.Get("Content-Type"), want)
		}
	}
	if resp := get(t, "/ui/no-such-file.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a missing file: %d", resp.StatusCode)
	}
}

var (
	reference   = regexp.MustCompile(`\b(?:href|src)\s*=\s*"([^"]*)"`)
	scriptTag   = regexp.MustCompile(`<script\b([^>]*)>`)
	inlineStyle = regexp.MustCompile(`<style\b|\sstyle\s*=`)
	inlineEvent = regexp.MustCompile(`\son[a-z]+\s*=`)
)

// index.html loads only files the UI has, from its own origin, and nothing inline (which the
// policy would block, leaving a screen that silently does nothing).
func TestIndexReferencesOnlyItsOwnFiles(t *testing.T) {
	resp := get(t, "/ui/")
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	page := string(body)
	refs := reference.FindAllStringSubmatch(page, -1)
	if len(refs) == 0 {
		t.Fatal("index.html references nothing")
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "#") { // the screens' links
			continue
		}
		if strings.Contains(ref, ":") || strings.HasPrefix(ref, "/") || strings.Contains(ref, "..") {
			t.Errorf("index.html references %q: only files beside it may be loaded", ref)
			continue
		}
		if _, err := fs.Stat(files, "static/"+ref); err != nil {
			t.Errorf("index.html references %q, which the UI does not have", ref)
		}
	}
	for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
		if !strings.Contains(m[1], "src=") {
			t.Errorf("an inline <script%s>: the policy blocks it", m[1])
		}
	}
	if loc := inlineStyle.FindStringIndex(page); loc != nil {
		t.Errorf("an inline style at %q: the policy blocks it", page[loc[0]:min(loc[1]+20, len(page))])
	}
	if loc := inlineEvent.FindStringIndex(page); loc != nil {
		t.Errorf("an inline event handler at %q: the policy blocks it", page[loc[0]:min(loc[1]+20, len(page))])
	}
}

// The scripts build the DOM with App.el (text nodes), never HTML parsed from strings, so that
// nothing an API answer holds (an event's body, a source's name) can become markup.
func TestScriptsParseNoHTML(t *testing.T) {
	forbidden := regexp.MustCompile(`\.innerHTML\b|\.outerHTML\s*=|insertAdjacentHTML|document\.write|createContextualFragment|\beval\(|new Function\(`)
	err := fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(name, ".js") {
			return err
		}
		src, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			if forbidden.MatchString(line) {
				t.Errorf("%s:%d: %s", name, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
