// Package inspector captures what the collect path tells it (ingest.Inspector) into the event
// inspector's entries and the data-quality counts, and applies their retention. trackapi's
// inspector.go states the rules; this package is how they are kept without slowing collection:
//
//   - Capturer.Inspect runs on the collect path. It counts the request's events for the data
//     quality (exact: under one short lock of one of a few shards), asks the sampler whether each
//     entry is wanted, and only for those it keeps copies what the entry needs (the body up to
//     its limit) and offers it to a bounded queue without waiting: when the queue is full, the
//     entry is dropped and counted (Dropped, and Config.OnDrop for the metrics).
//   - Capturer.Run is the writer: it takes entries off the queue and writes them in batches
//     (BatchSize entries, or what came in FlushEvery), with the counts of about the last
//     QualityEvery, in one store transaction; it masks the addresses first, so that the collect
//     path does not. A crash loses the entries still queued and at most the last QualityEvery of
//     counts: the events themselves are safe in the event log, and the counts of a write that
//     failed are kept for the next one.
//   - Capturer.Wait lets a live stream sleep until entries newer than its cursor are written.
//   - Retention deletes expired entries and counts.
package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/ingest"
)

// Defaults of Config.
const (
	DefaultQueueSize      = 4096
	DefaultMaxQueuedBytes = 16 << 20
	DefaultBatchSize      = 256
	DefaultFlushEvery     = 200 * time.Millisecond
	DefaultQualityEvery   = time.Second
	// shutdownTimeout bounds the last writes when Run stops, and writeTimeout one write before.
	shutdownTimeout = 10 * time.Second
	writeTimeout    = 30 * time.Second
	// retryPause is how long the writer waits after a write failed for a reason that may pass,
	// before trying the same batch again.
	retryPause = time.Second
)

// The reasons an entry is dropped, as Config.OnDrop is told.
const (
	// DropQueueFull: the queue (or its byte budget) was full; the collect path does not wait.
	DropQueueFull = "queue_full"
	// DropStoreFailed: the store refused the write for a reason a retry would not fix, or the
	// last write at shutdown failed.
	DropStoreFailed = "store_failed"
)

// Config is what a Capturer needs.
type Config struct {
	Store trackapi.InspectorStore
	// Now is the clock, for an Inspection without a time; nil: time.Now.
	Now    func() time.Time
	Logger *slog.Logger // nil: slog.Default()
	// OnDrop, when set, is told about entries dropped, with the reason (DropQueueFull,
	// DropStoreFailed): the hook for metrics.Metrics.ObserveInspectorDropped. It must be quick;
	// it runs on the collect path.
	OnDrop func(reason string, n int)
	// QueueSize is how many entries wait for the writer at most (0: DefaultQueueSize), and
	// MaxQueuedBytes how many bytes of bodies they hold at most (0: DefaultMaxQueuedBytes).
	QueueSize      int
	MaxQueuedBytes int64
	// BatchSize is the most entries of one write (0: DefaultBatchSize); FlushEvery how long an
	// entry waits for a batch to fill at most (0: DefaultFlushEvery); QualityEvery how often the
	// counts are written (0: DefaultQualityEvery).
	BatchSize    int
	FlushEvery   time.Duration
	QualityEvery time.Duration
	// Sampling overrides the sampling budgets (zero fields: trackapi's).
	Sampling Sampling
}

// Capturer is the inspector's capture: it implements ingest.Inspector. Inspect is safe for
// concurrent use; Run is the one writer.
type Capturer struct {
	store   trackapi.InspectorStore
	now     func() time.Time
	log     *slog.Logger
	onDrop  func(string, int)
	cfg     Config
	sampler *sampler
	quality *quality

	queue       chan *record
	queuedBytes atomic.Int64
	dropped     atomic.Int64

	// written is the ID of the newest entry written; changed is closed and replaced whenever it
	// moves, to wake the waiters.
	mu      sync.Mutex
	written int64
	changed chan struct{}
}

var _ ingest.Inspector = (*Capturer)(nil)

// record is one kept entry on its way to the store: the entry with its client address and body
// not masked yet.
type record struct {
	entry trackapi.InspectorEntry
	body  []byte // a copy: the event's JSON, or the start of it (or of a refused request's body)
	cut   bool   // body is the start of something longer
	text  bool   // body is kept as text whatever it holds: a refused request's
	size  int64  // bytes counted against MaxQueuedBytes
}

// New returns a Capturer; run its writer with Run.
func New(cfg Config) (*Capturer, error) {
	if cfg.Store == nil {
		return nil, errors.New("inspector: Config.Store is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnDrop == nil {
		cfg.OnDrop = func(string, int) {}
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxQueuedBytes <= 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	if cfg.QualityEvery <= 0 {
		cfg.QualityEvery = DefaultQualityEvery
	}
	return &Capturer{
		store: cfg.Store, now: cfg.Now, log: cfg.Logger, onDrop: cfg.OnDrop, cfg: cfg,
		sampler: newSampler(cfg.Sampling), quality: newQuality(),
		queue: make(chan *record, cfg.QueueSize), changed: make(chan struct{}),
	}, nil
}

// Dropped is how many entries were dropped so far, for any reason.
func (c *Capturer) Dropped() int64 { return c.dropped.Load() }

// Inspect is the collect path's report of one request (ingest.Inspector): it counts the events
// for the data quality, and queues the entries the sampler keeps. It never waits for the writer.
func (c *Capturer) Inspect(in *ingest.Inspection) {
	at := in.At
	if at.IsZero() {
		at = c.now()
	}
	if in.Refusal != nil {
		if c.sampler.keepRefusal(in.SourceID, in.Site, at) {
			c.enqueue(c.refusalRecord(in, at))
		}
		return
	}
	c.quality.add(in, at)
	// Consecutive events of one name and class whose budget is spent need not ask again: a
	// flood of one event costs one question a request.
	var spentName string
	spent, spentProblem := false, false
	for i := range in.Events {
		ev := &in.Events[i]
		problem := len(ev.Problems) > 0 || ev.Outcome == trackapi.InspectorRejected
		if ev.TestCode == "" && spent && ev.EventName == spentName && problem == spentProblem {
			continue
		}
		if !c.sampler.keep(in.SourceID, in.Site, ev.EventName, ev.TestCode, problem, at) {
			spent, spentName, spentProblem = true, ev.EventName, problem
			continue
		}
		spent = false
		c.enqueue(c.eventRecord(in, i, at))
	}
}

// eventRecord builds the entry of the i-th event of in: the only copies of the collect path.
func (c *Capturer) eventRecord(in *ingest.Inspection, i int, at time.Time) *record {
	ev := &in.Events[i]
	r := &record{entry: c.requestEntry(in, at)}
	e := &r.entry
	e.EventName = clipText(ev.EventName)
	e.EventID = clipText(ev.EventID)
	e.Outcome = ev.Outcome
	e.TestCode = clipText(ev.TestCode)
	e.Problems = make([]trackapi.Problem, len(ev.Problems))
	for j, p := range ev.Problems {
		p.Path = clipText(p.Path)
		e.Problems[j] = p
	}
	e.Codes = codesOf(e.Problems)
	e.Index = i
	r.body = append([]byte(nil), cutUTF8(ev.Body, trackapi.InspectorBodyLimit)...)
	r.cut = len(r.body) < len(ev.Body)
	r.size = int64(len(r.body))
	return r
}

// refusalRecord builds the entry of a refused request.
func (c *Capturer) refusalRecord(in *ingest.Inspection, at time.Time) *record {
	r := &record{entry: c.requestEntry(in, at), text: true}
	r.entry.Outcome = trackapi.InspectorRefused
	p := trackapi.Problem{Code: string(in.Refusal.Code), Message: in.Refusal.Message}
	r.entry.Problems = []trackapi.Problem{p}
	r.entry.Codes = []string{p.Code}
	if in.Refusal.Index != nil {
		r.entry.Index = *in.Refusal.Index
	}
	r.body = append([]byte(nil), cutUTF8(in.Body, trackapi.InspectorRefusalBodyLimit)...)
	r.cut = len(r.body) < len(in.Body)
	r.size = int64(len(r.body))
	return r
}

// requestEntry is what every entry of in has.
func (c *Capturer) requestEntry(in *ingest.Inspection, at time.Time) trackapi.InspectorEntry {
	return trackapi.InspectorEntry{
		At: at, SourceID: in.SourceID, Site: clipText(in.Site), KeyPrefix: in.KeyPrefix,
		Reason: in.Reason, ClientIP: in.ClientIP, Batch: in.Batch,
	}
}

// clipText cuts a text the sender chose to trackapi.InspectorTextLimit, copying what it keeps
// when it cuts, so that a queued entry does not hold the whole of a long text.
func clipText(s string) string {
	if len(s) <= trackapi.InspectorTextLimit {
		return s
	}
	return strings.Clone(cutString(s, trackapi.InspectorTextLimit))
}

// codesOf lists the distinct codes of problems, in their order.
func codesOf(problems []trackapi.Problem) []string {
	codes := make([]string, 0, len(problems))
	for _, p := range problems {
		seen := false
		for _, c := range codes {
			seen = seen || c == p.Code
		}
		if !seen {
			codes = append(codes, p.Code)
		}
	}
	return codes
}

// enqueue offers r to the writer without waiting: when the queue or its byte budget is full, r
// is dropped and counted.
func (c *Capturer) enqueue(r *record) {
	if c.queuedBytes.Add(r.size) > c.cfg.MaxQueuedBytes {
		c.queuedBytes.Add(-r.size)
		c.drop(DropQueueFull, 1)
		return
	}
	select {
	case c.queue <- r:
	default:
		c.queuedBytes.Add(-r.size)
		c.drop(DropQueueFull, 1)
	}
}

func (c *Capturer) drop(reason string, n int) {
	c.dropped.Add(int64(n))
	c.onDrop(reason, n)
}

// Run is the writer: it writes the queued entries in batches and the counts every QualityEvery,
// until ctx ends; then it writes what is queued and counted (for at most 10 s) and returns. Run
// it once. The end of ctx does not cut a write short. A write that fails for a reason that may
// pass (the store is unavailable, or too slow) is tried again after a pause, meanwhile entries
// queue up and are dropped when the queue is full; one that fails for good drops its entries
// (counted, logged) but keeps its counts for the next try.
func (c *Capturer) Run(ctx context.Context) error {
	w := writer{c: c, ctx: context.WithoutCancel(ctx), pending: newPendingQuality(),
		batch: make([]*record, 0, c.cfg.BatchSize), lastQuality: time.Now()}
	ticker := time.NewTicker(c.cfg.FlushEvery)
	defer ticker.Stop()
	for {
		queue := c.queue
		if len(w.batch) >= c.cfg.BatchSize {
			queue = nil // a failed write holds a full batch: the queue waits (and, full, drops)
		}
		select {
		case r := <-queue:
			w.batch = append(w.batch, r)
			if len(w.batch) >= c.cfg.BatchSize {
				w.write(false)
			}
		case <-ticker.C:
			w.write(false)
		case <-ctx.Done():
			var cancel context.CancelFunc
			w.ctx, cancel = context.WithTimeout(w.ctx, shutdownTimeout)
			defer cancel()
			w.drain()
			return nil
		}
	}
}

// writer is Run's state.
type writer struct {
	c           *Capturer
	ctx         context.Context // of the writes: Run's, without its end
	batch       []*record
	pending     pendingQuality // counts taken from the shards, not written yet
	lastQuality time.Time
	failing     bool      // the last write failed: logged once, until one passes
	retryAt     time.Time // after a write failed for a reason that may pass, no write before then
}

// write writes the batch, with the counts when they are due (or when final), unless a failed
// write asked for a pause.
func (w *writer) write(final bool) {
	now := time.Now()
	if !final && now.Before(w.retryAt) {
		return
	}
	qualityDue := final || now.Sub(w.lastQuality) >= w.c.cfg.QualityEvery
	if qualityDue {
		w.c.quality.takeInto(w.pending)
		w.lastQuality = now
	}
	if len(w.batch) == 0 && (!qualityDue || w.pending.empty()) {
		return
	}
	entries := make([]trackapi.InspectorEntry, len(w.batch))
	var size int64
	for i, r := range w.batch {
		entries[i] = r.prepared()
		size += r.size
	}
	var report trackapi.QualityReport
	if qualityDue {
		report = w.pending.report()
	}
	ctx, cancel := context.WithTimeout(w.ctx, writeTimeout)
	err := w.c.store.AddInspectorEntries(ctx, entries, report)
	cancel()
	switch {
	case err == nil:
		w.c.queuedBytes.Add(-size)
		clear(w.batch)
		w.batch = w.batch[:0]
		if qualityDue {
			w.pending = newPendingQuality()
		}
		if len(entries) > 0 {
			w.c.wrote(entries[len(entries)-1].ID)
		}
		if w.failing {
			w.failing = false
			w.c.log.Info("inspector entries are written again")
		}
		return
	case (errors.Is(err, trackapi.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)) && !final:
		w.retryAt = now.Add(retryPause)
	default:
		// A permanent failure (or the last try): these entries cannot be written.
		w.c.queuedBytes.Add(-size)
		w.c.drop(DropStoreFailed, len(w.batch))
		clear(w.batch)
		w.batch = w.batch[:0]
	}
	if !w.failing || final {
		w.c.log.Warn("writing inspector entries failed", "entries", len(entries), "err", err)
	}
	w.failing = true
	if w.pending.size() > maxUnwrittenKeys {
		w.c.log.Error("giving up data-quality counts that could not be written", "keys", w.pending.size())
		w.pending = newPendingQuality()
	}
}

// drain writes everything still queued and counted, at shutdown.
func (w *writer) drain() {
	for {
		select {
		case r := <-w.c.queue:
			w.batch = append(w.batch, r)
			if len(w.batch) >= w.c.cfg.BatchSize {
				w.write(true)
			}
			continue
		default:
		}
		break
	}
	w.write(true)
}

// prepared is the entry as stored: the client address masked, and the body as valid JSON with
// its addresses masked (see prepareBody).
func (r *record) prepared() trackapi.InspectorEntry {
	e := r.entry
	e.ClientIP = MaskIP(e.ClientIP)
	e.Body = prepareBody(r.body, r.cut, r.text)
	return e
}

// prepareBody turns a body as captured into what an entry or a sample keeps: a whole JSON value
// with context.device.ip masked, or else (cut, not JSON, or text) a JSON string of its text with
// every address in it masked. The text of a cut body loses its last word when that is made of
// the characters of addresses: it may be an address cut short, which would not read as one and
// so would not be masked.
func prepareBody(body []byte, cut, text bool) json.RawMessage {
	if !cut && !text && json.Valid(body) {
		return maskDeviceIP(body)
	}
	if cut {
		end := len(body)
		for end > 0 && addressChar(body[end-1]) {
			end--
		}
		body = body[:end]
	}
	return textBody(body)
}

// wrote records that the entries up to id are written, and wakes the waiters.
func (c *Capturer) wrote(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id <= c.written {
		return
	}
	c.written = id
	close(c.changed)
	c.changed = make(chan struct{})
}

// Wait returns nil as soon as this Capturer has written an entry with an ID above afterID
// (at once when it already has), or ctx's error when ctx ends first. A live stream lists the
// entries after its cursor (InspectorStore.InspectorEntriesAfter) and, when there are none,
// waits here before listing again; the entry that wakes it may not match its filter, so it lists
// and may wait again. Entries written by another process do not wake it: a stream should also
// list again after a while (say, every few seconds) whatever Wait says.
func (c *Capturer) Wait(ctx context.Context, afterID int64) error {
	for {
		c.mu.Lock()
		written, changed := c.written, c.changed
		c.mu.Unlock()
		if written > afterID {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for inspector entries after %d: %w", afterID, ctx.Err())
		}
	}
}
