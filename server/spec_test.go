package server_test

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// sameSpec fails the test unless the JSON document is the spec of the YAML file, as kin-openapi
// reads them.
func sameSpec(t *testing.T, file string, jsonDoc []byte) {
	t.Helper()
	fromFile, err := openapi3.NewLoader().LoadFromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	served, err := openapi3.NewLoader().LoadFromData(jsonDoc)
	if err != nil {
		t.Fatalf("the JSON spec does not load: %v", err)
	}
	want, _ := json.Marshal(fromFile)
	got, _ := json.Marshal(served)
	if string(got) != string(want) {
		t.Errorf("the JSON spec is not %s", file)
	}
}

// The public listener serves openapi.yaml byte for byte, the same as JSON, and the docs page with
// its files; a file it does not have is a 404 in the Error shape.
func TestSpecAndDocs(t *testing.T) {
	e := newEnv(t)
	file, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := e.get("/openapi.yaml")
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/yaml" || string(r.Body) != string(file) {
		t.Errorf("GET /openapi.yaml: %d %s, %d bytes, not the file's %d", r.Status, r.Header.Get("Content-Type"), len(r.Body), len(file))
	}
	r = e.get("/openapi.json")
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /openapi.json: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	sameSpec(t, "../openapi.yaml", r.Body)

	r = e.get("/docs/")
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"swaggerJsonUrl":"/openapi.json"`) ||
		r.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /docs/: %d %v\n%.500s", r.Status, r.Header, r.Body)
	}
	if r = e.get("/docs/swagger-ui-bundle.js"); r.Status != http.StatusOK || len(r.Body) < 100_000 {
		t.Errorf("GET /docs/swagger-ui-bundle.js: %d, %d bytes", r.Status, len(r.Body))
	}
	r = e.get("/docs/no-such-file")
	var apiErr struct{ Code, Message string }
	if err := json.Unmarshal(r.Body, &apiErr); err != nil || r.Status != http.StatusNotFound || apiErr.Code != "not_found" {
		t.Errorf("GET /docs/no-such-file: %d %s", r.Status, r.Body)
	}
	noFollow := *e.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Get(e.URL + "/docs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/docs/" {
		t.Errorf("GET /docs: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if r = e.get("/metrics"); r.Status != http.StatusNotFound {
		t.Errorf("GET /metrics on the public listener: %d, want 404", r.Status)
	}
}
