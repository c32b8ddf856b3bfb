package main_test

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// firstAdminToken is the write token a server's first start prints on stdout.
func firstAdminToken(t *testing.T, p *process) string {
	t.Helper()
	m := regexp.MustCompile(`tka_[A-Za-z0-9_-]{43}`).FindString(p.stdout.String())
	if m == "" {
		t.Fatalf("no admin token in the first start's output:\n%s", p.stdout)
	}
	return m
}

// remote runs commands against p's config API with an admin token in the environment.
type remote struct {
	t     *testing.T
	p     *process
	token string
}

// run returns the output and exit code of a command sent to the server.
func (r remote) run(args ...string) (stdout, stderr string, code int) {
	r.t.Helper()
	return runCLIEnv(r.t, []string{"TRACKAPI_SERVER=" + r.p.AdminURL, "TRACKAPI_ADMIN_TOKEN=" + r.token}, args...)
}

// ok runs a command that must succeed and returns its stdout and stderr.
func (r remote) ok(args ...string) (stdout, stderr string) {
	r.t.Helper()
	stdout, stderr, code := r.run(args...)
	if code != 0 {
		r.t.Fatalf("trackapi %s (remote): exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout, stderr
}

// rowOf returns the columns of the line of a listing whose first column is id.
func rowOf(t *testing.T, listing, id string) []string {
	t.Helper()
	for _, line := range strings.Split(listing, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == id {
			return f
		}
	}
	t.Fatalf("no row %s in:\n%s", id, listing)
	return nil
}

// Every config command through the config API of a running server, with the token of its first
// start: changes apply at once (keys) or within the engine's second (destinations), API errors
// come out as the API's message with the right exit code, and the output matches the database
// path's.
func TestRemoteCommands(t *testing.T) {
	data := t.TempDir()
	p := startServerWith(t, data, append([]string{"--addr", "127.0.0.1:0"}, fastDelivery...)...)
	r := remote{t: t, p: p, token: firstAdminToken(t, p)}
	n := 0

	// A source made through the API works at once: the server's own cache knows it.
	key, _ := r.ok("sources", "create", "--site", "42", "--name", "shop")
	key = strings.TrimSpace(key)
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(key) {
		t.Fatalf("sources create printed %q, want the key alone", key)
	}
	if !works(t, p.URL, "42", key, &n) {
		t.Fatal("a source created through the config API does not work at once")
	}
	list, _ := r.ok("sources", "list")
	if row := rowOf(t, list, "2"); len(row) < 6 || row[1] != "42" || row[2] != "shop" || row[3] != "true" || row[5] != key[:8] {
		t.Fatalf("sources list:\n%s", list)
	}

	// Destinations: a webhook that refuses everything, so that events become dead letters.
	hook := newReceiver(t)
	refuse := func(int, []string) (int, string) { return http.StatusBadRequest, "" }
	accept := func(int, []string) (int, string) { return http.StatusOK, "" }
	hook.setAnswer(refuse)
	stdout, stderr := r.ok("destinations", "create", "--name", "hook", "--type", "webhook", "--url", hook.srv.URL+"/in?sig=1",
		"--allow-private", "--source", "2")
	id := strings.TrimSpace(stdout)
	secret := regexp.MustCompile(`^signing secret of destination (\d+) \(shown only this once\): (whsec_\S+)\n$`).FindStringSubmatch(stderr)
	if !regexp.MustCompile(`^\d+$`).MatchString(id) || secret == nil || secret[1] != id {
		t.Fatalf("destinations create: stdout %q, stderr %q", stdout, stderr)
	}
	hook.setSecrets(secret[2])
	collectOne(t, p.URL, "42", key, "dl-1")
	collectOne(t, p.URL, "42", key, "dl-2")
	var letters string
	eventually(t, 10*time.Second, "refused events become dead letters", func() bool {
		letters, _ = r.ok("dead-letters", "list", "--destination", id)
		return strings.Count(letters, "http_400") == 2
	})
	if !strings.HasPrefix(letters, "SEQ") || strings.Count(letters, "rejected") != 2 {
		t.Fatalf("dead-letters list:\n%s", letters)
	}
	dests, _ := r.ok("destinations", "list")
	if row := rowOf(t, dests, id); len(row) != 9 || row[2] != "webhook" || row[3] != "active" || row[7] != "2" || row[8] != hook.srv.URL+"/in" {
		t.Fatalf("destinations list (want 2 dead letters, the URL without its query):\n%s", dests)
	}

	// The output is the same through the API and through the database (the server's own
	// directory, which the database path reads beside it).
	for _, args := range [][]string{
		{"sources", "list"},
		{"sources", "keys", "1"}, // never used: no last-used time that a flush could change between the calls
		{"destinations", "list"},
		{"dead-letters", "list", "--destination", id},
	} {
		viaAPI, _ := r.ok(args...)
		viaDB := cli(t, append(args, "--data", data)...)
		if viaAPI != viaDB {
			t.Errorf("trackapi %s: the config API and the database give different output:\n%s\n%s", strings.Join(args, " "), viaAPI, viaDB)
		}
	}

	// Replay delivers them once the receiver takes them; purge drops them without sending.
	hook.setAnswer(accept)
	if out, _ := r.ok("dead-letters", "replay", "--destination", id); out != "2 dead letters queued for delivery again\n" {
		t.Fatalf("dead-letters replay printed %q", out)
	}
	eventually(t, 10*time.Second, "replayed dead letters are delivered", func() bool {
		got := hook.accepted()
		return got["2:dl-1"] == 1 && got["2:dl-2"] == 1
	})
	hook.setAnswer(refuse)
	collectOne(t, p.URL, "42", key, "dl-3")
	eventually(t, 10*time.Second, "a third dead letter", func() bool {
		letters, _ = r.ok("dead-letters", "list", "--destination", id)
		return strings.Contains(letters, "http_400")
	})
	if out, _ := r.ok("dead-letters", "purge", "--destination", id, "--reason", "http_400"); out != "1 dead letters purged\n" {
		t.Fatalf("dead-letters purge printed %q", out)
	}
	if letters, _ = r.ok("dead-letters", "list", "--destination", id); strings.Count(letters, "\n") != 1 {
		t.Fatalf("dead letters left after purge:\n%s", letters)
	}

	// Pause holds events back; resume delivers them. The engine applies a change within a second.
	hook.setAnswer(accept)
	r.ok("destinations", "pause", id)
	if dests, _ = r.ok("destinations", "list"); rowOf(t, dests, id)[3] != "paused" {
		t.Fatalf("after pause:\n%s", dests)
	}
	time.Sleep(2 * time.Second)
	collectOne(t, p.URL, "42", key, "while-paused")
	time.Sleep(2 * time.Second)
	if hook.accepted()["2:while-paused"] != 0 {
		t.Fatal("a paused destination got an event")
	}
	r.ok("destinations", "resume", id)
	eventually(t, 10*time.Second, "a resumed destination gets what waited", func() bool { return hook.accepted()["2:while-paused"] == 1 })

	// rotate-secret: the new secret alone on stderr, and with no overlap it alone signs.
	stdout, stderr = r.ok("destinations", "rotate-secret", id, "--expire-previous-in", "0")
	rotated := regexp.MustCompile(`^new signing secret of destination ` + id + ` \(shown only this once\): (whsec_\S+)\n$`).FindStringSubmatch(stderr)
	if stdout != "" || rotated == nil || rotated[1] == secret[2] {
		t.Fatalf("rotate-secret: stdout %q, stderr %q", stdout, stderr)
	}
	hook.setSecrets(rotated[1])
	time.Sleep(2 * time.Second)
	collectOne(t, p.URL, "42", key, "after-rotation")
	eventually(t, 10*time.Second, "an event signed with the new secret", func() bool { return hook.accepted()["2:after-rotation"] == 1 })

	// delete, then a 404 with the API's message and exit 1.
	r.ok("destinations", "delete", id)
	if dests, _ = r.ok("destinations", "list"); regexp.MustCompile(`(?m)^` + id + `\s`).MatchString(dests) {
		t.Fatalf("a deleted destination is listed:\n%s", dests)
	}
	if _, stderr, code := r.run("destinations", "delete", id); code != 1 || !strings.HasPrefix(stderr, "trackapi: ") || !strings.Contains(stderr, "(not_found)") {
		t.Fatalf("deleting it again: exit %d, %q", code, stderr)
	}

	// Keys: a rotation with no overlap works at once and stops the previous key; keys lists
	// prefixes; a revoked key stops within 2 s.
	rotatedKey, _ := r.ok("sources", "rotate-key", "2", "--expire-previous-in", "0")
	rotatedKey = strings.TrimSpace(rotatedKey)
	if !works(t, p.URL, "42", rotatedKey, &n) {
		t.Fatal("the rotated-to key does not work at once")
	}
	eventually(t, 2500*time.Millisecond, "the previous key stops", func() bool { return !works(t, p.URL, "42", key, &n) })
	keys, _ := r.ok("sources", "keys", "2")
	live := regexp.MustCompile(`(?m)^(\d+)\s+` + rotatedKey[:8] + `\s+true`).FindStringSubmatch(keys)
	if live == nil || !regexp.MustCompile(`(?m)^\d+\s+`+key[:8]+`\s+false`).MatchString(keys) || strings.Contains(keys, rotatedKey) ||
		strings.Index(keys, key[:8]) > strings.Index(keys, rotatedKey[:8]) { // oldest first, as the database lists them
		t.Fatalf("sources keys:\n%s", keys)
	}
	r.ok("sources", "revoke-key", "2", live[1])
	took := eventually(t, 2500*time.Millisecond, "a revoked key stops", func() bool { return !works(t, p.URL, "42", rotatedKey, &n) })
	t.Logf("a key revoked through the config API stopped working %s after the command", took.Round(10*time.Millisecond))

	// rename, deactivate (the key stops within 2 s) and activate (it works again).
	third, _ := r.ok("sources", "rotate-key", "2")
	third = strings.TrimSpace(third)
	r.ok("sources", "rename", "2", "web-shop")
	r.ok("sources", "deactivate", "2")
	if list, _ = r.ok("sources", "list"); rowOf(t, list, "2")[2] != "web-shop" || rowOf(t, list, "2")[3] != "false" {
		t.Fatalf("after rename and deactivate:\n%s", list)
	}
	eventually(t, 2500*time.Millisecond, "a deactivated source's key stops", func() bool { return !works(t, p.URL, "42", third, &n) })
	r.ok("sources", "activate", "2")
	eventually(t, 2500*time.Millisecond, "a reactivated source's key works", func() bool { return works(t, p.URL, "42", third, &n) })

	// A read token may list but not change: exit 1 with the 403 and what it takes.
	read := remote{t: t, p: p, token: createToken(t, data, "--scope", "read", "--name", "viewer")}
	read.ok("sources", "list")
	if stdout, stderr, code := read.run("sources", "create", "--site", "7", "--name", "nope"); code != 1 || stdout != "" ||
		!strings.Contains(stderr, "403") || !strings.Contains(stderr, "(forbidden)") || !strings.Contains(stderr, "scope write") {
		t.Fatalf("sources create with a read token: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// An unknown token: exit 1 with the 401.
	bogus := remote{t: t, p: p, token: "tka_" + strings.Repeat("A", 43)}
	if _, stderr, code := bogus.run("sources", "list"); code != 1 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "(unauthorized)") {
		t.Fatalf("an unknown token: exit %d, %q", code, stderr)
	}

	// The token from a file, with none in the environment.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(r.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, _ = r.ok("sources", "list")
	if out, stderr, code := runCLI(t, "sources", "list", "--server", p.AdminURL, "--admin-token-file", tokenFile); code != 0 || out != list {
		t.Fatalf("--admin-token-file: exit %d, %q\n%s", code, stderr, out)
	}

	// Usage errors: --server with --data, --server without a token.
	if _, stderr, code := r.run("sources", "list", "--data", data); code != 2 || !strings.Contains(stderr, "--data") {
		t.Errorf("--server and --data: exit %d, %q", code, stderr)
	}
	if _, stderr, code := runCLI(t, "sources", "list", "--server", p.AdminURL); code != 2 || !strings.Contains(stderr, "admin-tokens create") {
		t.Errorf("--server without a token: exit %d, %q", code, stderr)
	}
	// What the API refuses as a bad request is a usage error, as on the database path.
	bad := []string{"destinations", "create", "--name", "bad", "--type", "webhook"}
	_, viaAPI, apiCode := r.run(bad...)
	_, viaDB, dbCode := runCLI(t, append(bad, "--data", data)...)
	if apiCode != 2 || dbCode != 2 || !strings.Contains(viaAPI, "needs a url") || !strings.Contains(viaDB, "needs a url") {
		t.Errorf("a webhook without a url: exit %d %q through the API, exit %d %q through the database", apiCode, viaAPI, dbCode, viaDB)
	}
}
