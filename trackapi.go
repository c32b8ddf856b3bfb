// Package trackapi holds the domain types and interfaces that the server, the stores and the
// command line share. It imports none of them, so that each store (sqlite/, later kafka/) and the
// HTTP layer (server/) can depend on it without depending on each other.
package trackapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
)

// ErrUnavailable is returned by a store that cannot commit durably right now (disk full, database
// locked, closed, overloaded). The server answers 503 with Retry-After for it, never 200.
var ErrUnavailable = errors.New("store unavailable")

// ErrNotFound is returned when a source asked for by id does not exist.
var ErrNotFound = errors.New("not found")

// Source is a sender of events: one site (tc_s) and one key. Only the key's hash is kept, so a
// copy of the database does not leak keys.
type Source struct {
	ID        int64
	Site      string
	Name      string
	KeyHash   []byte
	Active    bool
	CreatedAt time.Time
}

// Problem is a warning attached to a stored event, as exported and later shown by the inspector.
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
	ReceivedAt int64 // epoch milliseconds
	Body       json.RawMessage
	Warnings   []Problem
}

// StoredEvent is one line of `trackapi events export`: an event as stored, with where it came
// from and what the server said about it.
type StoredEvent struct {
	SourceID   int64           `json:"source_id"`
	Site       string          `json:"site"`
	ReceivedAt int64           `json:"received_at"`
	Event      json.RawMessage `json:"event"`
	Warnings   []Problem       `json:"warnings"`
}

// EventStore commits events durably. It is the only thing the collect handlers need from storage.
type EventStore interface {
	// StoreEvents commits events and syncs them to disk before it returns. stored[i] is false when
	// events[i] repeats an event already stored for the same source and event id (including an
	// earlier one in the same call). The error wraps ErrUnavailable when nothing could be committed.
	StoreEvents(ctx context.Context, events []Event) (stored []bool, err error)
}

// SourceStore keeps the sources. Lookups on the hot path go through a cache in the server.
type SourceStore interface {
	// CreateSource stores a new active source with the hash of key.
	CreateSource(ctx context.Context, site, name string, keyHash []byte) (Source, error)
	// Sources lists all sources, active or not, oldest first.
	Sources(ctx context.Context) ([]Source, error)
	// SourceByKeyHash finds the source, active or not, with this key hash; an unknown hash wraps
	// ErrNotFound. It lets a key created a moment ago work at once.
	SourceByKeyHash(ctx context.Context, keyHash []byte) (Source, error)
	// DeactivateSource makes a source's key stop working; its events stay stored.
	DeactivateSource(ctx context.Context, id int64) error
}

// NewSourceKey returns a new random source key: a UUID (122 random bits), the format the vendor's
// documents show for v2 keys.
func NewSourceKey() string {
	return uuid.NewString()
}

// HashKey is how keys are stored and compared. Keys are long random values, so a fast hash is
// enough: there is no dictionary to guess from.
func HashKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// NewEventID returns a server-assigned event id: a UUIDv7, so ids sort by time.
func NewEventID() string {
	// NewV7 fails only when crypto/rand fails, which Go treats as fatal anyway.
	return uuid.Must(uuid.NewV7()).String()
}
