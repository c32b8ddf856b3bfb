package importer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/trackapi/trackapi/client"
)

// retryStatus is the last retry the client reported, for the progress output: without it, an
// import against a server that is down shows nothing but "0 sent" for its whole retry budget.
type retryStatus struct {
	mu     sync.Mutex
	last   client.RetryAttempt
	next   time.Time // when the next attempt starts
	active bool
}

// observe is the client's retry observer.
func (r *retryStatus) observe(a client.RetryAttempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last, r.next, r.active = a, time.Now().Add(a.Wait), true
}

// resultArrived forgets the retry once a result comes in after its next attempt started: the
// requests move again (or the batch failed for good, which the counts show).
func (r *retryStatus) resultArrived() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active && !time.Now().Before(r.next) {
		r.active = false
	}
}

// describe says why the import is retrying and when it tries next ("retrying after connection
// refused, attempt 4 in 1.2s"), or "" when it is not retrying.
func (r *retryStatus) describe(now time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active {
		return ""
	}
	when := "under way"
	if wait := r.next.Sub(now); wait > 0 {
		when = "in " + shortDuration(wait)
	}
	return fmt.Sprintf("retrying after %s, attempt %d %s", shortReason(r.last.Err), r.last.Attempt+1, when)
}

// shortDuration is "1.2s" under 10 s, and whole seconds ("1m30s") above, for a countdown that
// reads at a glance. It rounds up: a wait never shows as 0.0s.
func shortDuration(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1fs", (d + 99*time.Millisecond).Truncate(100*time.Millisecond).Seconds())
	}
	return d.Round(time.Second).String()
}

// shortReason is why an attempt failed, in a few words that fit a progress line: "connection
// refused", "HTTP 503", "timeout". It never shows a URL: the HTTP client's errors quote the
// request's URL whole, and a collector's URL may carry a source key (?token=...).
func shortReason(err error) string {
	var (
		status  *client.ServerError
		dns     *net.DNSError
		cert    *tls.CertificateVerificationError
		timeout interface{ Timeout() bool }
	)
	switch {
	case err == nil:
		return "an unknown error"
	case errors.As(err, &status):
		return fmt.Sprintf("HTTP %d", status.StatusCode)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "host not found"
	case errors.As(err, &dns):
		return "DNS lookup failed"
	case errors.As(err, &cert):
		return "TLS certificate not trusted"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &timeout) && timeout.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	msg := err.Error()
	var u *url.Error
	if errors.As(err, &u) {
		msg = u.Err.Error() // without `Post "URL": `
	}
	msg = urls.ReplaceAllString(msg, "URL") // in case one is quoted deeper down
	// Cut short, so that the progress bar's line still fits a terminal.
	if r := []rune(msg); len(r) > 60 {
		msg = string(r[:59]) + "…"
	}
	return msg
}

// urls matches what looks like a URL in an error message.
var urls = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"]*`)
