package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackapi/trackapi/gen"
)

// Overflow is what Enqueue does when the Batcher's queue is full: the server or the network
// cannot keep up, and the queue is bounded so that memory is.
type Overflow int

const (
	// Block makes Enqueue wait for room, at most BatcherOptions.EnqueueTimeout (and never past
	// its context); then the event is dropped. Senders that must not lose events (bulk imports)
	// use it with a long timeout: the queue then slows the producer down to the server's pace.
	Block Overflow = iota
	// Drop makes Enqueue drop the event at once. Request handlers that must never wait on
	// tracking use it.
	Drop
)

// Errors of Enqueue. An event for which Enqueue returns an error was not taken: it is the
// caller's again, and counted in Stats.Dropped (or Stats.Invalid for an *EventError).
var (
	// ErrQueueFull: the queue had no room (at once with Drop, within EnqueueTimeout with Block).
	ErrQueueFull = errors.New("client: batcher queue full; event dropped")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("client: batcher closed")
)

// BatcherOptions configure a Batcher. Zero fields take the defaults given.
type BatcherOptions struct {
	// MaxEvents flushes a batch when it holds this many events (default 1000).
	MaxEvents int
	// MaxBytes flushes a batch when one more event would make its request body larger (default
	// and upper bound MaxBatchBytes; at least large enough for one event of MaxEventBytes).
	MaxBytes int
	// FlushInterval flushes a batch this long after its first event arrived, however small it is,
	// which bounds how late an event is sent (default 1 s).
	FlushInterval time.Duration
	// QueueSize bounds the events waiting to be batched (default 10000). With events of at most
	// MaxEventBytes, it also bounds the memory they hold.
	QueueSize int
	// Overflow is what Enqueue does when the queue is full (default Block).
	Overflow Overflow
	// EnqueueTimeout is the longest Enqueue waits for room with Block (default 1 s).
	EnqueueTimeout time.Duration
	// Concurrency is the number of requests in flight at once (default 2).
	Concurrency int
	// OnResult, if set, is called once for every event Enqueue took, when its fate is known:
	// delivered, rejected by the server, or failed after the retries. Result.Event holds the
	// event as sent, so a failed one can be kept and sent again later. It is called from the
	// sending goroutines, concurrently, and delays the next request of its goroutine: keep it
	// short and safe for concurrent use. Without it, rejected and failed events are logged at
	// Warn level with the client's logger, so that none is lost silently.
	OnResult func(Result)
}

func (o BatcherOptions) withDefaults() BatcherOptions {
	if o.MaxEvents <= 0 {
		o.MaxEvents = 1000
	}
	if o.MaxBytes <= 0 || o.MaxBytes > MaxBatchBytes {
		o.MaxBytes = MaxBatchBytes
	}
	if min := batchBodySize(1, MaxEventBytes); o.MaxBytes < min {
		o.MaxBytes = min
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.EnqueueTimeout <= 0 {
		o.EnqueueTimeout = time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 2
	}
	return o
}

// Stats are a Batcher's counters. Every event Enqueue took is in exactly one of Accepted,
// Duplicates, Rejected, Failed or still pending: Enqueued = Accepted + Duplicates + Rejected +
// Failed + Pending().
type Stats struct {
	// Enqueued counts the events Enqueue took.
	Enqueued int64
	// Accepted and Duplicates are the server's counts: events it stored, and events it already
	// had (a retry after a lost answer). Both are delivered.
	Accepted, Duplicates int64
	// Rejected counts the events the server refused; Failed those not delivered after the
	// retries, or abandoned when Close's context ended.
	Rejected, Failed int64
	// Dropped counts the events Enqueue refused because the queue was full (or its context
	// ended while it waited); Invalid those it refused with an *EventError. Neither is in
	// Enqueued: Enqueue returned them to the caller with an error.
	Dropped, Invalid int64
	// Queued is how many of the pending events wait in the queue, not yet in a batch: near
	// QueueSize, the server is not keeping up and Enqueue is about to block or drop.
	Queued int64
}

// Delivered is the number of events the server has: Accepted + Duplicates.
func (s Stats) Delivered() int64 { return s.Accepted + s.Duplicates }

// Pending is the number of events taken whose fate is not known yet.
func (s Stats) Pending() int64 {
	return s.Enqueued - s.Accepted - s.Duplicates - s.Rejected - s.Failed
}

// Batcher sends events in the background, in batches, for senders with many events to send or
// that must not wait for the network: Enqueue returns at once (or within a bound), and the events
// go out in batches when one is full (MaxEvents or MaxBytes) or FlushInterval after its first
// event, through the Client's retries. Close sends what is left. A Batcher is safe for concurrent
// use.
type Batcher struct {
	c    *Client
	opts BatcherOptions

	queue   chan encoded
	batches chan []encoded
	closing chan struct{} // closed when Close starts: wakes Enqueues waiting for room
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed when every event taken has its Result

	mu     sync.RWMutex // guards closed and sends on queue against close(queue)
	closed bool

	closeOnce    sync.Once
	inClose      atomic.Bool
	undeliveredM sync.Mutex
	undelivered  []Result // failures reported once Close started

	enqueued, accepted, duplicates, rejected, failed, dropped, invalid atomic.Int64
}

// errAbandoned is why events still pending when Close's context ends fail; it wraps ErrClosed.
var errAbandoned = fmt.Errorf("%w before the event could be delivered", ErrClosed)

// NewBatcher starts a Batcher sending through c. Close it to send what is left.
func (c *Client) NewBatcher(opts BatcherOptions) *Batcher {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancelCause(context.Background())
	b := &Batcher{
		c: c, opts: opts,
		queue:   make(chan encoded, opts.QueueSize),
		batches: make(chan []encoded),
		closing: make(chan struct{}),
		ctx:     ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Go(b.accumulate)
	for range opts.Concurrency {
		wg.Go(b.send)
	}
	go func() {
		wg.Wait()
		cancel(nil)
		close(b.done)
	}()
	return b
}

// Enqueue encodes the event (filling its id and timestamp when missing) and queues it. An event
// the server would refuse is refused at once with an *EventError (Index -1). When the queue is
// full, Enqueue follows BatcherOptions.Overflow: it never waits longer than EnqueueTimeout, nor
// past ctx. A nil error means the event was taken: its fate will be counted in Stats and given to
// OnResult.
func (b *Batcher) Enqueue(ctx context.Context, event gen.Event) error {
	enc, err := encodeEvent(event, -1, b.c.now())
	if err != nil {
		b.invalid.Add(1)
		return err
	}
	return b.put(ctx, enc)
}

// EnqueueRaw is Enqueue for an event already in JSON (see Client.SendRaw). event is not kept:
// the caller may reuse its buffer.
func (b *Batcher) EnqueueRaw(ctx context.Context, event []byte) error {
	enc, err := encodeRaw(event, -1, b.c.now())
	if err != nil {
		b.invalid.Add(1)
		return err
	}
	return b.put(ctx, enc)
}

func (b *Batcher) put(ctx context.Context, enc encoded) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	// Counted before it is queued, so that Pending never goes below zero.
	b.enqueued.Add(1)
	select {
	case b.queue <- enc:
		return nil
	default:
	}
	if b.opts.Overflow == Drop {
		b.enqueued.Add(-1)
		b.dropped.Add(1)
		return ErrQueueFull
	}
	t := time.NewTimer(b.opts.EnqueueTimeout)
	defer t.Stop()
	select {
	case b.queue <- enc:
		return nil
	case <-t.C:
		b.enqueued.Add(-1)
		b.dropped.Add(1)
		return fmt.Errorf("after waiting %s: %w", b.opts.EnqueueTimeout, ErrQueueFull)
	case <-ctx.Done():
		b.enqueued.Add(-1)
		b.dropped.Add(1)
		return fmt.Errorf("client: waiting for room in the batcher queue: %w", context.Cause(ctx))
	case <-b.closing:
		b.enqueued.Add(-1)
		return ErrClosed
	}
}

// accumulate turns the queue into batches, flushing on count, size and interval. It numbers the
// events in the order it takes them (Result.Index).
func (b *Batcher) accumulate() {
	defer close(b.batches)
	var (
		cur    []encoded
		sum    int
		seq    int
		timer  *time.Timer
		timerC <-chan time.Time
	)
	flush := func() {
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
		if len(cur) > 0 {
			b.batches <- cur // waits for a free sender: the queue absorbs bursts meanwhile
			cur, sum = nil, 0
		}
	}
	for {
		select {
		case e, ok := <-b.queue:
			if !ok {
				flush()
				return
			}
			e.index = seq
			seq++
			if len(cur) > 0 && batchBodySize(len(cur)+1, sum+len(e.raw)) > b.opts.MaxBytes {
				flush()
			}
			cur = append(cur, e)
			sum += len(e.raw)
			if len(cur) == 1 {
				timer = time.NewTimer(b.opts.FlushInterval)
				timerC = timer.C
			}
			// Full by count, or so full by size that not even the smallest event ("{}" and its
			// comma) would fit.
			if len(cur) >= b.opts.MaxEvents || batchBodySize(len(cur), sum)+3 > b.opts.MaxBytes {
				flush()
			}
		case <-timerC:
			timer, timerC = nil, nil
			flush()
		}
	}
}

// send delivers batches until there are none left.
func (b *Batcher) send() {
	for batch := range b.batches {
		for i := range batch {
			batch[i].slot = i
		}
		out := newBatchResult(len(batch))
		b.c.deliver(b.ctx, batch, false, out)
		b.accepted.Add(int64(out.Accepted))
		b.duplicates.Add(int64(out.Duplicates))
		b.rejected.Add(int64(out.Rejected))
		b.failed.Add(int64(out.Failed))
		for _, r := range out.Results {
			b.report(r)
		}
	}
}

func (b *Batcher) report(r Result) {
	if r.Status == StatusFailed && b.inClose.Load() {
		b.undeliveredM.Lock()
		b.undelivered = append(b.undelivered, r)
		b.undeliveredM.Unlock()
	}
	if b.opts.OnResult != nil {
		b.opts.OnResult(r)
		return
	}
	if r.Status != StatusDelivered {
		b.c.log.Warn("event not delivered", "event_id", r.EventID, "status", r.Status.String(), "code", r.Code, "err", r.Err)
	}
}

// Stats returns the counters. They are read one by one while events move, so a snapshot taken
// while the Batcher runs may be off by the events of a batch in progress; after Close it is exact.
func (b *Batcher) Stats() Stats {
	return Stats{
		Enqueued: b.enqueued.Load(), Accepted: b.accepted.Load(), Duplicates: b.duplicates.Load(),
		Rejected: b.rejected.Load(), Failed: b.failed.Load(), Dropped: b.dropped.Load(), Invalid: b.invalid.Load(),
		Queued: int64(len(b.queue)),
	}
}

// Close stops taking events, sends every event already taken, and waits until each has its
// fate. If ctx ends first, what is still in flight or queued is abandoned: those events fail
// (counted, and given to OnResult) at once. Close returns the events that failed from the moment
// it was called — those it could not deliver — with an error wrapping ErrNotDelivered, or ctx's
// error when it ended first; events that failed earlier went to OnResult only. Closing twice
// returns ErrClosed.
func (b *Batcher) Close(ctx context.Context) ([]Result, error) {
	first := false
	b.closeOnce.Do(func() {
		first = true
		b.inClose.Store(true)
		close(b.closing)
		b.mu.Lock()
		b.closed = true
		close(b.queue)
		b.mu.Unlock()
	})
	if !first {
		return nil, ErrClosed
	}
	var err error
	select {
	case <-b.done:
	case <-ctx.Done():
		err = fmt.Errorf("client: closing the batcher: %w; events not yet delivered failed", context.Cause(ctx))
		b.cancel(errAbandoned)
		<-b.done
	}
	b.undeliveredM.Lock()
	undelivered := b.undelivered
	b.undelivered = nil
	b.undeliveredM.Unlock()
	if err == nil && len(undelivered) > 0 {
		err = fmt.Errorf("client: closing the batcher: %d events failed: %w", len(undelivered), ErrNotDelivered)
	}
	return undelivered, err
}
