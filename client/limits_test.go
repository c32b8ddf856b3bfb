package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
)

// paddedEvent is a gen.Event whose encoding (as the client sends it) is exactly size bytes.
func paddedEvent(t testing.TB, id string, size int) gen.Event {
	t.Helper()
	ev := client.Custom("pad", map[string]any{"pad": ""}, client.NewUser("anon"))
	ev.Context.EventId, ev.Context.EventTimestamp = id, 1
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	ev.Set("pad", strings.Repeat("x", size-len(raw)))
	if raw, _ := json.Marshal(ev); len(raw) != size {
		t.Fatalf("built %d bytes, want %d", len(raw), size)
	}
	return ev
}

// An event of exactly 32768 bytes is sent, alone or in a batch, as a gen.Event or raw JSON; the
// server takes it and stores it.
func TestEventOfExactly32768BytesIsSent(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	ctx := context.Background()

	if r, err := c.Send(ctx, paddedEvent(t, "max-single", client.MaxEventBytes)); err != nil {
		t.Fatalf("Send: %+v %v", r, err)
	}
	if r, err := c.SendRaw(ctx, paddedRaw(t, "max-raw", client.MaxEventBytes, true)); err != nil {
		t.Fatalf("SendRaw: %+v %v", r, err)
	}
	res, err := c.SendBatch(ctx, []gen.Event{paddedEvent(t, "small", 200), paddedEvent(t, "max-batch", client.MaxEventBytes)})
	if err != nil || res.Accepted != 2 {
		t.Fatalf("SendBatch: %+v %v", res, err)
	}
	seen := f.seen()
	if len(seen) != 3 || seen[0].size != client.MaxEventBytes || seen[0].path != "/events" ||
		seen[1].size != client.MaxEventBytes || seen[2].size != len(`{"batch":[`)+200+1+client.MaxEventBytes+len(`]}`) {
		t.Errorf("requests %+v", seen)
	}
	e.exactlyOnce([]string{"max-single", "max-raw", "small", "max-batch"})
}

// An event of 32769 bytes is refused before any network I/O, with an *EventError naming it; in a
// batch, nothing of the batch is sent.
func TestEventOver32768BytesIsRefusedLocally(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	ctx := context.Background()
	tooLarge := func(err error, index int) {
		t.Helper()
		var ee *client.EventError
		if !errors.As(err, &ee) || !errors.Is(err, client.ErrEventTooLarge) || ee.Index != index || ee.Size != client.MaxEventBytes+1 {
			t.Errorf("err = %v, want an *EventError for event %d of %d bytes", err, index, client.MaxEventBytes+1)
		}
	}
	r, err := c.Send(ctx, paddedEvent(t, "big", client.MaxEventBytes+1))
	tooLarge(err, 0)
	if r.Status != client.StatusRejected || r.Code != string(gen.ErrorCodeEventTooLarge) {
		t.Errorf("result %+v", r)
	}
	_, err = c.SendRaw(ctx, paddedRaw(t, "big", client.MaxEventBytes+1, true))
	tooLarge(err, 0)

	events := []gen.Event{paddedEvent(t, "a", 200), paddedEvent(t, "b", client.MaxEventBytes), paddedEvent(t, "big", client.MaxEventBytes+1), paddedEvent(t, "c", 200)}
	res, err := c.SendBatch(ctx, events)
	tooLarge(err, 2)
	if res != nil {
		t.Errorf("SendBatch returned results for a batch it refused: %+v", res)
	}
	_, err = c.SendRawBatch(ctx, [][]byte{paddedRaw(t, "a", 200, true), paddedRaw(t, "big", client.MaxEventBytes+1, true)})
	tooLarge(err, 1)

	b := c.NewBatcher(client.BatcherOptions{})
	if err := b.Enqueue(ctx, paddedEvent(t, "big", client.MaxEventBytes+1)); !errors.Is(err, client.ErrEventTooLarge) {
		t.Errorf("Enqueue: %v", err)
	}
	if err := b.EnqueueRaw(ctx, paddedRaw(t, "big", client.MaxEventBytes+1, true)); !errors.Is(err, client.ErrEventTooLarge) {
		t.Errorf("EnqueueRaw: %v", err)
	}
	if _, err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Invalid != 2 || s.Enqueued != 0 {
		t.Errorf("stats %+v", s)
	}
	if n := len(f.seen()); n != 0 {
		t.Errorf("%d requests made for refused events", n)
	}
}

// groups of 16 events that fill a batch body to exactly 512000 bytes: 15 of 32000 bytes and one
// of 31973 (12 bytes of envelope, 15 commas).
func fullGroups(t testing.TB, groups int, firstExtra int) ([][]byte, []string) {
	var events [][]byte
	var ids []string
	for g := range groups {
		for i := range 16 {
			size := 32000
			if i == 15 {
				size = 31973
			}
			if i == 0 {
				size += firstExtra
			}
			id := fmt.Sprintf("g%d-%d", g, i)
			events = append(events, paddedRaw(t, id, size, true))
			ids = append(ids, id)
		}
	}
	return events, ids
}

// Batches are packed to the byte: events that fill three bodies of exactly 512000 bytes take
// three requests, which the server accepts; one byte more needs, and takes, four.
func TestPackingFillsRequestsToTheByte(t *testing.T) {
	for _, tc := range []struct {
		extra    int
		requests int
	}{{0, 3}, {1, 4}} {
		t.Run(fmt.Sprintf("extra=%d", tc.extra), func(t *testing.T) {
			e := newEnv(t)
			f := newFaultServer(t, e.Handler, always(pass))
			c := f.client(e, fastRetry)
			events, ids := fullGroups(t, 3, tc.extra)
			res, err := c.SendRawBatch(context.Background(), events)
			if err != nil {
				t.Fatal(err)
			}
			seen := f.seen()
			if len(seen) != tc.requests || res.Requests != tc.requests {
				t.Fatalf("%d requests, want %d", len(seen), tc.requests)
			}
			for i, r := range seen {
				if r.size > client.MaxBatchBytes || (tc.extra == 0 && r.size != client.MaxBatchBytes) {
					t.Errorf("request %d is %d bytes", i, r.size)
				}
			}
			e.exactlyOnce(ids)
		})
	}
}

// For events of random sizes, no request is over 512000 bytes, and none could have taken the next
// event: for batches that keep the events' order, that is the fewest requests possible.
func TestPackingNeverExceedsTheLimitAndMakesNoSmallRequests(t *testing.T) {
	e := newEnv(t)
	f := newFaultServer(t, e.Handler, always(pass))
	c := f.client(e, fastRetry)
	rng := rand.New(rand.NewPCG(1, 2))
	var events [][]byte
	var ids []string
	sizes := map[string]int{}
	for i := range 150 {
		id := fmt.Sprintf("r-%d", i)
		size := 200 + rng.IntN(client.MaxEventBytes-200+1)
		events = append(events, paddedRaw(t, id, size, true))
		ids = append(ids, id)
		sizes[id] = size
	}
	if _, err := c.SendRawBatch(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	seen := f.seen()
	next := 0
	for i, r := range seen {
		if r.size > client.MaxBatchBytes {
			t.Errorf("request %d is %d bytes", i, r.size)
		}
		for _, id := range r.events {
			if id != ids[next] {
				t.Fatalf("request %d carries %s where %s was expected: order not kept", i, id, ids[next])
			}
			next++
		}
		if i+1 < len(seen) {
			if grown := r.size + 1 + sizes[seen[i+1].events[0]]; grown <= client.MaxBatchBytes {
				t.Errorf("request %d (%d bytes) had room for the next event (%d bytes)", i, r.size, grown)
			}
		}
	}
	t.Logf("150 events of random sizes in %d requests", len(seen))
	e.exactlyOnce(ids)
}
