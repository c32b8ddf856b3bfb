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
	"net"
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
	// BodyWait how long a request waits for room, in all, before it gets a 503 (0:
	// DefaultBodyWait). BodyBudgetPerClient bounds what one client address holds of it (0: half
	// the budget, and never less than the largest body, a gzip batch and what it decompresses to).
	BodyBudget          int64
	BodyWait            time.Duration
	BodyBudgetPerClient int64
	// BodyIdleTimeout cuts off a body that sends nothing for that long (0:
	// DefaultBodyIdleTimeout); BodyTimeout bounds the whole body (0: DefaultBodyTimeout).
	BodyIdleTimeout time.Duration
	BodyTimeout     time.Duration
	// StoreTimeout bounds storing a request's events once its body is read (0:
	// DefaultStoreTimeout). That phase does not end when the client hangs up: events handed to
	// the store are committed and answered.
	StoreTimeout time.Duration
	// TrustedProxies are the networks whose X-Forwarded-For is believed: the client address of a
	// request (in logs and for the per-client share of the budget) is then the nearest address of
	// that header not in them. Empty: the connection's peer address, whatever the headers say.
	TrustedProxies []*net.IPNet
	// CORSOrigins are the origins whose pages may send events and read the answers from a
	// browser (see ParseCORSOrigins for their form). Empty: every origin (see cors).
	CORSOrigins []string
}

// DefaultStoreTimeout bounds storing one request's events (a commit takes milliseconds; this is
// for a store that hangs), as long as the server's write timeout.
const DefaultStoreTimeout = 30 * time.Second

// largestClaim is the most one request may hold: a gzip batch at its limit and what it
// decompresses to.
const largestClaim = 2 * (trackapi.BatchBodyLimit + 1)

// Server implements echoapi.ServerInterface.
type Server struct {
	collector    *ingest.Collector
	ready        func(context.Context) error
	metrics      *metrics.Metrics
	bodies       *bodyBudget
	bodyIdle     time.Duration
	bodyTimeout  time.Duration
	storeTimeout time.Duration
	clientIP     echo.IPExtractor
	corsOrigins  []string // nil: every origin
	log          *slog.Logger
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
	var err error
	s := &Server{collector: cfg.Collector, ready: cfg.Ready, metrics: cfg.Metrics, log: log,
		bodyIdle:     orDefault(cfg.BodyIdleTimeout, DefaultBodyIdleTimeout),
		bodyTimeout:  orDefault(cfg.BodyTimeout, DefaultBodyTimeout),
		storeTimeout: orDefault(cfg.StoreTimeout, DefaultStoreTimeout),
		clientIP:     clientIPExtractor(cfg.TrustedProxies),
	}
	if s.corsOrigins, err = ParseCORSOrigins(cfg.CORSOrigins); err != nil {
		return nil, fmt.Errorf("server: Config.CORSOrigins: %w", err)
	}
	if s.ready == nil {
		s.ready = func(context.Context) error { return nil }
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	budget := orDefault(cfg.BodyBudget, DefaultBodyBudget)
	perClient := cfg.BodyBudgetPerClient
	if perClient <= 0 {
		perClient = max(budget/2, min(budget, largestClaim))
	}
	s.bodies = newBodyBudget(budget, perClient, cfg.BodyWait)
	s.bodies.observe = s.metrics.ObserveBodyBudget
	return s, nil
}

func orDefault[T int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// clientIPExtractor is how a request's client address is found: from X-Forwarded-For only when
// the connection comes from a trusted proxy (not even loopback or private addresses are trusted
// by default), else the connection's peer. Echo's default would believe X-Forwarded-For and
// X-Real-IP from anyone, so any client could log itself as any address.
func clientIPExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	options := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		options = append(options, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(options...)
}

// Handler returns the Echo instance serving the collect API (POST /events, /events/ and
// /events/batch, and their pixel and /cdp aliases) and the operations API but its metrics, which
// are on the admin listener: health and readiness (GET /healthz, /readyz), the collect API's spec
// (GET /openapi.yaml, /openapi.json) and its docs page (GET /docs/), with errors rendered as the
// spec's Error body, CORS for browser trackers, and one log line a request.
func (s *Server) Handler() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.renderError
	e.IPExtractor = s.clientIP
	e.Use(middleware.Recover())
	e.Use(s.requestLogger())
	e.Use(checkFraming)
	e.Use(cors(s.corsOrigins))
	// POST /events, /events/ and /events/batch, GET /events (the pixel)
	echoapi.RegisterHandlersWithOptions(e, s, echoapi.RegisterHandlersOptions{
		OperationMiddlewares: map[string][]echo.MiddlewareFunc{"collectPixel": {noCache}}})
	// The same operations under /cdp/events (openapi.yaml's x-trackapi-aliases), and the pixel
	// with a trailing slash too.
	wrapper := echoapi.ServerInterfaceWrapper{Handler: s}
	e.GET("/events/", wrapper.CollectPixel, noCache)
	e.POST("/cdp/events", wrapper.CollectEvent)
	e.POST("/cdp/events/", wrapper.CollectEventSlash)
	e.POST("/cdp/events/batch", wrapper.CollectBatch)
	e.GET("/cdp/events", wrapper.CollectPixel, noCache)
	e.GET("/cdp/events/", wrapper.CollectPixel, noCache)
	// All of the operations API but the metrics, which are for operators, on the admin listener.
	opsAPI := ops.ServerInterfaceWrapper{Handler: operations{ready: s.ready, metrics: s.metrics}}
	e.GET("/healthz", opsAPI.GetHealth)
	e.HEAD("/healthz", opsAPI.HeadHealth)
	e.GET("/readyz", opsAPI.GetReadiness)
	e.HEAD("/readyz", opsAPI.HeadReadiness)
	// The collect API's spec and its docs page, for partners.
	e.GET("/openapi.yaml", opsAPI.GetCollectSpec)
	e.GET("/openapi.json", opsAPI.GetCollectSpecJson)
	e.GET("/docs", opsAPI.RedirectDocs)
	e.GET("/docs/", opsAPI.GetDocs)
	e.GET("/docs/:asset", opsAPI.GetDocsAsset)
	return e
}

// CollectBases are the paths the collect API is served under: /events, and /cdp/events, where
// the vendor's web container sends on a first-party domain (openapi.yaml's x-trackapi-aliases).
// Each serves the same operations, without and with the trailing slash.
var CollectBases = []string{"/events", "/cdp/events"}

// endpoint is what differs between the collect endpoints.
type endpoint struct {
	name      string // the metrics label
	bodyLimit int64
	batch     bool
}

var (
	singleEndpoint = endpoint{name: "single", bodyLimit: trackapi.SingleBodyLimit}
	batchEndpoint  = endpoint{name: "batch", bodyLimit: trackapi.BatchBodyLimit, batch: true}
	// pixelEndpoint has no body: its event is built from the query (see pixel.go).
	pixelEndpoint = endpoint{name: "pixel", bodyLimit: trackapi.SingleBodyLimit}
)

// CollectEvent handles POST /events: one event.
func (s *Server) CollectEvent(c echo.Context, params gen.CollectEventParams) error {
	return s.handle(c, singleEndpoint, params.TcS, sourceKey(params.Token, c.Request().Header))
}

// CollectEventSlash handles POST /events/, the vendor's URL for one event, as POST /events.
func (s *Server) CollectEventSlash(c echo.Context, params gen.CollectEventSlashParams) error {
	return s.handle(c, singleEndpoint, params.TcS, sourceKey(params.Token, c.Request().Header))
}

// CollectBatch handles POST /events/batch: {"batch": [event, ...]}.
func (s *Server) CollectBatch(c echo.Context, params gen.CollectBatchParams) error {
	return s.handle(c, batchEndpoint, params.TcS, sourceKey(params.Token, c.Request().Header))
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

	// Memory is bounded while the body is read: it holds of the budget what has arrived, and
	// waits (at most BodyWait) when that would leave the requests in flight unable to finish.
	collect := ingest.Request{Batch: ep.batch, Site: deref(site), Key: key, ClientIP: c.RealIP()}
	body, held, err := s.readBody(c, ep.bodyLimit)
	defer held.close()
	if err != nil {
		collect.Body = body // what was read, if anything, for the inspector
		return s.bodyFailed(c, err, collect, &observed)
	}
	observed.BodyBytes = len(body)
	collect.Body = body
	return s.collect(c, collect, &observed, answerJSON)
}

// answerJSON is a collect request's 200: the CollectResult.
func answerJSON(c echo.Context, result gen.CollectResult) error {
	return c.JSON(http.StatusOK, result)
}

// noCache keeps every cache from answering a pixel in the server's place, whatever the answer
// (an event would go uncounted); it runs before the parameters are read, so that Echo's own 400s
// have it too.
func noCache(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")
		h.Set("Pragma", "no-cache")
		h.Set("Expires", "0")
		return next(c)
	}
}

// CollectPixel handles GET /events: one event in the query string (see pixel.go), collected as
// if POSTed; the answer is a transparent 1×1 GIF, or the CollectResult for a request that
// accepts JSON.
func (s *Server) CollectPixel(c echo.Context, params gen.CollectPixelParams) error {
	start := time.Now()
	observed := metrics.Request{Endpoint: pixelEndpoint.name}
	defer func() {
		observed.Took = time.Since(start)
		s.metrics.ObserveRequest(observed)
	}()
	collect := ingest.Request{Site: deref(params.TcS), Key: sourceKey(params.Token, c.Request().Header), ClientIP: c.RealIP()}
	rawQuery := c.Request().URL.RawQuery
	if len(rawQuery) <= trackapi.PixelQueryLimit {
		// What building the event holds is held of the body budget, as a body would be.
		held := s.bodies.claim(c.RealIP(), pixelClaim(rawQuery))
		defer held.close()
		if err := held.grow(c.Request().Context(), pixelClaim(rawQuery)); err != nil {
			return s.bodyFailed(c, err, collect, &observed)
		}
	}
	body, refusal := pixelEvent(rawQuery)
	if refusal != nil {
		s.inspectRefusal(c, collect, refusal)
		return s.refused(c, refusal, &observed)
	}
	observed.BodyBytes = len(body)
	collect.Body = body
	return s.collect(c, collect, &observed, answerPixel)
}

// answerPixel is a pixel's 200: the GIF, or the CollectResult when the request accepts JSON.
func answerPixel(c echo.Context, result gen.CollectResult) error {
	if acceptsJSON(c.Request().Header.Values("Accept")) {
		return c.JSON(http.StatusOK, result)
	}
	return c.Blob(http.StatusOK, "image/gif", transparentGIF)
}

// collect stores a request's events and answers: with answer for a 200, or with the error's
// status.
func (s *Server) collect(c echo.Context, collect ingest.Request, observed *metrics.Request, answer func(echo.Context, gen.CollectResult) error) error {
	req := c.Request()
	// From here the request is the server's to finish: a client that hangs up (or half-closes its
	// side after sending) cancels the request's context, but events handed to the store are
	// committed, and answered, whatever the client does next; only the server's own bound ends it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), s.storeTimeout)
	defer cancel()
	result, err := s.collector.Collect(ctx, collect)
	if err != nil {
		return s.failed(c, err, observed)
	}
	observed.Status, observed.Outcome = http.StatusOK, "ok"
	observed.Accepted, observed.Duplicates = result.Accepted, result.Duplicates
	// Counted from the listed and the omitted problems, since a long list is cut in the answer.
	rejected, warnings := ingest.ProblemCounts(result)
	observed.Rejected, observed.IDReused = rejected, warnings[string(gen.EventIdReused)]
	return answer(c, result)
}

// bodyFailed answers a request whose body could not be read: a 400 for a refusal, a 503 when the
// budget had no room in time, or, when the client went away while waiting for room, a 400 nobody
// reads. The inspector is told about the 400s (req.Body is what was read of the body, if
// anything); the collector tells it about the refusals made after the body was read.
func (s *Server) bodyFailed(c echo.Context, err error, req ingest.Request, observed *metrics.Request) error {
	var refusal *ingest.Refusal
	switch {
	case errors.As(err, &refusal):
	case errors.Is(err, errOverloaded):
		observed.Status, observed.Outcome = http.StatusServiceUnavailable, "overloaded"
		return s.overloaded(c, err)
	default: // the request's context ended: the connection is gone
		refusal = ingest.Refuse(gen.ErrorCodeInvalidJson, "the connection ended before the request body was read")
	}
	s.inspectRefusal(c, req, refusal)
	return s.refused(c, refusal, observed)
}

// inspectRefusalTimeout bounds the check of a refused request's credentials for the inspector
// (an in-memory lookup, or one query for a key not seen lately), which may outlive the client.
const inspectRefusalTimeout = time.Second

// inspectRefusal tells the collector's inspector about a request the HTTP layer refused.
func (s *Server) inspectRefusal(c echo.Context, req ingest.Request, refusal *ingest.Refusal) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), inspectRefusalTimeout)
	defer cancel()
	s.collector.InspectRefusal(ctx, req, refusal)
}

// failed answers a request the collector could not complete, by the class of its error.
func (s *Server) failed(c echo.Context, err error, observed *metrics.Request) error {
	var refusal *ingest.Refusal
	switch {
	case errors.As(err, &refusal):
		return s.refused(c, refusal, observed)
	case errors.Is(err, trackapi.ErrUnavailable), errors.Is(err, context.DeadlineExceeded): // the store, or StoreTimeout
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

// unavailable answers 503 for a store that cannot commit: nothing of the request was
// acknowledged, and a retry is safe because events are deduplicated on their id.
func (s *Server) unavailable(c echo.Context, err error) error {
	s.log.Error("storing events failed; answering 503", "path", c.Request().URL.Path, "err", err)
	c.Response().Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
	return c.JSON(http.StatusServiceUnavailable, gen.Error{
		Code: gen.ErrorCodeUnavailable, Message: "the event store cannot commit right now; retry later",
	})
}

// overloadedMessage is the 503 of a request the body budget had no room for: the same code as a
// store that cannot commit (clients retry both the same way), and a message that tells them apart.
const overloadedMessage = "the server is overloaded: too many request bodies in flight; retry later"

// overloaded answers 503 for a request the body budget had no room for in time. The store is
// fine, so this is no error of the server's: the request's log line says it at warn level. The
// connection is closed rather than read to the end of a body nobody wants.
func (s *Server) overloaded(c echo.Context, err error) error {
	c.Set(logReasonKey, err.Error())
	c.Response().Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
	c.Response().Header().Set("Connection", "close")
	return c.JSON(http.StatusServiceUnavailable, gen.Error{Code: gen.ErrorCodeUnavailable, Message: overloadedMessage})
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
		s.inspectEchoRefusal(c, code, message)
	case http.StatusRequestEntityTooLarge:
		status, code = http.StatusBadRequest, gen.ErrorCodePayloadTooLarge
		s.inspectEchoRefusal(c, code, message)
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

// inspectEchoRefusal tells the inspector about a 400 that Echo made for a collect request before
// its handler ran (a parameter given twice, say). Its site and key are read as the handlers read
// them (the first value of each); nothing of the body was read.
func (s *Server) inspectEchoRefusal(c echo.Context, code gen.ErrorCode, message string) {
	req := c.Request()
	batch, ok := collectOperation(req.Method, req.URL.Path)
	if !ok {
		return
	}
	token := req.URL.Query().Get("token")
	s.inspectRefusal(c, ingest.Request{
		Batch: batch, Site: req.URL.Query().Get("tc_s"), Key: sourceKey(&token, req.Header), ClientIP: c.RealIP(),
	}, ingest.Refuse(code, "%s", message))
}

// collectOperation tells whether method and path are a collect operation's, and whether a batch.
func collectOperation(method, path string) (batch, ok bool) {
	for _, base := range CollectBases {
		switch {
		case path == base || path == base+"/":
			return false, method == http.MethodPost || method == http.MethodGet
		case path == base+"/batch":
			return true, method == http.MethodPost
		}
	}
	return false, false
}

// logReasonKey is where a handler leaves, for the request's log line, why it refused a request.
const logReasonKey = "trackapi.reason"

// requestLogger logs one line a request. It logs the path, never the query string, so that a
// source key sent as ?token= never reaches a log.
func (s *Server) requestLogger() echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURIPath: true, LogStatus: true, LogLatency: true, LogError: true,
		LogRemoteIP: true, LogContentLength: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelDebug // a line per accepted request would cost more than storing it
			reason, _ := c.Get(logReasonKey).(string)
			switch {
			case v.Status == http.StatusServiceUnavailable && reason != "":
				level = slog.LevelWarn // overloaded: refused on purpose, not a fault
			case v.Status >= 500:
				level = slog.LevelError
			case v.Status >= 400:
				level = slog.LevelInfo
			}
			attrs := []slog.Attr{slog.String("method", v.Method), slog.String("path", v.URIPath),
				slog.Int("status", v.Status), slog.Duration("latency", v.Latency),
				slog.String("remote_ip", v.RemoteIP), slog.String("content_length", v.ContentLength)}
			if reason != "" {
				attrs = append(attrs, slog.String("reason", reason))
			}
			s.log.LogAttrs(c.Request().Context(), level, "request", attrs...)
			return nil
		},
	})
}

// sourceKey picks the key of a request: the token query parameter wins over the Authorization
// header. The header is a singleton (RFC 9110): given more than once, its repeats of one value
// count once, and different values name no key (the request's events are then rejected as
// invalid_source), rather than the server picking one of them.
func sourceKey(token *string, header http.Header) string {
	if token != nil && *token != "" {
		return *token
	}
	values := header.Values("Authorization")
	if len(values) == 0 {
		return ""
	}
	for _, v := range values[1:] {
		if v != values[0] {
			return ""
		}
	}
	scheme, key, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
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
