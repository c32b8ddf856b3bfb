package main_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/sqlite"
)

// createToken runs `admin-tokens create` and returns the token, checking that stdout is the token
// alone on one line and that stderr does not show it.
func createToken(t *testing.T, data string, args ...string) string {
	t.Helper()
	stdout, stderr, code := runCLI(t, append([]string{"admin-tokens", "create", "--data", data}, args...)...)
	if code != 0 {
		t.Fatalf("admin-tokens create %v: exit %d\n%s", args, code, stderr)
	}
	if !regexp.MustCompile(`^tka_[A-Za-z0-9_-]{43}\n$`).MatchString(stdout) {
		t.Fatalf("admin-tokens create printed %q, want the token alone on one line", stdout)
	}
	token := strings.TrimSuffix(stdout, "\n")
	if strings.Contains(stderr, token) {
		t.Fatalf("the token appears on stderr: %s", stderr)
	}
	if !strings.Contains(stderr, token[:12]) {
		t.Errorf("stderr does not name the new token by its prefix: %q", stderr)
	}
	return token
}

// authenticate checks token the way a server on data would, from a fresh service (as another
// process does after its 2 s reload).
func authenticate(t *testing.T, data, token string) (trackapi.AdminToken, error) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(data, "trackapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc := admintokens.New(db, admintokens.Options{Logger: slog.New(slog.DiscardHandler)})
	defer svc.Close(context.Background())
	return svc.Authenticate(context.Background(), token)
}

// listRow finds the row of token id in `admin-tokens list` output: name, scope, prefix, status,
// created, expires, last used.
func listRow(t *testing.T, list string, id string) []string {
	t.Helper()
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) == 8 && f[0] == id {
			return f[1:]
		}
	}
	t.Fatalf("no row for token %s in:\n%s", id, list)
	return nil
}

// admin-tokens create, list and revoke with the real binary: create prints the token alone, the
// token works and has its scope, the listing never shows it, the database holds only its hash,
// and a revoked token stops working.
func TestAdminTokensCommands(t *testing.T) {
	data := t.TempDir()
	before := time.Now().Add(-time.Second)
	write := createToken(t, data, "--scope", "write", "--name", "ci")
	read := createToken(t, data) // the defaults: read, 90 days, named admin
	forever := createToken(t, data, "--name", "dashboard", "--expires", "0")
	if write == read || read == forever {
		t.Fatal("two tokens are the same")
	}
	list := cli(t, "admin-tokens", "list", "--data", data)
	for _, token := range []string{write, read, forever} {
		if strings.Contains(list, token) || strings.Contains(list, token[12:20]) {
			t.Fatalf("admin-tokens list shows more of a token than its prefix:\n%s", list)
		}
	}
	if !strings.HasPrefix(list, "ID") || !strings.Contains(list, "LAST USED") {
		t.Errorf("no header in:\n%s", list)
	}
	for id, want := range map[string][]string{
		"1": {"ci", "write", write[:12], "live"},
		"2": {"admin", "read", read[:12], "live"},
		"3": {"dashboard", "read", forever[:12], "live"},
	} {
		if row := listRow(t, list, id); !slices.Equal(row[:4], want) {
			t.Errorf("token %s listed as %v, want %v", id, row, want)
		}
	}
	// The default expiry is 90 days after creation; --expires 0 never expires.
	row := listRow(t, list, "2")
	created, err1 := time.Parse(time.RFC3339, row[4])
	expires, err2 := time.Parse(time.RFC3339, row[5])
	if err1 != nil || err2 != nil || created.Before(before.Truncate(time.Second)) || expires.Sub(created) != 90*24*time.Hour {
		t.Errorf("default token created %s, expires %s; want it to expire 90 days after creation", row[4], row[5])
	}
	if row := listRow(t, list, "3"); row[5] != "never" || row[6] != "-" {
		t.Errorf("--expires 0 token: expires %s, last used %s; want never, - (not used yet)", row[5], row[6])
	}

	// Each token works, with its scope, and its use shows in the listing.
	for token, scope := range map[string]trackapi.AdminScope{write: trackapi.ScopeWrite, read: trackapi.ScopeRead, forever: trackapi.ScopeRead} {
		got, err := authenticate(t, data, token)
		if err != nil || got.Scope != scope {
			t.Fatalf("token %s: %+v, %v; want a live %s token", token[:12], got, err, scope)
		}
	}
	list = cli(t, "admin-tokens", "list", "--data", data)
	for _, id := range []string{"1", "2", "3"} {
		if used, err := time.Parse(time.RFC3339, listRow(t, list, id)[6]); err != nil || used.Before(before.Truncate(time.Second)) {
			t.Errorf("token %s after a use: last used %v (%v)", id, used, err)
		}
	}

	// Hashed at rest: no file of the data directory holds a token.
	files, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(data, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, token := range []string{write, read, forever} {
			if strings.Contains(string(b), token) || strings.Contains(string(b), token[12:]) {
				t.Fatalf("%s holds a token in clear", f.Name())
			}
		}
	}

	// Revoke the write token: it stops working, the others do not, and it stays listed.
	if _, stderr, code := runCLI(t, "admin-tokens", "revoke", "--data", data, "1"); code != 0 {
		t.Fatalf("revoke: exit %d\n%s", code, stderr)
	}
	if _, err := authenticate(t, data, write); !errors.Is(err, admintokens.ErrRevoked) {
		t.Fatalf("the revoked token: %v, want ErrRevoked", err)
	}
	if _, err := authenticate(t, data, read); err != nil {
		t.Fatalf("another token after the revocation: %v", err)
	}
	if row := listRow(t, cli(t, "admin-tokens", "list", "--data", data), "1"); row[3] != "revoked" {
		t.Errorf("the revoked token is listed as %v", row)
	}
	if _, stderr, code := runCLI(t, "admin-tokens", "revoke", "--data", data, "1"); code != 0 {
		t.Errorf("revoking twice: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runCLI(t, "admin-tokens", "revoke", "--data", data, "99"); code != 1 || !strings.Contains(stderr, "no such token") {
		t.Errorf("revoking an unknown id: exit %d, stderr %q; want 1 and a clear message", code, stderr)
	}
}

// Usage errors exit 2 and make nothing: a scope that is not read or write, a negative or garbled
// expiry, an empty name, a missing id.
func TestAdminTokensUsageErrors(t *testing.T) {
	data := t.TempDir()
	createToken(t, data)
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"create", "--scope", "admin"}, "--scope"},
		{[]string{"create", "--scope", "Write"}, "--scope"},
		{[]string{"create", "--expires=-1d"}, "--expires"},
		{[]string{"create", "--expires", "soon"}, "--expires"},
		{[]string{"create", "--name", ""}, "name"},
		{[]string{"create", "--name", "two\nlines"}, "name"},
		{[]string{"revoke"}, "<id>"},
		{[]string{"revoke", "one"}, "id"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, append(append([]string{"admin-tokens"}, tt.args...), "--data", data)...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %s", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.says) {
				t.Errorf("stderr does not mention %s: %s", tt.says, stderr)
			}
		})
	}
	list := cli(t, "admin-tokens", "list", "--data", data)
	if n := len(strings.Split(strings.TrimSpace(list), "\n")); n != 2 {
		t.Errorf("after usage errors, the listing has %d lines, want the header and the one token:\n%s", n, list)
	}
}

// list and revoke refuse a data directory without a database, and create none; create makes the
// directory and database, like sources create.
func TestAdminTokensNeedAnExistingDatabase(t *testing.T) {
	for _, args := range [][]string{{"admin-tokens", "list"}, {"admin-tokens", "revoke", "1"}} {
		dir := filepath.Join(t.TempDir(), "typo")
		_, stderr, code := runCLI(t, append(args, "--data", dir)...)
		if code != 1 || !strings.Contains(stderr, "no trackapi database in "+dir) {
			t.Errorf("%v on a missing directory: exit %d, stderr %q", args, code, stderr)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v created %s", args, dir)
		}
	}
	dir := filepath.Join(t.TempDir(), "new")
	token := createToken(t, dir)
	if _, err := authenticate(t, dir, token); err != nil {
		t.Fatalf("a token made in a new directory: %v", err)
	}
}

// The help of admin-tokens states the contract: the header, the scopes, the format, hashing and
// expiry.
func TestAdminTokensHelp(t *testing.T) {
	stdout, stderr, code := runCLI(t, "admin-tokens", "--help")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	help := strings.Join(strings.Fields(stdout), " ")
	for _, want := range []string{"Authorization: Bearer <token>", "Never put a token in a URL", "write implies read",
		"tka_", "SHA-256", "90 days", "0 means never", "revoked"} {
		if !strings.Contains(help, want) {
			t.Errorf("admin-tokens --help does not say %q:\n%s", want, stdout)
		}
	}
	for _, sub := range []string{"create", "list", "revoke"} {
		if stdout, _, code := runCLI(t, "admin-tokens", sub, "--help"); code != 0 || !strings.Contains(stdout, "Usage: trackapi admin-tokens "+sub) {
			t.Errorf("admin-tokens %s --help: exit %d\n%s", sub, code, stdout)
		}
	}
}
