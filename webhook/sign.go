package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers (https://www.standardwebhooks.com/).
const (
	// HeaderID carries the message id: the same for every attempt at the same events, so that a
	// receiver can use it as an idempotency key.
	HeaderID = "webhook-id"
	// HeaderTimestamp carries the attempt's time in Unix seconds; it is signed, so that a captured
	// request cannot be replayed later than the receiver's tolerance.
	HeaderTimestamp = "webhook-timestamp"
	// HeaderSignature carries space-separated "v1,<base64 HMAC-SHA256>" signatures, one for each
	// current secret, so that a secret can be rotated without a gap.
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every signing secret, as the Standard Webhooks spec serialises them: it tells
// a secret from other credentials at a glance and says how to read the rest (base64).
const SecretPrefix = "whsec_"

// DefaultTolerance is how far Verify lets a request's timestamp be from now, in both directions,
// when its caller does not say: the Standard Webhooks libraries' five minutes.
const DefaultTolerance = 5 * time.Minute

// The sizes of a secret's key: the spec asks for at least 24 bytes (192 bits) and at most 512 bits.
const (
	secretBytes    = 24
	minSecretBytes = 24
	maxSecretBytes = 64
)

// Errors that Verify wraps, so that a receiver can tell a misconfigured sender (missing headers)
// from a replay or a forgery.
var (
	ErrMissingHeader = errors.New("missing Standard Webhooks header")
	ErrTimestamp     = errors.New("webhook timestamp invalid or outside the tolerance")
	ErrSignature     = errors.New("no matching webhook signature")
)

// NewSecret returns a new random signing secret: SecretPrefix and the standard base64 of 24 random
// bytes, the spec's minimum and what its reference libraries make.
func NewSecret() (string, error) {
	key := make([]byte, secretBytes)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("new webhook secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// parseSecret returns a destination secret's HMAC key. The prefix is required here, unlike in
// Verify: what an operator configures is checked strictly, so a pasted credential of another kind
// is an error when the destination is made, not a receiver's 401 at every delivery.
func parseSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("a signing secret starts with %q", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("a signing secret is %q and standard base64: %w", SecretPrefix, err)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return nil, fmt.Errorf("a signing secret holds %d to %d bytes, not %d", minSecretBytes, maxSecretBytes, len(key))
	}
	return key, nil
}

// sign returns the raw HMAC-SHA256 of "{msgID}.{timestamp}.{body}" under key, the content the
// Standard Webhooks spec signs.
func sign(key []byte, msgID, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// signature is one entry of the webhook-signature header: "v1," and the standard base64 of sign.
func signature(key []byte, msgID, timestamp string, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(sign(key, msgID, timestamp, body))
}

// Verify checks a received webhook the way the Standard Webhooks spec tells receivers to: the
// webhook-id, webhook-timestamp and webhook-signature headers must be present, the timestamp must
// be within tolerance of now in both directions (tolerance <= 0: DefaultTolerance), and at least
// one "v1," signature of the space-separated list must equal the HMAC-SHA256, under secret's key, of
// "{webhook-id}.{webhook-timestamp}.{body}", compared in constant time. body must be the request's
// bytes as received, not JSON decoded and encoded again. secret may come with or without its
// "whsec_" prefix, as in the spec's reference libraries. Other signature versions (v1a, ...) are
// skipped. It returns nil when the request is authentic, and otherwise an error wrapping
// ErrMissingHeader, ErrTimestamp or ErrSignature (or the secret's decoding error).
func Verify(secret string, headers http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	msgID, ts, sigs := headers.Get(HeaderID), headers.Get(HeaderTimestamp), headers.Get(HeaderSignature)
	for _, h := range [...]struct{ name, value string }{{HeaderID, msgID}, {HeaderTimestamp, ts}, {HeaderSignature, sigs}} {
		if h.value == "" {
			return fmt.Errorf("verify webhook: %w: %s", ErrMissingHeader, h.name)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("verify webhook: %w: %q is not Unix seconds", ErrTimestamp, ts)
	}
	sent := time.Unix(sec, 0)
	if now.Sub(sent) > tolerance {
		return fmt.Errorf("verify webhook: %w: %s is older than %s", ErrTimestamp, sent.UTC().Format(time.RFC3339), tolerance)
	}
	if sent.Sub(now) > tolerance {
		return fmt.Errorf("verify webhook: %w: %s is more than %s ahead", ErrTimestamp, sent.UTC().Format(time.RFC3339), tolerance)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil {
		return fmt.Errorf("verify webhook: the secret is not %q and standard base64: %w", SecretPrefix, err)
	}
	want := sign(key, msgID, ts, body)
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("verify webhook: %w", ErrSignature)
}
