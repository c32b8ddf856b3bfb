package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trackapi/trackapi/admin"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
	"github.com/trackapi/trackapi/metrics"
	"github.com/trackapi/trackapi/server"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
)

// drainTimeout bounds the graceful stop: in-flight requests get this long to finish. The HTTP
// server's own bounds (timeouts, connection cap) are server.HTTPOptions'.
const drainTimeout = 30 * time.Second

// serveCmd runs the collect server and, on its own listener, the config API.
type serveCmd struct {
	dataFlag
	Addr string `default:":8080" help:"Address to listen on."`
	// AdminAddr is the config API's own listener, on loopback by default: it holds the keys to
	// everything, and metrics are for operators only.
	AdminAddr string `default:"127.0.0.1:8081" env:"TRACKAPI_ADMIN_ADDR" help:"Address of the admin listener: the config API (/api/), its spec (/admin.yaml), /metrics, /healthz and /readyz."`
	LogLevel  string `default:"info" enum:"debug,info,warn,error" help:"debug, info, warn or error."`
	// Retention bounds the disk: events older than this are deleted once every destination has
	// settled them (those still unsettled are counted expired, never dropped silently).
	Retention days `default:"7d" help:"Delete stored events older than this (e.g. 7d, 36h); unsettled ones are counted expired."`
	// The retry policy of every destination; the defaults suit production, tests shorten them.
	DeliveryTimeout    time.Duration `default:"10s" help:"Time one delivery attempt may take."`
	DeliveryBackoff    time.Duration `default:"5s" help:"Wait before the first retry; it doubles at each failure, with full jitter."`
	DeliveryBackoffMax time.Duration `default:"5m" help:"Longest wait between retries."`
	DeliveryGiveUp     time.Duration `default:"4h" help:"Give up on an event (dead letter 'failed') this long after its first failure, once it had 3 attempts."`
	// The HTTP server's bounds.
	MaxConnections int      `default:"10000" help:"Most client connections open at once (lowered to fit the open-file limit); more wait to be accepted."`
	TrustedProxies []string `sep:"," placeholder:"CIDR" help:"Proxies whose X-Forwarded-For gives the client address (e.g. 10.0.0.0/8); by default none, and the address is the connection's."`
	// CORSOrigins is the allow-list of the pages that may send events from a browser and read the
	// answers; by default every origin is reflected (credentials are allowed, so * would not do).
	CORSOrigins []string `name:"cors-origins" sep:"," placeholder:"ORIGIN" help:"Origins (scheme://host[:port]) whose pages may send events from a browser and read the answers, e.g. https://www.shop.example,https://m.shop.example; by default any origin (reflected, with credentials)."`
	// TLS on both listeners, HTTP/2 offered; the files are loaded again when they change.
	TLSCert string `name:"tls-cert" type:"path" placeholder:"FILE" help:"PEM certificate (with its chain) to serve TLS on both listeners, HTTP/2 offered; reloaded within a second of changing. Needs --tls-key."`
	TLSKey  string `name:"tls-key" type:"path" placeholder:"FILE" help:"PEM private key of --tls-cert."`
}

// Run wires the store, the source service, the event rules and the HTTP server, serves until
// SIGINT or SIGTERM, then drains in-flight requests and closes the store.
func (c *serveCmd) Run(env *runEnv) error {
	log, err := newLogger(env.stderr, c.LogLevel)
	if err != nil {
		return err
	}
	tuneGC()
	if c.Retention <= 0 {
		return usageError{fmt.Errorf("--retention must be positive")}
	}
	if c.MaxConnections <= 0 {
		return usageError{fmt.Errorf("--max-connections must be positive")}
	}
	proxies, err := parseNetworks(c.TrustedProxies)
	if err != nil {
		return usageError{fmt.Errorf("--trusted-proxies: %w", err)}
	}
	corsOrigins, err := server.ParseCORSOrigins(c.CORSOrigins)
	if err != nil {
		return usageError{fmt.Errorf("--cors-origins: %w", err)}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return usageError{fmt.Errorf("--tls-cert and --tls-key go together")}
	}
	var tlsConfig *tls.Config
	scheme := "http"
	if c.TLSCert != "" {
		certs, err := server.NewCertReloader(c.TLSCert, c.TLSKey, log)
		if err != nil {
			return usageError{fmt.Errorf("--tls-cert/--tls-key: %w", err)}
		}
		tlsConfig, scheme = server.TLSConfig(certs), "https"
	}
	m := metrics.New()
	// The delivery engine is woken after every commit of events; it is made once the store is
	// open, so the hook reaches it through a pointer.
	var engine atomic.Pointer[deliver.Engine]
	onCommit := func(requests, events int, took time.Duration, err error) {
		m.ObserveCommit(requests, events, took, err)
		if e := engine.Load(); e != nil && err == nil {
			e.Notify()
		}
	}
	db, err := openStore(c.Data, true, sqlite.Options{OnCommit: onCommit})
	if err != nil {
		return err
	}
	defer db.Close()
	delivery, err := deliver.New(deliver.Config{
		Store: db, Log: db, Sinks: sinkFactories(log), Logger: log,
		Policy: deliver.Policy{AttemptTimeout: c.DeliveryTimeout, BackoffBase: c.DeliveryBackoff,
			BackoffMax: c.DeliveryBackoffMax, GiveUpAfter: c.DeliveryGiveUp},
		Observer: deliver.Observer{Attempts: m.ObserveDelivery, State: m.ObserveDestination},
	})
	if err != nil {
		return err
	}
	engine.Store(delivery)
	keys := sources.New(db, sources.Options{Logger: log, OnAuthenticate: m.ObserveAuth, OnLookup: m.ObserveKeyLookup})
	defer keys.Close(context.Background())
	tokens := admintokens.New(db, admintokens.Options{Logger: log})
	defer tokens.Close(context.Background())
	capture, err := inspector.New(inspector.Config{Store: db, Logger: log, OnDrop: m.ObserveInspectorDropped})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Addr, err)
	}
	defer ln.Close()
	adminLn, err := net.Listen("tcp", c.AdminAddr)
	if err != nil {
		return fmt.Errorf("listening on %s (--admin-addr): %w", c.AdminAddr, err)
	}
	defer adminLn.Close()
	if err := createFirstSource(env.ctx, keys, scheme+"://"+curlHost(ln.Addr()), env.stdout); err != nil {
		return err
	}
	if err := createFirstAdminToken(env.ctx, tokens, scheme+"://"+curlHost(adminLn.Addr())+"/ui/", env.stdout); err != nil {
		return err
	}
	collector, err := ingest.New(ingest.Config{Store: db, Sources: keys, Logger: log, Inspector: capture})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Collector: collector, Ready: db.Ping, Metrics: m, Logger: log, TrustedProxies: proxies,
		CORSOrigins: corsOrigins})
	if err != nil {
		return err
	}
	httpServer := server.NewHTTPServer(srv.Handler(), ln, server.HTTPOptions{
		MaxConnections: c.MaxConnections, Logger: log, Metrics: m, TLS: tlsConfig,
	})
	adminSrv, err := admin.New(admin.Config{Store: db, Sources: keys, Tokens: tokens, Inspector: db,
		WaitForEntries: capture.Wait, Sinks: sinkFactories(log), Operations: server.Operations(db.Ping, m),
		DeliveryTimeout: c.DeliveryTimeout, Logger: log})
	if err != nil {
		return err
	}
	adminHandler, err := adminSrv.Handler()
	if err != nil {
		return err
	}
	// The admin listener is for a few operators and their tools: the server's defaults bound it.
	adminHTTP := server.NewHTTPServer(adminHandler, adminLn, server.HTTPOptions{MaxConnections: 100, Logger: log, TLS: tlsConfig})

	ctx, stop := signal.NotifyContext(env.ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 2)
	go func() { served <- httpServer.Serve() }()
	go func() { served <- adminHTTP.Serve() }()
	// Delivery and retention run until the HTTP server has drained, so that events acknowledged
	// during the drain are still routed; then the workers settle what they sent.
	background, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	var running sync.WaitGroup
	running.Go(func() { _ = delivery.Run(background) })
	running.Go(func() { _ = capture.Run(background) })
	running.Go(func() {
		inspector.Retention{Store: db, Logger: log}.Run(background)
	})
	running.Go(func() {
		deliver.Retention{Store: db, Keep: time.Duration(c.Retention), Observe: m.ObserveRetention, Logger: log}.Run(background)
	})
	log.Info("listening", "addr", ln.Addr().String(), "admin_addr", adminLn.Addr().String(), "data", c.Data,
		"max_connections", httpServer.MaxConnections, "cors_origins", corsSetting(corsOrigins), "tls", tlsConfig != nil)

	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	// Stop accepting, let in-flight requests finish (each waits for its commit), then close the
	// store, which drains its committer.
	log.Info("shutting down: draining in-flight requests")
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	adminSrv.Shutdown() // ends the live streams, which would keep the admin server's drain waiting
	if err := httpServer.Shutdown(drainCtx); err != nil {
		log.Error("draining did not finish in time", "err", err)
	}
	if err := adminHTTP.Shutdown(drainCtx); err != nil {
		log.Error("draining the admin listener did not finish in time", "err", err)
	}
	log.Info("shutting down: letting deliveries in flight settle")
	stopBackground()
	running.Wait()
	if err := keys.Close(drainCtx); err != nil {
		log.Warn("writing when source keys were last used failed", "err", err)
	}
	if err := tokens.Close(drainCtx); err != nil {
		log.Warn("writing when admin tokens were last used failed", "err", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("closing the store: %w", err)
	}
	log.Info("stopped")
	return nil
}

// The garbage collector's settings, unless GOGC or GOMEMLIMIT say otherwise. The collect path
// allocates a lot of short-lived garbage (decoded events), and collecting at Go's default of 100%
// heap growth cost 15–30% of the throughput in `make bench`; at 400% the heap stays small anyway,
// and the soft limit keeps a burst of large batches (whose bodies the server's 64 MiB body budget
// bounds) from growing the process past about 200 MB.
const (
	gcPercent   = 400
	memoryLimit = 200 << 20
)

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

// createFirstSource makes a fresh installation usable at once: with no source yet, it creates one
// for site 1 and prints its key and a curl command to paste. The key is printed to stdout, once,
// and never logged.
func createFirstSource(ctx context.Context, keys *sources.Service, base string, stdout io.Writer) error {
	existing, err := keys.List(ctx)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return nil
	}
	source, key, err := keys.Create(ctx, "1", "default")
	if err != nil {
		return fmt.Errorf("creating the first source: %w", err)
	}
	fmt.Fprintf(stdout, `No source yet: created source %d for site %s. Its key, shown only this once:

  %s

Send a first event:

  curl -sS -X POST '%s/events?tc_s=%s&token=%s' \
    -H 'Content-Type: application/json' \
    -d '{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"visitor-1","consent_categories":["1"]},"context":{"event_id":"first-event"}}'

`, source.ID, source.Site, key.Key, base, source.Site, key.Key)
	return nil
}

// curlHost turns a listening address into one a curl on this machine can reach.
func curlHost(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// parseNetworks reads --trusted-proxies: CIDRs, or single addresses.
func parseNetworks(values []string) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if !strings.Contains(v, "/") {
			ip := net.ParseIP(v)
			if ip == nil {
				return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", v)
			}
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			nets = append(nets, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", v, err)
		}
		nets = append(nets, n)
	}
	return nets, nil
}

// corsSetting is how the log shows the CORS allow-list.
func corsSetting(origins []string) string {
	if len(origins) == 0 {
		return "any (reflected)"
	}
	return strings.Join(origins, ",")
}
