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
)

// RetryAfterSeconds is what a 503 asks clients to wait. Commits take milliseconds, so one second
// is enough for a transient fault to clear without making clients idle for long.
const RetryAfterSeconds = 1

// Config is what the server needs from the rest of the program.
type Config struct {
	Events  trackapi.EventStore
	Sources trackapi.SourceStore
	Logger  *slog.Logger // nil: slog.Default()
}

// Server implements gen.ServerInterface.
type Server struct {
	store   trackapi.EventStore
	sources *sourceCache
	events  *eventProcessor
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
	return &Server{store: cfg.Events, sources: newSourceCache(cfg.Sources, log), events: events, log: log}, nil
}

// Handler returns the Echo instance serving the collect API: POST /events (and /events/) and
// POST /events/batch, with errors rendered as the spec's Error body and one log line a request.
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
	return e
}

// CollectEvent handles POST /events: one event.
func (s *Server) CollectEvent(c echo.Context, params gen.CollectEventParams) error {
	body, refusal := readBody(c.Request(), SingleBodyLimit)
	if refusal == nil {
		refusal = checkJSON(body)
	}
	if refusal == nil && !isObject(body) {
		refusal = refuse(gen.ErrorCodeInvalidPayload, "an event must be a JSON object")
	}
	if refusal != nil {
		return s.badRequest(c, refusal)
	}
	return s.collect(c, params.TcS, sourceKey(params.Token, params.Authorization), []json.RawMessage{body}, false)
}

// CollectBatch handles POST /events/batch: {"batch": [event, ...]}.
func (s *Server) CollectBatch(c echo.Context, params gen.CollectBatchParams) error {
	body, refusal := readBody(c.Request(), BatchBodyLimit)
	if refusal == nil {
		refusal = checkJSON(body)
	}
	var events []json.RawMessage
	if refusal == nil {
		events, refusal = splitBatch(body)
	}
	if refusal != nil {
		return s.badRequest(c, refusal)
	}
	return s.collect(c, params.TcS, sourceKey(params.Token, params.Authorization), events, true)
}

// collect authenticates, processes and stores the events of a usable request, and answers 200
// only once the accepted ones are on disk.
func (s *Server) collect(c echo.Context, site *string, key string, raws []json.RawMessage, inBatch bool) error {
	ctx := c.Request().Context()
	receivedAt := time.Now()
	result := gen.CollectResult{Received: len(raws), Errors: []gen.Problem{}, Warnings: []gen.Problem{}}

	source, ok := s.sources.authenticate(ctx, deref(site), key)
	if !ok {
		for i := range raws {
			result.Errors = append(result.Errors, gen.Problem{
				Index: i, Code: gen.InvalidSource, Path: "",
				Message: "missing, unknown or deactivated source: check tc_s and the source key",
			})
		}
		result.Rejected = len(raws)
		return c.JSON(http.StatusOK, result)
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
			return s.unavailable(c, err)
		}
		for _, isNew := range stored {
			if isNew {
				result.Accepted++
			} else {
				result.Duplicates++
			}
		}
	}
	return c.JSON(http.StatusOK, result)
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
	if !errors.Is(err, context.Canceled) {
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
