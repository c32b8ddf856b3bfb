package importer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

// failedRecord is one line of the failed file. Event is the event as it was (or would have
// been) sent, with the event_id the client gave it, so that `jq -c .event FILE | trackapi send -`
// sends the events again without duplicating any that did arrive.
type failedRecord struct {
	Line    int64           `json:"line,omitempty"`
	EventID string          `json:"event_id,omitempty"`
	Status  string          `json:"status"` // invalid, rejected or failed
	Code    string          `json:"code,omitempty"`
	Reason  string          `json:"reason"`
	Event   json.RawMessage `json:"event"`
}

// failedFile is the file of the lines not delivered (Config.FailedPath), opened on the first
// record unless opened before.
type failedFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	n    int
	err  error
	done bool // closed: a late write (after an interrupt) is dropped
}

func (o *failedFile) open() error {
	f, err := os.OpenFile(o.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("creating the file of failed events: %w", err)
	}
	o.f, o.w = f, bufio.NewWriter(f)
	return nil
}

func (o *failedFile) write(r failedRecord) {
	b, err := json.Marshal(r)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil || o.done {
		return
	}
	if err == nil && o.f == nil {
		err = o.open()
	}
	if err == nil {
		_, err = o.w.Write(append(b, '\n'))
	}
	if err != nil {
		o.err = fmt.Errorf("writing %s: %w", o.path, err)
		return
	}
	o.n++
}

func (o *failedFile) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = true
	if o.f != nil {
		if err := o.w.Flush(); err != nil && o.err == nil {
			o.err = fmt.Errorf("writing %s: %w", o.path, err)
		}
		if err := o.f.Close(); err != nil && o.err == nil {
			o.err = fmt.Errorf("writing %s: %w", o.path, err)
		}
		o.f = nil
	}
	return o.err
}
