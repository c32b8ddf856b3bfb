package file_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/file"
	"github.com/trackapi/trackapi/internal/testenv"
)

// clock is a settable clock for the sink's Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newSink(t *testing.T, dir string, c *clock) *file.Sink {
	t.Helper()
	s, err := file.New(trackapi.Destination{ID: 4, Type: trackapi.DestinationFile, Config: trackapi.DestinationConfig{Path: dir}},
		file.Options{Logger: testenv.Quiet, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func envelope(seq int64, event string) trackapi.Envelope {
	id := fmt.Sprintf("ev-%d", seq)
	return trackapi.Envelope{ID: "3:" + id, SourceID: 3, Site: "29", ReceivedAt: 1700000000000 + seq,
		Event: json.RawMessage(event), Seq: seq, EventID: id}
}

func deliver(t *testing.T, s *file.Sink, batch ...trackapi.Envelope) []trackapi.DeliveryResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := s.Deliver(ctx, batch)
	if len(res) != len(batch) {
		t.Fatalf("%d results for %d envelopes", len(res), len(batch))
	}
	return res
}

func mustDeliver(t *testing.T, s *file.Sink, batch ...trackapi.Envelope) {
	t.Helper()
	for i, r := range deliver(t, s, batch...) {
		if r.Err != nil || r.Reason != "" || r.Sample != nil {
			t.Fatalf("envelope %d: %+v", i, r)
		}
	}
}

// lines reads a file as the sink's readers would: fresh, one envelope a line.
func lines(t *testing.T, path string) []trackapi.Envelope {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Errorf("%s does not end with a newline", path)
	}
	var out []trackapi.Envelope
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var e trackapi.Envelope
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

var at = time.Date(2026, 3, 14, 9, 59, 58, 0, time.UTC)

func TestDeliverAppendsSyncedLines(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "events") // made by the sink
	s := newSink(t, dir, &clock{t: at})
	batch := []trackapi.Envelope{
		envelope(1, `{"event_name":"page_view","text":"line\nbreak <b>"}`),
		envelope(2, `{"event_name":"search"}`),
	}
	mustDeliver(t, s, batch...)
	mustDeliver(t, s, envelope(3, `{"event_name":"purchase"}`))

	path := filepath.Join(dir, "2026-03-14T09.ndjson")
	got := lines(t, path) // a fresh read right after Deliver: the lines are on disk
	if len(got) != 3 {
		t.Fatalf("%d lines, want 3", len(got))
	}
	for i, e := range append(batch, envelope(3, `{"event_name":"purchase"}`)) {
		want, _ := json.Marshal(e)
		line, _ := json.Marshal(got[i])
		if string(line) != string(want) {
			t.Errorf("line %d: %s, want %s", i, line, want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file: %v, %v; want mode 0600", fi.Mode(), err)
	}
}

func TestDeliverAppendsToAnExistingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "2026-03-14T09.ndjson")
	if err := os.WriteFile(path, []byte(`{"id":"earlier"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, dir, &clock{t: at})
	mustDeliver(t, s, envelope(1, `{"event_name":"x"}`))
	got := lines(t, path)
	if len(got) != 2 || got[0].ID != "earlier" || got[1].ID != "3:ev-1" {
		t.Fatalf("lines: %+v", got)
	}
}

// openFiles lists the files this process holds open.
func openFiles(t *testing.T) map[string]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	out := map[string]bool{}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil {
			out[target] = true
		}
	}
	return out
}

func TestHourlyRotation(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: at}
	s := newSink(t, dir, c)
	mustDeliver(t, s, envelope(1, `{"event_name":"a"}`))
	first := filepath.Join(dir, "2026-03-14T09.ndjson")
	if !openFiles(t)[first] {
		t.Errorf("the hour's file is not kept open between calls")
	}

	c.set(at.Add(2 * time.Second)) // 10:00:00
	mustDeliver(t, s, envelope(2, `{"event_name":"b"}`), envelope(3, `{"event_name":"c"}`))
	// A clock in another zone names files by the UTC hour all the same.
	c.set(at.Add(time.Hour + 2*time.Second).In(time.FixedZone("CET", 3600))) // 12:00 CET
	mustDeliver(t, s, envelope(4, `{"event_name":"d"}`))

	second := filepath.Join(dir, "2026-03-14T10.ndjson")
	third := filepath.Join(dir, "2026-03-14T11.ndjson")
	if got := lines(t, first); len(got) != 1 || got[0].ID != "3:ev-1" {
		t.Errorf("09: %+v", got)
	}
	if got := lines(t, second); len(got) != 2 || got[0].ID != "3:ev-2" || got[1].ID != "3:ev-3" {
		t.Errorf("10: %+v", got)
	}
	if got := lines(t, third); len(got) != 1 || got[0].ID != "3:ev-4" {
		t.Errorf("11: %+v", got)
	}
	open := openFiles(t)
	if open[first] || open[second] || !open[third] {
		t.Errorf("after two rotations, open: 09 %v, 10 %v, 11 %v; want only 11", open[first], open[second], open[third])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if openFiles(t)[third] {
		t.Errorf("Close left the file open")
	}
	// A sink used after Close opens its file again rather than failing.
	mustDeliver(t, s, envelope(5, `{"event_name":"e"}`))
	if got := lines(t, third); len(got) != 2 {
		t.Errorf("after Close and Deliver: %d lines in 11, want 2", len(got))
	}
}

func TestUnwritableDirectoryIsRetryable(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, notDir, &clock{t: at})
	res := deliver(t, s, envelope(1, `{"event_name":"a"}`), envelope(2, `{"event_name":"b"}`))
	for i, r := range res {
		if r.Err == nil || r.Permanent || r.Reason != "io" || r.Sample == nil {
			t.Fatalf("envelope %d: %+v, want a retryable io failure with a sample", i, r)
		}
		smp := r.Sample
		if smp.Request.Method != "WRITE" || !strings.HasPrefix(smp.Request.URL, "file://"+notDir+"/") ||
			!strings.Contains(smp.Request.Body, `"id":"3:ev-2"`) || !strings.Contains(smp.Error, "not a directory") {
			t.Errorf("sample: %+v", smp)
		}
	}

	// Once the path is fixed, the retry works.
	if err := os.Remove(notDir); err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, s, envelope(1, `{"event_name":"a"}`))
}

func TestFullDiskIsRetryable(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	// The hour's file is /dev/full, where every write fails with ENOSPC.
	if err := os.Symlink("/dev/full", filepath.Join(dir, "2026-03-14T09.ndjson")); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, dir, &clock{t: at})
	r := deliver(t, s, envelope(1, `{"event_name":"a"}`))[0]
	if r.Err == nil || r.Permanent || r.Reason != "disk_full" || r.Sample == nil {
		t.Fatalf("%+v, want a retryable disk_full", r)
	}
}

func TestInvalidEnvelopeIsPermanentAlone(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir, &clock{t: at})
	res := deliver(t, s, envelope(1, `{"event_name":`), envelope(2, `{"event_name":"b"}`))
	if res[0].Err == nil || !res[0].Permanent || res[0].Reason != "invalid_event" || res[0].Sample == nil {
		t.Errorf("invalid JSON: %+v", res[0])
	}
	if res[1].Err != nil {
		t.Errorf("its neighbour: %v", res[1].Err)
	}
	if got := lines(t, filepath.Join(dir, "2026-03-14T09.ndjson")); len(got) != 1 || got[0].ID != "3:ev-2" {
		t.Errorf("lines: %+v", got)
	}
}

func TestEndedContextWritesNothing(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir, &clock{t: at})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := s.Deliver(ctx, []trackapi.Envelope{envelope(1, `{"event_name":"a"}`)})[0]
	if r.Err == nil || r.Permanent || r.Reason != "timeout" {
		t.Errorf("%+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "2026-03-14T09.ndjson")); !os.IsNotExist(err) {
		t.Errorf("a file was made: %v", err)
	}
}

func TestConcurrentDeliveriesKeepLinesWhole(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir, &clock{t: at})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				seq := int64(g*100 + i)
				r := s.Deliver(context.Background(), []trackapi.Envelope{envelope(seq, `{"event_name":"x"}`), envelope(seq+50, `{"event_name":"y"}`)})
				for _, res := range r {
					if res.Err != nil {
						t.Error(res.Err)
					}
				}
			}
		})
	}
	wg.Wait()
	if got := lines(t, filepath.Join(dir, "2026-03-14T09.ndjson")); len(got) != 8*20*2 {
		t.Errorf("%d lines, want %d", len(got), 8*20*2)
	}
}

func TestNewRefusesBadDestinations(t *testing.T) {
	for name, d := range map[string]trackapi.Destination{
		"wrong type": {Type: trackapi.DestinationKafka, Config: trackapi.DestinationConfig{Path: "/tmp/x"}},
		"no path":    {Type: trackapi.DestinationFile},
	} {
		if _, err := file.New(d, file.Options{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
