package main

import (
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine is what the report says about where it ran.
type machine struct {
	cpus   int
	model  string
	memory string
	kernel string
	goVer  string
	fsync  time.Duration // one 4 KB write + fsync in the work directory, averaged
}

func describeMachine(dir string) machine {
	m := machine{cpus: runtime.NumCPU(), model: "unknown CPU", memory: "?", kernel: "?", goVer: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.model = strings.TrimSpace(value)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				m.memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	m.fsync = fsyncLatency(dir)
	return m
}

// fsyncLatency is the average time of a 4 KB append and fsync in dir: the floor under every
// durable commit, and so under the latency of a lone request.
func fsyncLatency(dir string) time.Duration {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		return 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	const n = 50
	start := time.Now()
	for range n {
		if _, err := f.Write(block); err != nil {
			return 0
		}
		if err := f.Sync(); err != nil {
			return 0
		}
	}
	return time.Since(start) / n
}

// report writes the results as markdown: the setup, one table with each trackapi figure beside
// the baseline's, and the targets of issue #4 with met or missed.
func report(w io.Writer, cfg config, m machine, scs []scenario, kinds []string, results map[string]map[string]*result, took time.Duration) {
	fmt.Fprintf(w, "## trackapi benchmark\n\n")
	fmt.Fprintf(w, "- command: `%s`\n", commandLine())
	fmt.Fprintf(w, "- machine: %d CPUs (%s), %s, %s, %s; 4 KB write+fsync in %s: %s\n",
		m.cpus, m.model, m.memory, m.kernel, m.goVer, os.TempDir(), fmtDuration(m.fsync))
	trackapi := "not run"
	if cfg.binary != "" {
		trackapi = fmt.Sprintf("`%s serve` (%s; SQLite WAL, synchronous=FULL: fsync on)", cfg.binary, revision(cfg.binary))
	}
	fmt.Fprintf(w, "- servers: trackapi = %s, bare = Echo reading the body and answering 200 `{}`; "+
		"a fresh process (and data directory) per scenario; load generator on the same machine, one keep-alive connection per worker, closed loop\n",
		trackapi)
	fmt.Fprintf(w, "- each closed-loop scenario: %s warm-up, then %s measured; the burst: %d batches per connection, all measured; total run time %s\n\n",
		cfg.warmup, cfg.duration, cfg.burstRequests, took.Round(time.Second))

	both := len(kinds) == 2
	fmt.Fprintf(w, "| scenario | metric |")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s |", kindTitle(k))
	}
	if both {
		fmt.Fprintf(w, " trackapi / bare |")
	}
	columns := len(kinds)
	if both {
		columns++
	}
	fmt.Fprintf(w, "\n|---|---|%s\n", strings.Repeat("--:|", columns))

	type metric struct {
		name  string
		value func(*result) float64
		text  func(*result) string
	}
	metrics := []metric{
		{"requests/s", func(r *result) float64 { return r.perSecond(r.requests) }, func(r *result) string { return fmtCount(r.perSecond(r.requests)) }},
		{"events/s", func(r *result) float64 { return r.perSecond(r.events) }, func(r *result) string { return fmtCount(r.perSecond(r.events)) }},
		{"p50 latency", func(r *result) float64 { return float64(r.percentile(50)) }, func(r *result) string { return fmtDuration(r.percentile(50)) }},
		{"p99 latency", func(r *result) float64 { return float64(r.percentile(99)) }, func(r *result) string { return fmtDuration(r.percentile(99)) }},
		{"server CPU/event", func(r *result) float64 { return float64(r.cpuPerEvent()) }, func(r *result) string { return fmtDuration(r.cpuPerEvent()) }},
		{"peak RSS", func(r *result) float64 { return float64(r.peakRSS) }, func(r *result) string { return fmt.Sprintf("%.1f MB", float64(r.peakRSS)/1e6) }},
		{"answers", nil, func(r *result) string {
			s := fmt.Sprintf("200: %d", r.ok)
			for _, c := range []struct {
				n    int64
				name string
			}{{r.status503, "503"}, {r.other5xx, "other 5xx"}, {r.otherCode, "other"}, {r.netErrors, "no answer"}, {r.notAccepted, "events not accepted"}} {
				if c.n > 0 {
					s += fmt.Sprintf(", %s: %d", c.name, c.n)
				}
			}
			return s
		}},
		{"load generator CPU/request (with destinations: and the webhook receiver's)", nil, func(r *result) string {
			if r.requests == 0 {
				return "–"
			}
			return fmtDuration(r.genCPU / time.Duration(r.requests))
		}},
		{"commits (fsyncs): requests, events, time per commit", nil, func(r *result) string {
			if r.commits == nil {
				return "–"
			}
			c := r.commits
			return fmt.Sprintf("%.0f: %.1f req, %.0f ev, %s", c.commits, c.requestsPerCommit, c.eventsPerCommit, fmtDuration(c.meanCommit))
		}},
		{"other processes' CPU", nil, func(r *result) string {
			return fmt.Sprintf("%.0f %% of a core", 100*r.otherCPU.Seconds()/r.elapsed.Seconds())
		}},
	}
	for _, sc := range scs {
		for i, mt := range metrics {
			label := ""
			if i == 0 {
				label = sc.title
			}
			fmt.Fprintf(w, "| %s | %s |", label, mt.name)
			for _, k := range kinds {
				text := "–" // the bare server does not run the scenarios with destinations
				if r := results[sc.name][k]; r != nil {
					text = mt.text(r)
				}
				fmt.Fprintf(w, " %s |", text)
			}
			if both {
				ratio := ""
				t, b := results[sc.name][kindTrackapi], results[sc.name][kindBare]
				if mt.value != nil && t != nil && b != nil && mt.value(b) > 0 {
					ratio = fmt.Sprintf("%.2f", mt.value(t)/mt.value(b))
				}
				fmt.Fprintf(w, " %s |", ratio)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
	writeDelivery(w, cfg, scs, results)
	writeTargets(w, results)
	writeDeliveryTargets(w, cfg, scs, results)
}

// writeDelivery is the table of the scenarios with destinations: for each destination, the events
// it received during the measured window beside those trackapi collected, and how long after the
// load stopped it had them all.
func writeDelivery(w io.Writer, cfg config, scs []scenario, results map[string]map[string]*result) {
	var rows []scenario
	for _, sc := range scs {
		if r := results[sc.name][kindTrackapi]; r != nil && r.delivery != nil {
			rows = append(rows, sc)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "### Delivery (issue #8)\n\n")
	fmt.Fprintf(w, "Webhook destinations created before serve starts (default batch of 100 events a request), answered 200 by a receiver in the bench process "+
		"that counts distinct envelopes (ids parsed back to the load generator's; 1 request in %d also decoded in full to check the count). "+
		"Delivered events/s: distinct events received during the measured window. "+
		"Behind: accepted events (the warm-up's included) not yet received when the load stopped. "+
		"Caught up: time from the end of the load until the destination had every accepted event (bound %s), and the rate it received them meanwhile. "+
		"Server CPU/delivered event: trackapi's CPU time during the catch-up, when it only delivers, per event received by any destination (shown when the catch-up takes 0.5 s or more).\n\n",
		sampleEvery, cfg.catchUpBound)
	fmt.Fprintf(w, "| scenario | destination | collected events/s | delivered events/s | delivered / collected | behind when the load stopped | caught up after | server CPU/delivered event | received: requests, events/request, duplicates | trackapi's count |\n")
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|--:|---|---|\n")
	for _, sc := range rows {
		r := results[sc.name][kindTrackapi]
		d := r.delivery
		collected := r.perSecond(r.events)
		for i, hr := range d.hooks {
			label, cpu := "", ""
			if i == 0 {
				label = sc.name
				if c := d.cpuPerDelivered(); c > 0 {
					cpu = fmtDuration(c)
				} else {
					cpu = "–"
				}
			}
			caughtUp := catchUpText(hr.caughtUp, hr.catchUp, d.accepted-hr.final.distinct)
			if hr.caughtUp && hr.behind > 0 && hr.catchUp >= 100*time.Millisecond {
				caughtUp += fmt.Sprintf(" (%s events/s)", fmtCount(float64(hr.behind)/hr.catchUp.Seconds()))
			}
			delivered := r.perSecond(hr.inWindow)
			ratio := ""
			if collected > 0 {
				ratio = fmt.Sprintf("%.2f", delivered/collected)
			}
			c := hr.final
			received := fmt.Sprintf("%s, %.0f, %d", fmtCount(float64(c.requests)), float64(c.envelopes)/float64(max(c.requests, 1)), c.duplicates)
			if c.foreign > 0 || c.mismatches > 0 {
				received += fmt.Sprintf(", **%d foreign ids, %d of %d sampled requests miscounted**", c.foreign, c.mismatches, c.sampled)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s of %s | %s | %s | %s | %s |\n", label, hr.name, fmtCount(collected), fmtCount(delivered), ratio,
				fmtCount(float64(hr.behind)), fmtCount(float64(d.accepted)), caughtUp, cpu, received, hr.serverText())
		}
	}
	fmt.Fprintln(w)
}

// catchUpText says how long a destination took to catch up, or how far it still was at the bound.
func catchUpText(caughtUp bool, took time.Duration, missing int64) string {
	if caughtUp {
		return fmtDuration(took)
	}
	return fmt.Sprintf("**not caught up** in %s (%s events missing)", took, fmtCount(float64(missing)))
}

// writeDeliveryTargets checks the figures of the scenarios with destinations against issue #8:
// delivery keeps up with collect in the batch scenario, and destinations cost collect at most
// 15 %, compared with the same load without them in this run; it also gives the catch-up lag of
// each such scenario.
func writeDeliveryTargets(w io.Writer, cfg config, scs []scenario, results map[string]map[string]*result) {
	fmt.Fprintf(w, "\n### Targets (issue #8, speed)\n\n| target | measured | |\n|---|---|---|\n")
	verdict := func(met bool) string {
		if met {
			return "met"
		}
		return "**missed**"
	}
	hooked := func(name string) *result {
		if r := results[name][kindTrackapi]; r != nil && r.delivery != nil {
			return r
		}
		return nil
	}

	const keepUp = "batch100-c20-2hooks"
	what := "batch 100 × 330 B at 20 connections with 2 webhooks: delivery keeps up with collect (each destination's delivered events/s ≥ collected events/s)"
	if r := hooked(keepUp); r == nil {
		fmt.Fprintf(w, "| %s | not run | |\n", what)
	} else {
		collected, met := r.perSecond(r.events), true
		var parts []string
		for _, hr := range r.delivery.hooks {
			delivered := r.perSecond(hr.inWindow)
			met = met && delivered >= collected
			parts = append(parts, fmt.Sprintf("%s %s (%.2f ×)", hr.name, fmtCount(delivered), delivered/collected))
		}
		fmt.Fprintf(w, "| %s | %s vs %s collected events/s | %s |\n", what, strings.Join(parts, ", "), fmtCount(collected), verdict(met))
	}

	for _, sc := range scs {
		if sc.hooks == 0 {
			continue
		}
		what := fmt.Sprintf("%s: collect with %d webhooks ≥ 0.85 × collect with none (%s)", sc.name, sc.hooks, sc.without)
		with, without := hooked(sc.name), results[sc.without][kindTrackapi]
		switch {
		case with == nil:
			fmt.Fprintf(w, "| %s | not run | |\n", what)
		case without == nil || without.events == 0:
			fmt.Fprintf(w, "| %s | needs %s in the same run | |\n", what, sc.without)
		default:
			ratio := with.perSecond(with.events) / without.perSecond(without.events)
			fmt.Fprintf(w, "| %s | %.2f × (%s vs %s events/s) | %s |\n", what, ratio,
				fmtCount(with.perSecond(with.events)), fmtCount(without.perSecond(without.events)), verdict(ratio >= 0.85))
		}
	}

	for _, sc := range scs {
		r := hooked(sc.name)
		if r == nil {
			continue
		}
		d := r.delivery
		var parts []string
		for _, hr := range d.hooks {
			parts = append(parts, fmt.Sprintf("%s %s", hr.name, catchUpText(hr.caughtUp, hr.catchUp, d.accepted-hr.final.distinct)))
		}
		fmt.Fprintf(w, "| %s: catch-up lag after the load stops (every one of %s accepted events at every destination, bound %s) | %s | %s |\n",
			sc.name, fmtCount(float64(d.accepted)), cfg.catchUpBound, strings.Join(parts, ", "), verdict(d.caughtUp))
	}
}

// writeTargets checks the figures against point 5 of issue #4 (fsync on, 2 cores, load generator
// on the same machine).
func writeTargets(w io.Writer, results map[string]map[string]*result) {
	type target struct {
		what     string
		scenario string
		check    func(t, b *result) (measured string, met bool, ok bool)
	}
	targets := []target{
		{"single events at 50 connections: ≥ 0.5 × bare Echo requests/s", "single-c50", func(t, b *result) (string, bool, bool) {
			if b == nil {
				return "", false, false
			}
			ratio := t.perSecond(t.requests) / b.perSecond(b.requests)
			return fmt.Sprintf("%.2f × (%s vs %s req/s)", ratio, fmtCount(t.perSecond(t.requests)), fmtCount(b.perSecond(b.requests))), ratio >= 0.5, true
		}},
		{"single events at 50 connections: p99 ≤ 10 ms", "single-c50", func(t, _ *result) (string, bool, bool) {
			return fmtDuration(t.percentile(99)), t.percentile(99) <= 10*time.Millisecond, true
		}},
		{"one connection: p50 ≤ 2 ms", "single-c1", func(t, _ *result) (string, bool, bool) {
			return fmtDuration(t.percentile(50)), t.percentile(50) <= 2*time.Millisecond, true
		}},
		{"100-event batches at 20 connections: ≥ 150 000 events/s", "batch100-c20", func(t, _ *result) (string, bool, bool) {
			eps := t.perSecond(t.events)
			return fmtCount(eps) + " events/s", eps >= 150000, true
		}},
		{"256 concurrent 500 KB batches: peak RSS ≤ 300 MB", "burst500k-c256", func(t, _ *result) (string, bool, bool) {
			return fmt.Sprintf("%.1f MB", float64(t.peakRSS)/1e6), t.peakRSS <= 300e6, true
		}},
		{"256 concurrent 500 KB batches: no 5xx but counted 503s (and every request answered)", "burst500k-c256", func(t, _ *result) (string, bool, bool) {
			return fmt.Sprintf("%d × 503, %d other 5xx, %d other statuses, %d without answer", t.status503, t.other5xx, t.otherCode, t.netErrors),
				t.other5xx == 0 && t.otherCode == 0 && t.netErrors == 0, true
		}},
	}
	fmt.Fprintf(w, "### Targets (issue #4, point 5)\n\n| target | measured | |\n|---|---|---|\n")
	for _, tg := range targets {
		t := results[tg.scenario][kindTrackapi]
		if t == nil {
			fmt.Fprintf(w, "| %s | not run | |\n", tg.what)
			continue
		}
		measured, met, ok := tg.check(t, results[tg.scenario][kindBare])
		switch {
		case !ok:
			fmt.Fprintf(w, "| %s | needs the bare server | |\n", tg.what)
		case met:
			fmt.Fprintf(w, "| %s | %s | met |\n", tg.what, measured)
		default:
			fmt.Fprintf(w, "| %s | %s | **missed** |\n", tg.what, measured)
		}
	}
}

// revision says which commit the binary was built from: from its embedded build information,
// or, when it has none (GOFLAGS=-buildvcs=false), from the source tree it is run in.
func revision(binary string) string {
	rev, modified := "", false
	if info, err := buildinfo.ReadFile(binary); err == nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = "commit " + s.Value[:min(12, len(s.Value))]
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if rev == "" {
		out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
		if err != nil {
			return "commit unknown"
		}
		rev = "source tree at commit " + strings.TrimSpace(string(out))
		status, err := exec.Command("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no").Output()
		modified = err != nil || len(status) > 0
	}
	if modified {
		rev += " with uncommitted changes"
	}
	return rev
}

// commandLine is how this run was started, written so that it can be run again: under `go run`
// the program's own path is a temporary file.
func commandLine() string {
	name := os.Args[0]
	if strings.Contains(name, "go-build") {
		name = "go run ./bench"
	}
	return strings.Join(append([]string{name}, os.Args[1:]...), " ")
}

func kindTitle(k string) string {
	if k == kindBare {
		return "bare Echo"
	}
	return k
}

// fmtCount prints a rate with thousands separated by spaces, as the issue writes them.
func fmtCount(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtDuration prints a duration in µs below a millisecond and in ms above.
func fmtDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
