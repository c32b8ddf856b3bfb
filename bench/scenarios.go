package main

import (
	"fmt"
	"strings"
)

// scenario is one load shape of the list.
type scenario struct {
	name      string // for -scenarios
	title     string // for the report
	path      string // /events or /events/batch
	conns     int
	events    int // events a request; 0 with batchBytes: as many as fit
	eventSize int // bytes of one event's JSON, about
	// batchBytes, when set, fills each batch with events up to this many bytes of body.
	batchBytes int
	// burst: every connection sends a fixed number of requests at once (cfg.burstRequests)
	// instead of a closed loop for a duration; the whole burst is the measurement.
	burst bool
	// hooks is the number of webhook destinations trackapi delivers every event to (issue #8),
	// all answered by a receiver in this process; without is the scenario of the same load
	// without them, which the report compares with. The bare server does not run these.
	hooks   int
	without string
}

// bodyLimit is trackapi's batch body limit (server.BatchBodyLimit); the 500 KB batches stay just
// under it.
const bodyLimit = 512000

// scenarios are issue #4's: single 1 KB events at 1, 50 and 200 connections; batches of 100
// events of about 330 bytes at 20 and 60 connections; 500 KB batches; and 256 concurrent 500 KB
// batches at once. Issue #8 adds the single and 100-event batch loads again with two webhook
// destinations, each right after the same load without them so that the two run in like
// conditions.
var allScenarios = []scenario{
	{name: "single-c1", title: "single 1 KB event, 1 connection", path: "/events", conns: 1, events: 1, eventSize: 1024},
	{name: "single-c50", title: "single 1 KB event, 50 connections", path: "/events", conns: 50, events: 1, eventSize: 1024},
	{name: "single-c50-2hooks", title: "single 1 KB event, 50 connections, 2 webhook destinations", path: "/events", conns: 50, events: 1, eventSize: 1024, hooks: 2, without: "single-c50"},
	{name: "single-c200", title: "single 1 KB event, 200 connections", path: "/events", conns: 200, events: 1, eventSize: 1024},
	{name: "batch100-c20", title: "batch 100 × 330 B, 20 connections", path: "/events/batch", conns: 20, events: 100, eventSize: 330},
	{name: "batch100-c20-2hooks", title: "batch 100 × 330 B, 20 connections, 2 webhook destinations", path: "/events/batch", conns: 20, events: 100, eventSize: 330, hooks: 2, without: "batch100-c20"},
	{name: "batch100-c60", title: "batch 100 × 330 B, 60 connections", path: "/events/batch", conns: 60, events: 100, eventSize: 330},
	{name: "batch500k-c8", title: "batch 500 KB (330 B events), 8 connections", path: "/events/batch", conns: 8, eventSize: 330, batchBytes: bodyLimit - 2000},
	{name: "burst500k-c256", title: "256 concurrent 500 KB batches", path: "/events/batch", conns: 256, eventSize: 330, batchBytes: bodyLimit - 2000, burst: true},
}

func scenarioNames() []string {
	names := make([]string, len(allScenarios))
	for i, s := range allScenarios {
		names[i] = s.name
	}
	return names
}

// chooseScenarios returns the scenarios named in a comma-separated list, in the standard order;
// all of them for an empty list.
func chooseScenarios(list string) ([]scenario, error) {
	if strings.TrimSpace(list) == "" {
		return allScenarios, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var out []scenario
	for _, s := range allScenarios {
		if want[s.name] {
			out = append(out, s)
			delete(want, s.name)
		}
	}
	for n := range want {
		return nil, fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", n, strings.Join(scenarioNames(), ", "))
	}
	return out, nil
}

// idWidth is the length of every event id: "ev-" + 4 digits of worker + "-" + 12 digits of counter.
const idWidth = 20

// workload is the body every request of a scenario sends, with the places of its event ids, so
// that a worker makes each request unique by overwriting the ids in its own copy.
type workload struct {
	body      []byte
	idOffsets []int // where each event's id starts in body
}

func (w workload) events() int { return len(w.idOffsets) }

// buildWorkload makes the body of sc's requests from events that pass the Event schema without a
// warning, so that trackapi takes its common path: an event stored as sent.
func buildWorkload(sc scenario) workload {
	event, idAt := eventTemplate(sc.eventSize)
	if sc.path == "/events" {
		return workload{body: event, idOffsets: []int{idAt}}
	}
	n := sc.events
	if sc.batchBytes > 0 {
		n = (sc.batchBytes - len(`{"batch":[]}`)) / (len(event) + 1)
	}
	var w workload
	w.body = append(w.body, `{"batch":[`...)
	for i := range n {
		if i > 0 {
			w.body = append(w.body, ',')
		}
		w.idOffsets = append(w.idOffsets, len(w.body)+idAt)
		w.body = append(w.body, event...)
	}
	w.body = append(w.body, "]}"...)
	return w
}

// eventTemplate returns a valid event of about size bytes with a placeholder id, and where the id
// starts. The size is reached with a custom property, as real events carry their own.
func eventTemplate(size int) ([]byte, int) {
	placeholder := strings.Repeat("0", idWidth)
	var head string
	if size >= 800 {
		head = `{"event_name":"purchase","value":59.9,"currency":"EUR",` +
			`"items":[{"id":"sku-1234","name":"t-shirt","price":19.95,"quantity":2},{"id":"sku-987","name":"socks","price":20,"quantity":1}],` +
			`"user":{"id":"user-31337","consistent_anonymous_id":"6f1c2ad0-67892","email":"someone@example.com","consent_categories":["1","3",4]},` +
			`"context":{"event_id":"` + placeholder + `","event_timestamp":1700000000000,` +
			`"page":{"title":"Checkout","url":"https://shop.example.com/checkout?step=3","lang":"en","referrer":"https://www.example.org/search?q=t-shirts"},` +
			`"device":{"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","ip":"192.0.2.10","lang":"en-GB","timezone":"Europe/Paris"}},` +
			`"note":"`
	} else {
		head = `{"event_name":"page_view","page_type":"product",` +
			`"user":{"consistent_anonymous_id":"6f1c2ad0-67892","consent_categories":["1","3"]},` +
			`"context":{"event_id":"` + placeholder + `","event_timestamp":1700000000000,"page":{"url":"https://shop.example.com/p/1234","lang":"en"}},` +
			`"note":"`
	}
	tail := `"}`
	pad := max(0, size-len(head)-len(tail))
	return []byte(head + strings.Repeat("x", pad) + tail), strings.Index(head, placeholder)
}

// putID writes the id of event n of worker into b, which is idWidth bytes long.
func putID(b []byte, worker int, n uint64) {
	copy(b, "ev-")
	putDigits(b[3:7], uint64(worker))
	b[7] = '-'
	putDigits(b[8:idWidth], n)
}

// putDigits writes v in decimal into all of b, zero-padded on the left.
func putDigits(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}
