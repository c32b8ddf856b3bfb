package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// RetryPolicy bounds the retries of one request, in attempts and in time. Zero fields take the
// values of DefaultRetryPolicy.
//
// A request is retried after a network error (connection refused or reset, a broken connection
// even after the server may have stored the events), a timed-out attempt, a 5xx, a 408 or a 429,
// and after a 200 whose body cannot be read. Retrying is safe because every event carries its
// event_id: what the server already stored comes back as a duplicate. A 400, or any other 4xx, is
// never retried: the same bytes would get the same answer.
//
// The wait before retry n is drawn uniformly from [0, min(MaxDelay, BaseDelay·2^(n-1))] ("full
// jitter"), so that many clients failing together do not retry together. A Retry-After header
// (in seconds, or an HTTP date) replaces that wait: the server knows best when it can take the
// request again. A wait that would end past MaxElapsed ends the retries at once rather than
// sleeping in vain: waiting the budget out and retrying earlier than asked would ignore the
// server, and retrying later would overrun the budget the caller set.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts of a request, the first included (default 8).
	MaxAttempts int
	// MaxElapsed bounds the time from the first attempt to the start of the last (default 2
	// minutes); the last attempt may take up to AttemptTimeout more.
	MaxElapsed time.Duration
	// BaseDelay and MaxDelay shape the backoff (defaults 100 ms and 10 s).
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// AttemptTimeout bounds one attempt, from sending the request to reading the answer
	// (default 30 s, the server's own request timeout). A slower attempt is abandoned and
	// retried.
	AttemptTimeout time.Duration
}

// DefaultRetryPolicy is the policy of a Client made without WithRetry.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:    8,
		MaxElapsed:     2 * time.Minute,
		BaseDelay:      100 * time.Millisecond,
		MaxDelay:       10 * time.Second,
		AttemptTimeout: 30 * time.Second,
	}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = d.MaxElapsed
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = d.BaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = d.MaxDelay
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = d.AttemptTimeout
	}
	return p
}

// backoff is the full-jitter wait before attempt n+1, n ≥ 1 attempts having failed.
func (c *Client) backoff(n int) time.Duration {
	ceiling := c.retry.MaxDelay
	if n-1 < 62 {
		if d := c.retry.BaseDelay << (n - 1); d > 0 && d < ceiling {
			ceiling = d
		}
	}
	return time.Duration(c.jitter(int64(ceiling) + 1))
}

func randInt64N(n int64) int64 { return rand.Int64N(n) }

// sleepCtx waits d, or less if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// parseRetryAfter reads Retry-After as seconds or as an HTTP date; ok is false when it is absent
// or unreadable.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// RetryAttempt is a failed attempt that will be retried, as given to the function of
// WithRetryObserver. It is reported only when another attempt follows: an attempt that ends the
// retries (an answer that must not be retried, the budget spent) is reported in the results.
type RetryAttempt struct {
	// Attempt is the number of the attempt that failed: 1 for the first.
	Attempt int
	// Err is why it failed: a *ServerError for an HTTP answer (503, 429, 502...), or a network
	// error (connection refused or reset, a timed-out attempt: context.DeadlineExceeded), or an
	// answer that is not a collect result. Network errors come from the HTTP client and may
	// include the request's URL.
	Err error
	// Wait is the time until the next attempt: the server's Retry-After when it gave one, the
	// backoff otherwise.
	Wait time.Duration
}

// errBudget is wrapped when the retries stop because the next one would not fit the policy.
var errBudget = errors.New("retry budget exhausted")

// withRetries runs attempt until it succeeds, fails for good, or the policy or ctx ends it.
// attempt reports whether its error is worth retrying and the wait the server asked for.
func (c *Client) withRetries(ctx context.Context, what string, attempt func(ctx context.Context) (retry bool, retryAfter time.Duration, err error)) (attempts int, err error) {
	start := c.now()
	deadline := start.Add(c.retry.MaxElapsed)
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			return n - 1, fmt.Errorf("%s: %w", what, context.Cause(ctx))
		}
		actx, cancel := context.WithTimeout(ctx, c.retry.AttemptTimeout)
		retry, retryAfter, err := attempt(actx)
		cancel()
		if err == nil {
			return n, nil
		}
		if ctx.Err() != nil {
			return n, fmt.Errorf("%s: %w (after %d attempts; last: %v)", what, context.Cause(ctx), n, err)
		}
		if !retry {
			return n, err
		}
		if n >= c.retry.MaxAttempts {
			return n, fmt.Errorf("%s: giving up after %d attempts: %w: %w", what, n, errBudget, err)
		}
		wait := retryAfter
		if wait <= 0 {
			wait = c.backoff(n)
		}
		if c.now().Add(wait).After(deadline) {
			return n, fmt.Errorf("%s: giving up after %d attempts: waiting %s more would overrun the %s budget: %w: %w",
				what, n, wait.Round(time.Millisecond), c.retry.MaxElapsed, errBudget, err)
		}
		c.log.Debug("retrying", "what", what, "attempt", n, "wait", wait, "err", err)
		if c.onRetry != nil {
			c.onRetry(RetryAttempt{Attempt: n, Err: err, Wait: wait})
		}
		if err := c.sleep(ctx, wait); err != nil {
			return n, fmt.Errorf("%s: %w (after %d attempts; waiting to retry)", what, context.Cause(ctx), n)
		}
	}
}
