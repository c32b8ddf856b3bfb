package webhook

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/netfail"
)

// failed is the result of a request that did not deliver, with its sample. resp is nil when no
// answer came; the caller fills the response body, which only it has read.
func (s *Sink) failed(permanent bool, reason string, err error, reqHeader http.Header, body []byte, resp *http.Response, n int) trackapi.DeliveryResult {
	sample := &trackapi.DeliverySample{Request: s.sampleRequest(reqHeader, body)}
	if resp != nil {
		sample.Response = &trackapi.SampleResponse{Status: resp.StatusCode, Headers: redactHeaders(resp.Header)}
	} else {
		sample.Error = err.Error()
	}
	s.log.Debug("webhook request failed", "destination", s.destID, "url", s.shownURL, "events", n,
		"reason", reason, "permanent", permanent, "error", err)
	return trackapi.DeliveryResult{Err: err, Permanent: permanent, Reason: reason, Sample: sample}
}

// sampleRequest is a request as operators see it, in failure samples and previews alike: the URL
// and headers with credentials redacted, the body cut to trackapi.SampleBodyLimit.
func (s *Sink) sampleRequest(header http.Header, body []byte) trackapi.SampleRequest {
	return trackapi.SampleRequest{
		Method:  http.MethodPost,
		URL:     s.shownURL,
		Headers: redactHeaders(header),
		Body:    trackapi.SampleBody(body),
	}
}

// refusal is the result of an envelope the sink will not send at all; its sample shows what was
// refused, as no exchange took place.
func (s *Sink) refusal(reason string, err error, content []byte) trackapi.DeliveryResult {
	return trackapi.DeliveryResult{
		Err:       err,
		Permanent: true,
		Reason:    reason,
		Sample: &trackapi.DeliverySample{
			Request: s.sampleRequest(nil, content),
			Error:   err.Error(),
		},
	}
}

// classifyError names a failed request's transport error for the delivery issues and says whether
// retrying is pointless. Only a refused address is permanent: the network may recover, a rule
// will not.
func classifyError(err error) (reason string, permanent bool) {
	reason, ok := netfail.Reason(err)
	if !ok {
		reason = "network"
	}
	return reason, reason == "private_address"
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
