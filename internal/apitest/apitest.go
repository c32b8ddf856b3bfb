// Package apitest holds what every HTTP test of trackapi shares: the check that a response is one
// openapi.yaml, admin.yaml or ops.yaml describes (kin-openapi's response validation), and an HTTP client that applies that
// check to every response it receives. Tests must get their responses through it, so that the spec
// and the server cannot drift apart unnoticed.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// api is one spec the server serves, and the URL prefix of its paths (its servers' base path).
// A spec with path parameters is matched by kin-openapi's router instead, and one whose paths
// (the collect API's /cdp/events aliases are checked as the paths they alias).
type api struct {
	file      string
	prefix    string
	templated bool
	once      sync.Once
	doc       *openapi3.T
	router    routers.Router
	err       error
}

// apis are the server's specs: the collect API (its paths are the real ones: /events, /events/,
// /events/batch; its /cdp/events aliases are checked as the paths they alias), the config API
// (admin.yaml, on the admin listener) and the operations API at the root (with the docs pages'
// files, /docs/{asset}).
var apis = []*api{{file: "openapi.yaml"}, {file: "admin.yaml", templated: true}, {file: "ops.yaml", templated: true}}

func init() {
	// The pixel's GIF, checked as the binary string openapi.yaml declares.
	openapi3filter.RegisterBodyDecoder("image/gif", openapi3filter.FileBodyDecoder)
}

// load reads a spec from the repository root (not the copy embedded in gen/, so that a stale gen/
// cannot hide a change of the spec).
func (a *api) load() (*openapi3.T, error) {
	a.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		path := filepath.Join(filepath.Dir(file), "..", "..", a.file)
		a.doc, a.err = openapi3.NewLoader().LoadFromFile(path)
		if a.err == nil {
			a.err = a.doc.Validate(context.Background())
		}
		if a.err == nil && a.templated {
			// The router would match the servers' hosts too; the tests' servers listen elsewhere.
			withoutServers := *a.doc
			withoutServers.Servers = nil
			a.router, a.err = gorillamux.NewRouter(&withoutServers)
		}
		if a.err != nil {
			a.err = fmt.Errorf("loading %s: %w", a.file, a.err)
		}
	})
	return a.doc, a.err
}

// route finds the operation of a request in the server's specs.
func route(req *http.Request) (*routers.Route, map[string]string, error) {
	method, urlPath := req.Method, req.URL.Path
	for _, a := range apis {
		if !strings.HasPrefix(urlPath, a.prefix) {
			continue
		}
		doc, err := a.load()
		if err != nil {
			return nil, nil, err
		}
		if a.router != nil {
			if rt, params, err := a.router.FindRoute(req); err == nil {
				return rt, params, nil
			}
			continue
		}
		path := aliasOf(method, strings.TrimPrefix(urlPath, a.prefix))
		if path == "" {
			path = "/"
		}
		if item := doc.Paths.Find(path); item != nil {
			if op := item.GetOperation(method); op != nil {
				return &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: op}, nil, nil
			}
		}
	}
	return nil, nil, nil
}

// aliasOf maps the collect API's aliases to the paths they alias (openapi.yaml's
// x-trackapi-aliases: /cdp/events...), and the pixel's /events/ to GET /events.
func aliasOf(method, path string) string {
	if strings.HasPrefix(path, "/cdp/events") {
		path = strings.TrimPrefix(path, "/cdp")
	}
	if method == http.MethodGet && path == "/events/" {
		path = "/events"
	}
	return path
}

// CheckResponse fails the test unless the response (status, headers, body) is one the spec
// declares for the request's operation. Requests to paths outside the spec must at least get JSON.
func CheckResponse(t testing.TB, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	if err := ValidateResponse(req, status, header, body); err != nil {
		t.Errorf("response to %s %s does not match its spec: %v\nstatus %d, body: %.500s", req.Method, req.URL.Path, err, status, body)
	}
}

// ValidateResponse is CheckResponse as an error, for places without a testing.TB.
func ValidateResponse(req *http.Request, status int, header http.Header, body []byte) error {
	if req.Method == http.MethodOptions {
		// The CORS layer answers every OPTIONS (a browser's preflight) before any operation, as
		// openapi.yaml's description says; the specs describe no OPTIONS operation.
		if status != http.StatusNoContent || len(body) != 0 {
			return fmt.Errorf("an OPTIONS request must get 204 and no body, got %d and %d bytes", status, len(body))
		}
		return nil
	}
	rt, params, err := route(req)
	if err != nil {
		return err
	}
	if rt == nil {
		if req.Method == http.MethodPost && strings.HasPrefix(req.URL.Path, "/events") {
			// The collect API's: a path that is no operation of openapi.yaml means the spec and
			// the server's routes went apart (once, the spec's paths moved and nothing was checked).
			return fmt.Errorf("POST %s is no operation of openapi.yaml", req.URL.Path)
		}
		if !strings.HasPrefix(header.Get("Content-Type"), "application/json") {
			return fmt.Errorf("a response outside the specs should still be JSON, got Content-Type %q", header.Get("Content-Type"))
		}
		return nil
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: rt, Options: &openapi3filter.Options{},
		},
		Status:  status,
		Header:  header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	return openapi3filter.ValidateResponse(context.Background(), input)
}

// Client returns an HTTP client that checks every response against the spec. It works as the
// HttpRequestDoer of the generated clients too (gen.WithHTTPClient).
func Client(t testing.TB) *http.Client {
	return ClientWith(t, http.DefaultTransport)
}

// ClientWith is Client sending through next (a transport trusting a test CA, say).
func ClientWith(t testing.TB, next http.RoundTripper) *http.Client {
	return &http.Client{Transport: &checkingTransport{t: t, next: next}}
}

type checkingTransport struct {
	t    testing.TB
	next http.RoundTripper
}

func (c *checkingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	CheckResponse(c.t, req, resp.StatusCode, resp.Header, body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// EventID returns the context.event_id of a stored event: the key tests count events by.
func EventID(t testing.TB, event []byte) string {
	t.Helper()
	var body struct {
		Context struct {
			EventID string `json:"event_id"`
		} `json:"context"`
	}
	if err := json.Unmarshal(event, &body); err != nil {
		t.Fatalf("stored event %.200s: %v", event, err)
	}
	return body.Context.EventID
}
