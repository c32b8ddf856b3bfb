package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// The live stream's bounds.
const (
	// maxStreamsPerToken bounds the streams one token holds open: each holds a connection and
	// polls the store when woken, so that one caller cannot take the admin listener.
	maxStreamsPerToken = 10
	// defaultHeartbeat is how often a comment line goes out on an idle stream, so that proxies and
	// clients see a live connection.
	defaultHeartbeat = 15 * time.Second
	// streamWriteTimeout bounds each write of a stream: a client that stops reading is dropped
	// after it, whatever the server's write timeout (which the stream clears, as it would cut every
	// stream after a few seconds).
	streamWriteTimeout = 10 * time.Second
	// streamPage is how many entries a stream reads from the store at once.
	streamPage = 100
	// streamPoll is how often a stream looks at the store when nothing woke it: writes by another
	// process (a CLI, another node) do not wake it.
	streamPoll = time.Second
	// streamMinGap is the least time between two reads of one stream.
	streamMinGap = 200 * time.Millisecond
)

// streamLimiter counts the open streams of each token.
type streamLimiter struct {
	mu   sync.Mutex
	max  int
	open map[int64]int
}

func newStreamLimiter(max int) *streamLimiter {
	return &streamLimiter{max: max, open: map[int64]int{}}
}

func (l *streamLimiter) acquire(token int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[token] >= l.max {
		return false
	}
	l.open[token]++
	return true
}

func (l *streamLimiter) release(token int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[token]--; l.open[token] <= 0 {
		delete(l.open, token)
	}
}

// StreamInspectorEvents opens a live stream of new inspector entries (server-sent events).
func (s *Server) StreamInspectorEvents(ctx context.Context, req adminapi.StreamInspectorEventsRequestObject) (adminapi.StreamInspectorEventsResponseObject, error) {
	p := req.Params
	f := inspectorFilter(p.SourceId, p.Site, p.EventName, p.Outcome, p.Code, p.TestCode)
	var after int64
	if p.LastEventID != nil && *p.LastEventID != "" {
		n, ok := parseID(*p.LastEventID)
		if !ok {
			return nil, badRequest("Last-Event-ID: %q is not an entry id", *p.LastEventID)
		}
		after = n
	} else {
		// Without a place to resume from, the stream starts with the entries written from now on.
		newest, _, err := s.cfg.Inspector.InspectorEntries(ctx, trackapi.InspectorFilter{}, 0, 1)
		if err != nil {
			return nil, err
		}
		if len(newest) > 0 {
			after = newest[0].ID
		}
	}
	token, _ := tokenFromContext(ctx)
	if !s.streams.acquire(token.ID) {
		return nil, apiError(http.StatusTooManyRequests, "too_many_streams",
			fmt.Sprintf("at most %d inspector streams may be open per token; close one first", maxStreamsPerToken))
	}
	return &inspectorStream{s: s, ctx: ctx, filter: f, after: after, release: func() { s.streams.release(token.ID) }}, nil
}

// inspectorStream writes the stream once the strict handler hands it the response writer.
type inspectorStream struct {
	s       *Server
	ctx     context.Context
	filter  entryFilter
	after   int64
	release func()
}

// VisitStreamInspectorEventsResponse streams until the client goes away, a write stalls past
// streamWriteTimeout, or the server shuts down.
func (st *inspectorStream) VisitStreamInspectorEventsResponse(w http.ResponseWriter) error {
	defer st.release()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
			return fmt.Errorf("inspector stream: set write deadline: %w", err)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write([]byte(": trackapi inspector stream\n\n")); err != nil {
		return nil // the client went away
	}
	lastWrite := time.Now()
	var buf []byte
	for {
		entries, _, err := st.s.cfg.Inspector.InspectorEntriesAfter(st.ctx, st.filter.InspectorFilter, st.after, streamPage)
		if err != nil {
			if st.ctx.Err() == nil {
				st.s.log.Warn("inspector stream: reading entries failed", "err", err)
			}
			return nil // the headers are out: end the stream, the client resumes with Last-Event-ID
		}
		buf = buf[:0]
		for _, e := range entries {
			st.after = e.ID
			if !st.filter.matches(e) {
				continue
			}
			data, err := json.Marshal(entryOut(e))
			if err != nil {
				return fmt.Errorf("inspector stream: entry %d: %w", e.ID, err)
			}
			buf = fmt.Appendf(buf, "id: %d\nevent: entry\ndata: %s\n\n", e.ID, data)
		}
		if len(buf) > 0 {
			if err := write(buf); err != nil {
				return nil
			}
			lastWrite = time.Now()
		}
		if len(entries) == streamPage {
			continue // more are waiting
		}
		// Wait for a write of entries, the next heartbeat, the next poll or the end; then read no
		// sooner than streamMinGap after the last read, so that a flood of entries the filter
		// leaves out costs a few reads a second, not one per write.
		wait := min(streamPoll, time.Until(lastWrite.Add(st.s.cfg.StreamHeartbeat)))
		if err := st.waitForEntries(wait); err != nil {
			if st.ended() {
				_ = write([]byte(": the server is shutting down; reconnect with Last-Event-ID\n\n"))
			}
			return nil
		}
		if time.Since(lastWrite) >= st.s.cfg.StreamHeartbeat {
			if err := write([]byte(": keep-alive\n\n")); err != nil {
				return nil
			}
			lastWrite = time.Now()
		}
		select {
		case <-st.ctx.Done():
			return nil
		case <-time.After(streamMinGap):
		}
	}
}

// waitForEntries waits up to d for an entry after the stream's place; it fails only when the
// client went away or the server is shutting down.
func (st *inspectorStream) waitForEntries(d time.Duration) error {
	ctx, cancel := context.WithTimeout(st.ctx, max(d, 0))
	defer cancel()
	go func() {
		select {
		case <-st.s.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = st.s.cfg.WaitForEntries(ctx, st.after)
	if st.ctx.Err() != nil || st.ended() {
		return context.Canceled
	}
	return nil
}

// ended reports whether the server is shutting down.
func (st *inspectorStream) ended() bool {
	select {
	case <-st.s.shutdown:
		return true
	default:
		return false
	}
}
