package main

import (
	"context"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/webhook"
)

// envelopes makes n envelopes of the workload's events, as the delivery engine would from what
// trackapi stored: event ids of worker, counting from first.
func envelopes(t testing.TB, eventSize, worker int, first uint64, n int) []trackapi.Envelope {
	t.Helper()
	var out []trackapi.Envelope
	for i := range n {
		event, idAt := eventTemplate(eventSize)
		putID(event[idAt:idAt+idWidth], worker, first+uint64(i))
		id := string(event[idAt : idAt+idWidth])
		out = append(out, trackapi.Envelope{ID: "1:" + id, SourceID: 1, Site: benchSite, ReceivedAt: 1700000000000, Event: event, EventID: id})
	}
	return out
}

// TestReceiverCountsWhatTheSinkSends sends batches through the real webhook sink, with the events
// of both scenario shapes (whose items and user carry "id" keys of their own), and checks that
// the receiver counts every envelope once, and a batch sent again as duplicates.
func TestReceiverCountsWhatTheSinkSends(t *testing.T) {
	rc, err := startReceiver(1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()
	secret, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	sink, err := webhook.New(trackapi.Destination{ID: 1, Type: trackapi.DestinationWebhook, Config: trackapi.DestinationConfig{
		URL: rc.urls()[0], AllowPrivate: true, Secrets: []trackapi.SigningSecret{{Secret: secret}},
	}}, webhook.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()

	var sent []trackapi.Envelope
	for _, batch := range [][]trackapi.Envelope{
		envelopes(t, 1024, 3, 0, 1),
		envelopes(t, 1024, 3, 1, 40),
		envelopes(t, 330, 12, 0, 100),
		envelopes(t, 330, 12, 100, 100),
		envelopes(t, 330, 9999, 0, 1), // the probe's worker
	} {
		for i, r := range sink.Deliver(context.Background(), batch) {
			if r.Err != nil {
				t.Fatalf("envelope %d: %v", i, r.Err)
			}
		}
		sent = append(sent, batch...)
	}
	again := envelopes(t, 330, 12, 150, 100) // 150 to 199 seen, 200 to 249 new
	sink.Deliver(context.Background(), again)

	got := rc.hooks[0].counts()
	want := hookCounts{requests: 6, envelopes: int64(len(sent) + len(again)), distinct: int64(len(sent) + 50), duplicates: 50, sampled: 1}
	if got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestEnvelopeIDsForeign(t *testing.T) {
	body := []byte(`{"events":[{"id":"1:other-id","source_id":1,"event":{"items":[{"id":"sku-1"}]}},` +
		`{"id":"2:ev-0001-000000000007","source_id":2,"event":{"user":{"id":"12"}}}]}`)
	var ids []eventID
	foreign := envelopeIDs(body, func(id eventID) { ids = append(ids, id) })
	if foreign != 1 || len(ids) != 1 || ids[0] != (eventID{worker: 1, n: 7}) {
		t.Errorf("foreign %d, ids %v; want 1 and [{1 7}]", foreign, ids)
	}
}

func BenchmarkReceive(b *testing.B) {
	h := &hook{seen: map[int][]uint64{}}
	sink := func(batch []trackapi.Envelope) []byte {
		body := []byte(`{"events":[`)
		for i, e := range batch {
			if i > 0 {
				body = append(body, ',')
			}
			body, _ = e.AppendJSON(body)
		}
		return append(body, "]}"...)
	}
	body := sink(envelopes(b, 330, 1, 0, 100))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		h.receive(body)
	}
}
