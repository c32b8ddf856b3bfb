package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/netguard"
)

// failed is the result of a request that did not deliver, with its sample. resp is nil when no
// answer came; the caller fills the response body, which only it has read.
func (s *Sink) failed(permanent bool, reason string, err error, reqHeader http.Header, body []byte, resp *http.Response, n int) trackapi.DeliveryResult {
	sample := &trackapi.DeliverySample{
		Request: trackapi.SampleRequest{
			Method:  http.MethodPost,
			URL:     s.shownURL,
			Headers: redactHeaders(reqHeader),
			Body:    trackapi.SampleBody(body),
		},
	}
	if resp != nil {
		sample.Response = &trackapi.SampleResponse{Status: resp.StatusCode, Headers: redactHeaders(resp.Header)}
	} else {
		sample.Error = err.Error()
	}
	s.log.Debug("webhook request failed", "destination", s.destID, "url", s.shownURL, "events", n,
		"reason", reason, "permanent", permanent, "error", err)
	return trackapi.DeliveryResult{Err: err, Permanent: permanent, Reason: reason, Sample: sample}
}

// refusal is the result of an envelope the sink will not send at all; its sample shows what was
// refused, as no exchange took place.
func (s *Sink) refusal(reason string, err error, content []byte) trackapi.DeliveryResult {
	return trackapi.DeliveryResult{
		Err:       err,
		Permanent: true,
		Reason:    reason,
		Sample: &trackapi.DeliverySample{
			Request: trackapi.SampleRequest{Method: http.MethodPost, URL: s.shownURL, Headers: map[string]string{}, Body: trackapi.SampleBody(content)},
			Error:   err.Error(),
		},
	}
}

// classifyError names a failed request's transport error for the delivery issues and says whether
// retrying is pointless. Only a refused address is permanent: the network may recover, a rule
// will not.
func classifyError(err error) (reason string, permanent bool) {
	if errors.Is(err, netguard.ErrPrivateAddress) {
		return "private_address", true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout", false
	}
	if errors.Is(err, context.Canceled) { // the caller gave up (shutdown): nothing was learnt
		return "canceled", false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "dns", false
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timeout", false
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused", false
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF): // closed before answering
		return "connection_reset", false
	}
	var (
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		verifyErr   *tls.CertificateVerificationError
		authorityEr x509.UnknownAuthorityError
		hostnameErr x509.HostnameError
		invalidErr  x509.CertificateInvalidError
	)
	if errors.As(err, &recordErr) || errors.As(err, &alertErr) || errors.As(err, &verifyErr) ||
		errors.As(err, &authorityEr) || errors.As(err, &hostnameErr) || errors.As(err, &invalidErr) ||
		strings.Contains(err.Error(), "tls: ") { // crypto/tls makes most handshake errors with errors.New
		return "tls", false
	}
	return "network", false
}

// parseRetryAfter reads a Retry-After header, delay-seconds or an HTTP date, as a wait from now,
// capped at maxRetryAfter; 0 when absent, unreadable or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// redactURL is u as operators may see it: userinfo and every query value replaced by REDACTED
// (query keys stay, to tell parameters apart), no fragment. Every value, not only those whose key
// looks like a credential, because receivers name their tokens in too many ways.
func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(redacted)
	}
	if c.RawQuery != "" {
		q := c.Query()
		for _, vs := range q {
			for i := range vs {
				vs[i] = redacted
			}
		}
		c.RawQuery = q.Encode()
	}
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// sensitiveHeaderWords mark header names whose values are credentials.
var sensitiveHeaderWords = []string{"auth", "cookie", "signature", "token", "secret", "password", "api-key", "apikey"}

// redactHeaders flattens h for a sample, values joined by ", ", credentials (Authorization,
// webhook-signature, cookies, ...) replaced by REDACTED.
func redactHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for name, vs := range h {
		lower := strings.ToLower(name)
		out[name] = strings.Join(vs, ", ")
		for _, w := range sensitiveHeaderWords {
			if strings.Contains(lower, w) {
				out[name] = redacted
				break
			}
		}
	}
	return out
}
