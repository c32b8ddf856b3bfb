package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

// result is what one scenario measured on one server.
type result struct {
	requests  int64 // completed in the window, whatever their status
	ok        int64 // 200
	status503 int64
	other5xx  int64
	otherCode int64 // any other status (a 400 means the workload is wrong)
	netErrors int64 // no response: connection refused, reset, timed out
	events    int64 // trackapi: accepted, from the 200 bodies; bare: events in the 200 requests
	// notAccepted counts events of 200 answers that trackapi did not accept (duplicates or
	// rejections): a sign that the workload is not what it should be.
	notAccepted int64
	elapsed     time.Duration
	latencies   []time.Duration // of the requests in the window, sorted
	serverCPU   time.Duration
	genCPU      time.Duration // the load generator's own CPU time in the window
	otherCPU    time.Duration // CPU time of every other process of the machine in the window
	peakRSS     int64
	commits     *commitStats // trackapi only, from its /metrics; nil when not available
	// acceptedAll counts the events trackapi accepted over the whole scenario, in the window or
	// not (the probe's apart): what its destinations must deliver.
	acceptedAll int64
	delivery    *delivery // scenarios with destinations only
}

func (r *result) perSecond(n int64) float64 { return float64(n) / r.elapsed.Seconds() }

// percentile returns the p-th percentile latency (0 < p < 100).
func (r *result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies))*p/100+0.5) - 1
	return r.latencies[min(max(i, 0), len(r.latencies)-1)]
}

// cpuPerEvent is the server's CPU time per event stored (or, for the bare server, read).
func (r *result) cpuPerEvent() time.Duration {
	if r.events == 0 {
		return 0
	}
	return r.serverCPU / time.Duration(r.events)
}

func (r *result) summary() string {
	s := fmt.Sprintf("%8.0f req/s %9.0f events/s  p50 %s p99 %s  cpu/event %s  peak RSS %.1f MB  200:%d 503:%d 5xx:%d other:%d neterr:%d",
		r.perSecond(r.requests), r.perSecond(r.events), fmtDuration(r.percentile(50)), fmtDuration(r.percentile(99)),
		fmtDuration(r.cpuPerEvent()), float64(r.peakRSS)/1e6, r.ok, r.status503, r.other5xx, r.otherCode, r.netErrors)
	if d := r.delivery; d != nil {
		for _, hr := range d.hooks {
			s += fmt.Sprintf("\n      %s: %9.0f events/s delivered, %d behind at the end, caught up: %s", hr.name,
				r.perSecond(hr.inWindow), hr.behind, catchUpText(hr.caughtUp, hr.catchUp, d.accepted-hr.final.distinct))
		}
	}
	return s
}

// measure runs scenario sc against a fresh server of kind and returns what it measured. A
// closed-loop scenario runs for warm-up plus duration, and only requests that complete in the
// last duration count; a burst counts everything, from the first request to the last answer.
//
// With destinations, a webhook receiver in this process counts what each gets: during the
// window, and, once the load has stopped, until it has every event trackapi accepted.
func measure(cfg config, sc scenario, kind string) (*result, error) {
	var rc *receiver
	if kind == kindTrackapi && sc.hooks > 0 {
		var err error
		if rc, err = startReceiver(sc.hooks); err != nil {
			return nil, err
		}
		defer func() { // after the server has stopped (defers run last first)
			if err := rc.close(); err != nil {
				cfg.logf("closing the webhook receiver: %v", err)
			}
		}()
	}
	srv, err := startServer(cfg, kind, sc.name, rc.urls())
	if err != nil {
		return nil, err
	}
	defer func() {
		if srv != nil {
			_ = srv.stop()
		}
	}()
	wl := buildWorkload(sc)
	if kind == kindTrackapi {
		if err := probe(srv, sc, wl); err != nil {
			return nil, err
		}
	}

	workers := make([]*worker, sc.conns)
	for i := range workers {
		workers[i] = newWorker(i, srv, sc, wl)
		// All connections are open before the load starts: the burst is concurrent from its
		// first request.
		if err := workers[i].conn.dial(); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	win := window{from: start.Add(cfg.warmup), to: start.Add(cfg.warmup + cfg.duration)}
	if sc.burst {
		win = window{from: start, to: start.Add(2 * time.Minute), count: cfg.burstRequests}
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(win)
		}()
	}

	r := &result{}
	var perf *exec.Cmd
	sleepUntil(win.from)
	cpu0, err := processCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	gen0, busy0, from := ownCPU(), machineBusy(), time.Now()
	hooksFrom := rc.distinct()
	if cfg.perfDir != "" && kind == kindTrackapi && !sc.burst {
		perf = startPerf(cfg, sc, srv.pid())
	}
	if sc.burst {
		wg.Wait()
	} else {
		sleepUntil(win.to)
	}
	cpu1, err := processCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	hooksTo := rc.distinct()
	r.elapsed, r.genCPU, r.serverCPU = time.Since(from), ownCPU()-gen0, cpu1-cpu0
	r.otherCPU = max(0, machineBusy()-busy0-r.genCPU-r.serverCPU)
	wg.Wait()
	loadEnd := time.Now()
	for _, w := range workers {
		r.add(w)
	}
	slices.Sort(r.latencies)
	if rc != nil {
		cpu2, err := processCPU(srv.pid())
		if err != nil {
			return nil, err
		}
		accepted := r.acceptedAll + int64(wl.events()) // and the probe's
		r.delivery = awaitDelivery(rc, accepted, hooksFrom, hooksTo, loadEnd, cfg.catchUpBound)
		cpu3, err := processCPU(srv.pid())
		if err != nil {
			return nil, err
		}
		r.delivery.catchUpCPU = cpu3 - cpu2
	}
	if perf != nil {
		if err := perf.Wait(); err != nil {
			cfg.logf("perf record: %v", err)
		}
	}
	if r.peakRSS, err = peakRSS(srv.pid()); err != nil {
		return nil, err
	}
	if kind == kindTrackapi {
		metrics := scrapeMetrics(srv.adminAddr)
		if r.delivery != nil {
			// trackapi counts deliveries when it settles them (every 200 ms at most while busy):
			// give its counters a moment to take in the last batches the receiver already has.
			for deadline := time.Now().Add(2 * time.Second); !r.delivery.serverSettled(metrics) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
				metrics = scrapeMetrics(srv.adminAddr)
			}
			r.delivery.addServerCounts(metrics)
		}
		r.commits = commitsFrom(metrics)
	}
	err, srv = srv.stop(), nil
	if err != nil {
		return nil, err
	}
	return r, nil
}

// probe sends one request of the workload and checks that trackapi accepts every event without
// a warning: the benchmark must measure the common path, not the one of broken events.
func probe(srv *serverProc, sc scenario, wl workload) error {
	w := newWorker(9999, srv, sc, wl)
	w.stampIDs()
	status, body, err := w.conn.roundTrip(w.req)
	w.conn.close()
	if err != nil {
		return fmt.Errorf("probe request: %w", err)
	}
	if status != 200 || !bytes.Contains(body, []byte(`"warnings":[]`)) || acceptedIn(body) != int64(wl.events()) {
		return fmt.Errorf("probe request: status %d, body %.500s; want every event accepted without a warning", status, body)
	}
	return nil
}

// startPerf records the server's CPU profile with call graphs for the measured window.
func startPerf(cfg config, sc scenario, pid int) *exec.Cmd {
	out := filepath.Join(cfg.perfDir, sc.name+".perf.data")
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", out,
		"--", "sleep", strconv.FormatFloat(cfg.duration.Seconds(), 'f', 3, 64))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		cfg.logf("perf record: %v", err)
		return nil
	}
	cfg.logf("  perf record of pid %d into %s", pid, out)
	return cmd
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// window says which requests count: those completing in [from, to]. With count > 0, each worker
// sends exactly count requests (to is only a safety bound).
type window struct {
	from, to time.Time
	count    int
}

// worker is one connection's closed loop: it sends the next request as soon as the last answer
// is in.
type worker struct {
	id     int
	conn   *httpConn
	req    []byte // request line, headers and body
	idAt   []int  // where the event ids are in req
	events int
	next   uint64 // counter for event ids

	r result // this worker's counts and latencies, merged afterwards
}

func newWorker(id int, srv *serverProc, sc scenario, wl workload) *worker {
	target := sc.path + "?tc_s=" + benchSite + "&token=" + srv.key
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		target, srv.addr, len(wl.body))
	w := &worker{id: id, conn: &httpConn{addr: srv.addr}, events: wl.events()}
	w.req = append([]byte(head), wl.body...)
	for _, at := range wl.idOffsets {
		w.idAt = append(w.idAt, len(head)+at)
	}
	return w
}

// stampIDs gives every event of the request a new id.
func (w *worker) stampIDs() {
	for _, at := range w.idAt {
		putID(w.req[at:at+idWidth], w.id, w.next)
		w.next++
	}
}

func (w *worker) run(win window) {
	defer w.conn.close()
	for sent := 0; win.count == 0 || sent < win.count; sent++ {
		if time.Now().After(win.to) {
			return
		}
		w.stampIDs()
		began := time.Now()
		status, body, err := w.conn.roundTrip(w.req)
		ended := time.Now()
		if err != nil {
			time.Sleep(time.Millisecond) // a server that is gone must not make this spin
		}
		if err == nil && status == 200 {
			w.r.acceptedAll += max(0, acceptedIn(body))
		}
		if ended.Before(win.from) || ended.After(win.to) {
			continue
		}
		w.r.requests++
		switch {
		case err != nil:
			w.r.netErrors++
			continue
		case status == 200:
			w.r.ok++
			if accepted := acceptedIn(body); accepted >= 0 {
				w.r.events += accepted
				w.r.notAccepted += int64(w.events) - accepted
			} else {
				w.r.events += int64(w.events) // the bare server answers {}
			}
		case status == 503:
			w.r.status503++
		case status >= 500:
			w.r.other5xx++
		default:
			w.r.otherCode++
		}
		w.r.latencies = append(w.r.latencies, ended.Sub(began))
	}
}

func (r *result) add(w *worker) {
	r.requests += w.r.requests
	r.ok += w.r.ok
	r.status503 += w.r.status503
	r.other5xx += w.r.other5xx
	r.otherCode += w.r.otherCode
	r.netErrors += w.r.netErrors
	r.events += w.r.events
	r.notAccepted += w.r.notAccepted
	r.acceptedAll += w.r.acceptedAll
	r.latencies = append(r.latencies, w.r.latencies...)
}

// acceptedIn reads "accepted":N from a collect response without decoding all of it; -1 when the
// body has no such field.
func acceptedIn(body []byte) int64 {
	const key = `"accepted":`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return -1
	}
	var n int64
	for _, c := range body[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// httpConn is a minimal HTTP/1.1 client over one keep-alive connection: it writes a prepared
// request and reads the status and body of the answer. net/http's client costs several times
// more CPU per request, which on two cores would be taken from the servers being measured.
type httpConn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	body []byte
}

// requestTimeout bounds one request, answer included (a 500 KB batch under a burst can take
// seconds).
const requestTimeout = 60 * time.Second

func (h *httpConn) dial() error {
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", h.addr, err)
	}
	h.c, h.r = c, bufio.NewReaderSize(c, 16<<10)
	return nil
}

func (h *httpConn) close() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

// roundTrip sends req and returns the answer's status and body (valid until the next call). On
// an error, or when the server closes the connection, the next call reconnects.
func (h *httpConn) roundTrip(req []byte) (int, []byte, error) {
	if h.c == nil {
		if err := h.dial(); err != nil {
			return 0, nil, err
		}
	}
	if err := h.c.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		h.close()
		return 0, nil, err
	}
	if _, err := h.c.Write(req); err != nil {
		h.close()
		return 0, nil, fmt.Errorf("writing the request: %w", err)
	}
	status, body, keep, err := h.readResponse()
	if err != nil || !keep {
		h.close()
	}
	return status, body, err
}

func (h *httpConn) readResponse() (status int, body []byte, keepAlive bool, err error) {
	line, err := h.r.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, fmt.Errorf("reading the status line: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, keepAlive := -1, false, true
	for {
		line, err = h.r.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, fmt.Errorf("reading the headers: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, nil, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keepAlive = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		body, err = h.readChunked()
	case length >= 0:
		body = slices.Grow(h.body[:0], length)[:length]
		_, err = io.ReadFull(h.r, body)
	default: // the body ends with the connection
		body, err = io.ReadAll(h.r)
		keepAlive = false
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("reading the body: %w", err)
	}
	h.body = body
	return status, body, keepAlive, nil
}

func (h *httpConn) readChunked() ([]byte, error) {
	body := h.body[:0]
	for {
		line, err := h.r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		sizeText, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sizeText)), 16, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			for { // trailers, then the empty line
				line, err := h.r.ReadSlice('\n')
				if err != nil {
					return nil, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return body, nil
				}
			}
		}
		n := len(body)
		body = slices.Grow(body, int(size))[:n+int(size)]
		if _, err := io.ReadFull(h.r, body[n:]); err != nil {
			return nil, err
		}
		if crlf, err := h.r.ReadSlice('\n'); err != nil || len(bytes.TrimRight(crlf, "\r\n")) != 0 {
			return nil, errors.Join(errors.New("bad chunk end"), err)
		}
	}
}
