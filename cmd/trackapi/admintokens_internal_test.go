package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/sqlite"
)

// newTokenService is an admin token service over a new SQLite store in a temporary directory.
func newTokenService(t *testing.T) *admintokens.Service {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), dbFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return admintokens.New(db, admintokens.Options{Logger: slog.New(slog.DiscardHandler)})
}

var printedToken = regexp.MustCompile(`tka_[A-Za-z0-9_-]{43}`)

// The first start prints a write token once, with the web UI's address and a curl command for
// the config API that carries it in the Authorization header; a later start prints nothing.
func TestCreateFirstAdminToken(t *testing.T) {
	ctx := context.Background()
	svc := newTokenService(t)
	var out bytes.Buffer
	if err := createFirstAdminToken(ctx, svc, "http://127.0.0.1:8081/ui/", &out); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	tokens := printedToken.FindAllString(printed, -1)
	if len(tokens) != 2 || tokens[0] != tokens[1] {
		t.Fatalf("want the token twice (alone, and in the curl command), got %q in:\n%s", tokens, printed)
	}
	token := tokens[0]
	if !regexp.MustCompile(`(?m)^  ` + token + `$`).MatchString(printed) {
		t.Errorf("the token is not alone on its line:\n%s", printed)
	}
	if !strings.Contains(printed, "http://127.0.0.1:8081/ui/") {
		t.Errorf("no web UI address in:\n%s", printed)
	}
	curl := regexp.MustCompile(`curl -sS 'http://127\.0\.0\.1:8081/api/sources' \\\n\s+-H 'Authorization: Bearer ` + token + `'`)
	if !curl.MatchString(printed) {
		t.Errorf("no curl command for /api/sources with the Bearer header in:\n%s", printed)
	}
	if strings.Contains(printed, "?") || strings.Contains(printed, "token="+token) {
		t.Errorf("the token is put in a URL:\n%s", printed)
	}
	// The printed token is a live write token named "first", expiring in 90 days.
	got, err := svc.Authenticate(ctx, token)
	if err != nil {
		t.Fatalf("the printed token: %v", err)
	}
	if got.Name != "first" || !admintokens.Allows(got, trackapi.ScopeWrite) {
		t.Errorf("the first token = %+v, want a write token named first", got)
	}
	if ttl := got.ExpiresAt.Sub(got.CreatedAt); ttl != admintokens.DefaultTTL {
		t.Errorf("the first token works for %s, want %s", ttl, admintokens.DefaultTTL)
	}

	// A second start: a live token exists, nothing is made or printed.
	out.Reset()
	if err := createFirstAdminToken(ctx, svc, "http://127.0.0.1:8081/ui/", &out); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("the second call printed:\n%s", out.String())
	}
	if list, err := svc.List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("after two calls: %d tokens, %v; want 1", len(list), err)
	}

	// With every token revoked nobody could use the config API: the next start makes another.
	if err := svc.Revoke(ctx, got.ID); err != nil {
		t.Fatal(err)
	}
	if err := createFirstAdminToken(ctx, svc, "http://127.0.0.1:8081/ui/", &out); err != nil {
		t.Fatal(err)
	}
	if again := printedToken.FindString(out.String()); again == "" || again == token {
		t.Errorf("after revoking the only token: printed %q, want a new token", again)
	}
}

// The config API is found beside the web UI; a UI address that is not an absolute http(s) URL is
// an error, and then no token is made (it would be shown to nobody).
func TestCreateFirstAdminTokenURLs(t *testing.T) {
	for ui, want := range map[string]string{
		"http://127.0.0.1:8081/ui/":           "http://127.0.0.1:8081/api/sources",
		"http://127.0.0.1:8081/ui":            "http://127.0.0.1:8081/api/sources",
		"http://localhost:8081/":              "http://localhost:8081/api/sources",
		"http://localhost:8081":               "http://localhost:8081/api/sources",
		"https://ops.example/trackapi/ui/":    "https://ops.example/trackapi/api/sources",
		"http://[::1]:8081/ui/?tab=sources#x": "http://[::1]:8081/api/sources",
	} {
		got, err := adminAPIURL(ui, "sources")
		if err != nil || got != want {
			t.Errorf("UI %s: API %q, %v; want %q", ui, got, err, want)
		}
	}
	ctx := context.Background()
	svc := newTokenService(t)
	for _, bad := range []string{"", "127.0.0.1:8081/ui/", "/ui/", "ftp://h/ui/", "http:///ui/", "http://h/%zz"} {
		var out bytes.Buffer
		if err := createFirstAdminToken(ctx, svc, bad, &out); err == nil {
			t.Errorf("UI address %q accepted", bad)
		}
		if out.Len() != 0 {
			t.Errorf("UI address %q: printed %s", bad, out.String())
		}
	}
	if live, err := svc.HasLive(ctx); err != nil || live {
		t.Errorf("a token was made for a bad UI address (%v)", err)
	}
}
