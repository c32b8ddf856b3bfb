package admin_test

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// The admin listener serves admin.yaml byte for byte and as JSON, the collect API's spec, and the
// config API's docs page; none of them needs a token.
func TestSpecAndDocs(t *testing.T) {
	e := newEnv(t)
	for path, file := range map[string]string{"/admin.yaml": "../admin.yaml", "/openapi.yaml": "../openapi.yaml"} {
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		status, _, body := e.do(http.MethodGet, path, "", "")
		if status != http.StatusOK || string(body) != string(want) {
			t.Errorf("GET %s: %d, %d bytes, not %s's %d", path, status, len(body), file, len(want))
		}
	}
	got, err := e.API.GetAdminSpecJsonWithResponse(ctx(t))
	if err != nil || got.JSON200 == nil {
		t.Fatalf("GET /admin.json: %v %s", err, got.Body)
	}
	fromFile, err := openapi3.NewLoader().LoadFromFile("../admin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	served, err := openapi3.NewLoader().LoadFromData(got.Body)
	if err != nil {
		t.Fatalf("/admin.json does not load: %v", err)
	}
	want, _ := json.Marshal(fromFile)
	if b, _ := json.Marshal(served); string(b) != string(want) {
		t.Error("/admin.json is not admin.yaml")
	}

	status, _, page := e.do(http.MethodGet, "/docs/", "", "")
	if status != http.StatusOK || !strings.Contains(string(page), `"swaggerJsonUrl":"/admin.json"`) {
		t.Errorf("GET /docs/ without a token: %d\n%.500s", status, page)
	}
	if status, _, _ := e.do(http.MethodGet, "/docs/swagger-ui.css", "", ""); status != http.StatusOK {
		t.Errorf("GET /docs/swagger-ui.css: %d", status)
	}
	if status, apiErr, body := e.do(http.MethodGet, "/docs/no-such-file", "", ""); status != http.StatusNotFound || apiErr.Code != "not_found" {
		t.Errorf("GET /docs/no-such-file: %d %s", status, body)
	}
}
