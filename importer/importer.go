// Package importer sends a file of NDJSON events to a collector through the client's Batcher:
// the bulk import behind `trackapi send`. It streams the file, never loading it whole, shows its
// progress, and accounts for every line: each non-blank line is delivered, or written to a file of
// failed events with the reason and the event_id it was given, so that it can be sent again
// without being stored twice.
package importer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/trackapi/trackapi/client"
)

// The defaults of Config, which are also those of `trackapi send`.
const (
	// DefaultRetryFor rides out a server restart or a short overload, yet ends an import against
	// a server that is down within minutes.
	DefaultRetryFor = 2 * time.Minute
	// DefaultConcurrency keeps a few requests in flight, enough to hide the network's latency
	// without crowding the server.
	DefaultConcurrency = 4
	// DefaultQueueSize reads far enough ahead to fill whole batches (about 2500 events of 200
	// bytes) for every request in flight.
	DefaultQueueSize = 20000
	// DefaultProgressInterval shows that a scripted import moves without filling its logs.
	DefaultProgressInterval = 5 * time.Second
)

// Config is one import. Zero durations and sizes take the defaults above.
type Config struct {
	// BaseURL, Site and Token say where the events go and as which source (see client.New).
	BaseURL, Site, Token string
	// Input is the NDJSON file to import, or "-" for Stdin. It also names the default
	// FailedPath. A regular file's size gives the progress bar its total.
	Input string
	// Stdin is what Input "-" reads. It may be a pipe that stays open for ever: an import that
	// stops early then does not wait for its end.
	Stdin io.Reader
	// FailedPath is where each line not delivered goes, with why. The default, Input +
	// ".failed.ndjson" (stdin.failed.ndjson for "-"), is created only when a line fails; a path
	// given is created at once, so that an empty file says that nothing failed rather than
	// leaving an older run's failures in place.
	FailedPath string
	// RetryFor bounds the retries of each batch (network errors, 5xx, 429). A batch that
	// exhausts it stops the import: the server is down or failing, and every other batch would
	// wait out its own retries too.
	RetryFor time.Duration
	// Concurrency is the number of requests in flight at once.
	Concurrency int
	// QueueSize is how many events are read ahead of the server, and the most a batch holds: at
	// most about QueueSize × (Concurrency+2) events are in memory.
	QueueSize int
	// ProgressInterval is how often a progress line is printed when Stderr is not a terminal,
	// so that the logs of scripted runs show progress too.
	ProgressInterval time.Duration
	// Stdout gets the summary line and nothing else, so that it can be piped (nil: discarded).
	Stdout io.Writer
	// Stderr gets the progress (a bar when it is a terminal), which says why requests are being
	// retried while they are, and the client's warnings (nil: discarded).
	Stderr io.Writer
}

// withDefaults fills the zero fields, and refuses what cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.BaseURL == "" || c.Site == "" || c.Token == "" || c.Input == "" {
		return c, errors.New("importer: BaseURL, Site, Token and Input are required")
	}
	if c.Input == "-" && c.Stdin == nil {
		return c, errors.New(`importer: Input is "-" but Stdin is nil`)
	}
	if c.RetryFor < 0 || c.Concurrency < 0 || c.QueueSize < 0 || c.ProgressInterval < 0 {
		return c, errors.New("importer: RetryFor, Concurrency, QueueSize and ProgressInterval must not be negative")
	}
	if c.RetryFor == 0 {
		c.RetryFor = DefaultRetryFor
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	return c, nil
}

// defaultFailedPath is the failed file of an input when Config.FailedPath is empty.
func defaultFailedPath(input string) string {
	if input == "-" {
		return "stdin.failed.ndjson"
	}
	return input + ".failed.ndjson"
}

// Summary is what became of the lines of an import. Once Run has returned, every non-blank line
// read is in exactly one of Accepted, Duplicates, Rejected and Failed, unless Run gave up waiting
// for standard input (see Run).
type Summary struct {
	// Events counts the non-blank lines read.
	Events int64
	// Accepted and Duplicates are the server's counts: events it stored, and events it already
	// had (sent by an earlier run, or by a retry whose answer was lost). Both are delivered.
	Accepted, Duplicates int64
	// Rejected counts the events the server refused, and the lines refused before sending
	// (Invalid): sending them again unchanged will not help.
	Rejected int64
	// Invalid counts the lines, among Rejected, that were not events: not a JSON object, over
	// the size limit, no event_name.
	Invalid int64
	// Failed counts the events not delivered (retries exhausted, interrupted, or not read
	// before the import stopped): sending them again later may work.
	Failed int64
	// Elapsed is how long the import took.
	Elapsed time.Duration
	// FailedPath is the file that holds the lines not delivered, when there are any.
	FailedPath string
}

// NotDelivered is the number of lines that are in the FailedPath file: Rejected + Failed.
func (s Summary) NotDelivered() int64 { return s.Rejected + s.Failed }

// String is the summary line `trackapi send` prints, which scripts may parse:
// "sent 1004 events in 0.3s (3346/s): 1001 accepted, 0 duplicates, 3 rejected, 0 failed (3
// invalid lines)".
func (s Summary) String() string {
	line := fmt.Sprintf("sent %d events in %.1fs (%.0f/s): %d accepted, %d duplicates, %d rejected, %d failed",
		s.Events, s.Elapsed.Seconds(), float64(s.Events)/max(s.Elapsed.Seconds(), 0.001), s.Accepted, s.Duplicates, s.Rejected, s.Failed)
	if s.Invalid > 0 {
		line += fmt.Sprintf(" (%d invalid lines)", s.Invalid)
	}
	return line
}

// errStopped is why an import stops when a batch could not be delivered.
var errStopped = errors.New("stopped after a batch could not be delivered")

// Run imports cfg.Input and prints the summary line on cfg.Stdout. The error is nil only when
// every line was delivered (duplicates count as delivered); otherwise it says how many were not,
// and where they are.
//
// A batch that cannot be delivered within RetryFor stops the import: the events in flight and
// the lines not read yet go to the FailedPath file as failed ("not sent"). So does the end of
// ctx, which Run reports as an interruption. Lines of Stdin not read within 2 s of such a stop
// were never received: Run returns without them, and the summary may then not account for every
// line.
//
// An error before the import starts (a bad URL, an input that cannot be opened) is returned with
// an empty Summary, and nothing is printed.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Summary{}, err
	}
	retries := &retryStatus{}
	c, err := client.New(cfg.BaseURL, cfg.Site, cfg.Token,
		client.WithRetry(client.RetryPolicy{MaxElapsed: cfg.RetryFor, MaxAttempts: 1000}),
		client.WithRetryObserver(retries.observe),
		client.WithLogger(slog.New(slog.NewTextHandler(cfg.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return Summary{}, err
	}

	in, size := cfg.Stdin, int64(-1)
	if cfg.Input != "-" {
		f, err := os.Open(cfg.Input)
		if err != nil {
			return Summary{}, err
		}
		defer f.Close()
		in = f
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
	}
	out := &failedFile{path: cfg.FailedPath}
	if cfg.FailedPath == "" {
		out.path = defaultFailedPath(cfg.Input) // opened on the first line that fails
	} else {
		// Created at once: an empty file then says that nothing failed, not that an old run did.
		if err := out.open(); err != nil {
			return Summary{}, err
		}
	}
	defer out.close()

	// runCtx ends with ctx, or when a batch fails for good (the server is down or failing): the
	// reading stops, and what is queued fails at once rather than every batch waiting out its
	// own retries.
	runCtx, halt := context.WithCancelCause(ctx)
	defer halt(nil)
	s := &sender{out: out, retries: retries, pending: map[int]int64{}, halt: halt}
	b := c.NewBatcher(client.BatcherOptions{
		// The byte limit makes the batches (about 2500 events of 200 bytes); the count caps tiny
		// events, and keeps a small QueueSize a bound on memory.
		MaxEvents:     min(10000, cfg.QueueSize),
		FlushInterval: time.Second,
		QueueSize:     cfg.QueueSize,
		Concurrency:   cfg.Concurrency,
		Overflow:      client.Block,
		// Long enough for a batch to exhaust its retries: the reader waits for the server rather
		// than dropping events.
		EnqueueTimeout: cfg.RetryFor + time.Minute,
		OnResult:       s.onResult,
	})

	start := time.Now()
	progress := startProgress(cfg.Stderr, cfg.ProgressInterval, size, start, s, b)
	readDone := make(chan error, 1)
	interrupted := false
	go func() { readDone <- s.read(runCtx, bufio.NewReaderSize(in, 1<<20), b) }()
	var readErr error
	finished := true
	select {
	case readErr = <-readDone:
		b.Close(runCtx) // waits for every result; a stop meanwhile abandons what is left
	case <-runCtx.Done():
		interrupted = !errors.Is(context.Cause(runCtx), errStopped)
		b.Close(runCtx)
		// The reader writes the lines it has not read yet to the failed file. A file ends;
		// standard input may stay open for ever, and its lines not read by now were never
		// received.
		if size >= 0 {
			readErr = <-readDone
		} else {
			select {
			case readErr = <-readDone:
			case <-time.After(2 * time.Second):
				finished = false
			}
		}
	}
	progress()

	st := b.Stats()
	sum := Summary{
		Events:     s.lines.Load(),
		Accepted:   st.Accepted,
		Duplicates: st.Duplicates,
		Rejected:   st.Rejected + s.invalid.Load(),
		Invalid:    s.invalid.Load(),
		Failed:     st.Failed + s.notQueued.Load(),
		Elapsed:    time.Since(start),
		FailedPath: out.path,
	}
	fmt.Fprintln(cfg.Stdout, sum)
	if err := out.close(); err != nil {
		return sum, err
	}
	if readErr != nil {
		return sum, fmt.Errorf("reading %s: %w", cfg.Input, readErr)
	}
	if got := st.Delivered() + sum.NotDelivered(); finished && got != sum.Events {
		return sum, fmt.Errorf("internal error: %d events read but %d accounted for", sum.Events, got)
	}
	if interrupted || (ctx.Err() != nil && !errors.Is(context.Cause(runCtx), errStopped)) {
		return sum, fmt.Errorf("interrupted: %d of %d events not delivered; they are in %s", sum.NotDelivered(), sum.Events, out.path)
	}
	if sum.NotDelivered() > 0 {
		return sum, fmt.Errorf("%d of %d events not delivered; they are in %s with the reasons", sum.NotDelivered(), sum.Events, out.path)
	}
	return sum, nil
}
