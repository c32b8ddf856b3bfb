package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/client"
)

// The reason of a retry is a few words, and never the URL the HTTP client quotes, which may
// carry a key.
func TestShortReasonIsShortAndHidesURLs(t *testing.T) {
	const secretURL = "https://collect.example.com/events/batch?token=SECRET"
	dial := func(errno syscall.Errno) error {
		return &url.Error{Op: "Post", URL: secretURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{&client.ServerError{StatusCode: 503, Code: "unavailable", Message: "store closed"}, "HTTP 503"},
		{fmt.Errorf("POST /events/batch: %w", &client.ServerError{StatusCode: 429}), "HTTP 429"},
		{dial(syscall.ECONNREFUSED), "connection refused"},
		{dial(syscall.ECONNRESET), "connection reset"},
		{dial(syscall.EHOSTUNREACH), "host unreachable"},
		{&url.Error{Op: "Post", URL: secretURL, Err: context.DeadlineExceeded}, "timeout"},
		{&url.Error{Op: "Post", URL: secretURL, Err: io.EOF}, "connection closed"},
		{&url.Error{Op: "Post", URL: secretURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "collect.example.com", IsNotFound: true}}}, "host not found"},
		{&url.Error{Op: "Post", URL: secretURL, Err: errors.New("http: server gave HTTP response to HTTPS client")}, "http: server gave HTTP response to HTTPS client"},
		{fmt.Errorf("reading the answer (HTTP 200): %w", &url.Error{Op: "Get", URL: secretURL, Err: errors.New("odd")}), "odd"},
		{errors.New("redirected to " + secretURL + " and lost"), "redirected to URL and lost"},
		{errors.New("a 200 whose body is not a collect result: " + strings.Repeat("x", 100)), "a 200 whose body is not a collect result: xxxxxxxxxxxxxxxxx…"},
	} {
		got := shortReason(c.err)
		if got != c.want {
			t.Errorf("shortReason(%v) = %q, want %q", c.err, got, c.want)
		}
		if strings.Contains(got, "SECRET") || strings.Contains(got, "://") {
			t.Errorf("shortReason(%v) = %q shows the URL", c.err, got)
		}
	}
}

// The progress says why and when the next attempt is, and forgets the retry once a result comes
// in after that attempt started.
func TestRetryStatusDescribe(t *testing.T) {
	var r retryStatus
	if got := r.describe(time.Now()); got != "" {
		t.Errorf("before any retry: %q", got)
	}
	r.observe(client.RetryAttempt{Attempt: 2, Err: &client.ServerError{StatusCode: 503}, Wait: 90 * time.Second})
	now := time.Now()
	if got, want := r.describe(now), "retrying after HTTP 503, attempt 3 in 1m30s"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
	if got, want := r.describe(now.Add(88*time.Second+950*time.Millisecond)), "retrying after HTTP 503, attempt 3 in 1.1s"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
	if got, want := r.describe(now.Add(91*time.Second)), "retrying after HTTP 503, attempt 3 under way"; got != want {
		t.Errorf("once the wait is over: %q, want %q", got, want)
	}
	r.resultArrived() // another batch's result, while this one waits
	if r.describe(now) == "" {
		t.Error("a result that came in during the wait hid the retry")
	}
	r.observe(client.RetryAttempt{Attempt: 1, Err: syscall.ECONNREFUSED, Wait: 0})
	r.resultArrived()
	if got := r.describe(time.Now()); got != "" {
		t.Errorf("after a result that followed the retry: %q", got)
	}
}
