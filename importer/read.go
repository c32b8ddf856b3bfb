package importer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/trackapi/trackapi/client"
)

// maxLine bounds the memory one input line may take. A line longer than that cannot be an event
// (32768 bytes at most) and is not copied to the failed file whole: only its number and size are.
const maxLine = 16 << 20

// sender reads the input and records what becomes of each line.
type sender struct {
	out     *failedFile
	in      *bufio.Reader
	retries *retryStatus // why requests are being retried, for the progress output

	lines, invalid, notQueued atomic.Int64
	bytesRead                 atomic.Int64
	lineNo                    int64
	halt                      context.CancelCauseFunc // stops the run: see errStopped

	mu      sync.Mutex
	taken   int           // events the Batcher took: the next one's Result.Index
	pending map[int]int64 // Result.Index → line number, until its result arrives
}

// read streams lines into the Batcher until the end of the input, or until ctx ends; then it
// copies the rest of the input to the failed file.
func (s *sender) read(ctx context.Context, in *bufio.Reader, b *client.Batcher) error {
	s.in = in
	var buf []byte
	for {
		if ctx.Err() != nil {
			return s.copyRest(ctx)
		}
		line, truncated, n, err := readLine(in, buf[:0])
		buf = line
		s.bytesRead.Add(int64(n))
		if n > 0 {
			s.lineNo++
		}
		if len(trimSpace(line)) > 0 || truncated {
			s.lines.Add(1)
			s.enqueue(ctx, b, trimSpace(line), truncated, n)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *sender) enqueue(ctx context.Context, b *client.Batcher, line []byte, truncated bool, n int) {
	if truncated {
		s.tooLong(n)
		return
	}
	// Encoded here rather than by EnqueueRaw so that a line that cannot be queued is written to
	// the failed file with the event_id it was given: sending the file again then stores it once.
	event, err := client.PrepareRaw(line)
	if err != nil {
		s.refused(line, err)
		return
	}
	s.mu.Lock()
	seq := s.taken
	s.pending[seq] = s.lineNo
	s.mu.Unlock()
	err = b.EnqueueRaw(ctx, event)
	s.mu.Lock()
	if err == nil {
		s.taken++
	} else {
		delete(s.pending, seq)
	}
	s.mu.Unlock()
	if err != nil {
		s.notQueued.Add(1)
		s.out.write(failedRecord{Line: s.lineNo, Status: "failed", Reason: "not sent: " + err.Error(), Event: event})
	}
}

// refused records a line the client refused: not an event the server would store.
func (s *sender) refused(line []byte, err error) {
	s.invalid.Add(1)
	code, reason := "invalid_payload", err.Error()
	var ee *client.EventError
	if errors.As(err, &ee) {
		code, reason = ee.Code(), reasonOf(ee)
	}
	s.out.write(failedRecord{Line: s.lineNo, Status: "invalid", Code: code, Reason: reason, Event: asJSON(line)})
}

// tooLong records a line too long to be held, let alone sent.
func (s *sender) tooLong(n int) {
	s.invalid.Add(1)
	s.out.write(failedRecord{Line: s.lineNo, Status: "invalid", Code: "event_too_large",
		Reason: fmt.Sprintf("line of %d bytes, over %d: not an event, and not copied here", n, maxLine), Event: json.RawMessage("null")})
}

func reasonOf(ee *client.EventError) string {
	if errors.Is(ee.Err, client.ErrEventTooLarge) {
		return fmt.Sprintf("event of %d bytes, over the %d-byte limit", ee.Size, client.MaxEventBytes)
	}
	return ee.Reason
}

// onResult writes each event not delivered to the failed file, with the line it came from.
func (s *sender) onResult(r client.Result) {
	s.mu.Lock()
	line := s.pending[r.Index]
	delete(s.pending, r.Index)
	s.mu.Unlock()
	s.retries.resultArrived()
	if r.Status == client.StatusDelivered {
		return
	}
	if r.Status == client.StatusFailed {
		s.halt(errStopped)
	}
	s.out.write(failedRecord{Line: line, EventID: r.EventID, Status: r.Status.String(), Code: r.Code, Reason: r.Err.Error(), Event: r.Event})
}

// copyRest writes the lines not read yet to the failed file, unsent, after a failure or a signal, so
// that the file holds everything to send again.
func (s *sender) copyRest(ctx context.Context) error {
	reason := "not sent: interrupted"
	if errors.Is(context.Cause(ctx), errStopped) {
		reason = "not sent: " + errStopped.Error()
	}
	var buf []byte
	for {
		line, truncated, n, err := readLine(s.in, buf[:0])
		buf = line
		s.bytesRead.Add(int64(n))
		if n > 0 {
			s.lineNo++
		}
		if line = trimSpace(line); len(line) > 0 || truncated {
			s.lines.Add(1)
			event, err := client.PrepareRaw(line)
			switch {
			case truncated:
				s.tooLong(n)
			case err != nil:
				s.refused(line, err)
			default:
				s.notQueued.Add(1)
				s.out.write(failedRecord{Line: s.lineNo, Status: "failed", Reason: reason, Event: event})
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine reads one line (without its newline) into buf, keeping at most maxLine bytes of it;
// n is the number of bytes consumed.
func readLine(r *bufio.Reader, buf []byte) (line []byte, truncated bool, n int, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		n += len(chunk)
		if len(buf)+len(chunk) <= maxLine+1 {
			buf = append(buf, chunk...)
		} else {
			truncated = true
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(buf) > 0 && buf[len(buf)-1] == '\n' {
			buf = buf[:len(buf)-1]
		}
		return buf, truncated, n, err
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// asJSON keeps a line as it was when it is JSON, and as a JSON string otherwise.
func asJSON(line []byte) json.RawMessage {
	if json.Valid(line) {
		return json.RawMessage(append([]byte(nil), line...))
	}
	b, _ := json.Marshal(string(line))
	return b
}
