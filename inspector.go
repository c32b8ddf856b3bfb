package trackapi

import (
	"context"
	"encoding/json"
	"time"
)

// The event inspector. Every collect answer is a 200 (or a 400 for a request that is unusable as
// a whole), so a sender debugs through the inspector: it shows what became of its events. The
// rules below are the contract between the collect path (ingest/, server/), the capturer
// (inspector/), the stores and the admin API that reads the entries.
//
//   - Every outcome is captured: accepted, accepted with warnings (InspectorWarned), duplicate
//     (event_id_reused included), rejected (with its code), and the refusal of a whole request
//     (InspectorRefused: a 400 such as invalid_json or payload_too_large, one entry for the
//     request). A rejection for invalid_source is attributed to the key's source when the key is
//     known (expired, revoked, inactive source, site mismatch), with the authentication's reason
//     (key_expired, key_revoked, unknown_key, source_inactive, site_mismatch,
//     missing_credentials); when the key is unknown, to the site (tc_s) and the key's prefix
//     (KeyPrefix) only, never the key itself, with SourceID 0. Refusals are attributed the same
//     way.
//   - Capture is off the commit path and never makes collection wait: when the capturer's queue
//     is full, the entry is dropped and counted (trackapi_inspector_dropped_total).
//   - Entries are sampled per (source, event name): InspectorSamplePerMinute a minute plus a
//     bonus of InspectorSampleBonusPerHour an hour. Entries with a problem (rejected, warned, or
//     a duplicate with a warning) have their own budget of the same size, so that a flood of
//     valid events never crowds them out, and so have a source's refused requests. An event with
//     a top-level string property test_code bypasses sampling, up to InspectorTestCodePerMinute a
//     minute a source. Entries without a known source are sampled by their site (tc_s) instead.
//   - Entries are kept InspectorKeep, those with a test code InspectorTestCodeKeep, and at most
//     InspectorMaxPerSource a source (the oldest go first; entries without a known source count
//     as one source, 0).
//   - IP addresses are shown masked (see the inspector package's MaskIP: IPv4 a.b.c.0, IPv6 with
//     its last 80 bits zeroed): the request's client address and context.device.ip in the body.
//   - The body is the event's JSON as processed (the server's fills included), when it is at most
//     InspectorBodyLimit bytes; a longer one is kept as a JSON string of its first
//     InspectorBodyLimit bytes. A refusal keeps the first InspectorRefusalBodyLimit bytes of the
//     request body as a JSON string (invalid UTF-8 replaced by U+FFFD).
//   - The data-quality counts (EventQuality, QualityAnomaly) are exact, not sampled.

// The outcomes an inspector entry shows.
const (
	// InspectorAccepted: the event was stored without a warning.
	InspectorAccepted = "accepted"
	// InspectorWarned: the event was stored, with warnings (Problems).
	InspectorWarned = "warned"
	// InspectorDuplicate: the event's id was already stored for its source; it was not stored
	// again. Problems holds event_id_reused when the stored event's body differed, and the
	// event's own warnings.
	InspectorDuplicate = "duplicate"
	// InspectorRejected: the event was not stored; Problems holds the rejection.
	InspectorRejected = "rejected"
	// InspectorRefused: the whole request was refused with a 400 and nothing of it was stored;
	// one entry for the request, whose Problems holds the refusal (Path empty).
	InspectorRefused = "refused"
)

// The inspector's limits (see the rules above).
const (
	// InspectorSamplePerMinute and InspectorSampleBonusPerHour are the sampling budget of one
	// (source, event name), and again of its entries with a problem: the first 6 of a minute are
	// kept, and when a minute has more, up to 30 more an hour.
	InspectorSamplePerMinute    = 6
	InspectorSampleBonusPerHour = 30
	// InspectorTestCodePerMinute is how many events with a test_code a source has kept a minute
	// whatever the sampling says.
	InspectorTestCodePerMinute = 20
	// InspectorKeep is how long entries are kept, and InspectorTestCodeKeep how long those with a
	// test code are: test events are for the moment of a test.
	InspectorKeep         = 7 * 24 * time.Hour
	InspectorTestCodeKeep = 24 * time.Hour
	// InspectorMaxPerSource is the most entries kept for one source; the oldest go first.
	InspectorMaxPerSource = 10000
	// InspectorBodyLimit is the most bytes of an event's body an entry keeps, and
	// InspectorRefusalBodyLimit of a refused request's body.
	InspectorBodyLimit        = 32 << 10
	InspectorRefusalBodyLimit = 1 << 10
	// InspectorTextLimit is the most bytes an entry keeps of the texts a sender chooses freely
	// (event name, event id, site, test code, problem paths), cut at a character boundary: the
	// body has them whole. Filters compare with the cut texts.
	InspectorTextLimit = 256
	// QualitySampleLimit is the most bytes of the sample event a data-quality anomaly keeps.
	QualitySampleLimit = 4 << 10
	// QualityKeep is how long the hourly data-quality counts are kept: a month, as delivery
	// statistics.
	QualityKeep = 31 * 24 * time.Hour
)

// InspectorEntry is what became of one event (or of one refused request), as the inspector shows
// it to the sender's operators.
type InspectorEntry struct {
	// ID increases with every entry written and is never reused, also after entries are
	// deleted: it is the cursor of listings and of the live stream.
	ID int64     `json:"id"`
	At time.Time `json:"at"` // when the request was received
	// SourceID is the source the entry is attributed to, 0 when the key is unknown or missing.
	SourceID  int64  `json:"source_id"`
	Site      string `json:"site"`       // tc_s as sent
	KeyPrefix string `json:"key_prefix"` // trackapi.KeyPrefix of the key sent, never the key
	EventName string `json:"event_name"` // "" when missing (or for a refusal)
	EventID   string `json:"event_id"`   // the id stored or deduplicated on; "" when rejected
	Outcome   string `json:"outcome"`    // InspectorAccepted, ...
	// Codes are the distinct codes of Problems, in their order.
	Codes []string `json:"codes"`
	// Reason is the authentication's reason (sources.Reason) when the request's credentials were
	// refused, else "".
	Reason   string `json:"reason,omitempty"`
	TestCode string `json:"test_code,omitempty"`
	// ClientIP is the request's client address, masked.
	ClientIP string `json:"client_ip"`
	// Problems are the event's warnings, or its rejection, or the request's refusal.
	Problems []Problem `json:"problems"`
	// Body is valid JSON: the event as processed, or a JSON string when it was cut (see the
	// rules above), or the start of a refused request's body as a JSON string.
	Body  json.RawMessage `json:"body"`
	Batch bool            `json:"batch"` // sent to POST /events/batch
	Index int             `json:"index"` // its place in the batch (0 for a single event)
}

// InspectorFilter narrows a listing of inspector entries. Zero fields match everything.
type InspectorFilter struct {
	SourceID int64
	// Unattributed, when set, matches only entries without a known source (SourceID 0); it
	// cannot be combined with SourceID.
	Unattributed bool
	Site         string
	EventName    string
	Outcome      string
	Code         string // one of the entry's Codes
	TestCode     string
	Since        time.Time // At >= Since
	Until        time.Time // At < Until
}

// EventQuality is one hour of the exact counts of one (source, event name). Events without a
// known source (an unknown or missing key) are counted under SourceID 0; refused requests are not
// events and are not counted here (the inspector and the request metrics show them).
type EventQuality struct {
	SourceID  int64     `json:"source_id"`
	EventName string    `json:"event_name"`
	Hour      time.Time `json:"hour"` // the start of the hour, UTC
	// Collected counts the events stored, WithWarnings those of them that had a warning,
	// Rejected the events rejected and Duplicates those not stored again.
	Collected    int64 `json:"collected"`
	WithWarnings int64 `json:"with_warnings"`
	Rejected     int64 `json:"rejected"`
	Duplicates   int64 `json:"duplicates"`
}

// QualityAnomaly is one hour of one problem (code and path) of one (source, event name): how
// often it occurred, with the last message and a sample event. Counted are the rejections, the
// warnings of stored events, and event_id_reused; the warnings of a plain duplicate are not, as
// they were counted when its first copy was stored.
type QualityAnomaly struct {
	SourceID  int64     `json:"source_id"`
	EventName string    `json:"event_name"`
	Hour      time.Time `json:"hour"`
	Code      string    `json:"code"`
	Path      string    `json:"path"`
	Count     int64     `json:"count"`
	Message   string    `json:"message"`
	// Sample is one event that had the problem, as the inspector keeps bodies (IPs masked), cut
	// to QualitySampleLimit (a JSON string when cut); nil when none was kept.
	Sample json.RawMessage `json:"sample,omitempty"`
}

// QualityReport is a set of data-quality counts: what the capturer adds, and what a store returns
// for a time range.
type QualityReport struct {
	Events    []EventQuality
	Anomalies []QualityAnomaly
}

// InspectorStore keeps the inspector's entries and the data-quality counts. The capturer
// (inspector.Capturer) writes them off the collect path; the admin API reads them.
type InspectorStore interface {
	// AddInspectorEntries stores entries and adds quality into the stored counts (Hour is taken
	// down to the start of its hour; a count of an anomaly adds, its Message and a non-nil Sample
	// replace the stored ones), in one transaction. On success entries[i].ID is set.
	AddInspectorEntries(ctx context.Context, entries []InspectorEntry, quality QualityReport) error
	// InspectorEntries lists up to limit entries matching f with an ID below before (0: from
	// the newest), newest first, and the cursor for the next page: the last entry's ID, or 0
	// when there are no more.
	InspectorEntries(ctx context.Context, f InspectorFilter, before int64, limit int) (entries []InspectorEntry, next int64, err error)
	// InspectorEntriesAfter lists up to limit entries matching f with an ID above after, oldest
	// first, and the cursor to pass next time: the last entry's ID, or after when none was
	// returned. It is the read of a live stream, which resumes from its cursor.
	InspectorEntriesAfter(ctx context.Context, f InspectorFilter, after int64, limit int) (entries []InspectorEntry, next int64, err error)
	// InspectorEntry returns one entry; an unknown id wraps ErrNotFound.
	InspectorEntry(ctx context.Context, id int64) (InspectorEntry, error)
	// DataQuality returns the counts of one source (0: the events without a known source) for
	// the hours that start in [start, end), oldest first.
	DataQuality(ctx context.Context, sourceID int64, start, end time.Time) (QualityReport, error)
	// DeleteExpiredInspectorEntries applies the inspector's retention at now: entries older than
	// InspectorKeep, those with a test code older than InspectorTestCodeKeep, those of a source
	// beyond its newest InspectorMaxPerSource, and counts older than QualityKeep. It returns how
	// many entries it deleted.
	DeleteExpiredInspectorEntries(ctx context.Context, now time.Time) (deleted int, err error)
}
