package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
)

// collectOne posts one event with site and key and returns the 200's result.
func collectOne(t *testing.T, baseURL, site, key, id string) gen.CollectResult {
	t.Helper()
	body := fmt.Sprintf(`{"event_name":"x","context":{"event_id":%q}}`, id)
	resp, err := apitest.Client(t).Post(baseURL+"/events?tc_s="+site+"&token="+key, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var r gen.CollectResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// works reports whether a key is accepted: one accepted event, or one invalid_source rejection.
func works(t *testing.T, baseURL, site, key string, n *int) bool {
	t.Helper()
	*n++
	r := collectOne(t, baseURL, site, key, fmt.Sprintf("probe-%d-%d", time.Now().UnixNano(), *n))
	switch {
	case r.Accepted == 1:
		return true
	case r.Rejected == 1 && r.Errors[0].Code == gen.InvalidSource:
		return false
	}
	t.Fatalf("neither accepted nor invalid_source: %+v", r)
	return false
}

// eventually polls cond every 100 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// Rotation, expiry and revocation through the CLI while the real server runs on the same
// directory: the new key works at once, the previous one until its overlap ends, a revoked one
// stops within 2 s.
func TestKeyRotationExpiryAndRevocation(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	old := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "42", "--name", "shop"))
	n := 0
	if !works(t, p.URL, "42", old, &n) {
		t.Fatal("a new source's key does not work")
	}

	// Rotate with a 3 s overlap: both keys work, then only the new one. The overlap counts from
	// the command's clock, which reads after rotatedAt.
	rotatedAt := time.Now()
	rotated := strings.TrimSpace(cli(t, "sources", "rotate-key", "--data", data, "2", "--expire-previous-in", "3s"))
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(rotated) || rotated == old {
		t.Fatalf("rotate-key printed %q, want a new key alone", rotated)
	}
	if !works(t, p.URL, "42", rotated, &n) {
		t.Fatal("the rotated-to key does not work at once")
	}
	if time.Since(rotatedAt) < 2*time.Second && !works(t, p.URL, "42", old, &n) {
		t.Fatal("the previous key stopped during its overlap")
	}
	eventually(t, 10*time.Second, "the previous key expires", func() bool { return !works(t, p.URL, "42", old, &n) })
	if since := time.Since(rotatedAt); since < 3*time.Second {
		t.Errorf("the previous key stopped after %s, before its 3 s overlap", since)
	}
	if !works(t, p.URL, "42", rotated, &n) {
		t.Fatal("the new key stopped with the old one")
	}

	// The key listing shows prefixes, never keys, and which are live.
	keys := cli(t, "sources", "keys", "--data", data, "2")
	if strings.Contains(keys, old) || strings.Contains(keys, rotated) {
		t.Fatalf("sources keys shows a whole key:\n%s", keys)
	}
	live := regexp.MustCompile(`(?m)^(\d+)\s+` + rotated[:8] + `\s+true`).FindStringSubmatch(keys)
	if live == nil || !regexp.MustCompile(`(?m)^\d+\s+`+old[:8]+`\s+false`).MatchString(keys) {
		t.Fatalf("sources keys:\n%s", keys)
	}

	// Revoke the live key: it stops within 2 s (the server's reload), without a restart.
	cli(t, "sources", "revoke-key", "--data", data, "2", live[1])
	took := eventually(t, 5*time.Second, "a revoked key stops", func() bool { return !works(t, p.URL, "42", rotated, &n) })
	t.Logf("the revoked key stopped working %s after the command", took.Round(10*time.Millisecond))
	if took > 2500*time.Millisecond {
		t.Errorf("a revoked key worked for %s, more than the promised 2 s", took)
	}

	// Rotating with no overlap stops the previous key within 2 s too.
	third := strings.TrimSpace(cli(t, "sources", "rotate-key", "--data", data, "1", "--expire-previous-in", "0"))
	if !works(t, p.URL, "1", third, &n) {
		t.Fatal("rotate-key on the first source")
	}
}

// A flood of requests with one bad key costs one store lookup, as /metrics shows; the bad key
// keeps being refused and a good key keeps working.
func TestUnknownKeysCostOneLookup(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	good := strings.TrimSpace(cli(t, "sources", "create", "--data", data, "--site", "42", "--name", "shop"))
	n := 0
	for range 300 {
		if works(t, p.URL, "42", "0b5d3c1a-0000-4000-8000-000000000000", &n) {
			t.Fatal("a bad key was accepted")
		}
	}
	if !works(t, p.URL, "42", good, &n) {
		t.Fatal("the good key")
	}
	metrics := get(t, p.AdminURL+"/metrics")
	lookups := metricValue(t, metrics, `trackapi_source_key_lookups_total{found="false"}`)
	refused := metricValue(t, metrics, `trackapi_source_authentications_total{result="unknown_key"}`)
	t.Logf("300 requests with one bad key: %v refused, %v store lookups", refused, lookups)
	if refused != 300 {
		t.Errorf("%v unknown_key authentications, want 300", refused)
	}
	// One lookup, plus one for each time the negative entry's 2 s ran out during the flood.
	if lookups < 1 || lookups > 5 {
		t.Errorf("%v store lookups of the unknown key, want 1 to 5", lookups)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue finds one series' value in a Prometheus text page (0 when absent).
func metricValue(t *testing.T, page, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// runCLI runs trackapi and returns its output and exit code, without failing on a non-zero exit.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv is runCLI with more environment variables ("NAME=value").
func runCLIEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// Read-only commands never create a data directory or a database: a wrong --data is an error
// with a clear message and a non-zero exit.
func TestReadOnlyCommandsNeedAnExistingDatabase(t *testing.T) {
	for _, args := range [][]string{
		{"sources", "list"},
		{"events", "export"},
		{"sources", "keys", "1"},
		{"sources", "deactivate", "1"},
		{"sources", "rotate-key", "1"},
		{"sources", "revoke-key", "1", "1"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "typo")
			_, stderr, code := runCLI(t, append(args, "--data", dir)...)
			if code == 0 {
				t.Fatal("exit 0 for a data directory that does not exist")
			}
			if !strings.Contains(stderr, "no trackapi database in "+dir) {
				t.Errorf("stderr %q does not say what is wrong", stderr)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the command created %s", dir)
			}
		})
	}
	// An existing directory without a database is no better.
	dir := t.TempDir()
	if _, _, code := runCLI(t, "sources", "list", "--data", dir); code == 0 {
		t.Error("sources list on an empty directory exited 0")
	}
	if _, err := os.Stat(filepath.Join(dir, "trackapi.db")); !errors.Is(err, os.ErrNotExist) {
		t.Error("sources list created a database")
	}
}

// --help on every command prints that command's usage on stdout and exits 0; no command at all
// prints the usage and exits 2.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"},
		{"serve", "--help"},
		{"sources", "--help"},
		{"sources", "create", "--help"},
		{"sources", "list", "--help"},
		{"sources", "rotate-key", "--help"},
		{"sources", "revoke-key", "--help"},
		{"sources", "rename", "--help"},
		{"sources", "activate", "--help"},
		{"dead-letters", "purge", "--help"},
		{"events", "export", "--help"},
		{"send", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, args...)
			if code != 0 {
				t.Fatalf("exit %d; stderr %s", code, stderr)
			}
			want := "Usage: trackapi " + strings.Join(args[:len(args)-1], " ")
			if !strings.Contains(stdout+stderr, strings.TrimSpace(want)) {
				t.Errorf("no %q in:\n%s%s", want, stdout, stderr)
			}
		})
	}
	if _, _, code := runCLI(t); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	if _, stderr, code := runCLI(t, "sources", "create", "--data", t.TempDir()); code != 2 || !strings.Contains(stderr, "--site") {
		t.Errorf("a missing required flag: exit %d, stderr %q", code, stderr)
	}
}
