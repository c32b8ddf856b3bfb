package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/trackapi/trackapi/gen/ops"
	"github.com/trackapi/trackapi/gen/spec"
	"github.com/trackapi/trackapi/internal/apidocs"
	"github.com/trackapi/trackapi/metrics"
)

// Operations returns the operations API of ops.yaml (health, readiness, metrics, the collect
// API's spec and its docs page), for the admin listener, which serves all of it (with its own
// docs page, the config API's, in place of this one); the public listener serves all but the
// metrics.
func Operations(ready func(context.Context) error, m *metrics.Metrics) ops.ServerInterface {
	if ready == nil {
		ready = func(context.Context) error { return nil }
	}
	return operations{ready: ready, metrics: m}
}

// operations implements the operations API of ops.yaml.
type operations struct {
	ready   func(context.Context) error
	metrics *metrics.Metrics
}

var _ ops.ServerInterface = operations{}

// GetHealth answers while the process serves HTTP; it does not touch the store, so that a full
// disk makes the server unready, not restarted.
func (operations) GetHealth(c echo.Context) error {
	return c.JSON(http.StatusOK, ops.Status{Status: ops.Ok})
}

// HeadHealth is GetHealth without the body (net/http writes none for HEAD).
func (o operations) HeadHealth(c echo.Context) error { return o.GetHealth(c) }

// HeadReadiness is GetReadiness without the body.
func (o operations) HeadReadiness(c echo.Context) error { return o.GetReadiness(c) }

// GetReadiness tells load balancers whether collect requests can be stored right now.
func (o operations) GetReadiness(c echo.Context) error {
	if err := o.ready(c.Request().Context()); err != nil {
		reason := err.Error()
		c.Response().Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
		return c.JSON(http.StatusServiceUnavailable, ops.Status{Status: ops.Unavailable, Reason: &reason})
	}
	return c.JSON(http.StatusOK, ops.Status{Status: ops.Ready})
}

// GetMetrics serves the Prometheus metrics.
func (o operations) GetMetrics(c echo.Context) error {
	o.metrics.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}

// collectSpecJSON is openapi.yaml as JSON, converted once.
var collectSpecJSON = sync.OnceValues(func() ([]byte, error) { return apidocs.JSON(spec.YAML) })

// collectDocs is the docs page of the collect API, built once.
var collectDocs = sync.OnceValues(func() (*apidocs.Docs, error) {
	return apidocs.New(apidocs.Config{
		Title: "trackapi collect API", SpecURL: "/openapi.json", BasePath: "/docs/", ServerPath: "",
	})
})

// GetCollectSpec serves openapi.yaml as it is in the repository, for partners' generators.
func (operations) GetCollectSpec(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", spec.YAML)
}

// GetCollectSpecJson serves openapi.yaml as JSON.
func (operations) GetCollectSpecJson(c echo.Context) error {
	b, err := collectSpecJSON()
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, b)
}

// RedirectDocs sends /docs to the docs page.
func (operations) RedirectDocs(c echo.Context) error {
	return c.Redirect(http.StatusMovedPermanently, "/docs/")
}

// GetDocs serves the collect API's docs page.
func (operations) GetDocs(c echo.Context) error {
	docs, err := collectDocs()
	if err != nil {
		return err
	}
	docs.ServePage(c.Response())
	return nil
}

// GetDocsAsset serves a file of the docs page, or answers 404 when there is no such file.
func (operations) GetDocsAsset(c echo.Context, asset string) error {
	docs, err := collectDocs()
	if err != nil {
		return err
	}
	if !docs.ServeAsset(c.Response(), c.Request(), asset) {
		return echo.NewHTTPError(http.StatusNotFound, "no such file of the docs page: "+asset)
	}
	return nil
}
