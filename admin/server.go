// Package admin serves the config API of admin.yaml on the admin listener: sources and their keys,
// destinations and the event delivery API, the event inspector, data quality and admin tokens,
// beside the operations API (health, readiness, metrics), the spec itself (YAML and JSON), its
// docs page (Swagger UI at /docs/) and the web UI (/ui/).
//
// A request goes through, in order: the refusal of a token in the URL, a body read within
// MaxBodyBytes, kin-openapi's request validation with the admin token checked as the spec's
// security scheme (oapi-codegen's echo-middleware), then the strict handler generated from the
// spec, whose methods are in this package. Errors of every stage are JSON {"code", "message"}.
package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echomw "github.com/oapi-codegen/echo-middleware"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/gen/ops"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/webui"
)

// MaxBodyBytes bounds a request body of the config API (admin.yaml's x-trackapi-limits
// admin_body_bytes): the largest is a destination test's event, itself at most 32768 bytes.
const MaxBodyBytes = 65536

// RetryAfterSeconds is what a 503 asks clients to wait.
const RetryAfterSeconds = 1

// Store is what the config API reads and changes: sources, destinations with their delivery
// state, and the event log (for a destination's outgoing payloads).
type Store interface {
	trackapi.SourceStore
	trackapi.DeliveryStore
	trackapi.EventLog
}

// Config is what the config API needs from the rest of the program.
type Config struct {
	Store   Store
	Sources *sources.Service
	Tokens  Tokens
	// Inspector holds the event inspector's entries and the data-quality counts, and
	// WaitForEntries (the capturer's Wait) returns once an entry after an id is written, or ctx
	// ends: live streams wait on it rather than poll the store.
	Inspector      trackapi.InspectorStore
	WaitForEntries func(ctx context.Context, afterID int64) error
	// Sinks are the destination types this binary delivers to, to check a destination's settings
	// before it is stored and to test it.
	Sinks map[string]deliver.SinkFactory
	// Operations is the operations API (health, readiness, metrics), served beside this one.
	Operations ops.ServerInterface
	// DeliveryTimeout bounds a destination test's attempt (0: 10 s).
	DeliveryTimeout time.Duration
	// StreamHeartbeat is how often an idle live stream gets a comment line (0: 15 s).
	StreamHeartbeat time.Duration
	Logger          *slog.Logger     // nil: slog.Default()
	Now             func() time.Time // nil: time.Now
}

// Server implements adminapi.StrictServerInterface.
type Server struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	streams  *streamLimiter
	shutdown chan struct{}
	stopOnce sync.Once
}

var _ adminapi.StrictServerInterface = (*Server)(nil)

// New checks cfg and returns the server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Sources == nil || cfg.Tokens == nil || cfg.Inspector == nil || cfg.WaitForEntries == nil || cfg.Operations == nil {
		return nil, errors.New("admin: Config.Store, Sources, Tokens, Inspector, WaitForEntries and Operations are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DeliveryTimeout <= 0 {
		cfg.DeliveryTimeout = 10 * time.Second
	}
	if cfg.StreamHeartbeat <= 0 {
		cfg.StreamHeartbeat = defaultHeartbeat
	}
	return &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, streams: newStreamLimiter(maxStreamsPerToken),
		shutdown: make(chan struct{})}, nil
}

// Shutdown ends the live streams, which would otherwise keep http.Server.Shutdown waiting for
// their connections to go idle. Call it before shutting the HTTP server down.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() { close(s.shutdown) })
}

// Handler returns the Echo instance of the admin listener.
func (s *Server) Handler() (*echo.Echo, error) {
	spec, err := adminapi.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("admin: the embedded spec: %w", err)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.renderError
	e.Use(middleware.Recover())
	e.Use(s.requestLogger())
	e.Use(refuseTokenInURL)
	validator := echomw.OapiRequestValidatorWithOptions(spec, &echomw.Options{
		DoNotValidateServers: true,
		Options: openapi3filter.Options{
			AuthenticationFunc: s.authenticate,
			MultiError:         false,
		},
		// Only the config API's own routes are validated; the operations API and the spec are not
		// in admin.yaml's security.
		Skipper: func(c echo.Context) bool { return !strings.HasPrefix(c.Request().URL.Path, "/api/") },
	})
	// The generated routes go into a group, so that the body limit and the validator run after
	// routing and on the config API's routes only.
	api := e.Group("", readBody(MaxBodyBytes), validator)
	adminapi.RegisterHandlers(api, adminapi.NewStrictHandler(s, nil))
	ops.RegisterHandlers(e, withDocs{s.cfg.Operations})
	// The web UI: static files that call the API above with the token the person logs in with.
	ui := echo.WrapHandler(webui.Handler("/ui/"))
	e.GET("/ui/*", ui)
	e.HEAD("/ui/*", ui)
	toUI := func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") }
	e.GET("/ui", toUI)
	e.GET("/", toUI)
	e.RouteNotFound("/api/*", func(c echo.Context) error {
		return apiError(http.StatusNotFound, "not_found", "no such route: "+c.Request().Method+" "+c.Request().URL.Path)
	})
	return e, nil
}

// readBody reads the request body once, within limit, before kin-openapi reads it without a
// bound: a larger body, announced or chunked, is a 400 body_too_large.
func readBody(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.Body == nil || req.Body == http.NoBody {
				return next(c)
			}
			tooLarge := apiError(http.StatusBadRequest, "body_too_large", fmt.Sprintf("the request body is larger than %d bytes", limit))
			if req.ContentLength > limit {
				return tooLarge
			}
			b, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
			if err != nil {
				return apiError(http.StatusBadRequest, "bad_request", "reading the request body: "+err.Error())
			}
			if int64(len(b)) > limit {
				return tooLarge
			}
			req.Body = io.NopCloser(bytes.NewReader(b))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
			return next(c)
		}
	}
}

// apiError is an error the error handler renders as {"code", "message"} with status.
func apiError(status int, code, message string) *echo.HTTPError {
	return &echo.HTTPError{Code: status, Message: message, Internal: errorCode(code)}
}

// errorCode carries an Error code through an echo.HTTPError.
type errorCode string

func (c errorCode) Error() string { return string(c) }

// badRequest is a 400 found by a handler (a rule the spec cannot express, such as an end before
// its start); message names the field.
func badRequest(format string, args ...any) error {
	return apiError(http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...))
}

// renderError turns every error into the spec's Error body: echo.HTTPErrors from the middleware
// and the handlers, and the stores' errors (not found, conflict, unavailable); anything else is
// a 500 with the cause logged, never shown.
func (s *Server) renderError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, code, message := http.StatusInternalServerError, "internal", "internal error; the server log has the cause"
	var he *echo.HTTPError
	var ec errorCode
	switch {
	case errors.As(err, &he):
		status, message = he.Code, fmt.Sprint(he.Message)
		if errors.As(he.Internal, &ec) {
			code = string(ec)
		} else {
			code = codeOfStatus(status)
		}
	case errors.Is(err, trackapi.ErrNotFound):
		status, code, message = http.StatusNotFound, "not_found", err.Error()
	case errors.Is(err, trackapi.ErrConflict):
		status, code, message = http.StatusConflict, "conflict", err.Error()
	case errors.Is(err, trackapi.ErrUnavailable):
		status, code, message = http.StatusServiceUnavailable, "unavailable", "the store is unavailable; retry later"
		s.log.Warn("config API request failed: store unavailable", "path", c.Request().URL.Path, "err", err)
	case errors.Is(err, context.Canceled):
		return // the client went away
	default:
		s.log.Error("config API request failed", "path", c.Request().URL.Path, "err", err)
	}
	if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
	}
	if err := c.JSON(status, adminapi.Error{Code: adminapi.ErrorCode(code), Message: message}); err != nil {
		s.log.Debug("writing an error response failed", "err", err)
	}
}

// codeOfStatus is the Error code of a status set by a middleware that gave none.
func codeOfStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return "bad_request"
	case http.StatusRequestEntityTooLarge:
		return "body_too_large"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusTooManyRequests:
		return "too_many_streams"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	return "internal"
}

// requestLogger logs one line a request: the path, never the query string, and the token's id
// when it was authenticated, never the token.
func (s *Server) requestLogger() echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURIPath: true, LogStatus: true, LogLatency: true, LogRemoteIP: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelInfo
			if c.Request().Method == http.MethodGet && v.Status < 400 {
				level = slog.LevelDebug
			}
			if v.Status >= 500 {
				level = slog.LevelError
			}
			attrs := []slog.Attr{slog.String("method", v.Method), slog.String("path", v.URIPath),
				slog.Int("status", v.Status), slog.Duration("latency", v.Latency), slog.String("remote_ip", v.RemoteIP)}
			if t, ok := tokenOf(c); ok {
				attrs = append(attrs, slog.Int64("admin_token_id", t.ID))
			}
			s.log.LogAttrs(c.Request().Context(), level, "admin request", attrs...)
			return nil
		},
	})
}
