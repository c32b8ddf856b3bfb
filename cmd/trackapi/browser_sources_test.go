package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/trackapi/trackapi/internal/apitest"
)

// The browser tests of the sources, inspector and data-quality screens. They drive the UI as a
// person would and check what it shows against what the collect API was sent.
//
// TRACKAPI_UI_SCREENSHOTS=DIR saves a screenshot of each screen under DIR, to look at the UI
// (`TRACKAPI_UI_SCREENSHOTS=/tmp/ui go test -run Browser ./cmd/trackapi/`).

// click clicks the first element matching sel, once it is visible.
func (b *browser) click(sel string) {
	b.t.Helper()
	b.run("clicking "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// fill replaces the value of the input or select sel (sending input and change events).
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	b.run("filling "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.SetValue(chromedp.CSS(sel), value))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is true.
func (b *browser) waitFor(what, expr string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("never true within %v: %s (%s)", within, what, expr)
}

// goTo opens a screen by its hash, as the navigation's links do.
func (b *browser) goTo(hash string) {
	b.t.Helper()
	b.run("opening "+hash, chromedp.Evaluate[chromedp.Void](`location.hash = `+jsString(hash)+`; undefined`))
}

func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

// collectAnswer is the collect API's answer, as far as these tests read it.
type collectAnswer struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	Errors   []struct {
		Code string `json:"code"`
	} `json:"errors"`
}

// collect sends one event to p's collect API with site and key and returns the answer.
func collect(t *testing.T, p *process, site, key, body string) collectAnswer {
	t.Helper()
	return post(t, p.URL+"/events?tc_s="+url.QueryEscape(site)+"&token="+url.QueryEscape(key), body)
}

func post(t *testing.T, u, body string) collectAnswer {
	t.Helper()
	resp, err := apitest.Client(t).Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", u, resp.StatusCode, raw)
	}
	var a collectAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("POST %s: %v: %s", u, err, raw)
	}
	return a
}

// sourcesLoaded waits until the sources screen has read the sources and keys after a change.
func (b *browser) sourcesLoaded() {
	b.t.Helper()
	b.run("waiting for the sources", chromedp.WaitVisible(chromedp.CSS(`#sources-list[aria-busy="false"]`)))
}

// createSourceInUI creates a source on the sources screen and returns its id and the key the
// notice shows, with the curl command shown beside it.
func createSourceInUI(b *browser, site, name string) (id, key, curl string) {
	b.t.Helper()
	b.goTo("#/sources")
	b.fill("#source-site", site)
	if name != "" {
		b.fill("#source-name", name)
	}
	b.click("#source-form button[type=submit]")
	b.waitText("#key-notice-title", "created", 5*time.Second)
	key = b.text("#new-key")
	id = eval[string](b, `document.querySelector('#new-key').dataset.sourceId`)
	curl = b.text("#new-curl")
	b.sourcesLoaded()
	if key == "" || id == "" {
		b.t.Fatalf("no key or source id in the notice: key %q, id %q", key, id)
	}
	return id, key, curl
}

var curlParts = regexp.MustCompile(`(?s)^curl -sS -X POST '([^']+)' \\\n\s+-H 'Content-Type: application/json' \\\n\s+-d '([^']+)'$`)

// Sources: a source is created with its key shown once, with a curl command that works once its
// placeholder is replaced; a key is rotated with an overlap (both keys work), revoked (it stops),
// and the source is deactivated and reactivated.
func TestBrowserSources(t *testing.T) {
	p := startServer(t, t.TempDir())
	token := firstAdminToken(t, p)
	b := newBrowser(t)

	b.login(p.AdminURL, token)

	id, key, curl := createSourceInUI(b, "shop-7", "web shop")
	b.shot("sources-created")
	// The command, as shown, with the collect address put in place of the labelled placeholder.
	m := curlParts.FindStringSubmatch(curl)
	if m == nil {
		t.Fatalf("the curl command is not of the expected form:\n%s", curl)
	}
	if !strings.HasPrefix(m[1], "http://COLLECTOR:8080/events?") || !strings.Contains(m[1], "token="+key) {
		t.Fatalf("the command's URL %q is not the placeholder's with the key", m[1])
	}
	b.waitText("#key-notice", "COLLECTOR", time.Second) // the placeholder is explained
	if a := post(t, strings.Replace(m[1], "http://COLLECTOR:8080", p.URL, 1), m[2]); a.Accepted != 1 {
		t.Fatalf("the notice's command was not accepted: %+v", a)
	}
	// Copy: to the clipboard, or (where the page may not write it) the key is selected.
	b.click("#copy-key")
	b.waitFor("the copy is reported", `/Copied|Selected/.test(document.querySelector('#key-notice .copy-status').textContent)`, 5*time.Second)

	row := `#sources-table tr[data-source-id="` + id + `"]`
	b.waitText(row+" .prefixes", key[:8], 5*time.Second)
	b.waitText(row, "shop-7", time.Second)
	// The new source's keys are open: one live key.
	keysRow := `#keys-` + id
	b.waitText(keysRow+` tr[data-live="true"]`, key[:8], 5*time.Second)

	// Rotate with a 2-hour overlap: the new key is shown once, both keys work.
	b.fill("#overlap-"+id, "2")
	b.click(keysRow + ` button[data-action="rotate"]`)
	b.waitText("#key-notice-title", "New key for source "+id, 5*time.Second)
	b.waitText("#key-notice", "previous keys stop working", time.Second)
	b.sourcesLoaded()
	newKey := b.text("#new-key")
	if newKey == key || newKey == "" {
		t.Fatalf("the rotation showed key %q (the old one was %q)", newKey, key)
	}
	b.waitFor("two live keys", `document.querySelectorAll('`+keysRow+` tr[data-live="true"]').length === 2`, 5*time.Second)
	expires := b.text(keysRow + ` tr[data-prefix="` + key[:8] + `"] td:nth-child(3)`)
	if expires == "never" {
		t.Errorf("the old key has no expiry after a rotation with an overlap")
	}
	b.shot("sources-rotated")
	event := `{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"v1"}}`
	for _, k := range []string{key, newKey} {
		if a := collect(t, p, "shop-7", k, event); a.Accepted != 1 {
			t.Fatalf("key %s… during the overlap: %+v", k[:8], a)
		}
	}

	// Revoke the old key: asked first, then it stops working.
	oldRow := keysRow + ` tr[data-prefix="` + key[:8] + `"]`
	b.click(oldRow + ` button[data-action="revoke"]`)
	b.click(oldRow + ` button[data-confirm="revoke"]`)
	b.waitFor("the old key is revoked", `document.querySelector('`+keysRow+` tr[data-prefix="`+key[:8]+`"]').dataset.live === 'false'`, 5*time.Second)
	b.waitText(oldRow, "revoked", time.Second)
	if a := collect(t, p, "shop-7", key, event); a.Rejected != 1 {
		t.Fatalf("the revoked key still works: %+v", a)
	}

	// Deactivate (asked first): the live key stops within 2 s; reactivate: it works again.
	b.click(row + ` button[data-action="deactivate"]`)
	b.click(row + ` button[data-confirm="deactivate"]`)
	b.waitText(row+" .state", "inactive", 5*time.Second)
	b.shot("sources-inactive")
	waitCollect(t, p, "shop-7", newKey, event, func(a collectAnswer) bool { return a.Rejected == 1 })
	b.click(row + ` button[data-action="reactivate"]`)
	b.waitFor("the source is active", `document.querySelector('`+row+` .state').textContent === 'active'`, 5*time.Second)
	waitCollect(t, p, "shop-7", newKey, event, func(a collectAnswer) bool { return a.Accepted == 1 })

	// An API error is shown, not swallowed: a sixth live key is refused (409).
	for i := 0; i < 5; i++ {
		b.fill("#overlap-"+id, "1")
		b.click(keysRow + ` button[data-action="rotate"]`)
		b.waitFor("a rotation's answer", `!document.querySelector('#error').hidden || document.querySelector('#new-key').textContent !== `+jsString(newKey), 5*time.Second)
		if eval[bool](b, `!document.querySelector('#error').hidden`) {
			break
		}
		newKey = b.text("#new-key")
		b.sourcesLoaded()
	}
	b.waitText("#error", "live keys", 5*time.Second)

	// Once dismissed, the key is nowhere on the page; a reload does not bring it back.
	b.click("#dismiss-key")
	b.waitFor("the notice is gone", `!document.querySelector('#key-notice')`, time.Second)
	if eval[bool](b, `document.documentElement.outerHTML.includes(`+jsString(newKey)+`)`) {
		t.Error("the key is still in the page after it was dismissed")
	}
	b.run("reloading", chromedp.Reload())
	b.sourcesLoaded()
	b.shot("sources")
	if eval[bool](b, `document.documentElement.outerHTML.includes(`+jsString(newKey)+`)`) {
		t.Error("the key is in the page after a reload")
	}
}

// waitCollect sends the event until ok accepts the answer (a source's state reaches the collect
// path within 2 s), failing after 5 s.
func waitCollect(t *testing.T, p *process, site, key, body string, ok func(collectAnswer) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a := collect(t, p, site, key, body)
		if ok(a) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s the answer is still %+v", a)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Inspector and data quality: the events sent with a key made in the UI arrive in the live
// inspector without a reload; an entry opens with its problems' paths highlighted; a wrong key
// shows as rejected with unknown_key; pause keeps what arrives until resume; a filter restarts
// the list; leaving the screen closes its stream; the data-quality screen shows the counts.
func TestBrowserInspectorAndQuality(t *testing.T) {
	p := startServer(t, t.TempDir())
	token := firstAdminToken(t, p)
	b := newBrowser(t)

	b.login(p.AdminURL, token)
	id, key, _ := createSourceInUI(b, "blog", "")
	now := time.Now().UnixMilli()

	// One event before the inspector is opened: the screen starts with the newest entries.
	if a := collect(t, p, "blog", key, fmt.Sprintf(`{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":"v1"},"context":{"event_id":"before-1","event_timestamp":%d}}`, now)); a.Accepted != 1 {
		t.Fatalf("first event: %+v", a)
	}
	b.click(`#nav a[href="#/inspector"]`)
	b.run("marking the page", chromedp.Evaluate[chromedp.Void](`window.notReloaded = true; undefined`))
	b.waitText("#stream-status", "Live", 10*time.Second)
	b.waitText(`#inspector-rows tr[data-outcome="accepted"]`, "page_view", 10*time.Second)

	// A stored event with warnings arrives live; opened with the keyboard, its warnings' paths
	// are marked as warnings in the body, and listed under it.
	if a := collect(t, p, "blog", key, `{"event_name":"page_view","page_type":"home","user":{"consistent_anonymous_id":5}}`); a.Accepted != 1 {
		t.Fatalf("event with warnings: %+v", a)
	}
	warned := `#inspector-rows tr[data-outcome="warned"]`
	b.waitText(warned, "schema_violation", 10*time.Second)
	b.run("opening the entry with the keyboard",
		chromedp.Focus(chromedp.CSS(warned+" button[data-entry-id]")),
		chromedp.KeyEvent(kb.Enter))
	mark := `#entry-json mark.problem-warning[data-path="/user/consistent_anonymous_id"]`
	b.waitText(mark, `"consistent_anonymous_id": 5`, 5*time.Second)
	b.waitText(`#entry-json mark.problem-warning[data-path="/context/event_id"]`, `"event_id"`, time.Second)
	b.waitText(`#entry-problems li[data-code="schema_violation"][data-level="warning"]`, "/user/consistent_anonymous_id", time.Second)
	b.waitText(`#entry-problems li[data-code="event_id_generated"]`, "/context/event_id", time.Second)
	if n := eval[int](b, `document.querySelectorAll('#entry-json mark.problem-error').length`); n != 0 {
		t.Errorf("%d marks of errors in a stored event", n)
	}
	b.shot("inspector-warned")

	// A rejection without an event name: the missing member is shown, marked as an error.
	if a := collect(t, p, "blog", key, `{"nope":1}`); a.Rejected != 1 {
		t.Fatalf("event without a name: %+v", a)
	}
	b.waitText(`#inspector-rows tr[data-outcome="rejected"]`, "missing_event_name", 10*time.Second)
	b.click(`#inspector-rows tr[data-outcome="rejected"] button[data-entry-id]`)
	b.waitText(`#entry-json mark.problem-error.missing[data-path="/event_name"]`, "missing", 5*time.Second)

	// A wrong key: rejected, with the reason unknown_key, under no source.
	if a := collect(t, p, "blog", "not-a-key-at-all", `{"event_name":"page_view"}`); a.Rejected != 1 {
		t.Fatalf("wrong key: %+v", a)
	}
	b.waitText(`#inspector-rows tr[data-outcome="rejected"]`, "unknown_key", 10*time.Second)
	b.waitText(`#inspector-rows tr[data-outcome="rejected"]`, "no source", time.Second)
	b.shot("inspector-rejected")

	// A request refused as a whole (not JSON): its body's start is shown as text, marked as an
	// error as a whole.
	resp, err := apitest.Client(t).Post(p.URL+"/events?tc_s=blog&token="+url.QueryEscape(key), "application/json", strings.NewReader(`{"event_name":"page_view",`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("a body that is not JSON: %d", resp.StatusCode)
	}
	refused := `#inspector-rows tr[data-outcome="refused"]`
	b.waitText(refused, "invalid_json", 10*time.Second)
	b.click(refused + " button[data-entry-id]")
	b.waitText(`#entry-json.text.problem-root-error`, `{"event_name":"page_view",`, 5*time.Second)
	b.waitText(`#entry-problems li[data-code="invalid_json"][data-level="error"]`, "(the whole request)", time.Second)

	// Pause: what arrives is counted, not shown, until resume.
	rows := func() int { return eval[int](b, `document.querySelectorAll('#inspector-rows tr').length`) }
	before := rows()
	b.click("#pause")
	if a := collect(t, p, "blog", key, fmt.Sprintf(`{"event_name":"page_view","page_type":"cart","user":{"consistent_anonymous_id":"v2"},"context":{"event_id":"paused-1","event_timestamp":%d}}`, now)); a.Accepted != 1 {
		t.Fatalf("event while paused: %+v", a)
	}
	b.waitText("#stream-status", "1 new entry waiting", 10*time.Second)
	b.shot("inspector-paused")
	if n := rows(); n != before {
		t.Fatalf("%d rows while paused, %d before", n, before)
	}
	b.click("#pause")
	b.waitText("#stream-status", "Live", time.Second)
	if n := rows(); n != before+1 {
		t.Fatalf("%d rows after resuming, want %d", n, before+1)
	}

	// A filter restarts the list: only rejections, of this source.
	b.fill("#filter-source", id)
	b.fill("#filter-outcome", "rejected")
	b.waitFor("only this source's rejection", `(() => { const r = [...document.querySelectorAll('#inspector-rows tr')];
		return r.length === 1 && r[0].dataset.outcome === 'rejected' && r[0].textContent.includes('missing_event_name'); })()`, 10*time.Second)
	if !eval[bool](b, `window.notReloaded === true`) {
		t.Fatal("the page was reloaded")
	}

	// Leaving the screen closes its stream: a token may hold 10 at once, and this opens 12.
	for i := 0; i < 12; i++ {
		b.goTo("#/sources")
		b.waitText("#sources-table", "blog", 5*time.Second)
		b.goTo("#/inspector")
		b.waitText("#stream-status", "Live", 5*time.Second)
	}

	// Data quality: the counts of this source's events (the wrong key's is under no source).
	b.goTo("#/quality/" + id)
	pv := `#quality-table tr[data-event-name="page_view"]`
	cells := func(sel string) string {
		return eval[string](b, `[...document.querySelectorAll('`+sel+` td')].slice(0, 4).map(td => td.textContent).join(' ')`)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.run("waiting for the report", chromedp.WaitVisible(chromedp.CSS("#quality-results[aria-busy=false]")))
		if eval[bool](b, `!!document.querySelector('`+pv+`')`) && cells(pv) == "3 1 0 0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("page_view's counts (collected, with warnings, rejected, duplicates) are %q, want 3 1 0 0", cells(pv))
		}
		time.Sleep(300 * time.Millisecond)
		b.click("#quality-refresh")
	}
	if got := cells(`#quality-table tr[data-event-name=""]`); got != "0 0 1 0" {
		t.Errorf("the nameless event's counts are %q, want 0 0 1 0", got)
	}
	anomaly := `section.anomalies[data-event-name="page_view"] tr.anomaly[data-code="schema_violation"]`
	b.waitText(anomaly, "/user/consistent_anonymous_id", time.Second)
	b.click(anomaly + " + tr.sample-row details summary")
	b.waitText(anomaly+` + tr.sample-row mark.problem-warning[data-path="/user/consistent_anonymous_id"]`, "5", time.Second)
	b.shot("quality")
	b.fill("#quality-period", "3600")
	b.waitText("#quality-table", "page_view", 5*time.Second)
}
