// Package server is the HTTP side of the collect API: Echo handlers implementing the generated
// echoapi.ServerInterface, and the operations endpoints. It bounds what a request may cost on the
// wire (the body budget, the body limits, gzip), hands the body to ingest.Collector, which applies
// the event rules and stores the events, and turns the outcome into the spec's responses:
// 200 with the CollectResult, 400 for an ingest.Refusal, 503 with Retry-After when the store
// cannot commit right now, 500 for anything else. It knows no SQL and no event rule.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/echoapi"
	"github.com/trackapi/trackapi/gen/ops"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/metrics"
)

// RetryAfterSeconds is what a 503 asks clients to wait. Commits take milliseconds, so one second
// is enough for a transient fault to clear without making clients idle for long.
const RetryAfterSeconds = 1

// Config is what the server needs from the rest of the program.
type Config struct {
	Collector *ingest.Collector
	// Ready reports whether the store can commit right now, for GET /readyz. nil: always ready.
	Ready   func(context.Context) error
	Metrics *metrics.Metrics // nil: a new set
	Logger  *slog.Logger     // nil: slog.Default()
	// BodyBudget bounds the bytes of request bodies held at once (0: DefaultBodyBudget), and
	// BodyWait how long a request waits for room before it gets a 503 (0: DefaultBodyWait).
	BodyBudget int64
	BodyWait   time.Duration
}

// Server implements echoapi.ServerInterface.
type Server struct {
	collector *ingest.Collector
	ready     func(context.Context) error
	metrics   *metrics.Metrics
	bodies    *bodyBudget
	log       *slog.Logger
}

var _ echoapi.ServerInterface = (*Server)(nil)

// New builds the collect handlers.
func New(cfg Config) (*Server, error) {
	if cfg.Collector == nil {
		return nil, errors.New("server: Config.Collector is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{collector: cfg.Collector, ready: cfg.Ready, metrics: cfg.Metrics, bodies: newBodyBudget(cfg.BodyBudget, cfg.BodyWait), log: log}
	if s.ready == nil {
		s.ready = func(context.Context) error { return nil }
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	return s, nil
}

// Handler returns the Echo instance serving the collect API (POST /events, /events/ and
// /events/batch) and the operations API (GET /healthz, /readyz, /metrics), with errors rendered as
// the spec's Error body and one log line a request.
func (s *Server) Handler() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.renderError
	e.Use(middleware.Recover())
	e.Use(s.requestLogger())
	echoapi.RegisterHandlersWithBaseURL(e, s, "/events") // POST /events/ and POST /events/batch
	wrapper := echoapi.ServerInterfaceWrapper{Handler: s}
	e.POST("/events", wrapper.CollectEvent)
	ops.RegisterHandlers(e, operations{ready: s.ready, metrics: s.metrics})
	return e
}

// endpoint is what differs between the two collect endpoints.
type endpoint struct {
	name      string // the metrics label
	bodyLimit int64
	batch     bool
}

var (
	singleEndpoint = endpoint{name: "single", bodyLimit: trackapi.SingleBodyLimit}
	batchEndpoint  = endpoint{name: "batch", bodyLimit: trackapi.BatchBodyLimit, batch: true}
)

// CollectEvent handles POST /events: one event.
func (s *Server) CollectEvent(c echo.Context, params gen.CollectEventParams) error {
	return s.handle(c, singleEndpoint, params.TcS, sourceKey(params.Token, params.Authorization))
}

// CollectBatch handles POST /events/batch: {"batch": [event, ...]}.
func (s *Server) CollectBatch(c echo.Context, params gen.CollectBatchParams) error {
	return s.handle(c, batchEndpoint, params.TcS, sourceKey(params.Token, params.Authorization))
}

// handle is the whole of a collect request: read and check the body, collect its events, answer,
// and count the outcome in the metrics.
func (s *Server) handle(c echo.Context, ep endpoint, site *string, key string) error {
	start := time.Now()
	observed := metrics.Request{Endpoint: ep.name}
	defer func() {
		observed.Took = time.Since(start)
		s.metrics.ObserveRequest(observed)
	}()

	// Memory is bounded before the body is read: what a request may hold (its declared length,
	// or the limit when chunked or compressed) is reserved from the budget, waiting for room at most
	// BodyWait. A Content-Length over the limit is refused by readBody without a reservation.
	req := c.Request()
	if req.ContentLength <= ep.bodyLimit {
		reserve := ep.bodyLimit // chunked, or compressed: up to the limit once decompressed
		if req.ContentLength >= 0 && req.Header.Get("Content-Encoding") == "" {
			reserve = req.ContentLength
		}
		release, err := s.bodies.reserve(req.Context(), reserve)
		if err != nil {
			observed.Status, observed.Outcome = http.StatusServiceUnavailable, "overloaded"
			return s.unavailable(c, err)
		}
		defer release()
	}

	body, refusal := readBody(req, ep.bodyLimit)
	observed.BodyBytes = len(body)
	if refusal != nil {
		return s.refused(c, refusal, &observed)
	}
	result, err := s.collector.Collect(req.Context(), ingest.Request{Batch: ep.batch, Site: deref(site), Key: key, Body: body})
	if err != nil {
		return s.failed(c, err, &observed)
	}
	observed.Status, observed.Outcome = http.StatusOK, "ok"
	observed.Accepted, observed.Duplicates = result.Accepted, result.Duplicates
	// Counted from the listed and the omitted problems, since a long list is cut in the answer.
	rejected, warnings := ingest.ProblemCounts(result)
	observed.Rejected, observed.IDReused = rejected, warnings[string(gen.EventIdReused)]
	return c.JSON(http.StatusOK, result)
}

// failed answers a request the collector could not complete, by the class of its error.
func (s *Server) failed(c echo.Context, err error, observed *metrics.Request) error {
	var refusal *ingest.Refusal
	switch {
	case errors.As(err, &refusal):
		return s.refused(c, refusal, observed)
	case errors.Is(err, trackapi.ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		observed.Status, observed.Outcome = http.StatusServiceUnavailable, "unavailable"
		return s.unavailable(c, err)
	default:
		observed.Status, observed.Outcome = http.StatusInternalServerError, "internal"
		s.log.Error("collect request failed; answering 500", "path", c.Request().URL.Path, "err", err)
		return c.JSON(http.StatusInternalServerError, gen.Error{
			Code: gen.ErrorCodeInternal, Message: "the server failed to handle this request; the cause is in its log",
		})
	}
}

// refused answers 400: the request as a whole is unusable and nothing of it was stored.
func (s *Server) refused(c echo.Context, r *ingest.Refusal, observed *metrics.Request) error {
	observed.Status, observed.Outcome = http.StatusBadRequest, string(r.Code)
	if r.Code == gen.ErrorCodePayloadTooLarge {
		// The rest of the body is not wanted. Without this, net/http would read up to 256 KB of it
		// before answering, to keep the connection; closing it answers at once.
		c.Response().Header().Set("Connection", "close")
	}
	return c.JSON(http.StatusBadRequest, gen.Error{Code: r.Code, Message: r.Message, Index: r.Index})
}

// unavailable answers 503: nothing of the request was acknowledged, and a retry is safe because
// events are deduplicated on their id.
func (s *Server) unavailable(c echo.Context, err error) error {
	switch {
	case errors.Is(err, errOverloaded):
		s.log.Warn("answering 503", "err", err)
	case !errors.Is(err, context.Canceled):
		s.log.Error("storing events failed; answering 503", "err", err)
	}
	c.Response().Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
	return c.JSON(http.StatusServiceUnavailable, gen.Error{
		Code: gen.ErrorCodeUnavailable, Message: "the event store cannot commit right now; retry later",
	})
}

// renderError gives every error Echo produces (unknown route, a parameter given twice, a panic)
// the same JSON shape as the spec's Error.
func (s *Server) renderError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, message := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status, message = he.Code, fmt.Sprint(he.Message)
	} else {
		s.log.Error("request failed", "path", c.Request().URL.Path, "err", err)
	}
	code := gen.ErrorCode(http.StatusText(status))
	switch status {
	case http.StatusBadRequest:
		code = gen.ErrorCodeInvalidPayload // e.g. a parameter or header given more than once
	case http.StatusRequestEntityTooLarge:
		status, code = http.StatusBadRequest, gen.ErrorCodePayloadTooLarge
	case http.StatusNotFound:
		code = "not_found"
	case http.StatusMethodNotAllowed:
		code = "method_not_allowed"
	case http.StatusInternalServerError:
		code = "internal"
	}
	if err := c.JSON(status, gen.Error{Code: code, Message: message}); err != nil {
		s.log.Debug("writing an error response failed", "err", err)
	}
}

// requestLogger logs one line a request. It logs the path, never the query string, so that a
// source key sent as ?token= never reaches a log.
func (s *Server) requestLogger() echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURIPath: true, LogStatus: true, LogLatency: true, LogError: true,
		LogRemoteIP: true, LogContentLength: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelDebug // a line per accepted request would cost more than storing it
			switch {
			case v.Status >= 500:
				level = slog.LevelError
			case v.Status >= 400:
				level = slog.LevelInfo
			}
			s.log.LogAttrs(c.Request().Context(), level, "request",
				slog.String("method", v.Method), slog.String("path", v.URIPath),
				slog.Int("status", v.Status), slog.Duration("latency", v.Latency),
				slog.String("remote_ip", v.RemoteIP), slog.String("content_length", v.ContentLength))
			return nil
		},
	})
}

// sourceKey picks the key of a request: the token query parameter wins over the Authorization
// header.
func sourceKey(token, authorization *string) string {
	if token != nil && *token != "" {
		return *token
	}
	if authorization == nil {
		return ""
	}
	scheme, key, ok := strings.Cut(strings.TrimSpace(*authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(key)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
