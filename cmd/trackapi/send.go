package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/trackapi/trackapi/client"
)

// maxLine bounds the memory one input line may take. A line longer than that cannot be an event
// (32768 bytes at most) and is not copied to --failed whole: only its number and size are.
const maxLine = 16 << 20

// sendCommand is `trackapi send`: a bulk import of an NDJSON file through the client's Batcher.
// The file is streamed, never loaded whole. Every non-blank line ends in exactly one of the
// summary's counts; every line not delivered is written to the --failed file with why.
func sendCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: trackapi send --url URL --site S --token K [--failed FILE] FILE|-")
		fs.PrintDefaults()
	}
	baseURL := fs.String("url", "", "the server's base URL, e.g. http://127.0.0.1:8080 (a trailing /events is fine)")
	site := fs.String("site", "", "site id (tc_s) of the source")
	token := fs.String("token", os.Getenv("TRACKAPI_TOKEN"), "source key (default $TRACKAPI_TOKEN, which keeps it out of the process list)")
	failedPath := fs.String("failed", "", "write the events not delivered here, one JSON object a line with the reason\n(default FILE.failed.ndjson, or stdin.failed.ndjson; created only when needed)")
	retryFor := fs.Duration("retry-for", 2*time.Minute, "how long to retry a batch after network errors, 5xx and 429")
	concurrency := fs.Int("concurrency", 4, "requests in flight at once")
	queue := fs.Int("queue", 20000, "events read ahead of the server: the queue's size, and the most events a batch holds\n(at most about queue × (concurrency+2) events are in memory)")
	every := fs.Duration("progress-interval", 5*time.Second, "how often to print a progress line when stderr is not a terminal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *baseURL == "" || *site == "" || *token == "" {
		fs.Usage()
		return errors.New("send needs --url, --site, --token and one FILE (or - for standard input)")
	}
	if *every <= 0 || *retryFor <= 0 || *concurrency <= 0 || *queue <= 0 {
		return errors.New("--progress-interval, --retry-for, --concurrency and --queue must be positive")
	}
	input := fs.Arg(0)

	c, err := client.New(*baseURL, *site, *token,
		client.WithRetry(client.RetryPolicy{MaxElapsed: *retryFor, MaxAttempts: 1000}),
		client.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return err
	}

	in, size := io.Reader(os.Stdin), int64(-1)
	if input != "-" {
		f, err := os.Open(input)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
	}
	out := newFailedFile(*failedPath, input)
	if *failedPath != "" {
		// Created at once: an empty file then says that nothing failed, not that an old run did.
		if err := out.open(); err != nil {
			return err
		}
	}
	defer out.close()

	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// runCtx ends on a signal, or when a batch fails for good (the server is down or failing):
	// the reading stops, and what is queued fails at once rather than every batch waiting out its
	// own retries.
	runCtx, halt := context.WithCancelCause(sigCtx)
	defer halt(nil)
	s := &sender{out: out, pending: map[int]int64{}, halt: halt}
	b := c.NewBatcher(client.BatcherOptions{
		// The byte limit makes the batches (about 2500 events of 200 bytes); the count caps tiny
		// events, and keeps a small --queue a bound on memory.
		MaxEvents:     min(10000, *queue),
		FlushInterval: time.Second,
		QueueSize:     *queue,
		Concurrency:   *concurrency,
		Overflow:      client.Block,
		// Long enough for a batch to exhaust its retries: the reader waits for the server rather
		// than dropping events.
		EnqueueTimeout: *retryFor + time.Minute,
		OnResult:       s.onResult,
	})

	start := time.Now()
	progress := startProgress(stderr, *every, size, start, s, b)
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
		stop() // a second SIGINT ends the process at once
		b.Close(runCtx)
		// The reader writes the lines it has not read yet to --failed. A file ends; standard
		// input may stay open for ever, and its lines not read by now were never received.
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
	elapsed := time.Since(start)
	events := s.lines.Load()
	rejected := st.Rejected + s.invalid.Load()
	failed := st.Failed + s.notQueued.Load()
	fmt.Fprintf(stdout, "sent %d events in %.1fs (%.0f/s): %d accepted, %d duplicates, %d rejected, %d failed",
		events, elapsed.Seconds(), float64(events)/max(elapsed.Seconds(), 0.001), st.Accepted, st.Duplicates, rejected, failed)
	if n := s.invalid.Load(); n > 0 {
		fmt.Fprintf(stdout, " (%d invalid lines)", n)
	}
	fmt.Fprintln(stdout)
	if err := out.close(); err != nil {
		return err
	}
	if readErr != nil {
		return fmt.Errorf("reading %s: %w", input, readErr)
	}
	if got := st.Delivered() + rejected + failed; finished && got != events {
		return fmt.Errorf("internal error: %d events read but %d accounted for", events, got)
	}
	notDelivered := rejected + failed
	if interrupted || (sigCtx.Err() != nil && !errors.Is(context.Cause(runCtx), errStopped)) {
		return fmt.Errorf("interrupted: %d of %d events not delivered; they are in %s", notDelivered, events, out.path)
	}
	if notDelivered > 0 {
		return fmt.Errorf("%d of %d events not delivered; they are in %s with the reasons", notDelivered, events, out.path)
	}
	return nil
}

// sender reads the input and records what becomes of each line.
type sender struct {
	out *failedFile
	in  *bufio.Reader

	lines, invalid, notQueued atomic.Int64
	bytesRead                 atomic.Int64
	lineNo                    int64
	halt                      context.CancelCauseFunc // stops the run: see errStopped

	mu      sync.Mutex
	taken   int           // events the Batcher took: the next one's Result.Index
	pending map[int]int64 // Result.Index → line number, until its result arrives
}

// errStopped is why a run stops when a batch could not be delivered.
var errStopped = errors.New("stopped after a batch could not be delivered")

// read streams lines into the Batcher until the end of the input, or until ctx ends; then it
// copies the rest of the input to --failed.
func (s *sender) read(ctx context.Context, in *bufio.Reader, b *client.Batcher) error {
	s.in = in
	var buf []byte
	for {
		if ctx.Err() != nil {
			return s.copyRest(ctx)
		}
		line, truncated, n, err := readLine(in, buf[:0])
		buf = line
		s.bytesRead.Add(int64(n))
		if n > 0 {
			s.lineNo++
		}
		if len(trimSpace(line)) > 0 || truncated {
			s.lines.Add(1)
			s.enqueue(ctx, b, trimSpace(line), truncated, n)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *sender) enqueue(ctx context.Context, b *client.Batcher, line []byte, truncated bool, n int) {
	if truncated {
		s.tooLong(n)
		return
	}
	// Encoded here rather than by EnqueueRaw so that a line that cannot be queued is written to
	// --failed with the event_id it was given: sending the file again then stores it once.
	event, err := client.PrepareRaw(line)
	if err != nil {
		s.refused(line, err)
		return
	}
	s.mu.Lock()
	seq := s.taken
	s.pending[seq] = s.lineNo
	s.mu.Unlock()
	err = b.EnqueueRaw(ctx, event)
	s.mu.Lock()
	if err == nil {
		s.taken++
	} else {
		delete(s.pending, seq)
	}
	s.mu.Unlock()
	if err != nil {
		s.notQueued.Add(1)
		s.out.write(failedRecord{Line: s.lineNo, Status: "failed", Reason: "not sent: " + err.Error(), Event: event})
	}
}

// refused records a line the client refused: not an event the server would store.
func (s *sender) refused(line []byte, err error) {
	s.invalid.Add(1)
	code, reason := "invalid_payload", err.Error()
	var ee *client.EventError
	if errors.As(err, &ee) {
		code, reason = ee.Code(), reasonOf(ee)
	}
	s.out.write(failedRecord{Line: s.lineNo, Status: "invalid", Code: code, Reason: reason, Event: asJSON(line)})
}

// tooLong records a line too long to be held, let alone sent.
func (s *sender) tooLong(n int) {
	s.invalid.Add(1)
	s.out.write(failedRecord{Line: s.lineNo, Status: "invalid", Code: "event_too_large",
		Reason: fmt.Sprintf("line of %d bytes, over %d: not an event, and not copied here", n, maxLine), Event: json.RawMessage("null")})
}

func reasonOf(ee *client.EventError) string {
	if errors.Is(ee.Err, client.ErrEventTooLarge) {
		return fmt.Sprintf("event of %d bytes, over the %d-byte limit", ee.Size, client.MaxEventBytes)
	}
	return ee.Reason
}

// onResult writes each event not delivered to --failed, with the line it came from.
func (s *sender) onResult(r client.Result) {
	s.mu.Lock()
	line := s.pending[r.Index]
	delete(s.pending, r.Index)
	s.mu.Unlock()
	if r.Status == client.StatusDelivered {
		return
	}
	if r.Status == client.StatusFailed {
		s.halt(errStopped)
	}
	s.out.write(failedRecord{Line: line, EventID: r.EventID, Status: r.Status.String(), Code: r.Code, Reason: r.Err.Error(), Event: r.Event})
}

// copyRest writes the lines not read yet to --failed, unsent, after a failure or a signal, so
// that the file holds everything to send again.
func (s *sender) copyRest(ctx context.Context) error {
	reason := "not sent: interrupted"
	if errors.Is(context.Cause(ctx), errStopped) {
		reason = "not sent: " + errStopped.Error()
	}
	var buf []byte
	for {
		line, truncated, n, err := readLine(s.in, buf[:0])
		buf = line
		s.bytesRead.Add(int64(n))
		if n > 0 {
			s.lineNo++
		}
		if line = trimSpace(line); len(line) > 0 || truncated {
			s.lines.Add(1)
			event, err := client.PrepareRaw(line)
			switch {
			case truncated:
				s.tooLong(n)
			case err != nil:
				s.refused(line, err)
			default:
				s.notQueued.Add(1)
				s.out.write(failedRecord{Line: s.lineNo, Status: "failed", Reason: reason, Event: event})
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine reads one line (without its newline) into buf, keeping at most maxLine bytes of it;
// n is the number of bytes consumed.
func readLine(r *bufio.Reader, buf []byte) (line []byte, truncated bool, n int, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		n += len(chunk)
		if len(buf)+len(chunk) <= maxLine+1 {
			buf = append(buf, chunk...)
		} else {
			truncated = true
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(buf) > 0 && buf[len(buf)-1] == '\n' {
			buf = buf[:len(buf)-1]
		}
		return buf, truncated, n, err
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// asJSON keeps a line as it was when it is JSON, and as a JSON string otherwise.
func asJSON(line []byte) json.RawMessage {
	if json.Valid(line) {
		return json.RawMessage(append([]byte(nil), line...))
	}
	b, _ := json.Marshal(string(line))
	return b
}

// failedRecord is one line of the --failed file. Event is the event as it was (or would have
// been) sent, with the event_id the client gave it, so that `jq -c .event FILE | trackapi send -`
// sends the events again without duplicating any that did arrive.
type failedRecord struct {
	Line    int64           `json:"line,omitempty"`
	EventID string          `json:"event_id,omitempty"`
	Status  string          `json:"status"` // invalid, rejected or failed
	Code    string          `json:"code,omitempty"`
	Reason  string          `json:"reason"`
	Event   json.RawMessage `json:"event"`
}

// failedFile is the --failed output, opened on the first record unless opened before.
type failedFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	n    int
	err  error
	done bool // closed: a late write (after an interrupt) is dropped
}

func newFailedFile(path, input string) *failedFile {
	if path == "" {
		path = input + ".failed.ndjson"
		if input == "-" {
			path = "stdin.failed.ndjson"
		}
	}
	return &failedFile{path: path}
}

func (o *failedFile) open() error {
	f, err := os.OpenFile(o.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("--failed: %w", err)
	}
	o.f, o.w = f, bufio.NewWriter(f)
	return nil
}

func (o *failedFile) write(r failedRecord) {
	b, err := json.Marshal(r)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil || o.done {
		return
	}
	if err == nil && o.f == nil {
		err = o.open()
	}
	if err == nil {
		_, err = o.w.Write(append(b, '\n'))
	}
	if err != nil {
		o.err = fmt.Errorf("writing %s: %w", o.path, err)
		return
	}
	o.n++
}

func (o *failedFile) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = true
	if o.f != nil {
		if err := o.w.Flush(); err != nil && o.err == nil {
			o.err = fmt.Errorf("writing %s: %w", o.path, err)
		}
		if err := o.f.Close(); err != nil && o.err == nil {
			o.err = fmt.Errorf("writing %s: %w", o.path, err)
		}
		o.f = nil
	}
	return o.err
}

// startProgress shows a progress bar on a terminal (the share of the file done, events sent,
// rate, errors), or else prints a plain line every interval, so that logs of scripted runs show
// progress too. The returned function stops it.
func startProgress(stderr io.Writer, every time.Duration, size int64, start time.Time, s *sender, b *client.Batcher) func() {
	status := func() (sent int64, rate float64, errs int64, pending int64) {
		st := b.Stats()
		sent = st.Delivered() + st.Rejected + st.Failed
		rate = float64(sent) / max(time.Since(start).Seconds(), 0.001)
		return sent, rate, st.Rejected + st.Failed + s.invalid.Load() + s.notQueued.Load(), st.Pending()
	}
	f, isFile := stderr.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	stop, done := make(chan struct{}), make(chan struct{})
	if !tty {
		go func() {
			defer close(done)
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					sent, rate, errs, pending := status()
					fmt.Fprintf(stderr, "progress: %d events read, %d sent (%.0f/s), %d errors, %d pending\n", s.lines.Load(), sent, rate, errs, pending)
				}
			}
		}()
		return func() { close(stop); <-done }
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(size > 0),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
	)
	update := func() {
		sent, rate, errs, _ := status()
		bar.Describe(fmt.Sprintf("%d events sent, %.0f/s, %d errors", sent, rate, errs))
		if size <= 0 {
			bar.Set64(sent) // a spinner: there is no total to compare with
			return
		}
		// The share of the file done: the share read, times the share of what was read that has
		// its result. Kept under the total until the end, where the bar would finish by itself.
		done := int64(0)
		if lines := s.lines.Load(); lines > 0 {
			done = int64(float64(s.bytesRead.Load()) * float64(sent) / float64(lines))
		}
		bar.Set64(min(done, size-1))
	}
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				update()
				bar.Finish() // fills the bar and ends its line
				return
			case <-t.C:
				update()
			}
		}
	}()
	return func() { close(stop); <-done }
}
