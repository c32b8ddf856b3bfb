package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/trackapi/trackapi/gen/ops"
	"github.com/trackapi/trackapi/metrics"
)

// Operations returns the operations API of ops.yaml (health, readiness, metrics), for the admin
// listener, which serves all of it; the public listener serves only health and readiness.
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
