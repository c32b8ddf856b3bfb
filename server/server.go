// Package server is the HTTP side of trackapi: Echo handlers implementing the generated
// gen.ServerInterface for the collect endpoints. The data path is, in order: readBody (limits on the
// wire), checkJSON and splitBatch (the 400s), sourceCache.authenticate (invalid_source),
// eventProcessor.process (normalise, validate, decide what to store), then EventStore.StoreEvents,
// which returns only once the events are synced to disk; only then is the 200 written.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/ops"
	"github.com/trackapi/trackapi/metrics"
)

// RetryAfterSeconds is what a 503 asks clients to wait. Commits take milliseconds, so one second
// is enough for a transient fault to clear without making clients idle for long.
const RetryAfterSeconds = 1

// Config is what the server needs from the rest of the program.
type Config struct {
	Events  trackapi.EventStore
	Sources trackapi.SourceStore
	// Ready reports whether the store can commit right now, for GET /readyz. nil: always ready.
	Ready   func(context.Context) error
	Metrics *metrics.Metrics // nil: a new set
	Logger  *slog.Logger     // nil: slog.Default()
	// BodyBudget bounds the bytes of request bodies held at once (0: DefaultBodyBudget), and
	// BodyWait how long a request waits for room before it gets a 503 (0: DefaultBodyWait).
	BodyBudget int64
	BodyWait   time.Duration
}

// Server implements gen.ServerInterface.
type Server struct {
	store   trackapi.EventStore
	sources *sourceCache
	events  *eventProcessor
	ready   func(context.Context) error
	metrics *metrics.Metrics
	bodies  *bodyBudget
	log     *slog.Logger
}

var _ gen.ServerInterface = (*Server)(nil)

// New builds the collect handlers.
func New(cfg Config) (*Server, error) {
	if cfg.Events == nil || cfg.Sources == nil {
		return nil, errors.New("server: Config.Events and Config.Sources are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	events, err := newEventProcessor()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{store: cfg.Events, sources: newSourceCache(cfg.Sources, log), events: events,
		ready: cfg.Ready, metrics: cfg.Metrics, bodies: newBodyBudget(cfg.BodyBudget, cfg.BodyWait), log: log}
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
	gen.RegisterHandlersWithBaseURL(e, s, "/events") // POST /events/ and POST /events/batch
	wrapper := gen.ServerInterfaceWrapper{Handler: s}
	e.POST("/events", wrapper.CollectEvent)
	ops.RegisterHandlers(e, operations{ready: s.ready, metrics: s.metrics})
	return e
}

// endpoint is what differs between the two collect endpoints.
type endpoint struct {
	name      string // the metrics label
	bodyLimit int64
	split     func(body []byte) ([]json.RawMessage, *requestError)
	inBatch   bool
}

var (
	singleEndpoint = endpoint{name: "single", bodyLimit: SingleBodyLimit, split: splitSingle}
	batchEndpoint  = endpoint{name: "batch", bodyLimit: BatchBodyLimit, split: splitBatch, inBatch: true}
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
	if refusal == nil {
		refusal = checkJSON(body)
	}
	var events []json.RawMessage
	if refusal == nil {
		events, refusal = ep.split(body)
	}
	observed.BodyBytes = len(body)
	if refusal != nil {
		observed.Status, observed.Outcome = http.StatusBadRequest, string(refusal.code)
		return s.badRequest(c, refusal)
	}
	result, err := s.collect(c.Request().Context(), deref(site), key, events, ep.inBatch)
	if err != nil {
		observed.Status, observed.Outcome = http.StatusServiceUnavailable, "unavailable"
		return s.unavailable(c, err)
	}
	observed.Status, observed.Outcome = http.StatusOK, "ok"
	observed.Accepted, observed.Duplicates = result.Accepted, result.Duplicates
	if len(result.Errors) > 0 {
		observed.Rejected = map[string]int{}
		for _, e := range result.Errors {
			observed.Rejected[string(e.Code)]++
		}
	}
	return c.JSON(http.StatusOK, result)
}

// collect authenticates, processes and stores the events of a usable request. It returns once the
// accepted ones are on disk, or with the store's error when they could not be stored.
func (s *Server) collect(ctx context.Context, site, key string, raws []json.RawMessage, inBatch bool) (gen.CollectResult, error) {
	receivedAt := time.Now()
	result := gen.CollectResult{Received: len(raws), Errors: []gen.Problem{}, Warnings: []gen.Problem{}}

	source, ok, err := s.sources.authenticate(ctx, site, key)
	if err != nil {
		return gen.CollectResult{}, err
	}
	if !ok {
		for i := range raws {
			result.Errors = append(result.Errors, gen.Problem{
				Index: i, Code: gen.InvalidSource, Path: "",
				Message: "missing, unknown or deactivated source: check tc_s and the source key",
			})
		}
		result.Rejected = len(raws)
		return result, nil
	}

	toStore := make([]trackapi.Event, 0, len(raws))
	for i, raw := range raws {
		p := s.events.process(raw, inBatch, receivedAt)
		if p.rejected != nil {
			result.Errors = append(result.Errors, problemAt(i, *p.rejected))
			result.Rejected++
			continue
		}
		for _, w := range p.warnings {
			result.Warnings = append(result.Warnings, problemAt(i, w))
		}
		toStore = append(toStore, trackapi.Event{
			SourceID: source.ID, Site: source.Site, EventID: p.eventID,
			ReceivedAt: receivedAt.UnixMilli(), Body: p.body, Warnings: p.warnings,
		})
	}

	if len(toStore) > 0 {
		stored, err := s.store.StoreEvents(ctx, toStore)
		if err != nil {
			return gen.CollectResult{}, err
		}
		for _, isNew := range stored {
			if isNew {
				result.Accepted++
			} else {
				result.Duplicates++
			}
		}
	}
	return result, nil
}

func problemAt(index int, p trackapi.Problem) gen.Problem {
	return gen.Problem{Index: index, Code: gen.ProblemCode(p.Code), Path: p.Path, Message: p.Message}
}

func (s *Server) badRequest(c echo.Context, r *requestError) error {
	if r.code == gen.ErrorCodePayloadTooLarge {
		// The rest of the body is not wanted. Without this, net/http would read up to 256 KB of it
		// before answering, to keep the connection; closing it answers at once.
		c.Response().Header().Set("Connection", "close")
	}
	return c.JSON(http.StatusBadRequest, gen.Error{Code: r.code, Message: r.message, Index: r.index})
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

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
