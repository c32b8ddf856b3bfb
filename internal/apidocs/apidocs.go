// Package apidocs serves what both listeners need to publish an API's spec: the docs page (Swagger
// UI 5, built into the binary by github.com/swaggest/swgui's v5emb, so that it loads nothing from
// elsewhere and works offline) and the spec as JSON, converted from the YAML file that is served
// as it is.
package apidocs

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"

	"github.com/swaggest/swgui"
	"github.com/swaggest/swgui/v5/static"
	"github.com/swaggest/swgui/v5emb"
)

// Config describes one docs page.
type Config struct {
	// Title is the page's title.
	Title string
	// SpecURL is the path of the spec on the same listener (e.g. "/openapi.json").
	SpecURL string
	// BasePath is where the page is served, with a slash at the end (e.g. "/docs/"); its files
	// are under it.
	BasePath string
	// ServerPath is the path that the spec's paths are relative to on this listener (both
	// specs have their paths whole: ""). "Try it out" sends requests to the page's
	// origin plus ServerPath: the page adds that server before the spec's own, which name the
	// addresses of a default setup (or the vendor's collector), not necessarily this one.
	ServerPath string
}

// Docs is the docs page of one spec, with the files it loads.
type Docs struct {
	page   []byte
	csp    string
	ui     http.Handler
	base   string
	assets map[string]bool
}

// thisServerPlugin is a Swagger UI plugin that puts the listener serving the page first in the
// spec's servers and in each path's own servers (so first in the "Servers" lists, and where "Try
// it out" sends requests), before
// the spec is resolved; %s is the path on the page's origin, as a JS string.
const thisServerPlugin = `function () {
	var here = {url: window.location.origin + %s, description: "This server (the one serving these docs)"};
	return {statePlugins: {spec: {wrapActions: {updateJsonSpec: function (update) {
		return function (spec) {
			if (spec && typeof spec === "object") {
				spec.servers = [here].concat(spec.servers || []);
				// A path with servers of its own (an alias) gets this server first too.
				for (var path in (spec.paths || {})) {
					var item = spec.paths[path];
					if (item && Array.isArray(item.servers)) {
						item.servers = [here].concat(item.servers);
					}
				}
			}
			return update(spec);
		};
	}}}}};
}`

// New builds the page of cfg.
func New(cfg Config) (*Docs, error) {
	if !strings.HasPrefix(cfg.BasePath, "/") || !strings.HasSuffix(cfg.BasePath, "/") {
		return nil, fmt.Errorf("apidocs: BasePath %q must start and end with a slash", cfg.BasePath)
	}
	serverPath, err := json.Marshal(cfg.ServerPath)
	if err != nil {
		return nil, err
	}
	ui := v5emb.NewHandlerWithConfig(swgui.Config{
		Title:       cfg.Title,
		SwaggerJSON: cfg.SpecURL,
		BasePath:    cfg.BasePath,
		SettingsUI: map[string]string{
			"plugins": "[SwaggerUIBundle.plugins.DownloadUrl, " + fmt.Sprintf(thisServerPlugin, serverPath) + "]",
			// The admin token given to "Authorize" stays in the page's memory only (the default,
			// said here so that nobody turns it on unawares: it would keep the token in
			// localStorage, for any script of the origin to read).
			"persistAuthorization": "false",
		},
	})
	// The page is the same for every request: render it once, and allow exactly its inline
	// scripts by their hashes.
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, cfg.BasePath, nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("apidocs: rendering the page: %d %s", rec.Code, rec.Body)
	}
	page := rec.Body.Bytes()
	assets := map[string]bool{}
	entries, err := fs.ReadDir(static.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("apidocs: Swagger UI's files: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			assets[strings.TrimSuffix(e.Name(), ".gz")] = true
		}
	}
	for _, name := range []string{"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"} {
		if !assets[name] || !bytes.Contains(page, []byte(`"`+cfg.BasePath+name+`"`)) {
			return nil, fmt.Errorf("apidocs: the page does not load %s from %s", name, cfg.BasePath)
		}
	}
	return &Docs{page: page, csp: contentSecurityPolicy(page), ui: ui, base: cfg.BasePath, assets: assets}, nil
}

var inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

// contentSecurityPolicy holds the page to its own origin: scripts, styles, images and requests
// (the spec, and "Try it out", which can then reach only this listener, so that a token given to
// "Authorize" can go nowhere else). The page's inline scripts are allowed by their hashes; inline
// styles are allowed, since Swagger UI sets style attributes.
func contentSecurityPolicy(page []byte) string {
	scripts := "'self'"
	for _, m := range inlineScript.FindAllSubmatch(page, -1) {
		sum := sha256.Sum256(m[1])
		scripts += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'self'; script-src " + scripts + "; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
}

// ServePage writes the docs page.
func (d *Docs) ServePage(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", d.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Length", strconv.Itoa(len(d.page)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(d.page)
}

// ServeAsset writes the file name of Swagger UI (gzip'ed for a client that takes it), and
// reports false, writing nothing, when there is no such file.
func (d *Docs) ServeAsset(w http.ResponseWriter, r *http.Request, name string) bool {
	if !d.assets[name] {
		return false
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = d.base+name, ""
	w.Header().Set("X-Content-Type-Options", "nosniff")
	d.ui.ServeHTTP(w, r2)
	return true
}
