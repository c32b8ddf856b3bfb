package server

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trackapi/trackapi/metrics"
)

// The HTTP server's bounds: slow or stalled clients must not hold connections (and memory) for
// ever, nor may idle ones keep new ones out.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds a whole request; bodies are at most 500 KB, so 30 s to send one is
	// generous (and a body that stalls is cut off sooner, see DefaultBodyIdleTimeout).
	DefaultReadTimeout    = 30 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConnections caps open connections; it is lowered to fit the process's open-file
	// limit (see fitOpenFiles).
	DefaultMaxConnections = 10000
)

// Connection pressure: from pressureHigh of the cap, idle keep-alive connections are closed and
// answers close their connections, until fewer than pressureLow of the cap are open.
const (
	pressureHigh  = 0.8
	pressureLow   = 0.6
	pressureSweep = 250 * time.Millisecond
)

// HTTPOptions are the bounds of the HTTP server around a handler; zero values take the defaults.
type HTTPOptions struct {
	MaxConnections    int
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	Logger            *slog.Logger     // nil: slog.Default()
	Metrics           *metrics.Metrics // nil: none
	// TLS, when set, makes the server speak TLS (see TLSConfig), with HTTP/2 offered. Its
	// connections are not watched for smuggling (framingConn would see ciphertext): a request
	// with a Transfer-Encoding still closes its connection after its answer, so that nothing
	// after a chunked body is read as a request, but one that also has a Content-Length is
	// served rather than refused.
	TLS *tls.Config
}

// HTTPServer is an http.Server with its listener, bounded: at most MaxConnections connections are
// accepted at once (more wait in the kernel's backlog), idle connections are closed under
// pressure so that the cap is not held by clients that send nothing, and requests are watched for
// smuggling (see framingConn).
type HTTPServer struct {
	*http.Server
	// MaxConnections is the cap in effect: the one asked for, or less to fit the open-file limit.
	MaxConnections int
	listener       *boundedListener
}

// NewHTTPServer wraps ln and builds the server of h on it. Serve it with Serve, stop it with
// Shutdown.
func NewHTTPServer(h http.Handler, ln net.Listener, opts HTTPOptions) *HTTPServer {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	asked := opts.MaxConnections
	if asked <= 0 {
		asked = DefaultMaxConnections
	}
	capped, limit := fitOpenFiles(asked)
	if capped < asked {
		logger.Warn("fewer connections than asked: the open-file limit is low", "max_connections", capped,
			"asked", asked, "open_file_limit", limit)
	}
	bl := &boundedListener{Listener: ln, slots: make(chan struct{}, capped), done: make(chan struct{}), watch: opts.TLS == nil}
	hs := &HTTPServer{MaxConnections: capped, listener: bl}
	g := &connGuard{
		high: max(1, int(float64(capped)*pressureHigh)), low: int(float64(capped) * pressureLow),
		done: bl.done, metrics: opts.Metrics, log: logger,
	}
	hs.Server = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(opts.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(opts.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    int(orDefault(int64(opts.MaxHeaderBytes), DefaultMaxHeaderBytes)),
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ConnContext:       framingContext,
		ConnState:         g.connState,
		// Every request reaches the handler, so that each takes its own header block's framing
		// (net/http would answer OPTIONS * itself).
		DisableGeneralOptionsHandler: true,
		TLSConfig:                    opts.TLS,
	}
	g.srv = hs.Server
	return hs
}

// Serve accepts connections until Shutdown or Close: TLS ones (HTTP/2 or HTTP/1.1, as the client
// chooses) when HTTPOptions.TLS was set.
func (s *HTTPServer) Serve() error {
	if s.Server.TLSConfig != nil {
		return s.Server.ServeTLS(s.listener, "", "")
	}
	return s.Server.Serve(s.listener)
}

// boundedListener accepts at most cap(slots) connections at once, and wraps each in a
// framingConn. It is netutil.LimitListener's semaphore, written here because LimitListener's
// connections hide the TCP connection's CloseWrite, which net/http needs for its lingering close
// (answering a refused body before the reset).
type boundedListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	watch     bool // watch the framing of requests (plain HTTP only)
	closeOnce sync.Once
}

func (l *boundedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	fc := &framingConn{Conn: c, release: func() { <-l.slots }}
	if !l.watch {
		fc.state = stopped
	}
	return fc, nil
}

func (l *boundedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// connGuard counts open connections (http.Server.ConnState) and relieves pressure: from the high
// mark it turns keep-alives off, which closes idle connections at once (and those that sent
// nothing for 5 s) and makes every answer close its connection, and sweeps again every
// pressureSweep until the count falls under the low mark.
type connGuard struct {
	srv       *http.Server
	high, low int
	done      <-chan struct{}
	metrics   *metrics.Metrics
	log       *slog.Logger

	mu       sync.Mutex
	open     int
	pressure bool
}

func (g *connGuard) connState(_ net.Conn, state http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch state {
	case http.StateNew:
		g.open++
		if !g.pressure && g.open >= g.high {
			g.pressure = true
			g.log.Warn("many open connections: closing idle ones and keep-alives off", "open", g.open, "high_mark", g.high)
			g.srv.SetKeepAlivesEnabled(false)
			go g.relieve()
		}
	case http.StateClosed, http.StateHijacked:
		g.open--
	default:
		return
	}
	if g.metrics != nil {
		g.metrics.ObserveConnections(g.open, g.pressure)
	}
}

func (g *connGuard) relieve() {
	t := time.NewTicker(pressureSweep)
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-t.C:
		}
		g.mu.Lock()
		if g.open < g.low {
			g.pressure = false
			g.srv.SetKeepAlivesEnabled(true)
			g.log.Info("connections back under the low mark: keep-alives on", "open", g.open, "low_mark", g.low)
			if g.metrics != nil {
				g.metrics.ObserveConnections(g.open, false)
			}
			g.mu.Unlock()
			return
		}
		g.srv.SetKeepAlivesEnabled(false) // closes what went idle meanwhile
		g.mu.Unlock()
	}
}
