package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"gopkg.in/yaml.v3"

	"github.com/trackapi/trackapi/internal/apitest"
)

// repoFile reads a file of the repository (the specs at its root).
func repoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fetch GETs url through the spec-checking client, without following redirects, and returns
// the answer with its body.
func fetch(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	c := apitest.Client(t)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(url)
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

// sameDocument fails the test unless the JSON document is the YAML one: the same values, and the
// keys in the same order.
func sameDocument(t *testing.T, what string, yamlDoc, jsonDoc []byte) {
	t.Helper()
	var fromYAML, fromJSON any
	if err := yaml.Unmarshal(yamlDoc, &fromYAML); err != nil {
		t.Fatal(err)
	}
	roundTrip, err := json.Marshal(fromYAML) // the YAML's values as JSON has them (numbers as float64)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(roundTrip, &fromYAML); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(jsonDoc, &fromJSON); err != nil {
		t.Fatalf("%s is not JSON: %v", what, err)
	}
	if !reflect.DeepEqual(fromYAML, fromJSON) {
		t.Errorf("%s is not the same document as the YAML", what)
	}
	var node yaml.Node
	if err := yaml.Unmarshal(yamlDoc, &node); err != nil {
		t.Fatal(err)
	}
	var yamlKeys []string
	for i := 0; i < len(node.Content[0].Content); i += 2 {
		yamlKeys = append(yamlKeys, node.Content[0].Content[i].Value)
	}
	if got := topLevelKeys(t, jsonDoc); !reflect.DeepEqual(got, yamlKeys) {
		t.Errorf("%s has its keys in the order %v, the YAML %v", what, got, yamlKeys)
	}
}

// topLevelKeys lists the keys of a JSON object in the order they are written.
func topLevelKeys(t *testing.T, doc []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %v %v", tok, err)
	}
	var keys []string
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key.(string))
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// The specs as the real binary serves them: /openapi.yaml is openapi.yaml byte for byte on both
// listeners (`curl …/openapi.yaml | diff - openapi.yaml` prints nothing) and /admin.yaml is
// admin.yaml on the admin listener; the .json of each is the same document; the docs pages and
// their files load without a token; every answer is one ops.yaml or admin.yaml describes.
func TestSpecDownloads(t *testing.T) {
	p := startServer(t, t.TempDir())
	openapi, adminSpec := repoFile(t, "openapi.yaml"), repoFile(t, "admin.yaml")
	for _, c := range []struct {
		url, contentType string
		want             []byte
	}{
		{p.URL + "/openapi.yaml", "application/yaml", openapi},
		{p.AdminURL + "/openapi.yaml", "application/yaml", openapi},
		{p.AdminURL + "/admin.yaml", "application/yaml", adminSpec},
	} {
		resp, body := fetch(t, c.url)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != c.contentType {
			t.Errorf("GET %s: %d %s", c.url, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if string(body) != string(c.want) {
			t.Errorf("GET %s is not the repository's file byte for byte (%d bytes, the file %d)", c.url, len(body), len(c.want))
		}
	}
	for _, c := range []struct {
		url  string
		yaml []byte
	}{
		{p.URL + "/openapi.json", openapi},
		{p.AdminURL + "/openapi.json", openapi},
		{p.AdminURL + "/admin.json", adminSpec},
	} {
		resp, body := fetch(t, c.url)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %s", c.url, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		sameDocument(t, c.url, c.yaml, body)
	}

	// The README's command, as written, when this machine has curl.
	if _, err := exec.LookPath("curl"); err == nil {
		cmd := exec.Command("sh", "-c", `curl -sS "$1/openapi.yaml" | diff - openapi.yaml`, "sh", p.URL)
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("curl %s/openapi.yaml | diff - openapi.yaml: %v\n%.2000s", p.URL, err, out)
		}
	} else {
		t.Log("no curl on this machine: the byte-for-byte check above stands for it")
	}

	for _, base := range []string{p.URL, p.AdminURL} {
		resp, body := fetch(t, base+"/docs/")
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "connect-src 'self'") {
			t.Errorf("GET %s/docs/: %d %v", base, resp.StatusCode, resp.Header)
		}
		if !strings.Contains(string(body), "/docs/swagger-ui-bundle.js") {
			t.Errorf("%s/docs/ does not load Swagger UI from /docs/:\n%.1000s", base, body)
		}
		if resp, _ := fetch(t, base+"/docs"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/docs/" {
			t.Errorf("GET %s/docs: %d to %q, want 301 to /docs/", base, resp.StatusCode, resp.Header.Get("Location"))
		}
		for _, asset := range []string{"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "favicon-32x32.png"} {
			if resp, body := fetch(t, base+"/docs/"+asset); resp.StatusCode != http.StatusOK || len(body) < 100 {
				t.Errorf("GET %s/docs/%s: %d, %d bytes", base, asset, resp.StatusCode, len(body))
			}
		}
		if resp, _ := fetch(t, base+"/docs/no-such-file.js"); resp.StatusCode != http.StatusNotFound ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s/docs/no-such-file.js: %d %s, want a JSON 404", base, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	// Each listener's page documents its own API.
	if _, body := fetch(t, p.URL+"/docs/"); !strings.Contains(string(body), `"/openapi.json"`) {
		t.Error("the public docs page does not read /openapi.json")
	}
	if _, body := fetch(t, p.AdminURL+"/docs/"); !strings.Contains(string(body), `"/admin.json"`) {
		t.Error("the admin docs page does not read /admin.json")
	}
}

// recordCSPViolations is run in every page before its own scripts: it keeps what the page's
// Content-Security-Policy blocked, for the test to read.
const recordCSPViolations = `window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
	window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});`

// addInitScript runs script in every document the tab loads from now on, before the page's own.
func addInitScript(script string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script})
		return err
	})
}

// checkSameOrigin fails the test unless everything the page at pageURL loaded came from its own
// origin, and its Content-Security-Policy blocked nothing. It returns the resources' URLs.
func checkSameOrigin(t *testing.T, b *browser, pageURL string) []string {
	t.Helper()
	origin, err := url.Parse(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	resources, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](
		`performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource")).map(e => e.name)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(resources) < 2 {
		t.Fatalf("%s loaded %d resources: %v", pageURL, len(resources), resources)
	}
	t.Logf("%s loaded %d resources: %v", pageURL, len(resources), resources)
	for _, r := range resources {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != origin.Scheme || u.Host != origin.Host {
			t.Errorf("%s loaded %s, from another origin than %s://%s", pageURL, r, origin.Scheme, origin.Host)
		}
	}
	blocked, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`window.__csp`))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocked) > 0 {
		t.Errorf("%s: the Content-Security-Policy blocked %v", pageURL, blocked)
	}
	return resources
}

// runWithin is b.run with a deadline, so that a step waiting for what never comes fails the test
// with its name rather than using up the browser's time.
func runWithin(b *browser, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// tryOut expands the operation of Swagger UI's element id and clicks its "Try it out".
func tryOut(b *browser, id string) {
	b.t.Helper()
	op := "#" + id
	runWithin(b, 10*time.Second, "trying out "+id,
		chromedp.Click(chromedp.CSS(op+" .opblock-summary-control")),
		chromedp.WaitVisible(chromedp.CSS(op+" .try-out__btn")),
		chromedp.Click(chromedp.CSS(op+" .try-out__btn")),
		chromedp.WaitVisible(chromedp.CSS(op+" .execute")),
	)
}

// execute clicks "Execute" in the operation tried out and waits for the answer's status to be
// want (a previous answer shown is replaced).
func execute(b *browser, id, want string) {
	b.t.Helper()
	op := "#" + id
	runWithin(b, 5*time.Second, "executing "+id, chromedp.Click(chromedp.CSS(op+" .execute")))
	b.waitText(op+" .live-responses-table tbody .response-col_status", want, 15*time.Second)
}

// Both docs pages in headless Chromium against the real binary, with no token: each renders its
// API's operations from files of its own origin only (so it works offline), the Content-Security-
// Policy blocks nothing it needs, and "Try it out" reaches the server that served the page: the
// collect API's POST /events/ answers 200 (its event rejected for the missing key), the config
// API's GET /api/sources answers 401 until an admin token is given to "Authorize", then 200.
func TestDocsPagesOffline(t *testing.T) {
	p := startServer(t, t.TempDir())
	token := firstAdminToken(t, p)
	b := newBrowser(t)
	b.run("recording what the Content-Security-Policy blocks", addInitScript(recordCSPViolations))

	public := p.URL + "/docs/"
	b.run("opening the collect API's docs", chromedp.Navigate(public))
	b.waitText("#swagger-ui", "Collect a batch of events", 30*time.Second)
	b.waitText("#swagger-ui", "HTTP Tracking API", time.Second)
	resources := checkSameOrigin(t, b, public)
	if !strings.Contains(strings.Join(resources, " "), p.URL+"/openapi.json") {
		t.Errorf("the page did not load its spec from %s/openapi.json: %v", p.URL, resources)
	}
	servers, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll(".servers select option")).map(o => o.value)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) == 0 || servers[0] != p.URL {
		t.Errorf("the servers offered are %v, want this one first, %s", servers, p.URL)
	}
	tryOut(b, "operations-collect-collectEvent")
	execute(b, "operations-collect-collectEvent", "200")
	b.waitText("#operations-collect-collectEvent .live-responses-table", "invalid_source", 5*time.Second)
	checkSameOrigin(t, b, public)

	adminDocs := p.AdminURL + "/docs/"
	b.run("opening the config API's docs", chromedp.Navigate(adminDocs))
	b.waitText("#swagger-ui", "List sources", 30*time.Second)
	checkSameOrigin(t, b, adminDocs)
	tryOut(b, "operations-sources-listSources")
	execute(b, "operations-sources-listSources", "401")
	runWithin(b, 10*time.Second, "authorizing with the admin token",
		chromedp.Click(chromedp.CSS(".scheme-container .authorize")),
		chromedp.WaitVisible(chromedp.CSS(".modal-ux input")),
		chromedp.SendKeys(chromedp.CSS(".modal-ux input"), token), // the first scheme: adminRead
		chromedp.Click(chromedp.CSS(".modal-ux .auth-btn-wrapper .authorize")),
	)
	b.waitText(".modal-ux", "Authorized", 5*time.Second)
	runWithin(b, 5*time.Second, "closing the authorizations", chromedp.Click(chromedp.CSS(".modal-ux .close-modal")))
	execute(b, "operations-sources-listSources", "200")
	b.waitText("#operations-sources-listSources .live-responses-table", `"items"`, 5*time.Second)
	checkSameOrigin(t, b, adminDocs)
	stored, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		`location.href + JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, token) {
		t.Error("the docs page keeps the admin token in its URL, storage or cookies")
	}
	// Nor can a script of the page send it elsewhere: its Content-Security-Policy allows requests
	// to its own origin only.
	b.expectPageError("http://127.0.0.2:9/")
	other, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		`fetch("http://127.0.0.2:9/", {headers: {Authorization: "Bearer x"}}).then(() => "sent", () => "refused")`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`window.__csp`))
	if err != nil {
		t.Fatal(err)
	}
	if other != "refused" || len(blocked) != 1 || !strings.HasPrefix(blocked[0], "connect-src") {
		t.Errorf("a request to another origin from the docs page: %s, blocked by the policy: %v", other, blocked)
	}
}
