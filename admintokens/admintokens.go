// Package admintokens is the one owner of admin tokens, which authenticate callers of the config
// API (`Authorization: Bearer <token>`): it makes tokens (only their hashes reach a store),
// applies the rules (format, scopes, expiry, revocation; see trackapi.AdminToken), and
// authenticates callers from an in-memory copy of the live tokens, so that a request costs no
// query.
//
// The command line, the server's first start and the HTTP layer all make, list, revoke and check
// tokens through Service, never through a store directly. Nothing here logs a token: logs name a
// token by its id and display prefix.
package admintokens

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/credcache"
)

// DefaultTTL is how long a token works when its maker does not say: long enough not to be a
// chore, short enough that a token forgotten in a script or a leaked shell history stops by
// itself.
const DefaultTTL = 90 * 24 * time.Hour

// MaxNameLength bounds a token's name, in characters: a name is a label for people, shown in
// listings and logs.
const MaxNameLength = 100

// ErrInvalid marks a request to make a token that breaks a rule (an empty or unprintable name, an
// unknown scope, a negative lifetime): a usage error for the command line, a 400 for the API.
var ErrInvalid = errors.New("invalid admin token request")

// AuthError is why a presented token was refused. Code is stable and meant for the config API's
// 401 answer, so that a caller can tell a mistyped token from an expired one; the message never
// holds the token. Match the causes with errors.Is (ErrMissing, ...) and the code with errors.As.
type AuthError struct {
	// Code is one of "token_missing", "token_malformed", "token_unknown", "token_expired",
	// "token_revoked".
	Code    string
	message string
}

// Error says why the token was refused, without the token.
func (e *AuthError) Error() string { return e.message }

// The reasons a token is refused. Each is a 401 for the config API; a store that cannot be asked
// is not one of them (Authenticate's error then wraps trackapi.ErrUnavailable: a 503).
var (
	// ErrMissing: no token at all.
	ErrMissing = &AuthError{Code: "token_missing", message: "no admin token given"}
	// ErrMalformed: not shaped like a token (trackapi.IsAdminTokenShaped): a source key, a
	// truncated copy, a stray "Bearer ". It is refused without a lookup.
	ErrMalformed = &AuthError{Code: "token_malformed", message: "not an admin token (want tka_ and 43 base64url characters)"}
	// ErrUnknown: shaped like a token, but no token has its hash.
	ErrUnknown = &AuthError{Code: "token_unknown", message: "unknown admin token"}
	// ErrExpired: a real token past its expiry.
	ErrExpired = &AuthError{Code: "token_expired", message: "admin token expired"}
	// ErrRevoked: a real token that was revoked.
	ErrRevoked = &AuthError{Code: "token_revoked", message: "admin token revoked"}
)

// Options are the optional settings of New. The zero value is the default.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Now is the clock, for tests of expiry; nil: time.Now.
	Now func() time.Time
	// ReloadEvery is how stale the copy of the live tokens may get, and so how long a revocation
	// made by another process takes to apply; 0: 2 s.
	ReloadEvery time.Duration
	// NegativeTTL is how long a token the store does not know is remembered as unknown, and
	// NegativeEntries how many such tokens are remembered at most; 0: 2 s and 10 000.
	NegativeTTL     time.Duration
	NegativeEntries int
	// TouchEvery is how often, at most, a token's last-used time is written; 0: one minute.
	TouchEvery time.Duration
}

// Service makes, lists, revokes and authenticates admin tokens over a trackapi.AdminTokenStore.
// It is safe for concurrent use. Call Close to write the last-used times still pending.
type Service struct {
	store trackapi.AdminTokenStore
	log   *slog.Logger
	now   func() time.Time
	opts  Options

	cache    tokenCache
	unknown  *credcache.Unknown
	lastUsed *credcache.LastUsed
}

// New returns a Service over store.
func New(store trackapi.AdminTokenStore, opts Options) *Service {
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
	return &Service{
		store:    store,
		log:      opts.Logger,
		now:      opts.Now,
		opts:     opts,
		unknown:  credcache.NewUnknown(opts.NegativeTTL, opts.NegativeEntries),
		lastUsed: credcache.NewLastUsed(opts.TouchEvery, store.TouchAdminTokens, "admin tokens", opts.Logger),
	}
}

// NewToken is a token as its maker sees it once: the token itself, which is never stored, and
// what is.
type NewToken struct {
	Token  string
	Stored trackapi.AdminToken
}

// Create makes a token named name with scope, working for ttl from now (0: until revoked), and
// returns it: the only time the token is shown. A name must be 1 to MaxNameLength printable
// characters; a bad name, scope or ttl wraps ErrInvalid.
func (s *Service) Create(ctx context.Context, name string, scope trackapi.AdminScope, ttl time.Duration) (NewToken, error) {
	if err := checkName(name); err != nil {
		return NewToken{}, fmt.Errorf("create admin token: %w", err)
	}
	if !scope.Valid() {
		return NewToken{}, fmt.Errorf("create admin token: %w: scope %q, want %q or %q", ErrInvalid, scope, trackapi.ScopeRead, trackapi.ScopeWrite)
	}
	if ttl < 0 {
		return NewToken{}, fmt.Errorf("create admin token: %w: lifetime %s, want 0 (no expiry) or more", ErrInvalid, ttl)
	}
	token := trackapi.NewAdminToken()
	now := s.now()
	stored := trackapi.AdminToken{
		Name:      name,
		Scope:     scope,
		Prefix:    trackapi.AdminTokenDisplay(token),
		Hash:      trackapi.HashKey(token),
		CreatedAt: now,
	}
	if ttl > 0 {
		stored.ExpiresAt = now.Add(ttl)
	}
	stored, err := s.store.CreateAdminToken(ctx, stored)
	if err != nil {
		return NewToken{}, fmt.Errorf("create admin token %q: %w", name, err)
	}
	s.log.Info("admin token created", "token_id", stored.ID, "prefix", stored.Prefix, "name", stored.Name,
		"scope", string(stored.Scope), "expires_at", stored.ExpiresAt)
	return NewToken{Token: token, Stored: stored}, nil
}

// checkName refuses names that would garble a listing or a log line, or that say nothing.
func checkName(name string) error {
	switch n := utf8.RuneCountInString(name); {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("%w: a name is required (say who or what holds the token)", ErrInvalid)
	case n > MaxNameLength:
		return fmt.Errorf("%w: a name of %d characters, at most %d", ErrInvalid, n, MaxNameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: the name is not UTF-8", ErrInvalid)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("%w: the name %q holds control characters", ErrInvalid, name)
	}
	return nil
}

// List returns every token, revoked and expired ones too, oldest first: never a token, only what
// is stored about it.
func (s *Service) List(ctx context.Context) ([]trackapi.AdminToken, error) {
	list, err := s.store.AdminTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	return list, nil
}

// HasLive reports whether some token works now, for the server's first start: with none, nobody
// could use the config API.
func (s *Service) HasLive(ctx context.Context) (bool, error) {
	live, err := s.store.LiveAdminTokens(ctx, s.now())
	if err != nil {
		return false, fmt.Errorf("look for live admin tokens: %w", err)
	}
	return len(live) > 0, nil
}

// Revoke makes a token stop working for good: at once in this process, and within ReloadEvery in
// the others that share the store. Revoking a revoked token is not an error; an unknown id wraps
// trackapi.ErrNotFound.
func (s *Service) Revoke(ctx context.Context, id int64) error {
	at := s.now()
	if err := s.store.RevokeAdminToken(ctx, id, at); err != nil {
		if errors.Is(err, trackapi.ErrNotFound) { // the store's message says no more than this
			return fmt.Errorf("revoke admin token %d: no such token: %w", id, trackapi.ErrNotFound)
		}
		return fmt.Errorf("revoke admin token %d: %w", id, err)
	}
	s.cache.revoke(id, at)
	s.log.Info("admin token revoked", "token_id", id)
	return nil
}

// Allows reports whether an authenticated token may do what needs scope: write implies read, and
// a scope that is not one of trackapi's allows nothing. It does not check that the token is live:
// Authenticate does.
func Allows(token trackapi.AdminToken, scope trackapi.AdminScope) bool {
	return token.Scope.Allows(scope)
}

// Close writes the last-used times not written yet. Last-used times are informative: a failure
// here loses at most a minute of them.
func (s *Service) Close(ctx context.Context) error {
	s.lastUsed.Wait()
	return s.lastUsed.Flush(ctx)
}
