package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

// TestSignMatchesSpecVector checks the sending side against the Standard Webhooks vector, which the
// external tests check the receiving side (Verify) against.
func TestSignMatchesSpecVector(t *testing.T) {
	key, err := parseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, the published vector %s", got, want)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "0": 0, "-5": 0, "7": 7 * time.Second, " 60 ": time.Minute, "3600": time.Hour, "3601": time.Hour,
		"99999999999999999999": 0, "1e3": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat):                         90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):                             0,
		now.Add(48 * time.Hour).Format(http.TimeFormat):                           time.Hour,
		now.Add(30 * time.Second).Format("Monday, 02-Jan-06 15:04:05 GMT"):        30 * time.Second, // RFC 850
		now.Add(10 * time.Second).In(time.UTC).Format("Mon Jan _2 15:04:05 2006"): 10 * time.Second, // asctime
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

// TestClassifyError covers what the tests cannot provoke without the network: DNS, and errors as
// the transport wraps them.
func TestClassifyError(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tc := range []struct {
		err       error
		reason    string
		permanent bool
	}{
		{&net.DNSError{Err: "no such host", Name: "hooks.invalid", IsNotFound: true}, "dns", false},
		{op(&net.DNSError{Err: "server misbehaving", Name: "hooks.example.com", IsTemporary: true}), "dns", false},
		{op(fmt.Errorf("%w: 10.0.0.1", ErrPrivateAddress)), "private_address", true},
		{op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), "connection_refused", false},
		{op(os.NewSyscallError("read", syscall.ECONNRESET)), "connection_reset", false},
		{op(os.NewSyscallError("write", syscall.EPIPE)), "connection_reset", false},
		{io.EOF, "connection_reset", false},
		{context.DeadlineExceeded, "timeout", false},
		{fmt.Errorf("wrapped: %w", context.Canceled), "canceled", false},
		{op(os.ErrDeadlineExceeded), "timeout", false},
		{errors.New("tls: handshake failure"), "tls", false},
		{op(os.NewSyscallError("connect", syscall.ENETUNREACH)), "network", false},
	} {
		reason, permanent := classifyError(tc.err)
		if reason != tc.reason || permanent != tc.permanent {
			t.Errorf("classifyError(%v) = %s %t, want %s %t", tc.err, reason, permanent, tc.reason, tc.permanent)
		}
	}
}

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.example.com/in":                     "https://hooks.example.com/in",
		"https://u:p@hooks.example.com/in?a=1&a=2&sig=x#f": "https://REDACTED@hooks.example.com/in?a=REDACTED&a=REDACTED&sig=REDACTED",
		"https://u@hooks.example.com/in?flag":              "https://REDACTED@hooks.example.com/in?flag=REDACTED",
	} {
		u, _ := url.Parse(raw)
		if got := redactURL(u); got != want {
			t.Errorf("redactURL(%s) = %s, want %s", raw, got, want)
		}
	}
	h := redactHeaders(http.Header{
		"Authorization": {"Bearer x"}, "Webhook-Signature": {"v1,x"}, "X-Api-Key": {"k"}, "Cookie": {"c"},
		"Content-Type": {"application/json"}, "Vary": {"A", "B"},
	})
	for name, want := range map[string]string{
		"Authorization": "REDACTED", "Webhook-Signature": "REDACTED", "X-Api-Key": "REDACTED", "Cookie": "REDACTED",
		"Content-Type": "application/json", "Vary": "A, B",
	} {
		if h[name] != want {
			t.Errorf("header %s: %q, want %q", name, h[name], want)
		}
	}
	if got := trackapi.SampleBody([]byte(strings.Repeat("a", 4095) + "é")); len(got) != 4095 {
		t.Errorf("cutBody splits a character: %d bytes", len(got))
	}
}
