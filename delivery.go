package trackapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// The kinds of destination. Each has its own sink package (webhook/, forward/, kafka/, file/).
const (
	DestinationWebhook = "webhook"
	DestinationForward = "forward"
	DestinationKafka   = "kafka"
	DestinationFile    = "file"
)

// The states of a destination: a paused one keeps its cursor and its events wait in the event log.
const (
	DestinationActive = "active"
	DestinationPaused = "paused"
)

// Destination is where stored events are routed: one sink with its settings, the sources it takes
// events from, and the filters an event must pass.
type Destination struct {
	ID     int64
	Name   string
	Type   string // DestinationWebhook, ...
	Config DestinationConfig
	// Sources are the source ids whose events go here; empty means every source.
	Sources []int64
	// ConsentCategory, when set, lets out only events whose user.consent_categories (strings or
	// numbers, compared as strings) contain it; others are counted filtered_consent.
	ConsentCategory string
	// Filter is the condition filter as JSON ({"event_names", "exclude_event_names",
	// "conditions"}); empty: none. deliver.ParseFilter checks it when the destination is made, so
	// that a bad filter is an error then, never at delivery time.
	Filter json.RawMessage
	// BatchSize is the most events a request carries (0: the sink's default).
	BatchSize int
	Status    string // DestinationActive or DestinationPaused
	CreatedAt time.Time
	UpdatedAt time.Time
}

// DestinationConfig holds the settings of every sink kind; each kind reads its own fields.
type DestinationConfig struct {
	// URL is the webhook's endpoint, or the base URL of the collector a forward destination sends to.
	URL string `json:"url,omitempty"`
	// AllowPrivate lets a webhook or forward destination reach loopback and private addresses,
	// which are refused otherwise (a destination must not become a way into the local network).
	AllowPrivate bool `json:"allow_private,omitempty"`
	// Secrets sign webhook requests (Standard Webhooks, "whsec_" + base64 of the key). The first is
	// the current one; during a rotation the previous one signs too, until its ExpiresAt.
	Secrets []SigningSecret `json:"secrets,omitempty"`
	// Site and Token are the forward destination's source on the far collector.
	Site  string `json:"site,omitempty"`
	Token string `json:"token,omitempty"`
	// Brokers and Topic are the Kafka destination's cluster and topic.
	Brokers []string `json:"brokers,omitempty"`
	Topic   string   `json:"topic,omitempty"`
	// Path is the file destination's directory, which gets one NDJSON file an hour.
	Path string `json:"path,omitempty"`
}

// SigningSecret is one webhook signing secret.
type SigningSecret struct {
	Secret    string    `json:"secret"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: current, no expiry
}

// Envelope is one event as every sink sends it: the webhook body's element, the Kafka record's
// value, the file's line. ID is stable across retries, so that receivers can deduplicate on it.
type Envelope struct {
	ID         string          `json:"id"` // "<source_id>:<event_id>"
	SourceID   int64           `json:"source_id"`
	Site       string          `json:"site"`
	ReceivedAt int64           `json:"received_at"` // epoch milliseconds
	Event      json.RawMessage `json:"event"`
	// Seq, EventID and EventName are the event's place in the event log, its id and its name, for
	// the engine and the sinks that need them (a Kafka header, the forward sink); not in the JSON.
	Seq       int64  `json:"-"`
	EventID   string `json:"-"`
	EventName string `json:"-"`
}

// AppendJSON appends the envelope's JSON to b: the keys of its json tags in their order, and the
// event byte for byte as stored. json.Marshal would compact the event and escape <, > and & in
// it, so that a receiver would not get what the sender sent; every sink writes envelopes with
// this instead. It fails when the event is not valid JSON.
func (e Envelope) AppendJSON(b []byte) ([]byte, error) {
	if !json.Valid(e.Event) {
		return nil, errors.New("envelope: the event is not valid JSON")
	}
	id, err := json.Marshal(e.ID)
	if err != nil {
		return nil, fmt.Errorf("envelope: encode id: %w", err)
	}
	site, err := json.Marshal(e.Site)
	if err != nil {
		return nil, fmt.Errorf("envelope: encode site: %w", err)
	}
	b = append(b, `{"id":`...)
	b = append(b, id...)
	b = append(b, `,"source_id":`...)
	b = strconv.AppendInt(b, e.SourceID, 10)
	b = append(b, `,"site":`...)
	b = append(b, site...)
	b = append(b, `,"received_at":`...)
	b = strconv.AppendInt(b, e.ReceivedAt, 10)
	b = append(b, `,"event":`...)
	b = append(b, e.Event...)
	return append(b, '}'), nil
}

// Sink sends batches of envelopes to one destination. The delivery engine owns retries, dead
// letters and statistics; a sink only sends and says how each envelope fared.
type Sink interface {
	// Deliver sends batch (at most the destination's batch size) and returns one result per
	// envelope, results[i] for batch[i]. It returns by ctx's deadline (the attempt timeout). The
	// engine calls it from several goroutines at once when a destination is behind.
	Deliver(ctx context.Context, batch []Envelope) []DeliveryResult
	// Close releases connections and files.
	Close() error
}

// Previewer is a Sink that can show the request it would send for a batch without sending it: the
// dry run of the config API's destination test.
//
// The request is built by the code Deliver sends with, so an operator sees what the destination
// would get (the same body bytes and headers), shown as a DeliverySample's request is: credentials
// redacted, body cut with SampleBody. When the batch would take several requests (a size limit),
// it is the first. Preview does no I/O and is safe for concurrent use; it fails when the batch
// would send nothing (every envelope refused, no current signing secret), with the error Deliver
// would report.
type Previewer interface {
	Preview(batch []Envelope) (SampleRequest, error)
}

// DeliveryResult is the fate of one envelope in one attempt.
type DeliveryResult struct {
	// Err is nil when the envelope was delivered.
	Err error
	// Permanent marks a refusal that retrying would not change (a 4xx other than 408 and 429, an
	// event the sink cannot take): the envelope becomes a dead letter at once.
	Permanent bool
	// RetryAfter is the wait the destination asked for (Retry-After), 0 when it did not.
	RetryAfter time.Duration
	// Reason groups failures into issues: http_503, http_400, timeout, connection_refused,
	// connection_reset, dns, tls, kafka_<error>, io, ... Empty when delivered.
	Reason string
	// Sample shows the exchange that failed, for the delivery issues; nil when delivered.
	Sample *DeliverySample
}

// DeliverySample is one failed exchange with a destination, as shown to operators: bodies cut at
// 4 KB, credentials (Authorization, signatures, tokens in URLs) redacted.
type DeliverySample struct {
	Request  SampleRequest   `json:"request"`
	Response *SampleResponse `json:"response,omitempty"` // nil when no answer came
	Error    string          `json:"error,omitempty"`
}

// SampleRequest is the request part of a DeliverySample.
type SampleRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// SampleResponse is the answer part of a DeliverySample.
type SampleResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// SampleBodyLimit is how much of a request or response body a DeliverySample keeps.
const SampleBodyLimit = 4096

// SampleBody is how every sink cuts a body for a DeliverySample: its first SampleBodyLimit
// bytes, backing off to a UTF-8 character boundary so that the sample stays valid text.
func SampleBody(b []byte) string {
	n := min(len(b), SampleBodyLimit)
	for n < len(b) && n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n])
}

// Retry is an event waiting for another attempt at one destination.
type Retry struct {
	Seq           int64
	Attempt       int       // attempts made so far (1 after the first failure)
	FirstFailedAt time.Time // the retry budget counts from here
	NextAt        time.Time
	Reason        string // the last failure's DeliveryResult.Reason
	Error         string // the last failure's message
}

// The kinds of dead letter.
const (
	DeadLetterRejected = "rejected" // the destination refused the event for good
	DeadLetterFailed   = "failed"   // the retry budget was spent
)

// DeadLetter is an event a destination did not take, kept until it is replayed or purged (or its
// event leaves the log by retention).
type DeadLetter struct {
	Seq           int64
	DestinationID int64
	Kind          string // DeadLetterRejected or DeadLetterFailed
	Reason        string // the last failure's reason (http_400, timeout, ...)
	Error         string
	Attempts      int
	FirstFailedAt time.Time
	FailedAt      time.Time
	EventName     string
}

// DeadLetterFilter picks dead letters to list, replay or purge. Zero fields match all.
type DeadLetterFilter struct {
	Reason string // matches Kind or Reason
	Since  time.Time
	Until  time.Time
	Seqs   []int64
}

// DeliveryCounts are the per-minute counters of one destination.
type DeliveryCounts struct {
	Delivered           int64 // at the first attempt
	DeliveredAfterRetry int64
	Retried             int64 // failed attempts that will be retried
	FilteredConsent     int64
	FilteredCondition   int64
	Rejected            int64
	Failed              int64
	Expired             int64 // left the log by retention before being settled
	LatencyMillisSum    int64 // receipt to delivery, summed over the delivered events
}

// DeliveryStats is one minute of one destination's counters.
type DeliveryStats struct {
	Minute time.Time // the start of the minute, UTC
	DeliveryCounts
}

// IssueReport is a failure to count into a destination's issues, grouped by (kind, reason).
type IssueReport struct {
	Kind      string // "error" (will be retried, or failed) or "rejected"
	Reason    string
	EventName string
	At        time.Time
	Seq       int64
	Attempt   int
	Sample    *DeliverySample
}

// DeliveryIssue is one group of failures of a destination, as the delivery API lists them.
type DeliveryIssue struct {
	ID            int64
	DestinationID int64
	Kind          string
	Reason        string
	Count         int64
	FirstSeen     time.Time
	LastSeen      time.Time
	EventNames    []string // a few of the event names affected
}

// IssueSample is one kept example of an issue (the newest few are kept).
type IssueSample struct {
	IssueID int64
	At      time.Time
	Seq     int64
	Attempt int
	Sample  DeliverySample
}

// Settlement is the outcome of one or more delivered batches of a destination, committed in one
// transaction: the cursor moves with the retries, dead letters and counters it implies, so that a
// crash re-sends at most what was not settled, and loses nothing.
type Settlement struct {
	DestinationID int64
	// Cursor is the new cursor: every event with a lower or equal seq is settled for this
	// destination (delivered, filtered, retrying or dead). A value not above the stored one
	// leaves it.
	Cursor      int64
	Retries     []Retry      // added or replaced
	Delivered   []int64      // seqs delivered: their retry rows are removed
	DeadLetters []DeadLetter // added or replaced; their retry rows are removed
	Stats       []DeliveryStats
	Issues      []IssueReport
}

// DeliveryState is where a destination stands.
type DeliveryState struct {
	Cursor      int64
	Retries     int64     // rows in the retry table
	NextRetryAt time.Time // the earliest NextAt, zero when there is none
	DeadLetters int64
	// LagEvents and LagSince are the events after the cursor and the receive time of the oldest
	// of them (zero when none): how far behind the destination is.
	LagEvents int64
	LagSince  time.Time
}

// DeliveryStore keeps destinations and their delivery state. The event log is the queue: a
// destination keeps only a cursor over it, and rows are written only for what failed.
type DeliveryStore interface {
	// CreateDestination stores a new destination; its cursor starts at the end of the event log,
	// so it receives the events stored from then on.
	CreateDestination(ctx context.Context, d Destination) (Destination, error)
	Destinations(ctx context.Context) ([]Destination, error)
	// Destination returns one destination; an unknown id wraps ErrNotFound.
	Destination(ctx context.Context, id int64) (Destination, error)
	// UpdateDestination changes every field but ID and CreatedAt; UpdatedAt becomes now, always
	// later than the stored one, so that running engines see the change.
	UpdateDestination(ctx context.Context, d Destination) (Destination, error)
	// DeleteDestination removes a destination with its cursor, retries, dead letters, stats and
	// issues.
	DeleteDestination(ctx context.Context, id int64) error

	DeliveryState(ctx context.Context, id int64) (DeliveryState, error)
	// SettleDelivery commits one Settlement in one transaction.
	SettleDelivery(ctx context.Context, s Settlement) error
	// DueRetries returns up to limit retries of a destination whose NextAt is not after now,
	// oldest seq first.
	DueRetries(ctx context.Context, destinationID int64, now time.Time, limit int) ([]Retry, error)
	// EventsBySeq returns the stored events with these seqs, in seq order; seqs no longer stored
	// are left out.
	EventsBySeq(ctx context.Context, seqs []int64) ([]StoredEvent, error)

	// DeadLetters lists a destination's dead letters with a seq above after, oldest first, and the
	// cursor to pass next.
	DeadLetters(ctx context.Context, destinationID int64, f DeadLetterFilter, after int64, limit int) ([]DeadLetter, int64, error)
	// ReplayDeadLetters moves the matching dead letters back to the retry table (attempt 0, due
	// at now) and returns how many.
	ReplayDeadLetters(ctx context.Context, destinationID int64, f DeadLetterFilter, now time.Time) (int, error)
	// PurgeDeadLetters deletes the matching dead letters and returns how many.
	PurgeDeadLetters(ctx context.Context, destinationID int64, f DeadLetterFilter) (int, error)

	// DeliveryStats returns the minutes of [start, end) that have counts, oldest first.
	DeliveryStats(ctx context.Context, destinationID int64, start, end time.Time) ([]DeliveryStats, error)
	// DeliveryIssues lists a destination's issues, the most recently seen first.
	DeliveryIssues(ctx context.Context, destinationID int64) ([]DeliveryIssue, error)
	// IssueSamples lists an issue's kept samples, newest first.
	IssueSamples(ctx context.Context, destinationID, issueID int64) ([]IssueSample, error)

	// DeleteExpiredEvents applies retention: it deletes up to limit events received before
	// `before`, oldest first, with their retry rows and dead letters. Each destination that had
	// not settled a deleted event (seq above its cursor, or in its retry table) gets it counted
	// Expired in the minute of now; expired[destinationID] says how many. Stats older than
	// statsBefore are deleted too.
	DeleteExpiredEvents(ctx context.Context, before, statsBefore, now time.Time, limit int) (deleted int, expired map[int64]int64, err error)
}
