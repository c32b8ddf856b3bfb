package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/metrics"
	"github.com/trackapi/trackapi/server"
	"github.com/trackapi/trackapi/sqlite"
)

// Timeouts of the HTTP server: slow or stalled clients must not hold connections (and memory) for
// ever. Bodies are at most 500 KB, so 30 s to send one is generous.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// drainTimeout bounds the graceful stop: in-flight requests get this long to finish.
	drainTimeout = 30 * time.Second
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("serve", stderr)
	addr := fs.String("addr", ":8080", "address to listen on")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	tuneGC()
	path, err := dbPath(*data)
	if err != nil {
		return err
	}
	m := metrics.New()
	db, err := sqlite.OpenWithOptions(path, sqlite.Options{OnCommit: m.ObserveCommit})
	if err != nil {
		return err
	}
	defer db.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	if err := createFirstSource(ctx, db, ln.Addr(), stdout); err != nil {
		ln.Close()
		return err
	}

	srv, err := server.New(server.Config{Events: db, Sources: db, Ready: db.Ping, Metrics: m, Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	httpServer := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "data", path)

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
	if err := httpServer.Shutdown(drainCtx); err != nil {
		log.Error("draining did not finish in time", "err", err)
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
func createFirstSource(ctx context.Context, db *sqlite.DB, addr net.Addr, stdout io.Writer) error {
	existing, err := db.Sources(ctx)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return nil
	}
	key := trackapi.NewSourceKey()
	source, err := db.CreateSource(ctx, "1", "default", trackapi.HashKey(key))
	if err != nil {
		return fmt.Errorf("creating the first source: %w", err)
	}
	base := "http://" + curlHost(addr)
	fmt.Fprintf(stdout, `No source yet: created source %d for site %s. Its key, shown only this once:

  %s

Send a first event:

  curl -sS -X POST '%s/events?tc_s=%s&token=%s' \
    -H 'Content-Type: application/json' \
    -d '{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"visitor-1","consent_categories":["1"]},"context":{"event_id":"first-event"}}'

`, source.ID, source.Site, key, base, source.Site, key)
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
