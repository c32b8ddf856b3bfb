package deliver

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
)

// storeTimeout bounds one store call of a worker, so that a stuck store cannot hold a worker for
// ever (it retries after errorPause).
const (
	storeTimeout = 10 * time.Second
	errorPause   = time.Second
	// stateEvery is how often an idle or busy worker reports its lag to the Observer.
	stateEvery = 5 * time.Second
)

// farFuture makes DueRetries return retries whatever their NextAt: the probe of an open circuit
// and the drain after it closes.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// worker delivers one destination. Only its own goroutine touches its fields, but for wake and
// done.
type worker struct {
	e       *Engine
	dest    trackapi.Destination
	sink    trackapi.Sink
	routing *Routing
	policy  Policy
	log     *slog.Logger

	wake     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// after, when set, is the previous worker of the same destination (before a change of its
	// settings): this one starts once that one has settled, so that they never send the same
	// events at once. finished is closed when run returns.
	after    <-chan struct{}
	finished chan struct{}

	cursor     int64
	pending    pending
	lastSettle time.Time
	lastState  time.Time
	nextRetry  time.Time // the earliest retry known to be due, zero when none

	// caughtUp is set when the last read of the log came back short: the next wake-up lingers a
	// few milliseconds, so that a busy stream of small commits goes out in fuller requests.
	caughtUp bool

	failures int       // failed attempts in a row
	open     bool      // the circuit: while open, the cursor stays and the oldest retry probes
	probes   int       // failed probes since the circuit opened
	probeAt  time.Time // when the next probe may go
	drain    bool      // the circuit just closed: every retry is due at once
}

func (w *worker) wakeUp() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stop asks the worker to finish its batch in flight, settle and return.
func (w *worker) stop() { w.stopOnce.Do(func() { close(w.done) }) }

func (w *worker) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *worker) now() time.Time { return w.e.clock.Now() }

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

func (w *worker) run() {
	defer close(w.finished)
	defer func() {
		if err := w.sink.Close(); err != nil {
			w.log.Warn("closing the sink failed", "err", err)
		}
	}()
	if w.after != nil {
		select {
		case <-w.after:
		case <-w.done:
			return
		}
	}
	if !w.start() {
		return
	}
	w.log.Info("delivering", "type", w.dest.Type, "cursor", w.cursor)
	for !w.stopped() {
		worked, err := w.step()
		if err != nil {
			w.log.Error("delivery step failed; trying again", "err", err)
			w.sleep(errorPause)
			continue
		}
		w.flush(!worked)
		w.reportState(false)
		if !worked {
			w.sleep(w.idleWait())
			if w.caughtUp && !w.stopped() {
				w.linger()
			}
		}
	}
	w.flush(true)
	w.reportState(true)
}

// start reads the cursor, retrying until it works or the worker is stopped.
func (w *worker) start() bool {
	for !w.stopped() {
		ctx, cancel := storeCtx()
		state, err := w.e.cfg.Store.DeliveryState(ctx, w.dest.ID)
		cancel()
		if err == nil {
			w.cursor, w.nextRetry = state.Cursor, state.NextRetryAt
			w.lastSettle = w.now()
			return true
		}
		w.log.Error("reading the delivery state failed; trying again", "err", err)
		w.sleep(errorPause)
	}
	return false
}

// sleep waits for d, a wake-up, or stop.
func (w *worker) sleep(d time.Duration) {
	select {
	case <-w.done:
	case <-w.wake:
	case <-w.e.clock.After(d):
	}
}

// linger waits Linger after a wake-up, unless stopped: events committed meanwhile join the
// same request. Without it, each commit of a busy collector (thousands a second) would wake the
// worker for a request of a handful of events, which costs the collect path CPU.
func (w *worker) linger() {
	select {
	case <-w.done:
	case <-w.e.clock.After(w.policy.Linger):
	}
}

// idleWait is how long an idle worker may sleep before something is due: a probe, a retry, a
// settlement, or its state report.
func (w *worker) idleWait() time.Duration {
	now := w.now()
	next := now.Add(stateEvery)
	if w.open && w.probeAt.Before(next) {
		next = w.probeAt
	}
	if !w.open && !w.nextRetry.IsZero() && w.nextRetry.Before(next) {
		next = w.nextRetry
	}
	if w.pending.dirty && now.Add(errorPause).Before(next) {
		// Still pending after the idle flush: the settlement failed. Try again after the pause
		// of any store error, not in a tight loop.
		next = now.Add(errorPause)
	}
	return max(next.Sub(now), time.Millisecond)
}

// step sends one batch: due retries first, else new events. worked is false when there was
// nothing to send.
func (w *worker) step() (worked bool, err error) {
	now := w.now()
	if w.open {
		if now.Before(w.probeAt) {
			return false, nil
		}
		return w.probe(now)
	}
	if w.drain || (!w.nextRetry.IsZero() && !now.Before(w.nextRetry)) {
		due := now
		if w.drain {
			due = farFuture
		}
		retries, err := w.dueRetries(due, w.policy.BatchSize)
		if err != nil {
			return false, err
		}
		if len(retries) > 0 {
			return true, w.sendRetries(retries)
		}
		w.drain = false
		w.nextRetry = time.Time{} // none due now; the next settlement or idle state says when
		if err := w.refreshNextRetry(); err != nil {
			return false, err
		}
	}
	return w.sendNew()
}

// dueRetries settles what is pending first, so that the store never returns a retry this worker
// has already dealt with in memory.
func (w *worker) dueRetries(now time.Time, limit int) ([]trackapi.Retry, error) {
	if w.pending.touchesRetries() {
		if err := w.settle(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := storeCtx()
	defer cancel()
	retries, err := w.e.cfg.Store.DueRetries(ctx, w.dest.ID, now, limit)
	if err != nil {
		return nil, fmt.Errorf("due retries: %w", err)
	}
	return retries, nil
}

func (w *worker) refreshNextRetry() error {
	ctx, cancel := storeCtx()
	defer cancel()
	state, err := w.e.cfg.Store.DeliveryState(ctx, w.dest.ID)
	if err != nil {
		return fmt.Errorf("delivery state: %w", err)
	}
	w.nextRetry = state.NextRetryAt
	return nil
}

// sendNew reads the events after the cursor, filters them and sends what passes.
func (w *worker) sendNew() (bool, error) {
	filter := trackapi.EventFilter{}
	if len(w.dest.Sources) == 1 {
		filter.SourceID = w.dest.Sources[0]
	}
	page := w.policy.BatchSize * w.policy.Parallel
	ctx, cancel := storeCtx()
	events, next, err := w.e.cfg.Log.ReadEvents(ctx, w.cursor, filter, page)
	cancel()
	if err != nil {
		return false, fmt.Errorf("read events after %d: %w", w.cursor, err)
	}
	w.caughtUp = len(events) < page
	if len(events) == 0 {
		return false, nil
	}
	now := w.now()
	batch := make([]trackapi.Envelope, 0, len(events))
	for _, ev := range events {
		if !w.routing.Takes(ev.SourceID) {
			continue // not this destination's source: nothing to count
		}
		switch w.routing.Admit(ev) {
		case "":
			batch = append(batch, EnvelopeOf(ev))
		case outcomeFilteredConsent:
			w.pending.count(now).FilteredConsent++
		case outcomeFilteredCondition:
			w.pending.count(now).FilteredCondition++
		}
	}
	results := w.deliverInParallel(batch)
	now = w.now()
	for i, env := range batch {
		w.settleNew(env, results[i], now)
	}
	w.pending.cursor, w.pending.dirty = next, true
	w.cursor = next
	w.afterAttempt(results, now)
	return true, nil
}

const (
	outcomeFilteredConsent   = "filtered_consent"
	outcomeFilteredCondition = "filtered_condition"
)

// sendRetries sends a batch of retries again.
func (w *worker) sendRetries(retries []trackapi.Retry) error {
	batch, byEnvelope, err := w.retryBatch(retries)
	if err != nil {
		return err
	}
	results := w.deliver(batch)
	now := w.now()
	for i, env := range batch {
		w.settleRetry(env, byEnvelope[i], results[i], now)
	}
	w.afterAttempt(results, now)
	return w.settle()
}

// retryBatch loads the events of retries; a retry whose event left the log (retention) is
// dropped from the table, counted expired.
func (w *worker) retryBatch(retries []trackapi.Retry) ([]trackapi.Envelope, []trackapi.Retry, error) {
	seqs := make([]int64, len(retries))
	for i, r := range retries {
		seqs[i] = r.Seq
	}
	ctx, cancel := storeCtx()
	events, err := w.e.cfg.Store.EventsBySeq(ctx, seqs)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("events of retries: %w", err)
	}
	bySeq := make(map[int64]trackapi.StoredEvent, len(events))
	for _, ev := range events {
		bySeq[ev.Seq] = ev
	}
	batch := make([]trackapi.Envelope, 0, len(retries))
	kept := make([]trackapi.Retry, 0, len(retries))
	for _, r := range retries {
		ev, ok := bySeq[r.Seq]
		if !ok {
			w.pending.delivered(r.Seq) // removes the row; the event is gone
			w.pending.count(w.now()).Expired++
			continue
		}
		batch = append(batch, EnvelopeOf(ev))
		kept = append(kept, r)
	}
	return batch, kept, nil
}

// probe sends the oldest retry while the circuit is open; a success closes it.
func (w *worker) probe(now time.Time) (bool, error) {
	retries, err := w.dueRetries(farFuture, 1)
	if err != nil {
		return false, err
	}
	if len(retries) == 0 {
		w.closeCircuit() // nothing waits: new events will tell
		return true, nil
	}
	if err := w.sendRetries(retries); err != nil {
		return false, err
	}
	return true, nil
}

// deliverInParallel cuts events into batches of BatchSize and sends up to Parallel of them at
// once: a destination behind by many events catches up at several requests' pace, not one.
func (w *worker) deliverInParallel(events []trackapi.Envelope) []trackapi.DeliveryResult {
	size := w.policy.BatchSize
	if len(events) <= size {
		return w.deliver(events)
	}
	results := make([]trackapi.DeliveryResult, len(events))
	var wg sync.WaitGroup
	for start := 0; start < len(events); start += size {
		chunk := events[start:min(start+size, len(events))]
		wg.Go(func() { copy(results[start:], w.deliver(chunk)) })
	}
	wg.Wait()
	return results
}

// deliver sends one batch through the sink within the attempt timeout.
func (w *worker) deliver(batch []trackapi.Envelope) []trackapi.DeliveryResult {
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.policy.AttemptTimeout)
	defer cancel()
	results := w.sink.Deliver(ctx, batch)
	if len(results) != len(batch) {
		err := fmt.Errorf("the %s sink returned %d results for %d events", w.dest.Type, len(results), len(batch))
		w.log.Error("sink bug", "err", err)
		results = make([]trackapi.DeliveryResult, len(batch))
		for i := range results {
			results[i] = trackapi.DeliveryResult{Err: err, Reason: "sink_error"}
		}
	}
	return results
}

// afterAttempt keeps the circuit breaker's count: an attempt where nothing got through and
// something will be retried is a failure; any delivery closes the circuit.
func (w *worker) afterAttempt(results []trackapi.DeliveryResult, now time.Time) {
	if len(results) == 0 {
		return
	}
	delivered, retryable := 0, 0
	var retryAfter time.Duration
	for _, r := range results {
		switch {
		case r.Err == nil:
			delivered++
		case !r.Permanent:
			retryable++
			retryAfter = max(retryAfter, r.RetryAfter)
		}
	}
	if delivered > 0 {
		if w.open {
			w.closeCircuit()
		}
		w.failures = 0
		return
	}
	if retryable == 0 {
		return // every event refused for good: the destination answers, it is not down
	}
	w.failures++
	if w.open {
		w.probes++
		w.probeAt = now.Add(w.wait(w.probes, retryAfter))
		return
	}
	if w.failures >= w.policy.BreakerAfter {
		w.open, w.probes = true, 1
		w.probeAt = now.Add(w.wait(1, retryAfter))
		w.log.Warn("circuit open: the destination failed every attempt; holding the cursor and probing with the oldest retry",
			"failures", w.failures, "next_probe", w.probeAt)
	}
}

func (w *worker) closeCircuit() {
	if w.open {
		w.log.Info("circuit closed: the destination answers again; sending the waiting retries")
	}
	w.open, w.probes, w.failures, w.drain = false, 0, 0, true
}

// wait is the delay before attempt failed+1: the backoff, or the destination's Retry-After
// (capped) when it asked for longer.
func (w *worker) wait(failed int, retryAfter time.Duration) time.Duration {
	return max(w.policy.backoff(failed), min(retryAfter, w.policy.RetryAfterMax))
}

// settleNew records the fate of an event at its first attempt.
func (w *worker) settleNew(env trackapi.Envelope, r trackapi.DeliveryResult, now time.Time) {
	counts := w.pending.count(now)
	switch {
	case r.Err == nil:
		counts.Delivered++
		counts.LatencyMillisSum += max(now.UnixMilli()-env.ReceivedAt, 0)
	case r.Permanent:
		counts.Rejected++
		w.pending.dead(w.deadLetter(env, r, trackapi.DeadLetterRejected, 1, now, now))
		w.pending.issue(w.issue(env, r, 1, now))
	default:
		counts.Retried++
		w.pending.retry(trackapi.Retry{Seq: env.Seq, Attempt: 1, FirstFailedAt: now,
			NextAt: now.Add(w.wait(1, r.RetryAfter)), Reason: r.Reason, Error: errText(r.Err)})
		w.pending.issue(w.issue(env, r, 1, now))
	}
}

// settleRetry records the fate of an event at a later attempt, giving up when the budget is
// spent: GiveUpAfter since the first failure and at least MinAttempts attempts.
func (w *worker) settleRetry(env trackapi.Envelope, prev trackapi.Retry, r trackapi.DeliveryResult, now time.Time) {
	counts := w.pending.count(now)
	attempts := prev.Attempt + 1
	first := prev.FirstFailedAt
	if first.IsZero() {
		first = now
	}
	switch {
	case r.Err == nil:
		counts.DeliveredAfterRetry++
		counts.LatencyMillisSum += max(now.UnixMilli()-env.ReceivedAt, 0)
		w.pending.delivered(env.Seq)
	case r.Permanent:
		counts.Rejected++
		w.pending.dead(w.deadLetter(env, r, trackapi.DeadLetterRejected, attempts, first, now))
		w.pending.issue(w.issue(env, r, attempts, now))
	case now.Sub(first) >= w.policy.GiveUpAfter && attempts >= w.policy.MinAttempts:
		counts.Failed++
		w.pending.dead(w.deadLetter(env, r, trackapi.DeadLetterFailed, attempts, first, now))
		w.pending.issue(w.issue(env, r, attempts, now))
	default:
		counts.Retried++
		w.pending.retry(trackapi.Retry{Seq: env.Seq, Attempt: attempts, FirstFailedAt: first,
			NextAt: now.Add(w.wait(attempts, r.RetryAfter)), Reason: r.Reason, Error: errText(r.Err)})
		w.pending.issue(w.issue(env, r, attempts, now))
	}
}

func (w *worker) deadLetter(env trackapi.Envelope, r trackapi.DeliveryResult, kind string, attempts int, first, now time.Time) trackapi.DeadLetter {
	return trackapi.DeadLetter{Seq: env.Seq, DestinationID: w.dest.ID, Kind: kind, Reason: r.Reason, Error: errText(r.Err),
		Attempts: attempts, FirstFailedAt: first, FailedAt: now, EventName: env.EventName}
}

func (w *worker) issue(env trackapi.Envelope, r trackapi.DeliveryResult, attempt int, now time.Time) trackapi.IssueReport {
	kind := "error"
	if r.Permanent {
		kind = trackapi.DeadLetterRejected
	}
	return trackapi.IssueReport{Kind: kind, Reason: r.Reason, EventName: env.EventName, At: now, Seq: env.Seq,
		Attempt: attempt, Sample: r.Sample}
}

// flush settles what is pending when SettleEvery has passed since the last settlement, or at
// once when force is set (the worker goes idle or stops).
func (w *worker) flush(force bool) {
	if !w.pending.dirty || (!force && w.now().Sub(w.lastSettle) < w.e.cfg.SettleEvery) {
		return
	}
	if err := w.settle(); err != nil {
		w.log.Error("settling deliveries failed; keeping them to try again", "err", err)
	}
}

// settle commits the pending settlement. On failure it stays pending (the cursor in memory has
// moved, so the events are not sent again by this worker; a crash before the next try re-sends
// them, which is at-least-once).
func (w *worker) settle() error {
	if !w.pending.dirty {
		return nil
	}
	s := w.pending.settlement(w.dest.ID)
	ctx, cancel := storeCtx()
	defer cancel()
	if err := w.e.cfg.Store.SettleDelivery(ctx, s); err != nil {
		return fmt.Errorf("settle delivery: %w", err)
	}
	for _, r := range s.Retries {
		if w.nextRetry.IsZero() || r.NextAt.Before(w.nextRetry) {
			w.nextRetry = r.NextAt
		}
	}
	w.observe(s.Stats)
	w.pending = pending{}
	w.lastSettle = w.now()
	return nil
}

func (w *worker) observe(stats []trackapi.DeliveryStats) {
	obs := w.e.cfg.Observer.Attempts
	for _, s := range stats {
		for outcome, n := range map[string]int64{
			"delivered": s.Delivered, "delivered_after_retry": s.DeliveredAfterRetry, "retried": s.Retried,
			"rejected": s.Rejected, "failed": s.Failed, "expired": s.Expired,
			outcomeFilteredConsent: s.FilteredConsent, outcomeFilteredCondition: s.FilteredCondition,
		} {
			if n > 0 {
				obs(w.dest.Name, outcome, int(n))
			}
		}
	}
}

// reportState gives the Observer the destination's lag every stateEvery (or now, when final).
func (w *worker) reportState(final bool) {
	if !final && w.now().Sub(w.lastState) < stateEvery {
		return
	}
	w.lastState = w.now()
	ctx, cancel := storeCtx()
	state, err := w.e.cfg.Store.DeliveryState(ctx, w.dest.ID)
	cancel()
	if err != nil {
		w.log.Warn("reading the delivery state for metrics failed", "err", err)
		return
	}
	if !w.open {
		w.nextRetry = state.NextRetryAt
	}
	lagSeconds := 0.0
	if !state.LagSince.IsZero() {
		lagSeconds = max(w.now().Sub(state.LagSince).Seconds(), 0)
	}
	w.e.cfg.Observer.State(w.dest.Name, state.LagEvents, lagSeconds, state.Retries, w.open)
}

// pending is the settlement being gathered between commits: the final fate of each seq touched.
type pending struct {
	dirty       bool
	cursor      int64
	retries     map[int64]trackapi.Retry
	deliveredTo map[int64]bool
	deadLetters map[int64]trackapi.DeadLetter
	stats       map[int64]*trackapi.DeliveryCounts // by minute (Unix seconds)
	issues      []trackapi.IssueReport
}

func (p *pending) touchesRetries() bool {
	return len(p.retries)+len(p.deliveredTo)+len(p.deadLetters) > 0
}

func (p *pending) count(now time.Time) *trackapi.DeliveryCounts {
	p.dirty = true
	if p.stats == nil {
		p.stats = map[int64]*trackapi.DeliveryCounts{}
	}
	minute := now.UTC().Truncate(time.Minute).Unix()
	c := p.stats[minute]
	if c == nil {
		c = &trackapi.DeliveryCounts{}
		p.stats[minute] = c
	}
	return c
}

func (p *pending) retry(r trackapi.Retry) {
	p.dirty = true
	if p.retries == nil {
		p.retries = map[int64]trackapi.Retry{}
	}
	delete(p.deliveredTo, r.Seq)
	delete(p.deadLetters, r.Seq)
	p.retries[r.Seq] = r
}

func (p *pending) delivered(seq int64) {
	p.dirty = true
	if p.deliveredTo == nil {
		p.deliveredTo = map[int64]bool{}
	}
	delete(p.retries, seq)
	p.deliveredTo[seq] = true
}

func (p *pending) dead(d trackapi.DeadLetter) {
	p.dirty = true
	if p.deadLetters == nil {
		p.deadLetters = map[int64]trackapi.DeadLetter{}
	}
	delete(p.retries, d.Seq)
	delete(p.deliveredTo, d.Seq)
	p.deadLetters[d.Seq] = d
}

// issue keeps a failure for the delivery issues; only the first of a batch's failures with the
// same reason keeps its sample, since the store keeps a few samples anyway.
func (p *pending) issue(r trackapi.IssueReport) {
	p.dirty = true
	for _, seen := range p.issues {
		if seen.Kind == r.Kind && seen.Reason == r.Reason && seen.Sample != nil {
			r.Sample = nil
			break
		}
	}
	p.issues = append(p.issues, r)
}

func (p *pending) settlement(destinationID int64) trackapi.Settlement {
	s := trackapi.Settlement{DestinationID: destinationID, Cursor: p.cursor, Issues: p.issues}
	for _, r := range p.retries {
		s.Retries = append(s.Retries, r)
	}
	for seq := range p.deliveredTo {
		s.Delivered = append(s.Delivered, seq)
	}
	for _, d := range p.deadLetters {
		s.DeadLetters = append(s.DeadLetters, d)
	}
	for minute, c := range p.stats {
		s.Stats = append(s.Stats, trackapi.DeliveryStats{Minute: time.Unix(minute, 0).UTC(), DeliveryCounts: *c})
	}
	return s
}

// EnvelopeOf is how a stored event goes out; its ID ("<source_id>:<event_id>") is stable across
// retries. The config API shows outgoing payloads with it.
func EnvelopeOf(ev trackapi.StoredEvent) trackapi.Envelope {
	return trackapi.Envelope{
		ID:       strconv.FormatInt(ev.SourceID, 10) + ":" + ev.EventID,
		SourceID: ev.SourceID, Site: ev.Site, ReceivedAt: ev.ReceivedAt, Event: ev.Event,
		Seq: ev.Seq, EventID: ev.EventID, EventName: ev.EventName,
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
