package ingest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

// FuzzProcess holds the event rules to what openapi.yaml promises of a stored event, for any event
// checkJSON lets through: it is JSON; its root and its context repeat no key, so that every reader
// finds the id the server deduplicated on; that id has no lone surrogate; its timestamp is the one
// sent or, converted, the sent number's integer part, and one that is not epoch milliseconds is
// reported; warnings are short; and processing the stored event again changes nothing (the rules
// are idempotent).
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
		checkStoredTimestamp(t, raw, inBatch, lastMember(contextMembers, "event_timestamp"), out.warnings)
		again := p.process(out.body, inBatch, now.Add(time.Hour))
		if again.rejected != nil || again.eventID != out.eventID || !bytes.Equal(again.body, out.body) {
			t.Fatalf("processing the stored event again changed it:\n%.300s\n%.300s (%v)", out.body, again.body, again.rejected)
		}
	})
}

// checkStoredTimestamp fails unless the stored context.event_timestamp is what openapi.yaml says:
// a number that is not epoch milliseconds (an int64) is stored only with a schema_violation
// warning, and a number converted (timestamp_normalized) is the integer part of the one sent.
func checkStoredTimestamp(t *testing.T, raw []byte, inBatch bool, stored []byte, warnings []trackapi.Problem) {
	t.Helper()
	codes := map[string]bool{}
	for _, w := range warnings {
		if w.Path == "/context/event_timestamp" {
			codes[w.Code] = true
		}
	}
	isNumber := len(stored) > 0 && (stored[0] == '-' || stored[0] >= '0' && stored[0] <= '9')
	if !isNumber {
		return
	}
	storedMillis, err := strconv.ParseInt(string(stored), 10, 64)
	if err != nil && !codes["schema_violation"] {
		t.Fatalf("stored timestamp %.100s is not epoch milliseconds, and no schema_violation says so", stored)
	}
	if !codes["timestamp_normalized"] {
		return
	}
	if err != nil {
		t.Fatalf("timestamp converted to %.100s, not epoch milliseconds", stored)
	}
	root, _ := objectMembers(raw)
	sentContext, _ := objectMembers(lastMember(root, "context"))
	sent := lastMember(sentContext, "event_timestamp")
	if sent == nil && inBatch {
		sent = lastMember(root, "event_timestamp")
	}
	if len(sent) == 0 || len(sent) > 400 || (sent[0] != '-' && (sent[0] < '0' || sent[0] > '9')) {
		return // a string, or a number too long for the oracle
	}
	if want, ok := exactIntegerPart(string(sent)); !ok || want != storedMillis {
		t.Fatalf("timestamp %.100s stored as %d, want its integer part (%d, in range: %v)", sent, storedMillis, want, ok)
	}
}
