// Package kafka is the sink of Kafka destinations: it produces one record per envelope to the
// destination's topic with franz-go, idempotently and with acks from all in-sync replicas, and
// says how each record fared.
//
// A record's key is the event's user.consistent_anonymous_id, so that one visitor's events land
// in one partition and keep their order there; events without one get no key (a null key, spread
// over the partitions). The value is the envelope's JSON, as trackapi.Envelope marshals, and the
// headers event_id and source_id let consumers route or deduplicate without parsing the value.
//
// Delivery is at least once. The idempotent producer removes the duplicates of its own retries
// within one attempt, but an attempt abandoned at its deadline may still be written later, and
// the engine's retry then writes the records again: consumers deduplicate on the envelope id (or
// the event_id and source_id headers).
//
// The tests run against kfake, franz-go's in-process fake cluster: no real Kafka broker can run
// on the project's machines (there is no Debian package, no Docker, and no other registry to get
// one from). kfake speaks the protocol, including idempotent produce and max.message.bytes, but it
// does not replicate or fsync: acks=all there proves the client's handling, not durability.
package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/trackapi/trackapi"
)

// DefaultBatchSize is the batch size of a Kafka destination whose BatchSize is 0. The producer
// groups records by partition itself, so the batch only bounds how many records one attempt waits
// for: large enough to keep the producer busy, small enough that a slow cluster times out few.
const DefaultBatchSize = 1000

// Options are the optional settings of New. The zero value is the default.
type Options struct {
	// Logger receives the producer's warnings and errors; nil: slog.Default().
	Logger *slog.Logger
	// MaxRecordBytes bounds a record batch before compression (franz-go's ProducerBatchMaxBytes,
	// Kafka's max.message.bytes); 0: franz-go's default, 1000012. Set it to the
	// topic's max.message.bytes when that is lower: a record over it then fails alone, before it
	// is sent, rather than failing a whole batch at the broker. (When the broker still refuses a
	// batch as too large, Deliver sends its records again one at a time, so that only the records
	// that are too large on their own fail.)
	MaxRecordBytes int32
	// DialTimeout bounds a connection to a broker; 0: 5 s.
	DialTimeout time.Duration
	// ProduceTimeout is how long a broker may take to answer a produce request (to get the acks
	// of the in-sync replicas); 0: 10 s.
	ProduceTimeout time.Duration
	// RecordTimeout bounds how long a record may wait in the producer, retries included, when it
	// is safe to fail it (franz-go's RecordDeliveryTimeout); 0: 1 minute. Deliver returns by its
	// context's deadline anyway.
	RecordTimeout time.Duration
	// CloseTimeout bounds the flush of Close; 0: 5 s.
	CloseTimeout time.Duration
	// ClientOptions are appended to the producer's options, for what a destination does not say
	// (TLS, SASL, a client id) and for tests.
	ClientOptions []kgo.Opt
}

// Sink produces envelopes to one Kafka topic. It is safe for concurrent use.
type Sink struct {
	cl           *kgo.Client
	topic        string
	target       string // kafka://brokers/topic, for samples
	closeTimeout time.Duration
	conns        *connWatch
	log          *slog.Logger
}

var (
	_ trackapi.Sink      = (*Sink)(nil)
	_ trackapi.Previewer = (*Sink)(nil) // the config API's dry run finds Preview through it
)

// topicName is Kafka's rule for topic names; a bad name is refused by New rather than turned
// into a dead letter for every event.
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// New returns the sink of a Kafka destination. It does not connect: the producer dials the
// brokers on the first Deliver, so a destination can be made while its cluster is down.
func New(d trackapi.Destination, opts Options) (*Sink, error) {
	if d.Type != trackapi.DestinationKafka {
		return nil, fmt.Errorf("kafka: destination %d is of type %q, not %q", d.ID, d.Type, trackapi.DestinationKafka)
	}
	if len(d.Config.Brokers) == 0 {
		return nil, fmt.Errorf("kafka: destination %d: no brokers", d.ID)
	}
	for _, b := range d.Config.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("kafka: destination %d: broker %q: want host:port: %w", d.ID, b, err)
		}
	}
	if !topicName.MatchString(d.Config.Topic) || d.Config.Topic == "." || d.Config.Topic == ".." {
		return nil, fmt.Errorf("kafka: destination %d: topic %q: want 1 to 249 of a-z A-Z 0-9 . _ -", d.ID, d.Config.Topic)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.ProduceTimeout <= 0 {
		opts.ProduceTimeout = 10 * time.Second
	}
	if opts.RecordTimeout <= 0 {
		opts.RecordTimeout = time.Minute
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 5 * time.Second
	}
	log := opts.Logger.With("destination", d.ID, "topic", d.Config.Topic)
	conns := &connWatch{}
	kopts := []kgo.Opt{
		kgo.SeedBrokers(d.Config.Brokers...),
		kgo.DefaultProduceTopic(d.Config.Topic),
		// Acks from every in-sync replica, and idempotence (franz-go's default, which requires
		// them): a record acknowledged survives the loss of the leader, and the producer's own
		// retries never write it twice.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DialTimeout(opts.DialTimeout),
		kgo.ProduceRequestTimeout(opts.ProduceTimeout),
		kgo.RecordDeliveryTimeout(opts.RecordTimeout),
		kgo.WithLogger(slogLogger{log}),
		kgo.WithHooks(conns),
	}
	if opts.MaxRecordBytes > 0 {
		kopts = append(kopts, kgo.ProducerBatchMaxBytes(opts.MaxRecordBytes))
	}
	kopts = append(kopts, opts.ClientOptions...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: destination %d: %w", d.ID, err)
	}
	return &Sink{
		cl:           cl,
		topic:        d.Config.Topic,
		target:       "kafka://" + strings.Join(d.Config.Brokers, ",") + "/" + d.Config.Topic,
		closeTimeout: opts.CloseTimeout,
		conns:        conns,
		log:          log,
	}, nil
}

// Deliver produces one record per envelope and waits for the acks of all of them, or for ctx to
// end: a record not acknowledged by then is a retryable timeout (it may still be written, which
// the engine's retry then repeats: consumers deduplicate on the envelope id).
func (s *Sink) Deliver(ctx context.Context, batch []trackapi.Envelope) []trackapi.DeliveryResult {
	results := make([]trackapi.DeliveryResult, len(batch))
	recs, pending := s.records(batch, results)
	errs := s.produce(ctx, recs, pending)

	// The broker refuses a whole record batch that is over its max.message.bytes, so records
	// that would fit alone may have failed with a large neighbour. Each is sent again alone,
	// one after the other, so that it is in a batch of its own: only a record too large by
	// itself stays refused.
	var tooLarge []int
	for _, i := range pending {
		if errors.Is(errs[i], kerr.MessageTooLarge) {
			tooLarge = append(tooLarge, i)
		}
	}
	if len(tooLarge) > 1 {
		for _, i := range tooLarge {
			if ctx.Err() != nil {
				break // errs[i] stays MESSAGE_TOO_LARGE: the last answer
			}
			recs[i], _ = newRecord(batch[i]) // a fresh record: the producer filled the first one's fields
			errs[i] = s.produce(ctx, recs, []int{i})[i]
		}
	}

	for _, i := range pending {
		err := errs[i]
		if err == nil {
			continue
		}
		reason, permanent := classify(err)
		err = fmt.Errorf("kafka: producing envelope %s to %s: %w", batch[i].ID, s.topic, err)
		results[i] = trackapi.DeliveryResult{Err: err, Permanent: permanent, Reason: reason, Sample: s.sample(batch[i], recs[i], err)}
	}
	return results
}

// Preview shows the records Deliver would produce for batch, without producing them, as one
// "PRODUCE" request to kafka://<brokers>/<topic>: the body is the records' values one a line, and
// the headers are the record headers the sink sets (event_id, source_id) and the key, each the
// records' values joined by ", " in the order of the lines (one record: its own values), the way an
// HTTP sample joins a repeated header. The records are built by the code Deliver uses; the
// producer would group them into one request per partition leader, which the preview does not
// show. Envelopes Deliver would refuse (invalid_event) are left out; when every one would be, the
// error is the one Deliver would report.
func (s *Sink) Preview(batch []trackapi.Envelope) (trackapi.SampleRequest, error) {
	results := make([]trackapi.DeliveryResult, len(batch))
	recs, pending := s.records(batch, results)
	if len(pending) == 0 {
		for _, r := range results {
			if r.Err != nil {
				return trackapi.SampleRequest{}, r.Err
			}
		}
		return trackapi.SampleRequest{}, errors.New("kafka: preview: the batch is empty, no record would be produced")
	}
	shown := make([]*kgo.Record, len(pending))
	for j, i := range pending {
		shown[j] = recs[i]
	}
	return s.produceRequest(shown), nil
}

// records builds the record of each envelope, recs[i] for batch[i], as Deliver produces them and
// Preview shows them; pending are the indexes of those built. An envelope that cannot be encoded
// gets its permanent refusal in results (it never will be) and no record.
func (s *Sink) records(batch []trackapi.Envelope, results []trackapi.DeliveryResult) (recs []*kgo.Record, pending []int) {
	recs = make([]*kgo.Record, len(batch))
	for i, env := range batch {
		rec, err := newRecord(env)
		if err != nil {
			results[i] = trackapi.DeliveryResult{
				Err:       fmt.Errorf("kafka: envelope %s: %w", env.ID, err),
				Permanent: true,
				Reason:    "invalid_event",
				Sample:    s.sample(env, rec, err),
			}
			continue
		}
		recs[i] = rec
		pending = append(pending, i)
	}
	return recs, pending
}

// unacknowledgedError is the error of a record whose ack had not come when the attempt ended,
// or that the producer failed for lack of time (the context's end, its record timeout). The
// producer retries on its own until then, so that error says little; the last failure to connect
// to a broker during the attempt, when there was one, says why (brokers down, a name that does not
// resolve), and gives the reason.
type unacknowledgedError struct {
	cause     error // the context's, or the producer's
	connErr   error // nil: the brokers were reachable, or not tried
	abandoned bool  // the record was left in flight: it may still be written
}

func (e *unacknowledgedError) Error() string {
	msg := "not acknowledged in time: " + e.cause.Error()
	if e.abandoned {
		msg = "no acknowledgement before the attempt's deadline (the record may still be written): " + e.cause.Error()
	}
	if e.connErr != nil {
		msg += "; last connection error: " + e.connErr.Error()
	}
	return msg
}

func (e *unacknowledgedError) Unwrap() []error {
	if e.connErr == nil {
		return []error{e.cause}
	}
	return []error{e.cause, e.connErr}
}

// produce sends recs[i] for each i of which, and returns their errors (indexed as recs) once
// every one is acknowledged or failed, or when ctx ends, whichever comes first.
func (s *Sink) produce(ctx context.Context, recs []*kgo.Record, which []int) []error {
	started := time.Now()
	errs := make([]error, len(recs))
	var (
		mu   sync.Mutex // guards errs and done against the callbacks of an abandoned attempt
		done = make([]bool, len(recs))
		wg   sync.WaitGroup
	)
	for _, i := range which {
		wg.Add(1)
		s.cl.Produce(ctx, recs[i], func(_ *kgo.Record, err error) {
			mu.Lock()
			errs[i], done[i] = err, true
			mu.Unlock()
			wg.Done()
		})
	}
	all := make(chan struct{})
	go func() {
		wg.Wait() // franz-go calls every callback, at the latest when the client is closed
		close(all)
	}()
	select {
	case <-all:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	out := make([]error, len(recs))
	for _, i := range which {
		if !done[i] {
			out[i] = &unacknowledgedError{cause: context.Cause(ctx), connErr: s.conns.failedSince(started), abandoned: true}
			continue
		}
		out[i] = errs[i]
		if timedOut(errs[i]) {
			out[i] = &unacknowledgedError{cause: errs[i], connErr: s.conns.failedSince(started)}
		}
	}
	return out
}

// timedOut reports whether the producer failed a record for lack of time.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrRecordTimeout)
}

// Close sends what the producer still buffers (within the close timeout) and closes its
// connections. Records still unsent then are failed; their envelopes were already reported as
// timeouts, and the engine retries them.
func (s *Sink) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.closeTimeout)
	defer cancel()
	err := s.cl.Flush(ctx)
	s.cl.Close()
	if err != nil {
		return fmt.Errorf("kafka: flushing to %s: %w", s.topic, err)
	}
	return nil
}

// newRecord is an envelope as its record: key, value and headers. The record's topic is left to
// the client's default, the destination's.
func newRecord(env trackapi.Envelope) (*kgo.Record, error) {
	value, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encoding the envelope: %w", err)
	}
	return &kgo.Record{
		Key:   partitionKey(env.Event),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: "event_id", Value: []byte(env.EventID)},
			{Key: "source_id", Value: []byte(strconv.FormatInt(env.SourceID, 10))},
		},
	}, nil
}

// partitionKey is the event's user.consistent_anonymous_id (a string, or a number's literal
// text), or nil when it has none, so that an anonymous visitor's events keep their order.
func partitionKey(event json.RawMessage) []byte {
	var e struct {
		User struct {
			ID json.RawMessage `json:"consistent_anonymous_id"`
		} `json:"user"`
	}
	if json.Unmarshal(event, &e) != nil || len(e.User.ID) == 0 {
		return nil
	}
	var id any
	dec := json.NewDecoder(strings.NewReader(string(e.User.ID)))
	dec.UseNumber()
	if dec.Decode(&id) != nil {
		return nil
	}
	switch v := id.(type) {
	case string:
		if v != "" {
			return []byte(v)
		}
	case json.Number:
		return []byte(v.String())
	}
	return nil
}

// classify turns a produce error into a DeliveryResult's reason, and says whether it is
// permanent: only a refusal of the record itself (too large, invalid) or of the topic (an invalid
// name, no authorisation to write to it). Everything else (brokers down, timeouts, too few
// in-sync replicas, other authorisation or configuration trouble an operator can fix) is
// retryable, and the events wait.
func classify(err error) (reason string, permanent bool) {
	var ue *unacknowledgedError
	if errors.As(err, &ue) && ue.connErr != nil {
		if reason, _ := classify(ue.connErr); reason != "kafka_error" {
			return reason, false
		}
	}
	var ke *kerr.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout):
		return "timeout", false
	case errors.Is(err, context.Canceled):
		return "canceled", false
	case errors.As(err, &ke):
		switch ke {
		case kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
			kerr.InvalidTopicException, kerr.TopicAuthorizationFailed:
			return kafkaReason(ke), true
		case kerr.RequestTimedOut:
			return "timeout", false
		}
		return kafkaReason(ke), false
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused", false
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return "connection_reset", false
	case errors.Is(err, kgo.ErrClientClosed):
		return "closed", false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "dns", false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout", false
	}
	return "kafka_error", false
}

// kafkaReason is kafka_ and the error's protocol name in lower case: kafka_message_too_large.
func kafkaReason(ke *kerr.Error) string {
	return "kafka_" + strings.ToLower(ke.Message)
}

// sample shows a failed record as a produce "request" (produceRequest); an envelope that got no
// record shows its event_id and source_id headers, no key and no value.
func (s *Sink) sample(env trackapi.Envelope, rec *kgo.Record, err error) *trackapi.DeliverySample {
	if rec != nil {
		return &trackapi.DeliverySample{Request: s.produceRequest([]*kgo.Record{rec}), Error: err.Error()}
	}
	headers := map[string]string{
		"event_id":  env.EventID,
		"source_id": strconv.FormatInt(env.SourceID, 10),
		"key":       "",
	}
	return &trackapi.DeliverySample{
		Request: trackapi.SampleRequest{Method: "PRODUCE", URL: s.target, Headers: headers},
		Error:   err.Error(),
	}
}

// produceRequest shows records as one produce "request", in failure samples and previews alike:
// the target, the record headers and "key" (each the records' values joined by ", "), and the
// values one a line, cut to trackapi.SampleBodyLimit. Nothing in a record is a credential.
func (s *Sink) produceRequest(recs []*kgo.Record) trackapi.SampleRequest {
	headers := map[string]string{}
	add := func(name string, value []byte, first bool) {
		if first {
			headers[name] = string(value)
		} else {
			headers[name] += ", " + string(value)
		}
	}
	var body []byte
	for j, rec := range recs {
		for _, h := range rec.Headers {
			add(h.Key, h.Value, j == 0)
		}
		add("key", rec.Key, j == 0)
		if len(body) <= trackapi.SampleBodyLimit { // past it, SampleBody cuts what would follow
			if j > 0 {
				body = append(body, '\n')
			}
			body = append(body, rec.Value...)
		}
	}
	return trackapi.SampleRequest{Method: "PRODUCE", URL: s.target, Headers: headers, Body: trackapi.SampleBody(body)}
}

// slogLogger makes franz-go log through slog, at its warnings and errors only: the producer's
// debug and info lines (connections, metadata) would drown the server's logs.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l slogLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	l.log.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}

// connWatch remembers the last failure to connect to a broker, until a connection succeeds: a
// franz-go hook, as the producer retries connections without failing records.
type connWatch struct {
	mu  sync.Mutex
	err error
	at  time.Time
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (w *connWatch) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err, w.at = err, time.Now()
}

// failedSince is the last connection error if it happened at or after t and no connection has
// succeeded since.
func (w *connWatch) failedSince(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil || w.at.Before(t) {
		return nil
	}
	return w.err
}
