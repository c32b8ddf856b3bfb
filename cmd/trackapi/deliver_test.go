package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/webhook"
)

// fastDelivery makes retries quick enough for tests; production keeps the defaults.
var fastDelivery = []string{"--delivery-timeout", "1s", "--delivery-backoff", "100ms", "--delivery-backoff-max", "1s"}

// receiver is a webhook endpoint on 127.0.0.1 that checks every request's Standard Webhooks
// signature and records the envelopes it accepted, with when they arrived.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	secrets  []string // any of them may sign
	answer   func(n int, events []string) (status int, action string)
	requests int
	got      map[string]int           // envelope id → times accepted
	names    map[string]string        // envelope id → event name
	arrived  map[string]time.Duration // envelope id → arrival − received_at, at the first arrival
	badSigs  int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, got: map[string]int{}, names: map[string]string{}, arrived: map[string]time.Duration{}}
	r.answer = func(int, []string) (int, string) { return http.StatusOK, "" }
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setSecrets(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = secrets
}

func (r *receiver) setAnswer(answer func(n int, names []string) (int, string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = answer
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	var payload struct {
		Events []struct {
			ID         string          `json:"id"`
			ReceivedAt int64           `json:"received_at"`
			Event      json.RawMessage `json:"event"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		r.t.Errorf("webhook body is not the documented JSON: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	verified := false
	for _, s := range r.secrets {
		if webhook.Verify(s, req.Header, body, time.Now(), webhook.DefaultTolerance) == nil {
			verified = true
		}
	}
	if !verified {
		r.badSigs++
	}
	r.requests++
	names := make([]string, len(payload.Events))
	for i, e := range payload.Events {
		var ev struct {
			Name string `json:"event_name"`
		}
		json.Unmarshal(e.Event, &ev)
		names[i] = ev.Name
	}
	status, action := r.answer(r.requests, names)
	r.mu.Unlock()

	switch action {
	case "hang":
		select {
		case <-req.Context().Done():
		case <-time.After(3 * time.Second): // past the 1 s attempt timeout
		}
		return
	case "reset":
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tcp, ok := conn.(*net.TCPConn); ok {
					tcp.SetLinger(0) // an RST, not a clean close
				}
				conn.Close()
			}
		}
		return
	case "slow":
		time.Sleep(150 * time.Millisecond)
	}
	if status == http.StatusOK && verified {
		now := time.Now()
		r.mu.Lock()
		for i, e := range payload.Events {
			if r.got[e.ID] == 0 {
				r.arrived[e.ID] = now.Sub(time.UnixMilli(e.ReceivedAt))
			}
			r.got[e.ID]++
			r.names[e.ID] = names[i]
		}
		r.mu.Unlock()
	}
	if !verified {
		status = http.StatusUnauthorized
	}
	w.WriteHeader(status)
}

// accepted returns a copy of the accepted ids and their counts.
func (r *receiver) accepted() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

// acceptedNamed counts the accepted events with this event name.
func (r *receiver) acceptedNamed(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, got := range r.got {
		if got > 0 && r.names[id] == name {
			n++
		}
	}
	return n
}

// createWebhook creates a webhook destination with the CLI and returns its id and secret.
func createWebhook(t *testing.T, data, url string, extra ...string) (id, secret string) {
	t.Helper()
	stdout, stderr, code := runCLI(t, append([]string{"destinations", "create", "--data", data, "--type", "webhook",
		"--url", url, "--allow-private"}, extra...)...)
	if code != 0 {
		t.Fatalf("destinations create: exit %d\n%s", code, stderr)
	}
	id = strings.TrimSpace(stdout)
	if !regexp.MustCompile(`^\d+$`).MatchString(id) {
		t.Fatalf("destinations create printed %q, want the id alone", stdout)
	}
	m := regexp.MustCompile(`(whsec_\S+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no signing secret on stderr: %q", stderr)
	}
	return id, m[1]
}

// freeAddr is a 127.0.0.1 address nobody listens on, for a server restarted on the same port.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Events are delivered at least once across three SIGKILLs of the server, to a receiver that
// answers 503, hangs past the timeout, resets connections and answers slowly in a seeded pattern;
// the consent filter keeps the others out; a receiver-side 400 makes dead letters of exactly the
// marked events, and replay delivers them once the receiver takes them.
func TestDeliveryAtLeastOnceAcrossCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test of delivery runs the real binary for about a minute")
	}
	data, addr := t.TempDir(), freeAddr(t)
	args := append([]string{"--addr", addr}, fastDelivery...)
	p := startServerWith(t, data, args...)
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "5", "--name", "shop"))
	markedKey := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "6", "--name", "marked"))

	faulty := newReceiver(t)
	rng := rand.New(rand.NewPCG(7, 7))
	faulty.setAnswer(func(int, []string) (int, string) {
		switch x := rng.IntN(100); {
		case x < 8:
			return http.StatusServiceUnavailable, ""
		case x < 9:
			return 0, "hang"
		case x < 12:
			return 0, "reset"
		case x < 17:
			return http.StatusOK, "slow"
		}
		return http.StatusOK, ""
	})
	_, secret := createWebhook(t, data, faulty.srv.URL, "--name", "faulty", "--source", "2", "--consent-category", "1")
	faulty.setSecrets(secret)

	picky := newReceiver(t)
	picky.setAnswer(func(_ int, names []string) (int, string) {
		for _, n := range names {
			if n == "marked" {
				return http.StatusBadRequest, ""
			}
		}
		return http.StatusOK, ""
	})
	pickyID, pickySecret := createWebhook(t, data, picky.srv.URL, "--name", "picky", "--source", "3", "--batch-size", "1")
	picky.setSecrets(pickySecret)

	// The sender retries through restarts; a killer SIGKILLs the server three times meanwhile.
	const total, perBatch = 20000, 100
	sendCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	policy := client.RetryPolicy{MaxAttempts: 1000, MaxElapsed: 2 * time.Minute, BaseDelay: 20 * time.Millisecond, MaxDelay: 500 * time.Millisecond}
	c, err := client.New("http://"+addr, "5", key, client.WithRetry(policy))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := 0
	sent := make(chan error, 1)
	go func() {
		for b := 0; b < total/perBatch; b++ {
			events := make([][]byte, perBatch)
			for i := range events {
				n := b*perBatch + i
				consent := `["1"]`
				if n%10 == 0 {
					consent = `[]` // never for the consent-filtered destination
				}
				events[i] = []byte(fmt.Sprintf(`{"event_name":"page_view","user":{"consent_categories":%s},"context":{"event_id":"c-%d"}}`, consent, n))
			}
			res, err := c.SendRawBatch(sendCtx, events)
			if err != nil {
				sent <- fmt.Errorf("batch %d: %w", b, err)
				return
			}
			mu.Lock()
			acked += res.Accepted + res.Duplicates
			mu.Unlock()
		}
		sent <- nil
	}()
	for kill := 1; kill <= 3; kill++ {
		deadline := time.Now().Add(time.Minute)
		for {
			mu.Lock()
			n := acked
			mu.Unlock()
			if n >= kill*total/4 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		t.Logf("SIGKILL %d after %d acknowledged events, %d received by the webhook", kill, acked, len(faulty.accepted()))
		p = startServerWith(t, data, args...)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if acked != total {
		t.Fatalf("%d of %d events acknowledged", acked, total)
	}
	// The marked events, through the other source.
	mc, err := client.New("http://"+addr, "6", markedKey, client.WithRetry(policy))
	if err != nil {
		t.Fatal(err)
	}
	var marked [][]byte
	for i := 0; i < 20; i++ {
		name := "fine"
		if i%4 == 0 {
			name = "marked"
		}
		marked = append(marked, []byte(fmt.Sprintf(`{"event_name":%q,"context":{"event_id":"m-%d"}}`, name, i)))
	}
	if _, err := mc.SendRawBatch(sendCtx, marked); err != nil {
		t.Fatal(err)
	}

	want := map[string]bool{}
	for n := 0; n < total; n++ {
		if n%10 != 0 {
			want[fmt.Sprintf("2:c-%d", n)] = true
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := faulty.accepted()
		missing := 0
		for id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d consented events never reached the webhook", missing, len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := faulty.accepted()
	duplicates := 0
	for id, n := range got {
		if !want[id] {
			t.Errorf("event %s reached the webhook without consent (or was never sent)", id)
		}
		duplicates += n - 1
	}
	t.Logf("%d events acknowledged, %d consented delivered at least once, %d duplicate deliveries (batches in flight at a kill), %d requests to a receiver that failed about 17%% of them",
		acked, len(want), duplicates, faulty.requests)
	if faulty.badSigs > 0 || picky.badSigs > 0 {
		t.Errorf("%d + %d requests with no valid signature", faulty.badSigs, picky.badSigs)
	}

	// Exactly the marked events are dead letters, with the receiver's reason.
	var letters string
	eventually(t, 30*time.Second, "the marked events become dead letters", func() bool {
		letters = cli(t, "dead-letters", "list", "--data", data, "--destination", pickyID)
		return strings.Count(letters, "marked") == 5
	})
	if strings.Count(letters, "http_400") != 5 || strings.Contains(letters, "fine") {
		t.Fatalf("dead letters:\n%s", letters)
	}
	picky.setAnswer(func(int, []string) (int, string) { return http.StatusOK, "" })
	if out := cli(t, "dead-letters", "replay", "--data", data, "--destination", pickyID); !strings.HasPrefix(out, "5 dead letters") {
		t.Fatalf("replay printed %q", out)
	}
	eventually(t, 30*time.Second, "replayed dead letters are delivered", func() bool {
		return picky.acceptedNamed("marked") == 5
	})
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// A destination that accepts connections and never answers holds only its own worker: a second
// destination's delivery latency stays within twice its latency when alone.
func TestSlowDestinationDoesNotDelayOthers(t *testing.T) {
	data := t.TempDir()
	p := startServerWith(t, data, append([]string{"--addr", "127.0.0.1:0"}, "--delivery-timeout", "5s")...)
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "5", "--name", "shop"))
	fast := newReceiver(t)
	_, secret := createWebhook(t, data, fast.srv.URL, "--name", "fast")
	fast.setSecrets(secret)

	send := func(prefix string, n int) []string {
		var ids []string
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			collectOne(t, p.URL, "5", key, id)
			ids = append(ids, "2:"+id)
			time.Sleep(10 * time.Millisecond)
		}
		return ids
	}
	latencies := func(ids []string) []time.Duration {
		eventually(t, 30*time.Second, "events delivered", func() bool {
			got := fast.accepted()
			for _, id := range ids {
				if got[id] == 0 {
					return false
				}
			}
			return true
		})
		fast.mu.Lock()
		defer fast.mu.Unlock()
		out := make([]time.Duration, len(ids))
		for i, id := range ids {
			out[i] = fast.arrived[id]
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	time.Sleep(2 * time.Second) // the destination is picked up
	alone := latencies(send("alone", 150))

	// The black hole: connections accepted, never read or answered.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			conn, err := hole.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, conn)
			heldMu.Unlock()
		}
	}()
	defer func() {
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	}()
	createWebhook(t, data, "http://"+hole.Addr().String(), "--name", "black-hole")
	time.Sleep(2 * time.Second)
	withHole := latencies(send("with-hole", 150))

	p50 := func(d []time.Duration) time.Duration { return d[len(d)/2] }
	p90 := func(d []time.Duration) time.Duration { return d[len(d)*9/10] }
	t.Logf("delivery latency of the healthy destination: alone p50 %s p90 %s; beside a black hole p50 %s p90 %s",
		p50(alone), p90(alone), p50(withHole), p90(withHole))
	// Twice the latency alone, plus 20 ms for the timer resolution of very small numbers.
	if limit := 2*p50(alone) + 20*time.Millisecond; p50(withHole) > limit {
		t.Errorf("p50 latency beside a black hole %s, over twice the %s alone", p50(withHole), p50(alone))
	}
	heldMu.Lock()
	n := len(held)
	heldMu.Unlock()
	if n == 0 {
		t.Error("the black-hole destination never connected: the test proves nothing")
	}
}

// Signatures during a secret rotation: with an overlap both secrets sign, so receivers still on
// the old one keep verifying; with no overlap only the new one does.
func TestSigningSecretRotation(t *testing.T) {
	data := t.TempDir()
	p := startServerWith(t, data, append([]string{"--addr", "127.0.0.1:0"}, fastDelivery...)...)
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "5", "--name", "shop"))
	old := newReceiver(t)
	id, oldSecret := createWebhook(t, data, old.srv.URL, "--name", "hook")
	old.setSecrets(oldSecret)
	collectOne(t, p.URL, "5", key, "before-rotation")
	eventually(t, 10*time.Second, "delivered before the rotation", func() bool { return old.accepted()["2:before-rotation"] == 1 })

	_, stderr, code := runCLI(t, "destinations", "rotate-secret", "--data", data, id, "--expire-previous-in", "1h")
	m := regexp.MustCompile(`(whsec_\S+)`).FindStringSubmatch(stderr)
	if code != 0 || m == nil {
		t.Fatalf("rotate-secret: exit %d, %q", code, stderr)
	}
	newSecret := m[1]
	time.Sleep(2 * time.Second) // the server picks the change up
	collectOne(t, p.URL, "5", key, "during-overlap")
	eventually(t, 10*time.Second, "a receiver on the old secret verifies during the overlap", func() bool {
		return old.accepted()["2:during-overlap"] == 1
	})
	old.setSecrets(newSecret)
	collectOne(t, p.URL, "5", key, "during-overlap-new")
	eventually(t, 10*time.Second, "a receiver on the new secret verifies too", func() bool {
		return old.accepted()["2:during-overlap-new"] == 1
	})

	runCLI(t, "destinations", "rotate-secret", "--data", data, id, "--expire-previous-in", "0")
	time.Sleep(2 * time.Second)
	previous := newSecret // replaced with no overlap: it must no longer sign
	old.setSecrets(previous)
	collectOne(t, p.URL, "5", key, "after-rotation")
	eventually(t, 10*time.Second, "a request signed without the expired secret", func() bool {
		old.mu.Lock()
		defer old.mu.Unlock()
		return old.badSigs > 0
	})
	if old.accepted()["2:after-rotation"] != 0 {
		t.Error("a request verified with a secret that had expired")
	}
}

// A relay: trackapi forwards what it stores to another collector (here a second trackapi), with
// the same event ids, so the far end deduplicates; and a file destination writes the same events
// as NDJSON envelopes, synced to disk.
func TestForwardAndFileDestinations(t *testing.T) {
	far := startServer(t, t.TempDir())
	farKey := strings.TrimSpace(cli(t, "sources", "create", "--data", far.data, "--site", "9", "--name", "relayed"))

	data := t.TempDir()
	near := startServerWith(t, data, append([]string{"--addr", "127.0.0.1:0"}, fastDelivery...)...)
	key := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "5", "--name", "shop"))
	out := t.TempDir()
	if _, stderr, code := runCLI(t, "destinations", "create", "--data", data, "--name", "relay", "--type", "forward",
		"--url", far.URL, "--site", "9", "--token", farKey, "--allow-private"); code != 0 {
		t.Fatalf("forward destination: %s", stderr)
	}
	if _, stderr, code := runCLI(t, "destinations", "create", "--data", data, "--name", "archive", "--type", "file", "--path", out); code != 0 {
		t.Fatalf("file destination: %s", stderr)
	}
	time.Sleep(1500 * time.Millisecond)
	for i := 0; i < 5; i++ {
		collectOne(t, near.URL, "5", key, fmt.Sprintf("relay-%d", i))
	}
	eventually(t, 20*time.Second, "the far collector stored the forwarded events", func() bool {
		counts, _ := export(t, far.data)
		for i := 0; i < 5; i++ {
			if counts[fmt.Sprintf("relay-%d", i)] != 1 {
				return false
			}
		}
		return true
	})
	eventually(t, 20*time.Second, "the file destination wrote five envelopes", func() bool {
		lines := 0
		files, _ := filepath.Glob(filepath.Join(out, "*.ndjson"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var env struct {
					ID string `json:"id"`
				}
				if json.Unmarshal([]byte(line), &env) == nil && strings.HasPrefix(env.ID, "2:relay-") {
					lines++
				}
			}
		}
		return lines >= 5
	})
}
