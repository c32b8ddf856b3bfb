package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// settle is how long a screen gets to finish drawing once it shows something: the screens load
// their data with requests of their own, which the test does not know about.
const settle = 1500 * time.Millisecond

// TestScreenshots is `make screenshots`: with SCREENSHOTS set to a directory (relative to the
// repository's root), it saves PNGs of the web UI's screens and of the two docs pages there, taken
// from the real binary on seeded data: two sources, events of a few kinds (with a wrong key, a
// missing event_name, warnings), a webhook destination whose receiver refuses the events named
// "bad" and answers 503 at first, so that its delivery stats, an issue and dead letters exist.
// The screens are written in parallel with this test: it knows nothing of their markup beyond
// #view, and a screen that shows nothing yet is still taken.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("SCREENSHOTS")
	if dir == "" {
		t.Skip("SCREENSHOTS is not set: `make screenshots` sets it to docs/screenshots")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", "..", dir) // go test runs in cmd/trackapi
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := startAdmin(t, "--delivery-timeout", "2s", "--delivery-backoff", "50ms", "--delivery-backoff-max", "200ms")
	dest := seedScreens(t, a)

	b := newBrowser(t)
	b.login(a.AdminURL, a.token)
	shots := []struct {
		file, route string
		before      func()
	}{
		{file: "sources.png", route: "#/sources"},
		{file: "inspector.png", route: "#/inspector", before: func() { openFirstEntry(b) }},
		{file: "destinations.png", route: "#/destinations"},
		{file: "destination.png", route: fmt.Sprintf("#/destinations/%d", dest)},
		{file: "quality.png", route: "#/quality"},
	}
	for _, s := range shots {
		showScreen(b, a.AdminURL+"/ui/"+s.route)
		if s.before != nil {
			s.before()
		}
		savePNG(t, b, filepath.Join(dir, s.file))
	}
	for _, d := range []struct{ file, url, want string }{
		{"docs-collect.png", a.URL + "/docs/", "Collect a batch of events"},
		{"docs-config.png", a.AdminURL + "/docs/", "List sources"},
	} {
		b.run("opening "+d.url, chromedp.Navigate(d.url))
		b.waitText("#swagger-ui", d.want, 30*time.Second)
		time.Sleep(settle)
		savePNG(t, b, filepath.Join(dir, d.file))
	}
}

// seedScreens gives the screens something to show, and returns the webhook destination's id once
// its stats count deliveries, retries and rejections, and its dead letters are there.
func seedScreens(t *testing.T, a *adminServer) int64 {
	t.Helper()
	c := context.Background()
	webShop := "Web shop"
	if r, err := a.api.UpdateSourceWithResponse(c, 1, adminapi.SourcePatch{Name: &webShop}); err != nil || r.JSON200 == nil {
		t.Fatalf("renaming source 1: %v %s", err, r.Body)
	}
	app := "Mobile app"
	created, err := a.api.CreateSourceWithResponse(c, adminapi.SourceCreate{Site: "2", Name: &app})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("creating a source: %v %s", err, created.Body)
	}
	appKey := created.JSON201.Key.Key

	h := newHook(t, 2)
	url := h.srv.URL + "/in"
	allow, batchSize, sources := true, 1, []int64{1}
	webhook, err := a.api.CreateDestinationWithResponse(c, adminapi.CreateDestinationJSONRequestBody{
		Name: "Analytics webhook", Type: adminapi.Webhook, Url: &url, AllowPrivate: &allow, BatchSize: &batchSize, Sources: &sources})
	if err != nil || webhook.JSON201 == nil || webhook.JSON201.SigningSecret == nil {
		t.Fatalf("creating a destination: %v %s", err, webhook.Body)
	}
	h.set(func(h *hook) { h.secret = *webhook.JSON201.SigningSecret })
	dest := webhook.JSON201.Destination.Id

	var batch []string
	for i, name := range []string{"page_view", "page_view", "add_to_cart", "page_view", "bad", "purchase", "page_view", "bad", "add_to_cart", "page_view"} {
		batch = append(batch, validEvent(name, fmt.Sprintf("shop-%d", i)))
	}
	send := func(site, key, path, body string) gen.CollectResult {
		t.Helper()
		return a.collect(t, path, site, key, body)
	}
	if r := send("1", a.key, "/events/batch", `{"batch":[`+strings.Join(batch, ",")+`]}`); r.Accepted != len(batch) {
		t.Fatalf("the shop's batch: %+v", r)
	}
	// Warnings: no timestamp (the server's is used), a consent list that is not one.
	if r := send("1", a.key, "/events", `{"event_name":"search",`+testUser+`,"context":{"event_id":"shop-w1"}}`); len(r.Warnings) == 0 {
		t.Fatalf("an event without a timestamp: %+v", r)
	}
	bad := `{"event_name":"page_view","user":{"consistent_anonymous_id":"visitor-2","consent_categories":"all"},` +
		`"context":{"event_id":"shop-w2","event_timestamp":1700000000000}}`
	if r := send("1", a.key, "/events", bad); len(r.Warnings) == 0 {
		t.Fatalf("an event with a wrong consent list: %+v", r)
	}
	// Rejections: a wrong key, no event_name.
	if r := send("1", "ffffffff-1111-4222-8333-444444444444", "/events", validEvent("login", "wrong-key-1")); r.Rejected != 1 {
		t.Fatalf("a wrong key: %+v", r)
	}
	if r := send("1", a.key, "/events", `{"page_type":"home",`+testUser+`,"context":{"event_id":"shop-n1"}}`); r.Rejected != 1 {
		t.Fatalf("no event_name: %+v", r)
	}
	for i, name := range []string{"app_open", "screen_view", "screen_view"} {
		send("2", appKey, "/events", validEvent(name, fmt.Sprintf("app-%d", i)))
	}
	send("2", appKey, "/events", `{"event_name":"screen_view",`+testUser+`,"context":{"event_id":"app-w1"}}`)

	eventually(t, 60*time.Second, "deliveries, retries, rejections and dead letters", func() bool {
		r, err := a.api.GetDeliveryStatsWithResponse(c, dest, nil)
		if err != nil || r.JSON200 == nil {
			return false
		}
		st := r.JSON200
		return st.Total.Delivered+st.Total.DeliveredAfterRetry >= 9 && st.Total.Retried >= 2 && st.Total.Rejected >= 2 && st.State.DeadLetters >= 2
	})
	eventually(t, 10*time.Second, "the inspector's entries", func() bool {
		return len(a.entries(t, adminapi.ListInspectorEventsParams{})) >= 8
	})
	return dest
}

// showScreen opens a screen of the UI and waits until #view shows something for it, then a
// little more for its data.
func showScreen(b *browser, url string) {
	b.t.Helper()
	b.run("opening "+url, chromedp.Navigate(url))
	hash := url[strings.Index(url, "#"):]
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(
		`location.hash === %q && document.querySelector("#view") !== null && document.querySelector("#view").children.length > 0`, hash)))
	if err != nil {
		b.t.Logf("%s shows nothing in #view within 15 s; taken as it is", url)
	}
	time.Sleep(settle)
}

// openFirstEntry clicks the first button of the inspector's entries table, if the screen shows
// one within a few seconds, to show an entry's details.
func openFirstEntry(b *browser) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`(() => { const button = document.querySelector("#view table button"); if (button) { button.click(); } return !!button; })()`))
	if err != nil {
		b.t.Logf("no entry to open in the inspector (%v): taken as it is", err)
		return
	}
	time.Sleep(settle)
}

// savePNG saves the whole page.
func savePNG(t *testing.T, b *browser, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot for %s: %v", path, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s (%d bytes)", path, len(png))
}
