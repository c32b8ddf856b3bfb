package trackapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"time"
)

// Admin tokens authenticate callers of the config API (sources, destinations, ...), which the
// web UI and operators' scripts use: `Authorization: Bearer <token>`, never a query parameter,
// so that a token does not end up in a URL, a proxy's log or a browser's history. The contract:
//
//   - a token is AdminTokenPrefix followed by 32 random bytes in unpadded base64url, 47 characters
//     in all. It is shown once, when it is made, and kept only as its SHA-256 hash (HashKey) with
//     its first AdminTokenDisplayLength characters in clear, to tell tokens apart in listings
//     and logs. Nothing logs a token; logs name a token by its id or display prefix;
//   - its scope is ScopeRead (may look) or ScopeWrite (may also change; write implies read);
//   - it may expire (90 days unless its maker says otherwise) and may be revoked; either way it
//     stops working for good. A revoked token is kept, not deleted, so that listings and logs can
//     still say whose it was;
//   - its last use is recorded at most once a minute, off the request's path.
//
// The rules live in admintokens/ (Service); a store only keeps tokens (AdminTokenStore).

// AdminScope is what an admin token may do with the config API.
type AdminScope string

// The scopes, from least to most. A scope allows what the scopes before it allow.
const (
	// ScopeRead lets a caller look at the configuration, never change it: for dashboards and
	// audits.
	ScopeRead AdminScope = "read"
	// ScopeWrite lets a caller change the configuration, and look at it too.
	ScopeWrite AdminScope = "write"
)

// Valid reports whether s is one of the scopes, so that a stored or typed value that is not can be
// refused rather than read as either.
func (s AdminScope) Valid() bool { return s == ScopeRead || s == ScopeWrite }

// Allows reports whether a token of scope s may do what needs scope want: write implies read. An
// invalid scope, on either side, allows nothing, so that a mistake fails closed.
func (s AdminScope) Allows(want AdminScope) bool {
	switch want {
	case ScopeRead:
		return s == ScopeRead || s == ScopeWrite
	case ScopeWrite:
		return s == ScopeWrite
	}
	return false
}

// AdminTokenPrefix starts every admin token, so that a token is recognisable as one (by people,
// by secret scanners) and cannot be confused with a source key.
const AdminTokenPrefix = "tka_"

// adminTokenRandomBytes is the random part of a token: 256 bits, beyond any guessing.
const adminTokenRandomBytes = 32

// AdminTokenLength is the length of every admin token: the prefix and the 43 base64url characters
// of its 32 random bytes.
const AdminTokenLength = len(AdminTokenPrefix) + (adminTokenRandomBytes*8+5)/6

// AdminTokenDisplayLength is how many leading characters of a token are kept in clear: the "tka_"
// and 8 random characters (48 of 256 bits), enough to tell tokens apart, far too few to help a
// guess.
const AdminTokenDisplayLength = 12

// AdminToken is an admin token as stored: never the token itself, only its hash. Hash must not
// leave the server either: listings and answers show Prefix.
type AdminToken struct {
	ID int64
	// Name says, for people, who or what holds the token ("ci", "alice's laptop").
	Name   string
	Scope  AdminScope
	Prefix string
	Hash   []byte
	// CreatedAt is when the token was made. ExpiresAt, RevokedAt and LastUsedAt are the zero time
	// when the token never expires, is not revoked, or was never used.
	CreatedAt  time.Time
	ExpiresAt  time.Time
	RevokedAt  time.Time
	LastUsedAt time.Time
}

// Live reports whether the token authenticates callers at now: not revoked, and now before its
// expiry (a token expiring at T works until just before T, not at T).
func (t AdminToken) Live(now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// NewAdminToken returns a new random admin token: AdminTokenPrefix and 32 bytes from crypto/rand
// in unpadded base64url, so that it fits in a header and a shell without quoting.
func NewAdminToken() string {
	b := make([]byte, adminTokenRandomBytes)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program rather than return an error
	return AdminTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// IsAdminTokenShaped reports whether s has the form of an admin token: the prefix and 43
// base64url characters. A string that does not cannot be a token, so it is refused without a
// lookup, and a caller who pasted the wrong thing (a source key, a truncated token) can be told.
func IsAdminTokenShaped(s string) bool {
	rest, ok := strings.CutPrefix(s, AdminTokenPrefix)
	if !ok || len(s) != AdminTokenLength {
		return false
	}
	for i := range len(rest) {
		c := rest[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// AdminTokenDisplay is the part of a token shown in listings and logs: its first
// AdminTokenDisplayLength characters, or "" for a string too short to be a token (which would
// otherwise be shown whole).
func AdminTokenDisplay(token string) string {
	if len(token) < AdminTokenLength {
		return ""
	}
	return token[:AdminTokenDisplayLength]
}

// AdminTokenStore keeps admin tokens. The rules (format, scopes, expiry, caching) belong to the
// service in admintokens/; a store only keeps tokens and finds them by hash.
type AdminTokenStore interface {
	// CreateAdminToken stores a new token and returns it as stored, with its id. A hash another
	// token already has wraps ErrConflict.
	CreateAdminToken(ctx context.Context, token AdminToken) (AdminToken, error)
	// AdminTokens lists every token, revoked and expired ones too, oldest first.
	AdminTokens(ctx context.Context) ([]AdminToken, error)
	// AdminTokenByHash finds a token, live or not, by its hash; an unknown hash wraps
	// ErrNotFound. It lets a token made a moment ago by another process work at once.
	AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error)
	// RevokeAdminToken makes a token stop working from at on, keeping an earlier revocation's
	// time; an unknown id wraps ErrNotFound.
	RevokeAdminToken(ctx context.Context, id int64, at time.Time) error
	// LiveAdminTokens lists every token live at now, for the authentication cache.
	LiveAdminTokens(ctx context.Context, now time.Time) ([]AdminToken, error)
	// TouchAdminTokens records when tokens were last used (token id → time).
	TouchAdminTokens(ctx context.Context, lastUsed map[int64]time.Time) error
}
