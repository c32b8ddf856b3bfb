// Package sources is the one owner of sources and their keys: it makes keys (only their hashes
// reach a store), applies the rotation rules (at most trackapi.MaxLiveKeys live keys a source, a
// previous key kept for at most trackapi.MaxRotationOverlap), and authenticates collect requests
// from an in-memory copy of the live keys, so that the hot path costs no query.
//
// The command line, the server's first start and the tests all create and rotate keys through
// Service, never through a store directly.
package sources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/credcache"
)

// DefaultRotationOverlap is how long the previous keys keep working after a rotation when the
// caller does not say: a day is enough to roll a new key out to every sender.
const DefaultRotationOverlap = 24 * time.Hour

// Options are the optional settings of New. The zero value is the default.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Now is the clock, for tests of expiry; nil: time.Now.
	Now func() time.Time
	// ReloadEvery is how stale the copy of the live keys may get, and so how long a revocation or
	// a deactivation made by another process takes to apply; 0: 2 s.
	ReloadEvery time.Duration
	// NegativeTTL is how long an unknown key is remembered as unknown, and NegativeEntries how
	// many such keys are remembered at most; 0: 2 s and 10 000.
	NegativeTTL     time.Duration
	NegativeEntries int
	// TouchEvery is how often, at most, a key's last-used time is written; 0: one minute.
	TouchEvery time.Duration
	// OnAuthenticate, when set, is called with the reason of every authentication ("" when it
	// succeeded), and OnLookup after every store lookup of a key the copy did not hold: hooks for
	// metrics that keep this package free of them. They must be quick.
	OnAuthenticate func(reason string)
	OnLookup       func(found bool)
}

// Service manages sources and keys over a trackapi.SourceStore and authenticates requests. It is
// safe for concurrent use. Call Close to write the last-used times still pending.
type Service struct {
	store trackapi.SourceStore
	log   *slog.Logger
	now   func() time.Time
	opts  Options

	cache    keyCache
	unknown  *credcache.Unknown
	lastUsed *credcache.LastUsed
}

// New returns a Service over store.
func New(store trackapi.SourceStore, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReloadEvery <= 0 {
		opts.ReloadEvery = 2 * time.Second
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 2 * time.Second
	}
	if opts.NegativeEntries <= 0 {
		opts.NegativeEntries = 10000
	}
	if opts.TouchEvery <= 0 {
		opts.TouchEvery = time.Minute
	}
	if opts.OnAuthenticate == nil {
		opts.OnAuthenticate = func(string) {}
	}
	if opts.OnLookup == nil {
		opts.OnLookup = func(bool) {}
	}
	return &Service{
		store:    store,
		log:      opts.Logger,
		now:      opts.Now,
		opts:     opts,
		unknown:  credcache.NewUnknown(opts.NegativeTTL, opts.NegativeEntries),
		lastUsed: credcache.NewLastUsed(opts.TouchEvery, store.TouchSourceKeys, "source keys", opts.Logger),
	}
}

// NewKey is a key as its owner sees it once: the key itself, which is never stored, and what is.
type NewKey struct {
	Key    string
	Stored trackapi.SourceKey
}

// Create stores a new active source for site with a first key, and returns the key: the only time
// it is shown.
func (s *Service) Create(ctx context.Context, site, name string) (trackapi.Source, NewKey, error) {
	if site == "" || name == "" {
		return trackapi.Source{}, NewKey{}, errors.New("create source: a site and a name are required")
	}
	key, stored := s.newKey(0)
	src, stored, err := s.store.CreateSource(ctx, site, name, stored)
	if err != nil {
		return trackapi.Source{}, NewKey{}, fmt.Errorf("create source for site %q: %w", site, err)
	}
	return src, NewKey{Key: key, Stored: stored}, nil
}

// RotateKey gives a source a new key and makes its other live keys expire after overlap (0: at
// once; at most trackapi.MaxRotationOverlap), so that senders can move to the new key without
// losing events. It fails, wrapping trackapi.ErrConflict, when the source would have more than
// trackapi.MaxLiveKeys live keys.
func (s *Service) RotateKey(ctx context.Context, sourceID int64, overlap time.Duration) (NewKey, error) {
	if overlap < 0 || overlap > trackapi.MaxRotationOverlap {
		return NewKey{}, fmt.Errorf("rotate key of source %d: the previous key may be kept from 0 to %s, not %s",
			sourceID, trackapi.MaxRotationOverlap, overlap)
	}
	now := s.now()
	key, stored := s.newKey(sourceID)
	stored.CreatedAt = now
	stored, err := s.store.RotateSourceKey(ctx, stored, now.Add(overlap), trackapi.MaxLiveKeys, now)
	if err != nil {
		return NewKey{}, fmt.Errorf("rotate key of source %d: %w", sourceID, err)
	}
	s.cache.invalidate()
	return NewKey{Key: key, Stored: stored}, nil
}

// RevokeKey makes one key stop working at once, in this process, and within ReloadEvery in the
// others that share the store.
func (s *Service) RevokeKey(ctx context.Context, sourceID, keyID int64) error {
	if err := s.store.RevokeSourceKey(ctx, sourceID, keyID, s.now()); err != nil {
		return fmt.Errorf("revoke key %d of source %d: %w", keyID, sourceID, err)
	}
	s.cache.invalidate()
	return nil
}

// SetActive deactivates a source (its keys stop working; its events stay) or reactivates it.
func (s *Service) SetActive(ctx context.Context, sourceID int64, active bool) error {
	if err := s.store.SetSourceActive(ctx, sourceID, active); err != nil {
		return fmt.Errorf("set source %d active=%t: %w", sourceID, active, err)
	}
	s.cache.invalidate()
	return nil
}

// Rename changes a source's name, which is for people only.
func (s *Service) Rename(ctx context.Context, sourceID int64, name string) error {
	if name == "" {
		return fmt.Errorf("rename source %d: the name must not be empty", sourceID)
	}
	if err := s.store.RenameSource(ctx, sourceID, name); err != nil {
		return fmt.Errorf("rename source %d: %w", sourceID, err)
	}
	return nil
}

// Source returns one source (ErrNotFound for an unknown id).
func (s *Service) Source(ctx context.Context, sourceID int64) (trackapi.Source, error) {
	return s.store.Source(ctx, sourceID) // its error names the source already
}

// List returns every source, oldest first.
func (s *Service) List(ctx context.Context) ([]trackapi.Source, error) {
	list, err := s.store.Sources(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	return list, nil
}

// Keys returns a source's keys, oldest first, revoked and expired ones included.
func (s *Service) Keys(ctx context.Context, sourceID int64) ([]trackapi.SourceKey, error) {
	if _, err := s.store.Source(ctx, sourceID); err != nil {
		return nil, fmt.Errorf("keys of source %d: %w", sourceID, err)
	}
	keys, err := s.store.SourceKeys(ctx, sourceID)
	if err != nil {
		return nil, fmt.Errorf("keys of source %d: %w", sourceID, err)
	}
	return keys, nil
}

// Close writes the last-used times not written yet. Last-used times are informative: a failure
// here loses at most a minute of them, never an event.
func (s *Service) Close(ctx context.Context) error {
	s.lastUsed.Wait()
	return s.lastUsed.Flush(ctx)
}

func (s *Service) newKey(sourceID int64) (string, trackapi.SourceKey) {
	key := trackapi.NewSourceKey()
	return key, trackapi.SourceKey{
		SourceID:  sourceID,
		Prefix:    trackapi.KeyPrefix(key),
		Hash:      trackapi.HashKey(key),
		CreatedAt: s.now(),
	}
}
