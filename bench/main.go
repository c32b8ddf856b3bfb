// Command bench is trackapi's end-to-end benchmark (`make bench`, issue #4). It runs the real
// binary with its durable store (fsync on, the default) and, in the same invocation and measured
// the same way, a bare Echo server that only reads the body and answers 200: the ceiling of this
// stack on this machine. It prints each trackapi figure beside the baseline's, their ratio, and
// whether the performance targets of the issue are met.
//
// Each scenario gets a fresh server process (for trackapi also a fresh data directory), so that
// the peak RSS reported (the kernel's VmHWM) is that scenario's own and the database does not
// grow from one scenario to the next. The load generator runs in this process: one goroutine per
// connection, closed loop, speaking HTTP/1.1 itself over a keep-alive TCP connection with bodies
// prepared in advance (only the event ids change), so that it costs a few µs a request and the
// servers, not the generator, are what is measured.
//
// The scenarios named *-2hooks (issue #8) run trackapi with two webhook destinations, answered by
// a receiver in this process, and also measure how fast the events reach them and how long after
// the load stops they have all arrived (the catch-up lag).
//
// Usage:
//
//	go run ./bench [-binary bin/trackapi] [-duration 5s] [-warmup 1s] [-scenarios single-c50,...]
//	               [-servers trackapi,bare] [-perf DIR] [-catch-up-bound 60s]
//
// -serve-bare ADDR is internal: it is how bench starts the baseline as a process of its own.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// config is what a run needs from the command line.
type config struct {
	binary        string // the trackapi binary
	self          string // this program, started again as the bare server
	duration      time.Duration
	warmup        time.Duration
	burstRequests int
	perfDir       string
	catchUpBound  time.Duration // longest wait for the destinations to catch up after the load
	workDir       string        // data directories live here
	logf          func(format string, args ...any)
}

func main() {
	binary := flag.String("binary", "", "trackapi binary to benchmark; empty: build ./cmd/trackapi into a temporary directory")
	serveBareAddr := flag.String("serve-bare", "", "internal: run only the bare Echo baseline server on this address")
	duration := flag.Duration("duration", 5*time.Second, "measured time of each scenario (keep a scenario running longer to profile it)")
	warmup := flag.Duration("warmup", time.Second, "load before each measurement starts")
	only := flag.String("scenarios", "", "comma-separated scenarios to run; empty: all of "+strings.Join(scenarioNames(), ","))
	servers := flag.String("servers", "trackapi,bare", "servers to measure: trackapi, bare or both")
	burstRequests := flag.Int("burst-requests", 2, "batches each of the 256 connections sends in the burst scenario")
	perfDir := flag.String("perf", "", "when set, record each trackapi measurement with `perf record -g` into this directory")
	catchUpBound := flag.Duration("catch-up-bound", time.Minute, "scenarios with destinations: longest wait, after the load stops, for every accepted event to reach every destination")
	flag.Parse()

	if *serveBareAddr != "" {
		if err := serveBare(*serveBareAddr); err != nil {
			fmt.Fprintln(os.Stderr, "bench -serve-bare:", err)
			os.Exit(1)
		}
		return
	}
	cfg := config{
		binary: *binary, duration: *duration, warmup: *warmup, burstRequests: *burstRequests, perfDir: *perfDir, catchUpBound: *catchUpBound,
		logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	}
	if err := run(cfg, *only, *servers, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run measures the chosen scenarios on the chosen servers and writes the report to out.
func run(cfg config, only, servers string, out io.Writer) error {
	kinds, err := parseServers(servers)
	if err != nil {
		return err
	}
	chosen, err := chooseScenarios(only)
	if err != nil {
		return err
	}
	if cfg.self, err = os.Executable(); err != nil {
		return fmt.Errorf("finding this program to start the bare server: %w", err)
	}
	work, err := os.MkdirTemp("", "trackapi-bench")
	if err != nil {
		return fmt.Errorf("making a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	cfg.workDir = work
	if cfg.binary == "" && slices.Contains(kinds, kindTrackapi) {
		cfg.binary = filepath.Join(work, "trackapi")
		cfg.logf("building ./cmd/trackapi into %s", cfg.binary)
		build := exec.Command("go", "build", "-o", cfg.binary, "./cmd/trackapi")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building trackapi (run from the repository root, or pass -binary): %w", err)
		}
	}
	if cfg.perfDir != "" {
		if err := os.MkdirAll(cfg.perfDir, 0o755); err != nil {
			return fmt.Errorf("making the perf directory: %w", err)
		}
	}

	mach := describeMachine(work)
	results := map[string]map[string]*result{}
	began := time.Now()
	for _, sc := range chosen {
		results[sc.name] = map[string]*result{}
		for _, kind := range kinds {
			if kind == kindBare && sc.hooks > 0 {
				continue // the baseline has no destinations; the report compares with sc.without
			}
			r, err := measure(cfg, sc, kind)
			if err != nil {
				return fmt.Errorf("%s on %s: %w", sc.name, kind, err)
			}
			cfg.logf("  %-19s %-8s %s", sc.name, kind, r.summary())
			results[sc.name][kind] = r
		}
	}
	report(out, cfg, mach, chosen, kinds, results, time.Since(began))
	return nil
}

func parseServers(s string) ([]string, error) {
	var kinds []string
	for _, k := range strings.Split(s, ",") {
		switch k = strings.TrimSpace(k); k {
		case kindTrackapi, kindBare:
			kinds = append(kinds, k)
		case "":
		default:
			return nil, fmt.Errorf("-servers: unknown server %q (want trackapi or bare)", k)
		}
	}
	if len(kinds) == 0 {
		return nil, errors.New("-servers: none given")
	}
	return kinds, nil
}
