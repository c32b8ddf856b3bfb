package admin_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admin"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/file"
	"github.com/trackapi/trackapi/forward"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/inspector"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/metrics"
	"github.com/trackapi/trackapi/server"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
	"github.com/trackapi/trackapi/webhook"
)

// env is a real config API on 127.0.0.1 over a real SQLite file, with a read and a write token,
// and clients that check every response against admin.yaml.
type env struct {
	t       testing.TB
	URL     string
	DB      *sqlite.DB
	Sources *sources.Service
	Tokens  *admintokens.Service
	Capture *inspector.Capturer
	Admin   *admin.Server
	Read    string // a read token
	Write   string // a write token
	// API is the generated client with the write token; ReadAPI with the read token.
	API     *adminapi.ClientWithResponses
	ReadAPI *adminapi.ClientWithResponses
	HTTP    *http.Client // the spec-checking client, without a token
}

var quiet = slog.New(slog.DiscardHandler)

// envOptions change how newEnv builds the server.
type envOptions struct {
	// heartbeat is admin.Config.StreamHeartbeat (0: the server's default).
	heartbeat time.Duration
	// http, when set, serves the handler with server.NewHTTPServer and these bounds (the
	// binary's HTTP server) instead of httptest's, which has no timeouts.
	http *server.HTTPOptions
}

type envOption func(*envOptions)

// withHeartbeat sets the live stream's heartbeat.
func withHeartbeat(d time.Duration) envOption { return func(o *envOptions) { o.heartbeat = d } }

// withHTTPServer serves the config API as the binary does, with opts' bounds.
func withHTTPServer(opts server.HTTPOptions) envOption {
	return func(o *envOptions) { o.http = &opts }
}

func newEnv(t testing.TB, options ...envOption) *env {
	t.Helper()
	var o envOptions
	for _, opt := range options {
		opt(&o)
	}
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "trackapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	keys := sources.New(db, sources.Options{Logger: quiet})
	tokens := admintokens.New(db, admintokens.Options{Logger: quiet})
	capture, err := inspector.New(inspector.Config{Store: db, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	running.Go(func() { _ = capture.Run(ctx) })
	srv, err := admin.New(admin.Config{Store: db, Sources: keys, Tokens: tokens, Inspector: db, WaitForEntries: capture.Wait,
		Sinks: sinks(), Operations: server.Operations(db.Ping, metrics.New()), DeliveryTimeout: 2 * time.Second,
		StreamHeartbeat: o.heartbeat, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h, err := srv.Handler()
	if err != nil {
		t.Fatal(err)
	}
	url, closeHTTP := serveHTTP(t, h, o.http)
	t.Cleanup(func() {
		srv.Shutdown()
		closeHTTP()
		cancel()
		running.Wait()
		_ = keys.Close(context.Background())
		_ = tokens.Close(context.Background())
		_ = db.Close()
	})
	e := &env{t: t, URL: url, DB: db, Sources: keys, Tokens: tokens, Capture: capture, Admin: srv, HTTP: apitest.Client(t)}
	e.Write = e.token(trackapi.ScopeWrite)
	e.Read = e.token(trackapi.ScopeRead)
	e.API = e.client(e.Write)
	e.ReadAPI = e.client(e.Read)
	return e
}

// serveHTTP serves h on 127.0.0.1: with httptest's server, or with the binary's when opts is set.
// It returns the base URL and what closes the server.
func serveHTTP(t testing.TB, h http.Handler, opts *server.HTTPOptions) (string, func()) {
	t.Helper()
	if opts == nil {
		hs := httptest.NewServer(h)
		return hs.URL, hs.Close
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = quiet
	hs := server.NewHTTPServer(h, ln, *opts)
	served := make(chan error, 1)
	go func() { served <- hs.Serve() }()
	return "http://" + ln.Addr().String(), func() {
		_ = hs.Close()
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serving the config API: %v", err)
		}
	}
}

// token makes a token of scope.
func (e *env) token(scope trackapi.AdminScope) string {
	e.t.Helper()
	made, err := e.Tokens.Create(context.Background(), "test "+string(scope), scope, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return made.Token
}

// client is the generated client sending token, through the spec-checking HTTP client.
func (e *env) client(token string) *adminapi.ClientWithResponses {
	e.t.Helper()
	c, err := adminapi.NewClientWithResponses(e.URL, adminapi.WithHTTPClient(e.HTTP),
		adminapi.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// sinks are the destination types of the binary.
func sinks() map[string]deliver.SinkFactory {
	return map[string]deliver.SinkFactory{
		trackapi.DestinationWebhook: func(d trackapi.Destination) (trackapi.Sink, error) {
			return webhook.New(d, webhook.Options{Logger: quiet})
		},
		trackapi.DestinationForward: func(d trackapi.Destination) (trackapi.Sink, error) {
			return forward.New(d, forward.Options{Logger: quiet})
		},
		trackapi.DestinationFile: func(d trackapi.Destination) (trackapi.Sink, error) {
			return file.New(d, file.Options{Logger: quiet})
		},
	}
}

// ctx is a test's context with a deadline.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
