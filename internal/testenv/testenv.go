// Package testenv starts what most tests need: a real collect server on 127.0.0.1 over a real
// SQLite file in a temporary directory, wired as `trackapi serve` wires it (sources.Service,
// ingest.Collector, server.Server), with one active source. The server, client, example and fuzz
// tests all use it, so that a change of the wiring is made once.
package testenv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/metrics"
	"github.com/trackapi/trackapi/server"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
)

// Quiet is a logger that drops everything: request logs would bury test failures.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Site is the site (tc_s) of the source every Server starts with.
const Site = "29"

// Options change what New builds. The zero value is a default server.
type Options struct {
	DBPath  string         // default: a file in a temporary directory
	Store   sqlite.Options // its OnCommit is called after the server's metrics have seen the commit
	Sources sources.Options
	Logger  *slog.Logger // default: Quiet
	// BodyBudget and BodyWait are the server's (0: its defaults).
	BodyBudget int64
	BodyWait   time.Duration
	// CORSOrigins is the server's allow-list (nil: every origin).
	CORSOrigins []string
	// Events, when set, replaces the SQLite store on the collect path (for benchmarks that
	// measure without storage); sources stay in SQLite.
	Events trackapi.EventStore
	// Inspector, when set, makes the collector's inspector over the server's store (as `trackapi
	// serve` gives it an inspector.Capturer); nil: the inspector is off.
	Inspector func(db *sqlite.DB) ingest.Inspector
}

// Server is one running server and what tests look at.
type Server struct {
	URL     string // base URL, without /events
	DB      *sqlite.DB
	Sources *sources.Service
	Metrics *metrics.Metrics
	Handler http.Handler // the real handler, for servers put in front of it
	Site    string
	Key     string
	Source  trackapi.Source
}

// New starts a Server that stops, and closes its store, when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s := Start(t, opts)
	ts := httptest.NewServer(s.Handler) // listens on 127.0.0.1
	s.URL = ts.URL
	t.Cleanup(ts.Close) // runs before the store's cleanup registered by Start
	return s
}

// Start builds a Server without listening (URL is empty), for tests that serve its Handler
// themselves; it is closed when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.DBPath == "" {
		opts.DBPath = filepath.Join(t.TempDir(), "trackapi.db")
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A test may have closed the store on purpose; the last-used times that could then not
		// be written are informative only.
		if err := s.Sources.Close(context.Background()); err != nil && !errors.Is(err, trackapi.ErrUnavailable) {
			t.Errorf("closing the source service: %v", err)
		}
		if err := s.DB.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return s
}

// Open builds a Server without a testing.TB, for examples; opts.DBPath is required. Close it.
func Open(opts Options) (*Server, error) {
	if opts.DBPath == "" {
		return nil, errors.New("testenv: Options.DBPath is required")
	}
	if opts.Logger == nil {
		opts.Logger = Quiet
	}
	if opts.Sources.Logger == nil {
		opts.Sources.Logger = opts.Logger
	}
	m := metrics.New()
	onCommit := opts.Store.OnCommit
	opts.Store.OnCommit = func(requests, events int, took time.Duration, err error) {
		m.ObserveCommit(requests, events, took, err)
		if onCommit != nil {
			onCommit(requests, events, took, err)
		}
	}
	db, err := sqlite.OpenWithOptions(opts.DBPath, opts.Store)
	if err != nil {
		return nil, err
	}
	if opts.Sources.OnAuthenticate == nil {
		opts.Sources.OnAuthenticate = m.ObserveAuth
	}
	if opts.Sources.OnLookup == nil {
		opts.Sources.OnLookup = m.ObserveKeyLookup
	}
	keys := sources.New(db, opts.Sources)
	s := &Server{DB: db, Sources: keys, Metrics: m, Site: Site}
	fail := func(err error) (*Server, error) {
		return nil, errors.Join(err, s.Close())
	}
	src, key, err := keys.Create(context.Background(), Site, "test")
	if err != nil {
		return fail(err)
	}
	events := opts.Events
	if events == nil {
		events = db
	}
	var inspector ingest.Inspector
	if opts.Inspector != nil {
		inspector = opts.Inspector(db)
	}
	collector, err := ingest.New(ingest.Config{Store: events, Sources: keys, Logger: opts.Logger, Inspector: inspector})
	if err != nil {
		return fail(err)
	}
	srv, err := server.New(server.Config{Collector: collector, Ready: db.Ping, Metrics: m, Logger: opts.Logger,
		BodyBudget: opts.BodyBudget, BodyWait: opts.BodyWait, CORSOrigins: opts.CORSOrigins})
	if err != nil {
		return fail(err)
	}
	s.Handler, s.Key, s.Source = srv.Handler(), key.Key, src
	return s, nil
}

// Close writes what the source service still holds and closes the store.
func (s *Server) Close() error {
	return errors.Join(s.Sources.Close(context.Background()), s.DB.Close())
}

// Stored returns every event the store holds, oldest first, read through the event log as a
// destination would: what tests compare with what the server acknowledged.
func Stored(t testing.TB, log trackapi.EventLog) []trackapi.StoredEvent {
	t.Helper()
	var all []trackapi.StoredEvent
	for after := int64(0); ; {
		page, next, err := log.ReadEvents(context.Background(), after, trackapi.EventFilter{}, 1000)
		if err != nil {
			t.Fatalf("reading the stored events: %v", err)
		}
		all = append(all, page...)
		if len(page) == 0 {
			return all
		}
		after = next
	}
}

// AddSource creates another source on the server's store and returns it with its key.
func (s *Server) AddSource(t testing.TB, site, name string) (trackapi.Source, string) {
	t.Helper()
	src, key, err := s.Sources.Create(context.Background(), site, name)
	if err != nil {
		t.Fatal(err)
	}
	return src, key.Key
}
