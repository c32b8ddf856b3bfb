package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trackapi/trackapi/importer"
)

// sendCmd is `trackapi send`: a bulk import of an NDJSON file through the partners' client
// (importer/), which SIGINT or SIGTERM stops.
type sendCmd struct {
	URL              string        `required:"" help:"The server's base URL, e.g. http://127.0.0.1:8080 (a trailing /events is fine)."`
	Site             string        `required:"" help:"Site id (tc_s) of the source."`
	Token            string        `required:"" env:"TRACKAPI_TOKEN" help:"Source key; $TRACKAPI_TOKEN keeps it out of the process list."`
	Failed           string        `placeholder:"FILE" help:"Write the events not delivered here, one JSON object a line with the reason (default FILE.failed.ndjson, or stdin.failed.ndjson; created only when needed)."`
	RetryFor         time.Duration `default:"${retry_for}" help:"How long to retry a batch after network errors, 5xx and 429."`
	Concurrency      int           `default:"${concurrency}" help:"Requests in flight at once."`
	Queue            int           `default:"${queue}" help:"Events read ahead of the server: the queue's size, and the most events a batch holds (at most about queue × (concurrency+2) events are in memory)."`
	ProgressInterval time.Duration `default:"${progress_interval}" help:"How often to print a progress line when stderr is not a terminal."`
	Input            string        `arg:"" name:"FILE" help:"NDJSON events, one a line; - for standard input."`
}

// sendDefaults fills the ${...} defaults of sendCmd from the importer's, so they exist once.
var sendDefaults = map[string]string{
	"retry_for":         importer.DefaultRetryFor.String(),
	"concurrency":       itoa(importer.DefaultConcurrency),
	"queue":             itoa(importer.DefaultQueueSize),
	"progress_interval": importer.DefaultProgressInterval.String(),
}

func (c *sendCmd) Run(env *runEnv) error {
	// Checked here: the importer would take a zero for its default.
	if c.ProgressInterval <= 0 || c.RetryFor <= 0 || c.Concurrency <= 0 || c.Queue <= 0 {
		return usageError{errors.New("--progress-interval, --retry-for, --concurrency and --queue must be positive")}
	}
	cfg := importer.Config{
		BaseURL: c.URL, Site: c.Site, Token: c.Token, Input: c.Input, FailedPath: c.Failed,
		RetryFor: c.RetryFor, Concurrency: c.Concurrency, QueueSize: c.Queue, ProgressInterval: c.ProgressInterval,
		Stdin: os.Stdin, Stdout: env.stdout, Stderr: env.stderr,
	}
	ctx, stop := signal.NotifyContext(env.ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // once stopping, a second SIGINT ends the process at once
	_, err := importer.Run(ctx, cfg)
	return err
}
