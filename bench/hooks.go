package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The scenarios with destinations (issue #8) attach webhook destinations to trackapi, all served
// by one receiver in this process: an HTTP server on 127.0.0.1 with one path per destination,
// which reads each request, counts the envelopes in it and answers 200 at once. It does not check
// signatures (that would measure the receiver), but it counts honestly: every envelope id is
// parsed back into the load generator's worker and counter and marked in a bitset, so that what
// the report calls received is the number of distinct events that arrived, duplicates apart, and
// a sample of requests is decoded in full to check that fast count.

// hookName is the name of destination i (from 0) in trackapi, and hookPath its path on the
// receiver: the report and trackapi's metrics use the name.
func hookName(i int) string { return fmt.Sprintf("hook%d", i+1) }
func hookPath(i int) string { return fmt.Sprintf("/hook/%d", i+1) }

// receiver is the webhook endpoint of every destination of a scenario.
type receiver struct {
	srv    *http.Server
	base   string // http://127.0.0.1:port
	hooks  []*hook
	served chan error
}

// startReceiver serves n webhook endpoints on a free port of 127.0.0.1.
func startReceiver(n int) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	rc := &receiver{base: "http://" + ln.Addr().String(), served: make(chan error, 1)}
	mux := http.NewServeMux()
	// Bodies are read into buffers reused from request to request: a receiver that allocated
	// 40 KB a request would take CPU from the server being measured, on the same cores.
	buffers := &sync.Pool{New: func() any { return new(bytes.Buffer) }}
	for i := range n {
		h := &hook{name: hookName(i), seen: map[int][]uint64{}}
		rc.hooks = append(rc.hooks, h)
		mux.HandleFunc("POST "+hookPath(i), func(w http.ResponseWriter, req *http.Request) {
			buf := buffers.Get().(*bytes.Buffer)
			defer buffers.Put(buf)
			buf.Reset()
			if _, err := buf.ReadFrom(req.Body); err != nil {
				http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
				return
			}
			h.receive(buf.Bytes())
			w.WriteHeader(http.StatusOK)
		})
	}
	rc.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { rc.served <- rc.srv.Serve(ln) }()
	return rc, nil
}

// urls are the endpoints of the destinations, in order.
func (rc *receiver) urls() []string {
	if rc == nil {
		return nil
	}
	var out []string
	for i := range rc.hooks {
		out = append(out, rc.base+hookPath(i))
	}
	return out
}

// distinct returns how many distinct events each endpoint has received so far; nil without a
// receiver.
func (rc *receiver) distinct() []int64 {
	if rc == nil {
		return nil
	}
	out := make([]int64, len(rc.hooks))
	for i, h := range rc.hooks {
		out[i] = h.counts().distinct
	}
	return out
}

// close stops the receiver: trackapi is stopped first, so nothing is in flight.
func (rc *receiver) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := rc.srv.Shutdown(ctx)
	if serr := <-rc.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// hook counts what one endpoint received.
type hook struct {
	name string

	mu sync.Mutex
	c  hookCounts
	// seen has a bit for each event received: by the load generator's worker id, bit n of the
	// worker's event counter n. Counters run from 0 up, so the bitsets stay small (1 bit an
	// event).
	seen map[int][]uint64
}

// hookCounts are an endpoint's counters.
type hookCounts struct {
	requests   int64
	envelopes  int64 // envelopes counted, duplicates included
	distinct   int64 // distinct events among them
	duplicates int64 // envelopes of an event received before
	// foreign counts envelopes whose event id is not one the load generator makes: none, or
	// something other than the workload reached the destination.
	foreign int64
	// mismatches counts sampled requests where a full JSON decode found another number of
	// envelopes than the fast count: none, or the count is wrong.
	mismatches int64
	sampled    int64
}

func (h *hook) counts() hookCounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.c
}

// sampleEvery is how often a request is also decoded in full, to check the fast count.
const sampleEvery = 64

// receive counts the envelopes of one webhook body.
func (h *hook) receive(body []byte) {
	var ids []eventID
	foreign := envelopeIDs(body, func(id eventID) { ids = append(ids, id) })
	h.mu.Lock()
	h.c.requests++
	sample := h.c.requests%sampleEvery == 1
	h.c.envelopes += int64(len(ids)) + foreign
	h.c.foreign += foreign
	for _, id := range ids {
		if h.mark(id) {
			h.c.distinct++
		} else {
			h.c.duplicates++
		}
	}
	h.mu.Unlock()
	if !sample {
		return
	}
	// Outside the lock: the decode costs more than all the rest.
	var decoded struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	mismatch := json.Unmarshal(body, &decoded) != nil || int64(len(decoded.Events)) != int64(len(ids))+foreign
	h.mu.Lock()
	h.c.sampled++
	if mismatch {
		h.c.mismatches++
	}
	h.mu.Unlock()
}

// mark sets the bit of id and says whether it was clear. The caller holds h.mu.
func (h *hook) mark(id eventID) bool {
	bits := h.seen[id.worker]
	word := int(id.n / 64)
	if word >= len(bits) {
		bits = append(bits, make([]uint64, word+1-len(bits))...)
		h.seen[id.worker] = bits
	}
	mask := uint64(1) << (id.n % 64)
	if bits[word]&mask != 0 {
		return false
	}
	bits[word] |= mask
	return true
}

// eventID is an event id of the load generator (putID): its worker and counter.
type eventID struct {
	worker int
	n      uint64
}

// maxCounter bounds the counters envelopeIDs accepts, and so the bitsets: far more events than
// one worker sends in a scenario.
const maxCounter = 1 << 28

// envelopeIDs calls fn with the id of each envelope of a webhook body, and returns how many
// envelopes had an id the load generator does not make. The sink writes each envelope with "id"
// as its first key, "<source id>:<event id>", so an envelope starts with {"id":" and digits and a
// colon; the events' own objects with an "id" (items, user) have no such value in this workload.
func envelopeIDs(body []byte, fn func(eventID)) (foreign int64) {
	const start = `{"id":"`
	for {
		i := bytes.Index(body, []byte(start))
		if i < 0 {
			return foreign
		}
		body = body[i+len(start):]
		digits := 0
		for digits < len(body) && body[digits] >= '0' && body[digits] <= '9' {
			digits++
		}
		if digits == 0 || digits == len(body) || body[digits] != ':' {
			continue // an object of an event, not an envelope
		}
		if id, ok := parseEventID(body[digits+1:]); ok {
			fn(id)
		} else {
			foreign++
		}
	}
}

// parseEventID reads `ev-WWWW-NNNNNNNNNNNN"` (putID's form, then the closing quote).
func parseEventID(b []byte) (eventID, bool) {
	if len(b) < idWidth+1 || string(b[:3]) != "ev-" || b[7] != '-' || b[idWidth] != '"' {
		return eventID{}, false
	}
	worker, ok1 := parseDigits(b[3:7])
	n, ok2 := parseDigits(b[8:idWidth])
	if !ok1 || !ok2 || n >= maxCounter {
		return eventID{}, false
	}
	return eventID{worker: int(worker), n: n}, true
}

func parseDigits(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// delivery is what a scenario with destinations measured of their deliveries.
type delivery struct {
	hooks []hookResult
	// accepted is the number of events trackapi accepted over the whole scenario, the probe and
	// the warm-up included: what every destination must receive.
	accepted int64
	// catchUp is the time from the end of the load until every destination had received every
	// accepted event; the bound of the wait when caughtUp is false.
	catchUp  time.Duration
	caughtUp bool
	// catchUpCPU is trackapi's CPU time while only delivery was left to do, from the end of the
	// load until the wait ended, and caughtUpEvents the events the destinations received
	// meanwhile (all of them together): what delivering an event costs with nothing else running.
	catchUpCPU     time.Duration
	caughtUpEvents int64
}

// cpuPerDelivered is catchUpCPU per event received during the catch-up; 0 when the catch-up was
// too short for the 10 ms ticks of the CPU time to say.
func (d *delivery) cpuPerDelivered() time.Duration {
	if d.catchUp < 500*time.Millisecond || d.caughtUpEvents == 0 {
		return 0
	}
	return d.catchUpCPU / time.Duration(d.caughtUpEvents)
}

// hookResult is one destination's share.
type hookResult struct {
	name     string
	inWindow int64 // distinct events received during the measured window
	behind   int64 // accepted events it had not received when the load stopped
	catchUp  time.Duration
	caughtUp bool
	final    hookCounts // at the end of the wait
	// server is trackapi's own count of the destination's events by outcome
	// (trackapi_delivery_events_total), read after the wait once it has settled what the
	// receiver got (or 2 s later); nil when unavailable.
	server map[string]float64
}

// awaitDelivery waits, polling the receiver, until every endpoint has received accepted distinct
// events or bound has passed since loadEnd, and returns what the deliveries came to.
func awaitDelivery(rc *receiver, accepted int64, atFrom, atTo []int64, loadEnd time.Time, bound time.Duration) *delivery {
	d := &delivery{accepted: accepted, caughtUp: true}
	atEnd := rc.distinct()
	for i, h := range rc.hooks {
		d.hooks = append(d.hooks, hookResult{name: h.name, inWindow: atTo[i] - atFrom[i], behind: max(0, accepted-atEnd[i])})
	}
	for {
		waiting := false
		for i, h := range rc.hooks {
			hr := &d.hooks[i]
			if hr.caughtUp {
				continue
			}
			if h.counts().distinct >= accepted {
				hr.caughtUp, hr.catchUp = true, time.Since(loadEnd)
			} else {
				waiting = true
			}
		}
		if !waiting || time.Since(loadEnd) >= bound {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, h := range rc.hooks {
		hr := &d.hooks[i]
		hr.final = h.counts()
		d.caughtUpEvents += hr.final.distinct - atEnd[i]
		if !hr.caughtUp {
			hr.catchUp, d.caughtUp = bound, false
		}
		d.catchUp = max(d.catchUp, hr.catchUp)
	}
	return d
}

// serverSettled says whether trackapi's metrics count, for every destination, at least the
// events its receiver got (or there are no metrics to wait for).
func (d *delivery) serverSettled(metrics map[string]float64) bool {
	if metrics == nil {
		return true
	}
	for _, hr := range d.hooks {
		prefix := `trackapi_delivery_events_total{destination="` + hr.name + `",outcome="`
		got := metrics[prefix+`delivered"}`] + metrics[prefix+`delivered_after_retry"}`]
		if got < float64(hr.final.distinct) {
			return false
		}
	}
	return true
}

// addServerCounts puts trackapi's delivery counters from its metrics into d.
func (d *delivery) addServerCounts(metrics map[string]float64) {
	for i := range d.hooks {
		hr := &d.hooks[i]
		prefix := `trackapi_delivery_events_total{destination="` + hr.name + `",outcome="`
		for key, v := range metrics {
			if outcome, ok := strings.CutPrefix(key, prefix); ok {
				if hr.server == nil {
					hr.server = map[string]float64{}
				}
				hr.server[strings.TrimSuffix(outcome, `"}`)] = v
			}
		}
	}
}

// serverText is the destination's nonzero outcomes as trackapi counted them.
func (hr *hookResult) serverText() string {
	if hr.server == nil {
		return "–"
	}
	outcomes := make([]string, 0, len(hr.server))
	for o := range hr.server {
		outcomes = append(outcomes, o)
	}
	slices.Sort(outcomes) // delivered, delivered_after_retry, expired, ...
	var parts []string
	for _, o := range outcomes {
		if v := hr.server[o]; v > 0 || o == "delivered" {
			parts = append(parts, fmt.Sprintf("%s %s", o, fmtCount(v)))
		}
	}
	return strings.Join(parts, ", ")
}
