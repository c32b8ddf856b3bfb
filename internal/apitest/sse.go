package apitest

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Frame is one server-sent event of a stream, or one comment line.
type Frame struct {
	Comment string // the text of a comment line (": keep-alive" gives "keep-alive")
	ID      string
	Event   string
	Data    string
}

// Stream is an open text/event-stream response, read line by line on its own goroutine. The
// checking Client reads whole bodies, so a stream cannot go through it: OpenStream sends with a
// plain client and checks answers other than 200 against the spec itself.
type Stream struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	frames chan Frame // closed when the body ends
}

// StreamClient is an HTTP client for streams, of its own, so that a test's streams never wait for
// a connection and their connections are closed when the test ends.
func StreamClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// OpenStream sends a GET to url with the headers (name, value, ...). On a 200 with
// Content-Type text/event-stream it returns the open stream, closed when the test ends;
// otherwise the status and the body, which must be an answer the spec declares.
func OpenStream(t testing.TB, c *http.Client, url string, headers ...string) (*Stream, int, []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("opening a stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		CheckResponse(t, req, resp.StatusCode, resp.Header, b)
		return nil, resp.StatusCode, b
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("a stream with Content-Type %q, want text/event-stream", ct)
	}
	s := &Stream{t: t, resp: resp, cancel: cancel, frames: make(chan Frame, 1024)}
	go s.read(ctx)
	t.Cleanup(s.Close)
	return s, resp.StatusCode, nil
}

func (s *Stream) read(ctx context.Context) {
	defer close(s.frames)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var f Frame
	started := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if started {
				select {
				case s.frames <- f:
				case <-ctx.Done():
					return
				}
			}
			f, started = Frame{}, false
			continue
		case strings.HasPrefix(line, ":"):
			f.Comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "id: "):
			f.ID = line[len("id: "):]
		case strings.HasPrefix(line, "event: "):
			f.Event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			f.Data = line[len("data: "):]
		default:
			s.t.Errorf("a stream line that is not a server-sent event's: %q", line)
		}
		started = true
	}
}

// Close disconnects.
func (s *Stream) Close() {
	s.cancel()
	s.resp.Body.Close()
}

// Next returns the next frame; ok is false when the stream has ended. It fails the test when
// nothing comes within d.
func (s *Stream) Next(d time.Duration) (f Frame, ok bool) {
	s.t.Helper()
	select {
	case f, ok = <-s.frames:
		return f, ok
	case <-time.After(d):
		s.t.Fatalf("nothing on the stream within %s", d)
		return Frame{}, false
	}
}

// NextEvent skips comments and returns the next event; it fails the test when the stream ends or
// no event comes within d.
func (s *Stream) NextEvent(d time.Duration) Frame {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, ok := s.Next(time.Until(deadline))
		if !ok {
			s.t.Fatal("the stream ended while an event was awaited")
		}
		if f.Event != "" || f.Data != "" || f.ID != "" {
			return f
		}
	}
}

// Ended waits up to d for the stream to end, skipping what comes before, and returns the comments
// that came; ended is false when it was still open after d.
func (s *Stream) Ended(d time.Duration) (comments []string, ended bool) {
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				return comments, true
			}
			if f.Comment != "" {
				comments = append(comments, f.Comment)
			}
		case <-deadline:
			return comments, false
		}
	}
}
