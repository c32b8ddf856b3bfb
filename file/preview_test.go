package file_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
)

func TestPreviewIsTheLinesDeliverWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out") // made by the first Deliver, not by Preview
	c := &clock{t: at}
	s := newSink(t, dir, c)
	batch := []trackapi.Envelope{
		// Bytes an encoding could change: spaces, a newline, HTML characters.
		envelope(1, "{ \"event_name\" : \"page_view\", \"text\": \"line\\nbreak <b>&</b>\",\n \"value\": 1.50 }"),
		envelope(2, `{"event_name":"search"}`),
	}

	var _ trackapi.Previewer = s
	preview, err := s.Preview(batch)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Preview touched the disk: %v", err)
	}
	mustDeliver(t, s, batch...)
	path := filepath.Join(dir, "2026-03-14T09.ndjson")
	written, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if preview.Body != string(written) || strings.Count(preview.Body, "\n") != len(batch) {
		t.Fatalf("preview body\n%s\nwritten\n%s", preview.Body, written)
	}
	if preview.Method != "WRITE" || preview.URL != "file://"+filepath.ToSlash(path) || len(preview.Headers) != 0 {
		t.Fatalf("preview %s %s %v, want WRITE file://%s", preview.Method, preview.URL, preview.Headers, path)
	}

	// The next hour's preview names the file Deliver then appends to.
	c.set(at.Add(2 * time.Second))
	preview, err = s.Preview(batch[1:])
	if err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, s, batch[1:]...)
	next := filepath.Join(dir, "2026-03-14T10.ndjson")
	written, err = os.ReadFile(next)
	if err != nil {
		t.Fatalf("the next hour's file: %v", err)
	}
	if preview.URL != "file://"+filepath.ToSlash(next) || preview.Body != string(written) {
		t.Fatalf("preview %s %q, want %s %q", preview.URL, preview.Body, next, written)
	}
}

func TestPreviewFailsAsDeliverWould(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir, &clock{t: at})
	bad := envelope(1, `{"not json`)
	good := envelope(2, `{"event_name":"search"}`)

	preview, err := s.Preview([]trackapi.Envelope{bad, good})
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if strings.Contains(preview.Body, "not json") || !strings.Contains(preview.Body, `"id":"3:ev-2"`) || strings.Count(preview.Body, "\n") != 1 {
		t.Fatalf("preview body %q, want the valid envelope's line only", preview.Body)
	}
	_, err = s.Preview([]trackapi.Envelope{bad})
	r := deliver(t, s, bad)[0]
	if err == nil || r.Err == nil || err.Error() != r.Err.Error() || r.Reason != "invalid_event" {
		t.Fatalf("Preview of an invalid envelope: %v; Deliver: %+v", err, r)
	}
}
