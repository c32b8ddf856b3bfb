package ingest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

// FuzzProcess holds the event rules to what openapi.yaml promises of a stored event, for any event
// checkJSON lets through: it is JSON; its root and its context repeat no key, so that every reader
// finds the id the server deduplicated on; that id has no lone surrogate; warnings are short; and
// processing the stored event again changes nothing (the rules are idempotent).
func FuzzProcess(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "testdata", "events", "*.json"))
	for _, name := range seeds {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		if members, ok := objectMembers(b); ok { // a batch: its elements, as batch events
			elements, _ := arrayElements(lastMember(members, "batch"))
			for _, e := range elements {
				f.Add([]byte(e), true)
			}
		}
	}
	p, err := newEventProcessor()
	if err != nil {
		f.Fatal(err)
	}
	now := time.UnixMilli(1700000000000)
	f.Fuzz(func(t *testing.T, raw []byte, inBatch bool) {
		if len(raw) > trackapi.EventLimit || checkJSON(raw) != nil || !isObject(raw) {
			return
		}
		out := p.process(raw, inBatch, now)
		if out.rejected != nil {
			return
		}
		for _, w := range out.warnings {
			if len(w.Message) > 300 {
				t.Fatalf("%s warning of %d bytes: %.300s", w.Code, len(w.Message), w.Message)
			}
		}
		if checkJSON(out.body) != nil {
			t.Fatalf("stored event is not JSON: %.300s", out.body)
		}
		members, ok := objectMembers(out.body)
		if !ok || supersededMembers(members) != nil {
			t.Fatalf("stored event repeats a root key: %.300s", out.body)
		}
		contextRaw := lastMember(members, "context")
		contextMembers, contextIsObject := objectMembers(contextRaw)
		if !contextIsObject {
			return // the id is the server's, for deduplication only
		}
		if supersededMembers(contextMembers) != nil {
			t.Fatalf("stored context repeats a key: %.300s", contextRaw)
		}
		id := lastMember(contextMembers, "event_id")
		if got := trackapi.EventIDOfJSON(id); got != out.eventID {
			t.Fatalf("stored id %s, deduplicated on %q", id, out.eventID)
		}
		if hasLoneSurrogate(id) {
			t.Fatalf("stored id %s has a lone surrogate", id)
		}
		again := p.process(out.body, inBatch, now.Add(time.Hour))
		if again.rejected != nil || again.eventID != out.eventID || !bytes.Equal(again.body, out.body) {
			t.Fatalf("processing the stored event again changed it:\n%.300s\n%.300s (%v)", out.body, again.body, again.rejected)
		}
	})
}
