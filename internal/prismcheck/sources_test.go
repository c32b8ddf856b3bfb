package prismcheck

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// exchange is one request sent through Prism.
type exchange struct {
	source string // where it comes from: "readme", "serve", "spec" or "corpus"
	name   string
	method string
	target string // path and query
	header http.Header
	body   []byte
	// documented: the request is shown as one to send (README, serve, spec examples), so Prism
	// must let it through and every event of it must be stored (or be a duplicate).
	documented bool
	// mustRefuse: Prism must refuse it (a request the server stores nothing of), which shows that
	// Prism does validate requests.
	mustRefuse bool
	shown      string // the answer the README shows for it, if any
}

// readmeExamples are the curl commands of the README's "Sending events", with the answers it
// shows.
func readmeExamples(t *testing.T, root, key string) []exchange {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Sending events\n")
	if !ok {
		t.Fatal(`README.md has no "## Sending events" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, snippet, ok := strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatal(`"Sending events" has no sh block`)
	}
	snippet, _, _ = strings.Cut(snippet, "```")
	cmds, err := parseShell(snippet, map[string]string{"KEY": key})
	if err != nil {
		t.Fatalf("README's sh block: %v", err)
	}
	var out []exchange
	for i, c := range cmds {
		if c.words[0] != "curl" {
			continue
		}
		ex := fromCurl(t, "readme", fmt.Sprintf("command %d", i), c, "http://localhost:8080")
		ex.shown = strings.Join(c.comments, "\n")
		out = append(out, ex)
	}
	return out
}

// fromCurl turns a curl command for the server at base into an exchange.
func fromCurl(t *testing.T, source, name string, c shellCommand, base string) exchange {
	t.Helper()
	r, err := parseCurl(c.words)
	if err != nil {
		t.Fatalf("%s %s: %v", source, name, err)
	}
	target, ok := strings.CutPrefix(r.url, base)
	if !ok {
		t.Fatalf("%s %s: the URL %s is not the server's (%s)", source, name, r.url, base)
	}
	return exchange{source: source, name: name, method: r.method, target: target, header: r.header, body: []byte(r.body), documented: true}
}

// specExamples are openapi.yaml's request examples, each sent to its operation's path.
func specExamples(t *testing.T, root, query string) []exchange {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(filepath.Join(root, "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []exchange
	for _, path := range doc.Paths.InMatchingOrder() {
		op := doc.Paths.Value(path).Post
		if op == nil || op.RequestBody == nil {
			continue
		}
		for mediaType, media := range op.RequestBody.Value.Content {
			names := make([]string, 0, len(media.Examples))
			for name := range media.Examples {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				body, ok := media.Examples[name].Value.Value.(string)
				if !ok {
					b, err := json.Marshal(media.Examples[name].Value.Value)
					if err != nil {
						t.Fatal(err)
					}
					body = string(b)
				}
				out = append(out, exchange{
					source: "spec", name: op.OperationID + " " + mediaType + " " + name, method: http.MethodPost,
					target: path + query, header: http.Header{"Content-Type": {mediaType}}, body: []byte(body), documented: true,
				})
			}
		}
	}
	return out
}

// corpus is testdata/events: each single-event file to /events as JSON and as text/plain and to
// /events/ as JSON, each batch file to /events/batch as JSON and as text/plain. Some of them are
// refused by the server; the spec must then refuse them too, or describe the server's answer.
func corpus(t *testing.T, root, query string) []exchange {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "testdata", "events", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/events: %v", err)
	}
	var out []exchange
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		sends := [][2]string{{"/events", "application/json"}, {"/events", "text/plain;charset=UTF-8"}, {"/events/", "application/json"}}
		if strings.HasPrefix(name, "batch-") {
			sends = [][2]string{{"/events/batch", "application/json"}, {"/events/batch", "text/plain;charset=UTF-8"}}
		}
		for _, s := range sends {
			out = append(out, exchange{
				source: "corpus", name: name + " as " + s[1], method: http.MethodPost, target: s[0] + query,
				header: http.Header{"Content-Type": {s[1]}}, body: body,
			})
		}
	}
	return out
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
