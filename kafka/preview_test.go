package kafka_test

import (
	"encoding/json"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/kafka"
)

// recordShown is a consumed record as a preview shows one: its headers and its key.
func recordShown(r *kgo.Record) map[string]string {
	h := headers(r)
	h["key"] = string(r.Key)
	return h
}

func TestPreviewIsTheRecordDeliverProduces(t *testing.T) {
	c := newCluster(t)
	var produces atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		produces.Add(1)
		return nil, nil, false // only counted
	})
	s := newSink(t, c.ListenAddrs(), kafka.Options{})
	// Bytes that an encoding could change (spaces, HTML characters, a number's literal text).
	env := envelope(1, `{ "event_name" : "page_view", "page_name": "<b>&</b>", "value": 1.50,
		"user": {"consistent_anonymous_id": "visitor-a"}, "context": {"event_id": "ev-1"} }`)

	var _ trackapi.Previewer = s
	preview, err := s.Preview([]trackapi.Envelope{env})
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if n := produces.Load(); n != 0 {
		t.Fatalf("Preview sent %d produce requests", n)
	}
	if r := deliver(t, s, 10*time.Second, env)[0]; r.Err != nil {
		t.Fatalf("Deliver: %+v", r)
	}
	got := consume(t, c.ListenAddrs(), 1)[0]

	if preview.Body != string(got.Value) {
		t.Fatalf("preview body\n%s\nrecord value\n%s", preview.Body, got.Value)
	}
	if want := recordShown(got); !maps.Equal(preview.Headers, want) {
		t.Fatalf("preview headers %v, the record's %v", preview.Headers, want)
	}
	if preview.Headers["key"] != "visitor-a" || preview.Headers["event_id"] != "ev-1" {
		t.Fatalf("preview headers %v", preview.Headers)
	}
	if want := "kafka://" + strings.Join(c.ListenAddrs(), ",") + "/" + topic; preview.Method != "PRODUCE" || preview.URL != want {
		t.Fatalf("preview %s %s, want PRODUCE %s", preview.Method, preview.URL, want)
	}
}

func TestPreviewOfSeveralRecords(t *testing.T) {
	c := newCluster(t)
	s := newSink(t, c.ListenAddrs(), kafka.Options{})
	batch := []trackapi.Envelope{
		envelope(1, eventWithUser(1, `"visitor-a"`)),
		envelope(2, `{"event_name":"search","context":{"event_id":"ev-2"}}`), // no key
		envelope(3, eventWithUser(3, `12345`)),
	}
	preview, err := s.Preview(batch)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	for i, r := range deliver(t, s, 10*time.Second, batch...) {
		if r.Err != nil {
			t.Fatalf("envelope %d: %+v", i, r)
		}
	}
	// The records land in several partitions: put them back in the batch's order.
	byID := map[string]*kgo.Record{}
	for _, r := range consume(t, c.ListenAddrs(), len(batch)) {
		byID[headers(r)["event_id"]] = r
	}
	var values []string
	want := map[string][]string{}
	for _, env := range batch {
		r := byID[env.EventID]
		if r == nil {
			t.Fatalf("no record of %s", env.EventID)
		}
		values = append(values, string(r.Value))
		for k, v := range recordShown(r) {
			want[k] = append(want[k], v)
		}
	}
	if preview.Body != strings.Join(values, "\n") {
		t.Fatalf("preview body\n%s\nrecord values\n%s", preview.Body, strings.Join(values, "\n"))
	}
	if len(preview.Headers) != len(want) {
		t.Fatalf("preview headers %v, the records' %v", preview.Headers, want)
	}
	for k, vs := range want {
		if preview.Headers[k] != strings.Join(vs, ", ") {
			t.Errorf("header %s: preview %q, the records' %q", k, preview.Headers[k], vs)
		}
	}
	if preview.Headers["key"] != "visitor-a, , 12345" {
		t.Errorf("key %q", preview.Headers["key"])
	}
}

func TestPreviewFailsAsDeliverWould(t *testing.T) {
	c := newCluster(t)
	s := newSink(t, c.ListenAddrs(), kafka.Options{})
	bad := envelope(1, `{"not json`)
	good := envelope(2, eventWithUser(2, `"v"`))

	preview, err := s.Preview([]trackapi.Envelope{bad, good})
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	var value map[string]any
	if err := json.Unmarshal([]byte(preview.Body), &value); err != nil || value["id"] != good.ID {
		t.Fatalf("preview body %s (%v), want the valid envelope's record only", preview.Body, err)
	}
	_, err = s.Preview([]trackapi.Envelope{bad})
	r := deliver(t, s, 5*time.Second, bad)[0]
	if err == nil || r.Err == nil || err.Error() != r.Err.Error() || r.Reason != "invalid_event" {
		t.Fatalf("Preview of an invalid envelope: %v; Deliver: %+v", err, r)
	}
}
