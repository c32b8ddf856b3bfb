// Package deliver routes stored events to destinations. The event log is the queue: each
// destination has a cursor over it, one worker goroutine reads events after the cursor, applies
// the destination's source, consent and condition filters, sends batches through the
// destination's sink, and settles each event as delivered, filtered_consent, filtered_condition,
// retrying, rejected or failed. Rows are written only for what failed (the retry table, dead
// letters), and the cursor moves in the same transaction as them and the counters
// (trackapi.Settlement), at most every SettleEvery, so a crash re-sends at most the batches not
// settled yet: at-least-once, receivers deduplicate on each envelope's id.
//
// Ingestion never waits on delivery, and destinations never wait on each other: each has its own
// worker, and a slow sink holds only its own. A circuit breaker per destination stops the cursor
// during an outage (5 failed attempts in a row) and probes with the oldest retry, so an outage
// writes nothing and loses nothing: the events wait in the log.
package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackapi/trackapi"
)

// SinkFactory makes the sink of a destination; the command line registers one per type.
type SinkFactory func(trackapi.Destination) (trackapi.Sink, error)

// Policy is how a destination's failures are retried. The zero value of a field takes its
// default.
type Policy struct {
	AttemptTimeout time.Duration // one attempt; default 10 s
	BackoffBase    time.Duration // the first wait; default 5 s, doubling
	BackoffMax     time.Duration // the longest wait; default 5 min
	RetryAfterMax  time.Duration // the longest Retry-After honoured; default 1 h
	GiveUpAfter    time.Duration // since the first failure; default 4 h
	MinAttempts    int           // before giving up; default 3
	BreakerAfter   int           // failed attempts in a row that open the circuit; default 5
	BatchSize      int           // events a request; default 100 (a destination's BatchSize wins)
	// Parallel is how many requests a destination that is behind sends at once; default 4.
	Parallel int
	// Linger is how long a caught-up destination waits after a wake-up before it reads the log,
	// so that events committed meanwhile share a request; default 5 ms.
	Linger time.Duration
}

func (p Policy) withDefaults() Policy {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&p.AttemptTimeout, 10*time.Second)
	def(&p.BackoffBase, 5*time.Second)
	def(&p.BackoffMax, 5*time.Minute)
	def(&p.RetryAfterMax, time.Hour)
	def(&p.GiveUpAfter, 4*time.Hour)
	if p.MinAttempts <= 0 {
		p.MinAttempts = 3
	}
	if p.BreakerAfter <= 0 {
		p.BreakerAfter = 5
	}
	if p.BatchSize <= 0 {
		p.BatchSize = DefaultBatchSize
	}
	if p.Parallel <= 0 {
		p.Parallel = 4
	}
	def(&p.Linger, 5*time.Millisecond)
	return p
}

// backoff is the wait before attempt n+1 after n failed attempts: exponential from BackoffBase,
// capped at BackoffMax, with full jitter (a random wait up to that), so that many events failing
// at once do not come back at once.
func (p Policy) backoff(failed int) time.Duration {
	d := p.BackoffBase
	for i := 1; i < failed && d < p.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, p.BackoffMax)
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// Observer receives what the engine does, for metrics; the zero value ignores everything.
type Observer struct {
	// Attempts counts settled events by destination name and outcome (delivered,
	// delivered_after_retry, retried, rejected, failed, filtered_consent, filtered_condition).
	Attempts func(destination, outcome string, n int)
	// State reports a destination's lag (events, seconds), retry rows and whether its circuit is
	// open, every few seconds.
	State func(destination string, lagEvents int64, lagSeconds float64, retries int64, circuitOpen bool)
}

// Config is what an Engine needs.
type Config struct {
	Store  trackapi.DeliveryStore
	Log    trackapi.EventLog
	Sinks  map[string]SinkFactory // by destination type
	Policy Policy
	Clock  Clock        // nil: the real clock
	Logger *slog.Logger // nil: slog.Default()
	// ReloadEvery is how often the destinations are read again, so that those created, changed
	// or paused by another process are picked up; default 1 s.
	ReloadEvery time.Duration
	// SettleEvery is how often, at most, a busy destination commits its settlement; default
	// 200 ms. It bounds both the writes delivery adds to the store and what a crash re-sends.
	SettleEvery time.Duration
	Observer    Observer
}

// Engine runs one worker per active destination.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	clock Clock

	mu      sync.Mutex // held by Run's goroutine while it changes workers
	workers map[int64]*worker
	// running is a copy of the workers for Notify, which the store's committer calls after every
	// commit: it must never wait for a reload that is making sinks.
	running atomic.Pointer[[]*worker]
}

// New makes an Engine; Run starts it.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Log == nil {
		return nil, errors.New("deliver: Config.Store and Config.Log are required")
	}
	cfg.Policy = cfg.Policy.withDefaults()
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReloadEvery <= 0 {
		cfg.ReloadEvery = time.Second
	}
	if cfg.SettleEvery <= 0 {
		cfg.SettleEvery = 200 * time.Millisecond
	}
	if cfg.Observer.Attempts == nil {
		cfg.Observer.Attempts = func(string, string, int) {}
	}
	if cfg.Observer.State == nil {
		cfg.Observer.State = func(string, int64, float64, int64, bool) {}
	}
	return &Engine{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, workers: map[int64]*worker{}}, nil
}

// Notify wakes every worker: new events were committed. It never blocks, so the store's
// committer may call it after each commit.
func (e *Engine) Notify() {
	if running := e.running.Load(); running != nil {
		for _, w := range *running {
			w.wakeUp()
		}
	}
}

// Run starts and stops workers as destinations come, change and go, until ctx ends; then it
// stops every worker, letting each settle what it delivered, and returns.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		e.mu.Lock()
		for id, w := range e.workers {
			w.stop()
			delete(e.workers, id)
		}
		e.publish()
		e.mu.Unlock()
		wg.Wait()
	}()
	for {
		if err := e.reload(ctx, &wg); err != nil && ctx.Err() == nil {
			e.log.Error("reading destinations failed; keeping the running ones", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.clock.After(e.cfg.ReloadEvery):
		}
	}
}

// reload makes the running workers match the stored destinations. Sinks are made without the
// lock, since making one may take a while (a Kafka client).
func (e *Engine) reload(ctx context.Context, wg *sync.WaitGroup) error {
	dests, err := e.cfg.Store.Destinations(ctx)
	if err != nil {
		return fmt.Errorf("reload destinations: %w", err)
	}
	want := map[int64]trackapi.Destination{}
	for _, d := range dests {
		if d.Status == trackapi.DestinationActive {
			want[d.ID] = d
		}
	}
	e.mu.Lock()
	stopping := map[int64]chan struct{}{}
	for id, w := range e.workers {
		if d, ok := want[id]; !ok || !d.UpdatedAt.Equal(w.dest.UpdatedAt) {
			w.stop() // paused, deleted or changed: a changed one starts again below, once this one settled
			stopping[id] = w.finished
			delete(e.workers, id)
		}
	}
	var start []trackapi.Destination
	for id, d := range want {
		if _, running := e.workers[id]; !running {
			start = append(start, d)
		}
	}
	e.publish()
	e.mu.Unlock()

	for _, d := range start {
		w, err := e.newWorker(d)
		if err != nil {
			e.log.Error("destination cannot start", "destination", d.Name, "id", d.ID, "err", err)
			continue
		}
		w.after = stopping[d.ID]
		e.mu.Lock()
		e.workers[d.ID] = w
		e.publish()
		e.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	return nil
}

// publish copies the workers for Notify; e.mu is held.
func (e *Engine) publish() {
	list := make([]*worker, 0, len(e.workers))
	for _, w := range e.workers {
		list = append(list, w)
	}
	e.running.Store(&list)
}

func (e *Engine) newWorker(d trackapi.Destination) (*worker, error) {
	factory := e.cfg.Sinks[d.Type]
	if factory == nil {
		return nil, fmt.Errorf("no sink for destination type %q", d.Type)
	}
	routing, err := NewRouting(d)
	if err != nil {
		return nil, err
	}
	sink, err := factory(d)
	if err != nil {
		return nil, fmt.Errorf("destination %d: %w", d.ID, err)
	}
	policy := e.cfg.Policy
	if d.BatchSize > 0 {
		policy.BatchSize = d.BatchSize
	}
	return &worker{
		e: e, dest: d, sink: sink, routing: routing, policy: policy,
		wake: make(chan struct{}, 1), done: make(chan struct{}), finished: make(chan struct{}),
		log: e.log.With("destination", d.Name, "destination_id", d.ID),
	}, nil
}

// ValidateDestination checks what can be checked before a destination is stored: its type has a
// sink, its filter parses, and its sink accepts its settings. The command line and the config API
// call it, so that a mistake is an error at creation, never at delivery time.
func ValidateDestination(d trackapi.Destination, sinks map[string]SinkFactory) error {
	factory := sinks[d.Type]
	if factory == nil {
		return fmt.Errorf("unknown destination type %q", d.Type)
	}
	if err := requiredSettings(d); err != nil {
		return err
	}
	if _, err := ParseFilter(d.Filter); err != nil {
		return err
	}
	sink, err := factory(d)
	if err != nil {
		return err
	}
	return sink.Close()
}

// DefaultBatchSize is the most events a request carries when neither the destination nor the
// policy says otherwise.
const DefaultBatchSize = 100

// MaxBatchSize is the most events a destination's request may carry.
const MaxBatchSize = 10000

// requiredSettings checks that each type has the settings it needs, named as the config API's
// fields and the command line's flags both name them.
func requiredSettings(d trackapi.Destination) error {
	missing := func(settings string) error {
		return fmt.Errorf("a %s destination needs %s", d.Type, settings)
	}
	switch d.Type {
	case trackapi.DestinationWebhook:
		if d.Config.URL == "" {
			return missing("a url")
		}
	case trackapi.DestinationForward:
		if d.Config.URL == "" || d.Config.Site == "" || d.Config.Token == "" {
			return missing("a url, a site and a token")
		}
	case trackapi.DestinationKafka:
		if len(d.Config.Brokers) == 0 || d.Config.Topic == "" {
			return missing("brokers and a topic")
		}
	case trackapi.DestinationFile:
		if d.Config.Path == "" {
			return missing("a path")
		}
	}
	if d.BatchSize < 0 || d.BatchSize > MaxBatchSize {
		return fmt.Errorf("the batch size must be between 1 and %d", MaxBatchSize)
	}
	return nil
}

// Clock is the engine's time, replaced by a fake in tests of long outages.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
