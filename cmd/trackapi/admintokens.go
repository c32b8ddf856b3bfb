package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/sqlite"
)

// adminTokensCmd groups the commands on admin tokens, which authenticate callers of the config
// API. They work beside a running server on the same directory: a new token works at once, a
// revoked one stops within 2 s.
type adminTokensCmd struct {
	Create adminTokensCreateCmd `cmd:"" help:"Make a token; prints it alone on a line (shown only this once)."`
	List   adminTokensListCmd   `cmd:"" help:"List tokens: id, name, scope, prefix, status, created, expires, last used. Never the tokens."`
	Revoke adminTokensRevokeCmd `cmd:"" help:"Make a token stop working for good (running servers: within 2 s)."`
}

// Help is the contract of admin tokens, shown by `trackapi admin-tokens --help`.
func (adminTokensCmd) Help() string {
	return `An admin token authenticates a caller of the config API (and its web UI) in the
Authorization header: "Authorization: Bearer <token>". Never put a token in a URL.

Scopes: "read" may look at the configuration; "write" may also change it (write implies read).

A token is "tka_" and 43 base64url characters (32 random bytes). It is printed once, when it is
made, and stored only as its SHA-256 hash with its first 12 characters (the prefix, such as
tka_AbCdEfGh) kept to tell tokens apart; no log holds a token. It expires after --expires (90
days unless told; 0 means never) and can be revoked; a revoked token stays listed. Its last use
is recorded at most once a minute.`
}

type adminTokensCreateCmd struct {
	dataFlag
	Scope   string `enum:"read,write" default:"read" help:"read: may look at the configuration; write: may also change it (write implies read)."`
	Expires days   `default:"90d" placeholder:"DURATION" help:"How long the token works: 90d (the default), 12h...; 0 means until revoked."`
	Name    string `default:"admin" help:"Who or what holds the token, for listings and logs (1 to 100 printable characters)."`
}

func (c *adminTokensCreateCmd) Run(env *runEnv) error {
	return withAdminTokens(env, c.Data, true, func(svc *admintokens.Service) error {
		tok, err := svc.Create(env.ctx, c.Name, trackapi.AdminScope(c.Scope), time.Duration(c.Expires))
		if errors.Is(err, admintokens.ErrInvalid) {
			return usageError{err}
		}
		if err != nil {
			return err
		}
		// The token alone on stdout, so that scripts can capture it; what it is on stderr.
		if _, err := fmt.Fprintln(env.stdout, tok.Token); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "admin token %d (%s, %s, %q, expires %s): shown only this once\n",
			tok.Stored.ID, tok.Stored.Prefix, tok.Stored.Scope, tok.Stored.Name, expiryText(tok.Stored.ExpiresAt))
		return nil
	})
}

type adminTokensListCmd struct {
	dataFlag
}

func (c *adminTokensListCmd) Run(env *runEnv) error {
	return withAdminTokens(env, c.Data, false, func(svc *admintokens.Service) error {
		list, err := svc.List(env.ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tPREFIX\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
		for _, t := range list {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Scope, t.Prefix, tokenStatus(t, now),
				timeOrDash(t.CreatedAt), expiryText(t.ExpiresAt), timeOrDash(t.LastUsedAt))
		}
		return tw.Flush()
	})
}

// tokenStatus is "live", "expired" or "revoked" (which wins over expired: it was a decision).
func tokenStatus(t trackapi.AdminToken, now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case !t.Live(now):
		return "expired"
	}
	return "live"
}

// expiryText is an expiry as listings show it: "never" rather than a dash, which could be read as
// unknown.
func expiryText(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

type adminTokensRevokeCmd struct {
	dataFlag
	ID int64 `arg:"" help:"The token's id (see admin-tokens list)."`
}

func (c *adminTokensRevokeCmd) Run(env *runEnv) error {
	return withAdminTokens(env, c.Data, false, func(svc *admintokens.Service) error {
		return svc.Revoke(env.ctx, c.ID)
	})
}

// withAdminTokens opens a data directory's store (see openStore) and runs fn with an admin token
// service over it, which logs warnings and errors only, to stderr.
func withAdminTokens(env *runEnv, dir string, create bool, fn func(*admintokens.Service) error) error {
	return withStore(dir, create, func(db *sqlite.DB) error {
		log := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		svc := admintokens.New(db, admintokens.Options{Logger: log})
		err := fn(svc)
		if cerr := svc.Close(env.ctx); cerr != nil {
			log.Warn("writing when admin tokens were last used failed", "err", cerr)
		}
		return err
	})
}

// createFirstAdminToken makes a fresh installation's config API usable at once: when no admin
// token is live (none made yet, or every one expired or revoked), it makes a write token named
// "first", expiring after admintokens.DefaultTTL, and prints it once to stdout with the address
// of the web UI (uiURL, such as http://127.0.0.1:8081/ui/) and a curl command for the config API,
// which is served beside the UI: uiURL's parent followed by api/ (http://127.0.0.1:8081/api/...).
// The token goes to stdout only, never to a log. With a live token it does nothing, so only a
// first start prints one.
func createFirstAdminToken(ctx context.Context, svc *admintokens.Service, uiURL string, stdout io.Writer) error {
	sourcesURL, err := adminAPIURL(uiURL, "sources")
	if err != nil {
		return fmt.Errorf("first admin token: %w", err)
	}
	live, err := svc.HasLive(ctx)
	if err != nil {
		return fmt.Errorf("first admin token: %w", err)
	}
	if live {
		return nil
	}
	tok, err := svc.Create(ctx, "first", trackapi.ScopeWrite, admintokens.DefaultTTL)
	if err != nil {
		return fmt.Errorf("creating the first admin token: %w", err)
	}
	_, err = fmt.Fprintf(stdout, `No admin token yet: created admin token %d "first" (scope write, expires %s).
The token, shown only this once:

  %s

The web UI: %s

The config API takes the token in a header, never in a URL:

  curl -sS '%s' \
    -H 'Authorization: Bearer %s'

More tokens, listing and revoking them: trackapi admin-tokens --help

`, tok.Stored.ID, expiryText(tok.Stored.ExpiresAt), tok.Token, uiURL, sourcesURL, tok.Token)
	return err
}

// adminAPIURL is the config API's URL for path, from the web UI's: the API is served beside the
// UI, at api/ in the UI's parent (http://h/ui/ → http://h/api/path; http://h/x/ui →
// http://h/x/api/path, for a server behind a proxy under a prefix).
func adminAPIURL(uiURL, path string) (string, error) {
	u, err := url.Parse(uiURL)
	if err != nil {
		return "", fmt.Errorf("the web UI's URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("the web UI's URL %q: want an absolute http or https URL", uiURL)
	}
	base := *u
	base.RawQuery, base.Fragment, base.RawPath = "", "", ""
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	return base.ResolveReference(&url.URL{Path: "../api/" + path}).String(), nil
}
