// Package webui holds the web UI's files, embedded in the binary so that the UI works offline and
// needs no build step: plain HTML, CSS and JavaScript that talk only to the config API. The admin
// listener serves them at /ui/.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the UI's files under prefix (e.g. "/ui/"). The pages run no inline script and
// load nothing from elsewhere, which the Content-Security-Policy holds them to; the admin token
// the person logs in with is kept in the tab's sessionStorage and sent as a header, never in a
// URL or a cookie (so no request can carry it without the page's script, and CSRF has nothing to
// ride on).
func Handler(prefix string) http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fileServer := http.StripPrefix(prefix, http.FileServer(http.FS(static)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}
