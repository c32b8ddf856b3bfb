//go:build linux

package prismcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/syncbuf"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
)

// The environment `make prism` sets.
const (
	envPrism  = "TRACKAPI_PRISM" // the prism executable; without it the test is skipped
	envBinary = "TRACKAPI_BIN"   // the trackapi binary; default bin/trackapi of the repository
)

// prismMaxDepth is the deepest JSON sent to Prism as JSON: Prism parses a JSON body recursively,
// and from about 5000 levels it answers 500 (RangeError: Maximum call stack size exceeded), or its
// process dies. The corpus nests up to 10000 levels, which the server takes; such a body goes
// through Prism as text/plain only (Prism does not parse it), and as JSON straight to the server,
// whose answer kin-openapi checks against openapi.yaml.
const prismMaxDepth = 2000

// Bounds: the whole check takes about 20 s; these only stop a hung process from hanging CI.
const (
	startTimeout   = 60 * time.Second // each process until it listens
	requestTimeout = 20 * time.Second
	stopTimeout    = 10 * time.Second // each process after SIGTERM, before SIGKILL
)

// tally counts what happened, for the log and the checks of coverage.
type tally struct {
	bySource  map[string]int
	forwarded map[int]int // by status
	refused   int         // by Prism, and nothing stored by the server either
	direct    int         // too deep for Prism: checked against the server alone
}

func TestThroughPrism(t *testing.T) {
	prism := os.Getenv(envPrism)
	if prism == "" {
		t.Skipf("%s is not set: `make prism` runs this check", envPrism)
	}
	root := repoRoot(t)
	bin := os.Getenv(envBinary)
	if bin == "" {
		bin = filepath.Join(root, "bin", "trackapi")
	}
	srv := startServer(t, bin)
	px := startPrism(t, prism, filepath.Join(root, "openapi.yaml"), srv.url)

	query := "?tc_s=1&token=" + url.QueryEscape(srv.key)
	var exchanges []exchange
	exchanges = append(exchanges, serveCurl(t, srv))
	exchanges = append(exchanges, readmeExamples(t, root, srv.key)...)
	exchanges = append(exchanges, specExamples(t, root, query)...)
	exchanges = append(exchanges, corpus(t, root, query)...)
	exchanges = append(exchanges, exchange{
		source: "canary", name: "an event without event_name", method: http.MethodPost, target: "/events" + query,
		header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"search_term":"t-shirts"}`), mustRefuse: true,
	})

	client := &http.Client{Timeout: requestTimeout}
	got := tally{bySource: map[string]int{}, forwarded: map[int]int{}}
	for _, ex := range exchanges {
		got.bySource[ex.source]++
		check(t, client, px, srv, ex, &got)
	}
	t.Logf("%d requests (%s): %d through Prism and valid both ways (by status: %v), %d refused by Prism and stored by the server neither, "+
		"%d nested deeper than Prism parses, checked against the server alone",
		len(exchanges), counts(got.bySource), sum(got.forwarded), got.forwarded, got.refused, got.direct)
	for _, source := range []string{"readme", "serve", "spec", "corpus"} {
		if got.bySource[source] == 0 {
			t.Errorf("no request from %s: is its reader broken?", source)
		}
	}
}

// check sends one exchange through Prism and judges both sides.
func check(t *testing.T, client *http.Client, px *prismProcess, srv *server, ex exchange, got *tally) {
	t.Helper()
	what := fmt.Sprintf("%s %s (%s %s)", ex.source, ex.name, ex.method, ex.target)
	base := px.url
	if strings.Contains(ex.header.Get("Content-Type"), "json") && depth(ex.body) > prismMaxDepth {
		if ex.documented || ex.mustRefuse {
			t.Errorf("%s: nests %d levels, deeper than Prism parses", what, depth(ex.body))
			return
		}
		base = srv.url
		got.direct++
	}
	status, header, body, err := send(client, base, ex)
	if err != nil {
		t.Errorf("%s: through Prism: %v\nPrism's log ends:\n%s", what, err, px.logTail())
		return
	}
	if strings.HasPrefix(header.Get("Content-Type"), "application/problem+json") {
		var problem struct {
			Type       string          `json:"type"`
			Validation json.RawMessage `json:"validation"`
		}
		_ = json.Unmarshal(body, &problem)
		if !strings.HasSuffix(problem.Type, "#UNPROCESSABLE_ENTITY") {
			t.Errorf("%s: Prism answered %d %s: %s", what, status, problem.Type, problem.Validation)
			return
		}
		if ex.documented {
			t.Errorf("%s: a documented request that the spec refuses: %s", what, problem.Validation)
			return
		}
		// The spec refuses it: the server must not store any of it.
		dStatus, _, dBody, err := send(client, srv.url, ex)
		if err != nil {
			t.Errorf("%s: to the server: %v", what, err)
			return
		}
		if stored := storedCount(dStatus, dBody); stored > 0 {
			t.Errorf("%s: the spec refuses it (%s), but the server stores %d events of it: %s", what, problem.Validation, stored, dBody)
			return
		}
		got.refused++
		return
	}
	if ex.mustRefuse {
		t.Errorf("%s: Prism let it through (%d %s): is it validating requests?", what, status, body)
		return
	}
	if v := header.Get("sl-violations"); v != "" {
		t.Errorf("%s: Prism reports %s", what, v)
		return
	}
	// A second opinion on the answer: kin-openapi, as the server's tests check every answer.
	req, err := http.NewRequest(ex.method, srv.url+ex.target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := apitest.ValidateResponse(req, status, header, body); err != nil {
		t.Errorf("%s: the answer does not match openapi.yaml: %v\n%d %s", what, err, status, body)
		return
	}
	if base == px.url {
		got.forwarded[status]++
	}
	if ex.documented {
		var res gen.CollectResult
		if status != http.StatusOK || json.Unmarshal(body, &res) != nil || res.Received == 0 || res.Rejected != 0 {
			t.Errorf("%s: a documented request not stored whole: %d %s", what, status, body)
			return
		}
	}
	if ex.shown != "" {
		checkShown(t, what, ex.shown, body)
	}
}

// storedCount is how many events of a request the server stored (or had already): 0 for a 400.
func storedCount(status int, body []byte) int {
	var res gen.CollectResult
	if status != http.StatusOK || json.Unmarshal(body, &res) != nil {
		return 0
	}
	return res.Accepted + res.Duplicates
}

// checkShown compares the server's answer with the one the README shows, which leaves parts out
// ("..."): the counts it gives, and the (code, index) of each problem it lists, in order.
func checkShown(t *testing.T, what, shown string, body []byte) {
	t.Helper()
	var res gen.CollectResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Errorf("%s: %s", what, body)
		return
	}
	actual := map[string]int{"received": res.Received, "accepted": res.Accepted, "duplicates": res.Duplicates, "rejected": res.Rejected}
	for _, m := range regexp.MustCompile(`"(received|accepted|duplicates|rejected)":(\d+)`).FindAllStringSubmatch(shown, -1) {
		if n, _ := strconv.Atoi(m[2]); actual[m[1]] != n {
			t.Errorf("%s: the README shows %s %d, the server answers %d: %s", what, m[1], n, actual[m[1]], body)
		}
	}
	var want, have []string
	for _, m := range regexp.MustCompile(`\{"code":"(\w+)"[^{}]*?"index":(\d+)\}`).FindAllStringSubmatch(shown, -1) {
		want = append(want, m[1]+"@"+m[2])
	}
	for _, p := range append(slices.Clone(res.Errors), res.Warnings...) {
		have = append(have, fmt.Sprintf("%s@%d", p.Code, p.Index))
	}
	if !slices.Equal(want, have) {
		t.Errorf("%s: the README shows the problems %v, the server answers %v", what, want, have)
	}
}

// send makes one request to base (Prism or the server).
func send(client *http.Client, base string, ex exchange) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(ex.method, base+ex.target, bytes.NewReader(ex.body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header = ex.header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, body, err
}

// serveCurl is the curl command `trackapi serve` printed on its first start.
func serveCurl(t *testing.T, srv *server) exchange {
	t.Helper()
	cmds, err := parseShell(srv.curl, nil)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("serve's curl command %q: %v", srv.curl, err)
	}
	ex := fromCurl(t, "serve", "the first-start command", cmds[0], srv.url)
	return ex
}

// depth is how deeply a JSON text nests objects and arrays (brackets inside strings aside).
func depth(b []byte) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			d++
			deepest = max(deepest, d)
		case c == ']' || c == '}':
			d--
		}
	}
	return deepest
}

// process is a child process in a process group of its own, stopped (the whole group) when the
// test ends.
type process struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer // stdout and stderr
	done chan error
}

func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(name, args...), out: &syncbuf.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Its own group, so that stop ends whatever it started too; and killed with the test binary,
	// should that die before its cleanups run (a go test -timeout).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the process group: SIGTERM, then SIGKILL if it has not ended within stopTimeout.
func (p *process) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
		t.Logf("%s did not stop within %s of SIGTERM: killed", p.cmd.Path, stopTimeout)
	}
}

// waitFor polls until found returns true, the process ends, or startTimeout passes.
func (p *process) waitFor(t *testing.T, what string, found func() bool) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for !found() {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s ended before %s: %v\n%s", p.cmd.Path, what, err, p.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %s:\n%s", p.cmd.Path, what, startTimeout, p.out)
		}
	}
}

// server is `trackapi serve` on a new data directory.
type server struct {
	*process
	url  string
	key  string
	curl string // the first-start curl command as printed
}

var (
	listening = regexp.MustCompile(`msg=listening addr=(127\.0\.0\.1:\d+)`)
	// The command printed on the first start: curl and its continuation lines.
	firstCurl = regexp.MustCompile(`(?m)^ *(curl -sS -X POST '[^']*token=([^'&]+)'(?: \\\n.*)+'\n)`)
)

func startServer(t *testing.T, bin string) *server {
	t.Helper()
	p := start(t, bin, "serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data", t.TempDir())
	s := &server{process: p}
	p.waitFor(t, "its address and first-start curl command", func() bool {
		out := p.out.String()
		addr, curl := listening.FindStringSubmatch(out), firstCurl.FindStringSubmatch(out)
		if addr == nil || curl == nil {
			return false
		}
		s.url, s.curl, s.key = "http://"+addr[1], curl[1], curl[2]
		return true
	})
	return s
}

// prismProcess is `prism proxy` in front of the server.
type prismProcess struct {
	*process
	url string
}

func (p *prismProcess) logTail() string {
	out := p.out.String()
	return out[max(0, len(out)-3000):]
}

// startPrism starts Prism on a free port (tried again on another when the port was taken
// meanwhile) and waits until it answers.
func startPrism(t *testing.T, prism, spec, upstream string) *prismProcess {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		p := start(t, prism, "proxy", spec, upstream, "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--errors")
		px := &prismProcess{process: p, url: "http://127.0.0.1:" + strconv.Itoa(port)}
		ok := waitListening(p, "127.0.0.1:"+strconv.Itoa(port))
		if ok {
			return px
		}
		p.stop(t)
		if attempt == 3 {
			t.Fatalf("Prism did not start:\n%s", p.out)
		}
		t.Logf("Prism did not start on port %d (attempt %d); trying another:\n%s", port, attempt, px.logTail())
	}
}

// waitListening waits until addr accepts connections and Prism says it listens, or the process
// ends, or startTimeout passes.
func waitListening(p *process, addr string) bool {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return false
		case <-time.After(100 * time.Millisecond):
		}
		if !strings.Contains(p.out.String(), "Prism is listening") {
			continue
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
