package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/trackapi/trackapi/importer"
)

// sendCommand is `trackapi send`: a bulk import of an NDJSON file (importer/), which SIGINT or
// SIGTERM stops.
func sendCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseSendFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg.Stdin, cfg.Stdout, cfg.Stderr = os.Stdin, stdout, stderr
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // once stopping, a second SIGINT ends the process at once
	_, err = importer.Run(ctx, cfg)
	return err
}

// parseSendFlags turns the command line of `trackapi send` into the import's Config, without
// the standard streams.
func parseSendFlags(args []string, stderr io.Writer) (importer.Config, error) {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: trackapi send --url URL --site S --token K [--failed FILE] FILE|-")
		fs.PrintDefaults()
	}
	var cfg importer.Config
	fs.StringVar(&cfg.BaseURL, "url", "", "the server's base URL, e.g. http://127.0.0.1:8080 (a trailing /events is fine)")
	fs.StringVar(&cfg.Site, "site", "", "site id (tc_s) of the source")
	fs.StringVar(&cfg.Token, "token", os.Getenv("TRACKAPI_TOKEN"), "source key (default $TRACKAPI_TOKEN, which keeps it out of the process list)")
	fs.StringVar(&cfg.FailedPath, "failed", "", "write the events not delivered here, one JSON object a line with the reason\n(default FILE.failed.ndjson, or stdin.failed.ndjson; created only when needed)")
	fs.DurationVar(&cfg.RetryFor, "retry-for", importer.DefaultRetryFor, "how long to retry a batch after network errors, 5xx and 429")
	fs.IntVar(&cfg.Concurrency, "concurrency", importer.DefaultConcurrency, "requests in flight at once")
	fs.IntVar(&cfg.QueueSize, "queue", importer.DefaultQueueSize, "events read ahead of the server: the queue's size, and the most events a batch holds\n(at most about queue × (concurrency+2) events are in memory)")
	fs.DurationVar(&cfg.ProgressInterval, "progress-interval", importer.DefaultProgressInterval, "how often to print a progress line when stderr is not a terminal")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() != 1 || cfg.BaseURL == "" || cfg.Site == "" || cfg.Token == "" {
		fs.Usage()
		return cfg, errors.New("send needs --url, --site, --token and one FILE (or - for standard input)")
	}
	// Checked here: the importer would take a zero for its default.
	if cfg.ProgressInterval <= 0 || cfg.RetryFor <= 0 || cfg.Concurrency <= 0 || cfg.QueueSize <= 0 {
		return cfg, errors.New("--progress-interval, --retry-for, --concurrency and --queue must be positive")
	}
	cfg.Input = fs.Arg(0)
	return cfg, nil
}
