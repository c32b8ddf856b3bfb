// Package trackapi holds the domain types, rules and interfaces that the HTTP layer, the event
// rules (ingest/), the source service (sources/), the stores and the command line share. It
// imports none of them, so that each can depend on it without depending on the others, and it
// pulls in nothing heavy (no Echo, no kin-openapi): the partners' client imports it too.
package trackapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
)

// The limits of the collect API. openapi.yaml states the same numbers in its x-trackapi-limits
// extension, and a test holds the two together, so that the client, the server and the spec
// cannot drift apart.
const (
	// SingleBodyLimit is the largest body POST /events accepts, in bytes (after decompression too).
	SingleBodyLimit = 32768
	// BatchBodyLimit is the largest body POST /events/batch accepts, in bytes (after decompression too).
	BatchBodyLimit = 512000
	// EventLimit is the largest batch element, counted on its raw bytes as sent.
	EventLimit = 32768
	// The pixel (GET /events): the largest query string as sent, in bytes (the event built from
	// it is then bounded by SingleBodyLimit); the most parameters in it; the most bracket levels
	// in one name (user[a][b] has 2); the largest array index (items[999]).
	PixelQueryLimit    = 32768
	PixelMaxParameters = 1000
	PixelMaxNameDepth  = 10
	PixelMaxIndex      = 999
)

// Errors that callers match with errors.Is. A store error that wraps neither ErrUnavailable nor a
// context error is permanent: a bug or a bad value, which retrying would not fix. The server
// answers it with a 500 and logs the cause, so clients do not retry it for ever.
var (
	// ErrUnavailable marks a retryable store failure: nothing was committed and a retry may work
	// (disk full, database locked, store closed, overloaded). The server answers 503 with
	// Retry-After, never 200. Stores wrap the cause too (fmt.Errorf("%w: %w", ...)), so that it
	// stays matchable with errors.Is and errors.As.
	ErrUnavailable = errors.New("store unavailable")
	// ErrNotFound is returned when a thing asked for by id or key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a change would break a rule of the stored state, such as a
	// sixth live key for a source.
	ErrConflict = errors.New("conflict")
)

// Source is a sender of events: one site (tc_s) with up to MaxLiveKeys keys. A deactivated
// source keeps its events; its keys stop working.
type Source struct {
	ID        int64
	Site      string
	Name      string
	Active    bool
	CreatedAt time.Time
}

// MaxLiveKeys is how many keys a source may have that are neither revoked nor expired: enough for
// a rotation overlap with room for mistakes, few enough that a leaked old key is noticed.
const MaxLiveKeys = 5

// MaxRotationOverlap is the longest a previous key keeps working after a rotation. A longer
// overlap would make rotation after a leak meaningless.
const MaxRotationOverlap = 7 * 24 * time.Hour

// SourceKey is one key of a source. Only its hash is kept, so that a copy of the database does
// not leak keys; Prefix (the key's first characters) lets operators tell keys apart.
type SourceKey struct {
	ID        int64
	SourceID  int64
	Prefix    string
	Hash      []byte
	CreatedAt time.Time
	// ExpiresAt, RevokedAt and LastUsedAt are the zero time when the key has no expiry, is not
	// revoked, or was never used. LastUsedAt is written at most once a minute a key.
	ExpiresAt  time.Time
	RevokedAt  time.Time
	LastUsedAt time.Time
}

// Live reports whether the key authenticates requests at now.
func (k SourceKey) Live(now time.Time) bool {
	return k.RevokedAt.IsZero() && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt))
}

// Problem is a warning or a rejection reason attached to an event, as the collect answer, the
// export and the inspector show it.
type Problem struct {
	Code    string `json:"code"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Event is one normalised event ready to be stored. Body holds the event's JSON as it will be
// exported; stores may use its bytes without copying them, so they must not change while
// StoreEvents runs. EventID is the deduplication key together with SourceID.
type Event struct {
	SourceID   int64
	Site       string
	EventID    string
	EventName  string
	ReceivedAt int64 // epoch milliseconds
	Body       json.RawMessage
	Warnings   []Problem
	// BodyHash identifies the event as its sender sent it, so that a repeat of its event id with
	// other content can be told from a retry of the same event: ingest gives the first 8 bytes of
	// the SHA-256 of the event's raw bytes as received (white space around them trimmed), before
	// the server filled in anything. nil when unknown. Stores keep it with the event and compare
	// it, in OutcomeStore.StoreEventOutcomes, with a duplicate's.
	BodyHash []byte
}

// StoredEvent is an event as stored, with where it came from and what the server said about it.
// Its JSON form is one line of `trackapi events export`; Seq and EventID are left out of it, as
// the event body holds its id and the sequence is a store's detail.
type StoredEvent struct {
	// Seq is the event's place in the event log: strictly increasing in the order of commits and
	// never reused, also after old events are deleted. Readers keep it as their cursor.
	Seq        int64           `json:"-"`
	EventID    string          `json:"-"`
	EventName  string          `json:"-"`
	SourceID   int64           `json:"source_id"`
	Site       string          `json:"site"`
	ReceivedAt int64           `json:"received_at"`
	Event      json.RawMessage `json:"event"`
	Warnings   []Problem       `json:"warnings"`
}

// EventStore commits events durably. It is the only thing the collect path needs from storage.
type EventStore interface {
	// StoreEvents commits events and syncs them to disk before it returns. stored[i] is false when
	// events[i] repeats an event already stored for the same source and event id (including an
	// earlier one in the same call). The error wraps ErrUnavailable when nothing could be
	// committed and a retry may work.
	StoreEvents(ctx context.Context, events []Event) (stored []bool, err error)
}

// StoreOutcome is what became of one event given to OutcomeStore.StoreEventOutcomes.
type StoreOutcome uint8

const (
	// OutcomeStored: the event was new and is now stored.
	OutcomeStored StoreOutcome = iota + 1
	// OutcomeDuplicate: an event with the same source and event id was already stored (or came
	// earlier in the same call) with the same body hash, or one of the two has none. Not stored
	// again.
	OutcomeDuplicate
	// OutcomeIDReused: an event with the same source and event id was already stored (or came
	// earlier in the same call) with a different body hash: the sender gave one id to two
	// different events. This one was not stored; it counts as a duplicate.
	OutcomeIDReused
)

// OutcomeStore is an EventStore that also tells, for each duplicate, whether its body hash is the
// stored event's. The collect path uses StoreEventOutcomes when its store has it, and StoreEvents
// otherwise (every duplicate is then a plain one). It is a separate interface so that stores made
// for EventStore (test doubles, benchmarks) keep working unchanged.
type OutcomeStore interface {
	EventStore
	// StoreEventOutcomes is StoreEvents with one outcome an event rather than a bool
	// (OutcomeStored where StoreEvents says true): the same commit, sync and errors. Telling a
	// reused id from a plain duplicate costs a lookup for duplicates only.
	StoreEventOutcomes(ctx context.Context, events []Event) ([]StoreOutcome, error)
}

// EventFilter narrows a read of the event log. Zero fields match everything.
type EventFilter struct {
	SourceID  int64
	EventName string
}

// EventLog is the read side of the stored events: the queue that exports, destinations and tests
// read by cursor.
type EventLog interface {
	// ReadEvents returns up to limit stored events with a sequence number above after that match
	// filter, oldest first, and the cursor to pass next time: the last returned event's Seq, or
	// after when none was returned. Warnings are an empty, non-nil slice when there are none.
	ReadEvents(ctx context.Context, after int64, filter EventFilter, limit int) (events []StoredEvent, next int64, err error)
}

// SourceStore keeps sources and their keys. The rules (key format, rotation overlap, the live-key
// limit) belong to the source service in sources/; a store only keeps them consistent.
type SourceStore interface {
	// CreateSource stores a new active source together with its first key, in one transaction.
	// key.SourceID is ignored. It returns both as stored, with their ids.
	CreateSource(ctx context.Context, site, name string, key SourceKey) (Source, SourceKey, error)
	// Sources lists all sources, active or not, oldest first.
	Sources(ctx context.Context) ([]Source, error)
	// Source returns one source; an unknown id wraps ErrNotFound.
	Source(ctx context.Context, id int64) (Source, error)
	// SetSourceActive deactivates or reactivates a source; an unknown id wraps ErrNotFound.
	SetSourceActive(ctx context.Context, id int64, active bool) error
	// RenameSource changes a source's name (ErrNotFound for an unknown id).
	RenameSource(ctx context.Context, id int64, name string) error
	// RotateSourceKey adds key to its source and, in the same transaction, makes every other key
	// of that source that is live at now expire at previousExpireAt at the latest. It fails with
	// ErrConflict when the source would then have more than maxLive keys live at now, and with
	// ErrNotFound for an unknown source.
	RotateSourceKey(ctx context.Context, key SourceKey, previousExpireAt time.Time, maxLive int, now time.Time) (SourceKey, error)
	// SourceKeys lists a source's keys, revoked and expired ones too, oldest first.
	SourceKeys(ctx context.Context, sourceID int64) ([]SourceKey, error)
	// RevokeSourceKey makes one key stop working at once; an unknown key wraps ErrNotFound.
	RevokeSourceKey(ctx context.Context, sourceID, keyID int64, at time.Time) error
	// SourceKeyByHash finds a key, live or not, by its hash; an unknown hash wraps ErrNotFound. It
	// lets a key created a moment ago by another process work at once.
	SourceKeyByHash(ctx context.Context, hash []byte) (SourceKey, error)
	// LiveSourceKeys lists every key that is live at now, for the authentication cache.
	LiveSourceKeys(ctx context.Context, now time.Time) ([]SourceKey, error)
	// TouchSourceKeys records when keys were last used (key id → time).
	TouchSourceKeys(ctx context.Context, lastUsed map[int64]time.Time) error
}

// NewSourceKey returns a new random source key: a UUID (122 random bits), the format the vendor's
// documents show for v2 keys.
func NewSourceKey() string {
	return uuid.NewString()
}

// KeyPrefixLength is how many leading characters of a key are kept in clear, to tell keys apart
// in listings: 8 hexadecimal digits, 32 of the key's 122 random bits, too few to help a guess.
const KeyPrefixLength = 8

// KeyPrefix is the part of a key shown to operators.
func KeyPrefix(key string) string {
	if len(key) <= KeyPrefixLength {
		return ""
	}
	return key[:KeyPrefixLength]
}

// HashKey is how keys are stored and compared. Keys are long random values, so a fast hash is
// enough: there is no dictionary to guess from.
func HashKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// EventIDOf is the event-id rule, shared by the server and the client: the deduplication id a
// sender gave in context.event_id is a non-empty string, or a number's literal text (the schema
// check warns about its type). Anything else (missing, null, "", an object) counts as missing, and
// a server id is assigned. v is the value as decoded by encoding/json with UseNumber.
func EventIDOf(v any) string {
	switch id := v.(type) {
	case string:
		return id
	case json.Number:
		return id.String()
	}
	return ""
}

// EventIDOfJSON is EventIDOf for the raw JSON of context.event_id.
func EventIDOfJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return ""
	}
	return EventIDOf(v)
}

// NewEventID returns a server-assigned event id: a UUIDv7, so ids sort by time.
func NewEventID() string {
	// NewV7 fails only when crypto/rand fails, which Go treats as fatal anyway.
	return uuid.Must(uuid.NewV7()).String()
}
