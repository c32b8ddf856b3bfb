// Package apitest holds what every HTTP test of trackapi shares: the check that a response is one
// openapi.yaml describes (kin-openapi's response validation), and an HTTP client that applies that
// check to every response it receives. Tests must get their responses through it, so that the spec
// and the server cannot drift apart unnoticed.
package apitest

import (
	"bytes"
	"context"
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
)

var (
	specOnce sync.Once
	spec     *openapi3.T
	specErr  error
)

// Spec loads openapi.yaml from the repository root (not the copy embedded in gen/, so that a
// stale gen/ cannot hide a change of the spec).
func Spec() (*openapi3.T, error) {
	specOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		path := filepath.Join(filepath.Dir(file), "..", "..", "openapi.yaml")
		loader := openapi3.NewLoader()
		spec, specErr = loader.LoadFromFile(path)
		if specErr == nil {
			specErr = spec.Validate(context.Background())
		}
	})
	return spec, specErr
}

// specPath maps a request path of the server to the spec's path: the spec's servers end in /events.
func specPath(urlPath string) (string, bool) {
	switch strings.TrimSuffix(urlPath, "/") {
	case "/events":
		return "/", true
	case "/events/batch":
		return "/batch", true
	}
	return "", false
}

// CheckResponse fails the test unless the response (status, headers, body) is one the spec
// declares for the request's operation. Requests to paths outside the spec must at least get JSON.
func CheckResponse(t testing.TB, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	if err := ValidateResponse(req, status, header, body); err != nil {
		t.Errorf("response to %s %s does not match openapi.yaml: %v\nstatus %d, body: %.500s", req.Method, req.URL.Path, err, status, body)
	}
}

// ValidateResponse is CheckResponse as an error, for places without a testing.TB.
func ValidateResponse(req *http.Request, status int, header http.Header, body []byte) error {
	doc, err := Spec()
	if err != nil {
		return fmt.Errorf("loading openapi.yaml: %w", err)
	}
	path, inSpec := specPath(req.URL.Path)
	if !inSpec || req.Method != http.MethodPost {
		if !strings.HasPrefix(header.Get("Content-Type"), "application/json") {
			return fmt.Errorf("a response outside the spec should still be JSON, got Content-Type %q", header.Get("Content-Type"))
		}
		return nil
	}
	item := doc.Paths.Find(path)
	route := &routers.Route{Spec: doc, Path: path, PathItem: item, Method: http.MethodPost, Operation: item.Post}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, Route: route, Options: &openapi3filter.Options{},
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
	return &http.Client{Transport: &checkingTransport{t: t, next: http.DefaultTransport}}
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
