package main_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, which .ci/run installs. The browser tests need it: in CI
// (CI set) its absence fails them; on a developer's machine without it they are skipped, saying so.
const chromiumPath = "/usr/bin/chromium"

// browser is a headless Chromium driven by chromedp, for one test. When the test fails, the page
// as it was is saved as a PNG under the system's temporary directory and its path logged.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	expected []string // page errors a test provokes on purpose (see expectPageError)
}

// expectPageError lets page errors containing text pass: for a test that provokes one on purpose,
// such as a request the Content-Security-Policy must block.
func (b *browser) expectPageError(text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expected = append(b.expected, text)
}

// unexpected reports whether a page error is not one the test asked for.
func (b *browser) unexpected(msg string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, text := range b.expected {
		if strings.Contains(msg, text) {
			return false
		}
	}
	return true
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath
	if p := os.Getenv("CHROMIUM"); p != "" {
		path = p
	}
	if _, err := exec.LookPath(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Chromium at %s: .ci/run installs Debian's chromium", path)
		}
		t.Skipf("no Chromium at %s (apt-get install chromium, or set CHROMIUM): browser tests skipped", path)
	}
	// The flags the machine needs: no sandbox as root, and no background connections, which this
	// machine's closed network refuses many at a time.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot(filepath.Join(os.TempDir(), "trackapi-browser-"+safeName(t.Name())+".png"))
		}
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	b.watchErrors()
	return b
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// screenshot saves the whole page as a PNG at path.
func (b *browser) screenshot(path string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("no screenshot: %v", err)
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("no screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot of the page: %s", path)
}

// run runs chromedp steps in order, failing the test with what was being done.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text returns the visible text of the first element matching the CSS selector sel, once it is
// visible.
func (b *browser) text(sel string) string {
	b.t.Helper()
	b.run("waiting for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

// waitText waits until the text of sel contains want, or fails after the deadline with what it
// last saw.
func (b *browser) waitText(sel, want string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	var s string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			s = got
		}
		if err == nil && strings.Contains(s, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("%s never showed %q; last text:\n%s", sel, want, s)
}

// login opens the UI of a server and logs in with token.
func (b *browser) login(adminURL, token string) {
	b.t.Helper()
	b.run("logging in",
		chromedp.Navigate(adminURL+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS("#nav")),
	)
}

// A wrong token is refused with the API's message shown; the right one logs in, and the token is
// in no URL the page visited.
func TestBrowserLogin(t *testing.T) {
	p := startServer(t, t.TempDir())
	token := firstAdminToken(t, p)
	b := newBrowser(t)
	b.run("a wrong token",
		chromedp.Navigate(p.AdminURL+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "tka_wrong"),
		chromedp.Click(chromedp.CSS("#login button")),
	)
	b.waitText("#error", "admin token", 5*time.Second)
	b.login(p.AdminURL, token)
	url, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(url, token) {
		t.Errorf("the token is in the URL %s", url)
	}
}

// shot saves a screenshot of the page as name.png in the directory TRACKAPI_UI_SCREENSHOTS names,
// when it names one: a way to look at every screen the tests pass through.
func (b *browser) shot(name string) {
	dir := os.Getenv("TRACKAPI_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.screenshot(filepath.Join(dir, name+".png"))
}

// watchErrors fails the test, when it ends, if the page threw an uncaught exception or logged
// an error: a console.error, or a refusal of the Content-Security-Policy (an inline style or
// script would be one). Failed requests (the network's log) are left out: an API error is shown
// in the page, and the tests check that.
func (b *browser) watchErrors() {
	b.t.Helper()
	var mu sync.Mutex
	var seen []string
	err := chromedp.Listen(b.ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				msg = "console.error"
				for _, a := range ev.Args {
					msg += " " + string(a.Value) + a.Description
				}
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError && ev.Entry.Source != log.EntrySourceNetwork {
				msg = string(ev.Entry.Source) + ": " + ev.Entry.Text
			}
		}
		if msg != "" && b.unexpected(msg) {
			mu.Lock()
			seen = append(seen, msg)
			mu.Unlock()
		}
	})
	if err != nil {
		b.t.Fatalf("listening to the page: %v", err)
	}
	b.t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range seen {
			b.t.Errorf("the page: %s", m)
		}
	})
}
