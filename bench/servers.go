package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
)

// The two servers every scenario runs against.
const (
	kindTrackapi = "trackapi"
	kindBare     = "bare"
)

// benchSite is the site (tc_s) of the source bench creates.
const benchSite = "1"

// serverProc is a running server process: trackapi serve, or this program in -serve-bare mode.
type serverProc struct {
	cmd  *exec.Cmd
	addr string // host:port it listens on
	// adminAddr is trackapi's admin listener (its /metrics); empty for the bare server.
	adminAddr string
	key       string // the source key (trackapi only)
	log       *tailBuffer
	done      chan error
}

// listeningLine is what both servers log once they accept connections.
var listeningLine = regexp.MustCompile(`msg=listening addr=(\S+)(?: admin_addr=(\S+))?`)

// startServer starts a fresh server of kind. trackapi gets a fresh data directory in workDir and
// a source created with `sources create` before it starts (so serve does not make one itself),
// and a webhook destination for each of hookURLs, created the same way (so serve delivers from
// its first event, without waiting to notice them).
func startServer(cfg config, kind, name string, hookURLs []string) (*serverProc, error) {
	p := &serverProc{log: &tailBuffer{max: 64 << 10}, done: make(chan error, 1)}
	switch kind {
	case kindTrackapi:
		data := filepath.Join(cfg.workDir, name)
		out, err := exec.Command(cfg.binary, "sources", "create", "--data", data, "--site", benchSite, "--name", "bench").Output()
		if err != nil {
			return nil, fmt.Errorf("trackapi sources create: %w%s", err, exitStderr(err))
		}
		p.key = strings.TrimSpace(string(out))
		for i, url := range hookURLs {
			// The signing secret, printed on stderr, is dropped: the receiver does not check it.
			create := exec.Command(cfg.binary, "destinations", "create", "--data", data, "--name", hookName(i),
				"--type", "webhook", "--url", url, "--allow-private")
			if _, err := create.Output(); err != nil {
				return nil, fmt.Errorf("trackapi destinations create: %w%s", err, exitStderr(err))
			}
		}
		p.cmd = exec.Command(cfg.binary, "serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data", data)
	case kindBare:
		p.cmd = exec.Command(cfg.self, "-serve-bare", "127.0.0.1:0")
	default:
		return nil, fmt.Errorf("unknown server %q", kind)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", kind, err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", kind, err)
	}
	listening := make(chan []string, 1)
	go func() {
		// Keep reading for the life of the process: a server blocked on a full stderr pipe
		// would stall.
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.log.WriteString(line + "\n")
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				select {
				case listening <- m:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line over 1 MB: keep draining
		p.done <- p.cmd.Wait()
	}()
	select {
	case m := <-listening:
		p.addr, p.adminAddr = m[1], m[2]
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", kind, err, p.log)
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("%s did not listen within 30 s:\n%s", kind, p.log)
	}
}

// stop ends the server with SIGTERM (a graceful stop), or SIGKILL after 30 s.
func (p *serverProc) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling pid %d: %w", p.cmd.Process.Pid, err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("server exited with %v:\n%s", err, p.log)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("server did not stop within 30 s of SIGTERM; killed:\n%s", p.log)
	}
}

func (p *serverProc) pid() int { return p.cmd.Process.Pid }

// exitStderr is the standard error of a failed exec.Cmd.Output, for error messages.
func exitStderr(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) && len(exit.Stderr) > 0 {
		return "\n" + string(exit.Stderr)
	}
	return ""
}

// tailBuffer keeps the last max bytes written to it: a server's log, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) WriteString(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, s...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// clockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ, which is 100 on every
// Linux architecture Go runs on (what `getconf CLK_TCK` prints).
const clockTicks = 100

// processCPU returns the user plus system CPU time pid has used so far.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields count on from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("reading the CPU time of pid %d: unexpected /proc/%d/stat %q", pid, pid, b)
	}
	fields := strings.Fields(string(b[i+1:])) // fields[0] is field 3, state
	if len(fields) < 13 {
		return 0, fmt.Errorf("reading the CPU time of pid %d: short /proc/%d/stat", pid, pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(fields[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("reading the CPU time of pid %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// peakRSS returns the largest resident set pid has had (VmHWM), in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the peak RSS of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("reading the peak RSS of pid %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("reading the peak RSS of pid %d: no VmHWM in /proc/%d/status", pid, pid)
}

// machineBusy returns the CPU time all CPUs of the machine have spent busy so far (/proc/stat),
// so that the report can show how much other processes took during a measurement.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, f := range fields {
		if i == 0 || i == 4 || i == 5 || i > 8 { // the label, idle and iowait; guest time is in user
			continue
		}
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// ownCPU returns the CPU time this process (the load generator) has used so far.
func ownCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveBare is the baseline: Echo with one handler that reads the whole body and answers 200 {},
// on the collect routes. It is what any Echo service must at least do for such a request, so its
// figures are the ceiling of the stack on this machine. It stops gracefully on SIGTERM.
func serveBare(addr string) error {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	handle := func(c echo.Context) error {
		if _, err := io.ReadAll(c.Request().Body); err != nil {
			return fmt.Errorf("reading the body: %w", err)
		}
		return c.JSONBlob(http.StatusOK, []byte("{}"))
	}
	for _, path := range []string{"/events", "/events/", "/events/batch"} {
		e.POST(path, handle)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	slog.New(slog.NewTextHandler(os.Stderr, nil)).Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// commitStats is what trackapi's /metrics says about its commits over the scenario (warm-up
// included): how many requests and events one commit (one fsync) served, and how long it took.
type commitStats struct {
	commits           float64
	requestsPerCommit float64
	eventsPerCommit   float64
	meanCommit        time.Duration
}

// scrapeMetrics reads the metrics of a trackapi server, by name with labels as the text format
// writes them (`trackapi_delivery_events_total{destination="hook1",outcome="delivered"}`); nil
// when it has none (a binary without GET /metrics).
func scrapeMetrics(addr string) map[string]float64 {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	values := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			values[line[:i]] = v
		}
	}
	return values
}

// commitsFrom reads the commit metrics out of scraped values; nil when there are none.
func commitsFrom(values map[string]float64) *commitStats {
	n := values["trackapi_commit_group_requests_count"]
	if n == 0 {
		return nil
	}
	return &commitStats{
		commits:           n,
		requestsPerCommit: values["trackapi_commit_group_requests_sum"] / n,
		eventsPerCommit:   values["trackapi_commit_group_events_sum"] / n,
		meanCommit:        time.Duration(values[`trackapi_commit_duration_seconds_sum{result="ok"}`] / n * float64(time.Second)),
	}
}
