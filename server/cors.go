package server

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// CORS for browser trackers. A tracker on a shop's pages posts to the collector on another origin
// with fetch or XHR (JSON with a Bearer key: a preflight first), or with sendBeacon (text/plain,
// no preflight), and always with credentials (sendBeacon sends them, the vendor's web container
// sets withCredentials). A wildcard Access-Control-Allow-Origin is refused by browsers when
// credentials are included, so the page's origin is reflected: any origin by default (the
// collector reads no cookie and answers nothing but the outcome of the events sent, which the
// page knows anyway), or only those of an allow-list.
const (
	// corsMaxAge is how long a browser may keep a preflight's answer, in seconds (browsers cap it:
	// Chromium at 2 hours).
	corsMaxAge = 86400
)

var (
	corsMethods = []string{http.MethodPost, http.MethodGet, http.MethodOptions}
	// corsHeaders are the request headers a tracker may send beyond the CORS-safelisted ones.
	corsHeaders = []string{"Content-Type", "Authorization", "Content-Encoding"}
	// corsExposed are the answer's headers a page may read beyond the safelisted ones: how long
	// to wait after a 503. Nothing else is exposed.
	corsExposed = []string{"Retry-After"}
)

// cors is Echo's CORS middleware configured as above. Echo's middleware, given AllowOriginFunc,
// reflects an allowed origin (never *), adds Vary: Origin to every answer, answers every OPTIONS
// itself (204; with the CORS headers only for an allowed origin), and leaves them out for other
// origins, whose requests still run (the browser withholds the answer from the page).
// origins nil: every origin is allowed.
func cors(origins []string) echo.MiddlewareFunc {
	allow := func(string) (bool, error) { return true, nil }
	if origins != nil {
		allow = func(origin string) (bool, error) {
			return slices.Contains(origins, strings.ToLower(origin)), nil
		}
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc:  allow,
		AllowMethods:     corsMethods,
		AllowHeaders:     corsHeaders,
		ExposeHeaders:    corsExposed,
		AllowCredentials: true,
		MaxAge:           corsMaxAge,
	})
}

// ParseCORSOrigins checks and normalises an allow-list of origins (--cors-origins): each is a
// scheme (http or https) and a host, with a port when not the scheme's default, as browsers send
// them in Origin (lower case, no path; a trailing slash is dropped). An empty list is returned as
// nil: every origin allowed.
func ParseCORSOrigins(list []string) ([]string, error) {
	var out []string
	for _, raw := range list {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an origin: %w", raw, err)
		}
		scheme := strings.ToLower(u.Scheme)
		if (scheme != "http" && scheme != "https") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
			u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Hostname() == "" {
			return nil, fmt.Errorf("%q is not an origin: want scheme://host[:port], such as https://www.shop.example", raw)
		}
		host, port := strings.ToLower(u.Hostname()), u.Port()
		if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			port = ""
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		origin := scheme + "://" + host
		if port != "" {
			origin += ":" + port
		}
		if !slices.Contains(out, origin) {
			out = append(out, origin)
		}
	}
	return out, nil
}
