package trackapi_test

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

var adminTokenFormat = regexp.MustCompile(`^tka_[A-Za-z0-9_-]{43}$`)

// A new token is tka_ and 32 random bytes in unpadded base64url, different every time, and has
// the shape IsAdminTokenShaped accepts.
func TestNewAdminToken(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		tok := trackapi.NewAdminToken()
		if !adminTokenFormat.MatchString(tok) || len(tok) != trackapi.AdminTokenLength {
			t.Fatalf("token %q: want tka_ and 43 base64url characters (%d in all)", tok, trackapi.AdminTokenLength)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "tka_"))
		if err != nil || len(raw) != 32 {
			t.Fatalf("token %q decodes to %d bytes, %v; want 32", tok, len(raw), err)
		}
		if !trackapi.IsAdminTokenShaped(tok) {
			t.Fatalf("a new token %q is not token-shaped", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q made twice", tok)
		}
		seen[tok] = true
		if d := trackapi.AdminTokenDisplay(tok); d != tok[:12] || !strings.HasPrefix(d, "tka_") {
			t.Fatalf("display prefix of %q = %q", tok, d)
		}
	}
}

func TestIsAdminTokenShaped(t *testing.T) {
	good := trackapi.NewAdminToken()
	for _, s := range []string{
		"",
		"tka_",
		good[:len(good)-1],                     // truncated
		good + "A",                             // too long
		"tkb_" + good[4:],                      // another prefix
		"TKA_" + good[4:],                      // prefixes are case-sensitive
		good[:20] + "+" + good[21:],            // standard base64, not base64url
		good[:20] + "=" + good[21:],            // padding
		good[:20] + " " + good[21:],            // white space
		good[:20] + "é"[:1] + good[21:],        // not ASCII
		"7183b9d4-1031-11ee-be56-0242ac120002", // a source key
		"Bearer " + good,
	} {
		if trackapi.IsAdminTokenShaped(s) {
			t.Errorf("%q counts as token-shaped", s)
		}
	}
	if !trackapi.IsAdminTokenShaped("tka_" + strings.Repeat("-", 43)) {
		t.Error("a token of '-' characters is token-shaped too")
	}
	if d := trackapi.AdminTokenDisplay("tka_short"); d != "" {
		t.Errorf("a string too short to be a token is displayed as %q, want nothing", d)
	}
}

// Write implies read; read does not imply write; an unknown scope allows nothing and is
// allowed by nothing.
func TestAdminScopeAllows(t *testing.T) {
	for _, tt := range []struct {
		have, want trackapi.AdminScope
		allowed    bool
	}{
		{trackapi.ScopeRead, trackapi.ScopeRead, true},
		{trackapi.ScopeRead, trackapi.ScopeWrite, false},
		{trackapi.ScopeWrite, trackapi.ScopeRead, true},
		{trackapi.ScopeWrite, trackapi.ScopeWrite, true},
		{"admin", trackapi.ScopeRead, false},
		{"", trackapi.ScopeRead, false},
		{trackapi.ScopeWrite, "admin", false},
		{trackapi.ScopeWrite, "", false},
	} {
		if got := tt.have.Allows(tt.want); got != tt.allowed {
			t.Errorf("%q allows %q: %t, want %t", tt.have, tt.want, got, tt.allowed)
		}
	}
	if !trackapi.ScopeRead.Valid() || !trackapi.ScopeWrite.Valid() || trackapi.AdminScope("Write").Valid() {
		t.Error("Valid: want read and write only")
	}
}

// A token works until just before its expiry, not at it, and a revoked one not at all.
func TestAdminTokenLive(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tok := trackapi.AdminToken{ExpiresAt: at}
	if !tok.Live(at.Add(-time.Nanosecond)) || tok.Live(at) || tok.Live(at.Add(time.Hour)) {
		t.Error("expiry: want live before ExpiresAt only")
	}
	if !(trackapi.AdminToken{}).Live(at.AddDate(100, 0, 0)) {
		t.Error("a token without expiry stopped working")
	}
	if (trackapi.AdminToken{RevokedAt: at}).Live(at.Add(-time.Hour)) {
		t.Error("a revoked token is live")
	}
}
