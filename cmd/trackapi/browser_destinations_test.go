package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trackapi/trackapi/gen/adminapi"
)

// The browser tests of the destinations screens run a server with quick retries, so that a
// replayed dead letter is delivered at once.
var browserDelivery = []string{"--delivery-timeout", "2s", "--delivery-backoff", "50ms", "--delivery-backoff-max", "200ms"}

// waitVisible waits up to 10 s for sel to be visible.
func (b *browser) waitVisible(sel string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("%s never became visible: %v", sel, err)
	}
}

// waitHidden waits up to 10 s for sel to be present but not visible.
func (b *browser) waitHidden(sel string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitNotVisible(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("%s is still visible: %v", sel, err)
	}
}

// choose sets a select's value as a person would, with the change event the page listens to.
func (b *browser) choose(sel, value string) {
	b.t.Helper()
	s, _ := json.Marshal(sel)
	v, _ := json.Marshal(value)
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = %s; e.dispatchEvent(new Event('change', {bubbles: true})); return e.value; })()`, s, v)
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil || got != value {
		b.t.Fatalf("choosing %s in %s: got %q, %v", value, sel, got, err)
	}
}

// value returns the value of an input.
func (b *browser) value(sel string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Value(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("value of %s: %v", sel, err)
	}
	return v
}

// refreshUntil clicks the page's Refresh button until the text of sel satisfies ok, or fails
// after within with what it last saw.
func (b *browser) refreshUntil(sel, what string, within time.Duration, ok func(string) bool) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		_ = chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#refresh")))
		time.Sleep(300 * time.Millisecond)
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			last = got
			if ok(strings.TrimSpace(got)) {
				return
			}
		}
	}
	b.shot("refresh-until-failed")
	b.t.Fatalf("%s: %s never did; last text:\n%s", what, sel, last)
}

func equals(want string) func(string) bool { return func(s string) bool { return s == want } }

// A webhook made in the UI, with the filter builder, delivers to a receiver on 127.0.0.1 that
// refuses events named "bad": the signing secret is shown once (and verifies the requests), a dry
// run shows the signed request with its signature redacted, the destination's page counts what
// was delivered and filtered, shows the rejection as an issue whose sample holds the receiver's
// answer, and lists the dead letter; once the receiver takes it, Replay all delivers it.
func TestBrowserDestinationDelivery(t *testing.T) {
	a := startAdmin(t, browserDelivery...)
	h := newHook(t, 0)
	b := newBrowser(t)

	b.login(a.AdminURL, a.token)
	b.run("opening the destinations", chromedp.Click(chromedp.CSS(`#nav a[href="#/destinations"]`)))
	b.waitVisible("#new-destination")
	b.waitText("#destinations-list", "No destinations yet", 5*time.Second)

	// Each type shows the fields it needs.
	b.choose("#new-type", "kafka")
	b.waitVisible("#new-brokers")
	b.waitHidden("#new-url")
	b.choose("#new-type", "file")
	b.waitVisible("#new-path")
	b.waitHidden("#new-brokers")
	b.choose("#new-type", "forward")
	b.waitVisible("#new-site")
	b.waitVisible("#new-url")
	b.choose("#new-type", "webhook")
	b.waitHidden("#new-site")

	b.run("filling in the form",
		chromedp.SendKeys(chromedp.CSS("#new-name"), "receiver"),
		chromedp.SendKeys(chromedp.CSS("#new-url"), h.srv.URL+"/in"),
		chromedp.Click(chromedp.CSS("#new-allow-private")),
		chromedp.SendKeys(chromedp.CSS("#new-batch-size"), "1"),
		chromedp.SendKeys(chromedp.CSS("#new-exclude-event-names"), "ignored"),
		// Two condition rows, the second removed again.
		chromedp.Click(chromedp.CSS("#new-add-condition")),
		chromedp.Click(chromedp.CSS("#new-add-condition")),
	)
	b.waitVisible("#new-cond-2-path")
	b.run("removing the second condition", chromedp.Click(chromedp.CSS(`#new-conditions .condition:nth-child(2) [data-field="remove"]`)))
	if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('#new-conditions .condition').length`)); err != nil || n != 1 {
		t.Fatalf("%d condition rows after a remove, want 1 (%v)", n, err)
	}
	b.run("a condition", chromedp.SendKeys(chromedp.CSS("#new-cond-1-path"), "/blocked"))
	b.waitVisible("#new-cond-1-value")
	b.choose("#new-cond-1-op", "not_exists") // takes no value: its input goes
	b.waitHidden("#new-cond-1-value")
	b.shot("destinations-form")

	b.run("creating it", chromedp.Click(chromedp.CSS("#new-submit")))
	b.waitVisible("#new-secret")
	secret := b.value("#new-secret")
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("the secret shown is %q", secret)
	}
	h.set(func(h *hook) { h.secret = secret })
	b.waitText("#destinations-list", "receiver", 5*time.Second)
	b.shot("destinations-created")
	if list := b.text("#destinations-list"); strings.Contains(list, secret) {
		t.Error("the list shows the signing secret")
	}

	b.run("opening its page", chromedp.Click(chromedp.CSS("#created-link")))
	b.waitText("#dest-title", "receiver", 5*time.Second)
	settings := b.text("#dest-settings")
	for _, want := range []string{"event name is not: ignored", "/blocked does not exist", h.srv.URL + "/in"} {
		if !strings.Contains(settings, want) {
			t.Errorf("the settings do not show %q:\n%s", want, settings)
		}
	}

	// A dry run: malformed JSON is refused in the page; a good event shows the signed request.
	b.run("a dry run of malformed JSON",
		chromedp.SendKeys(chromedp.CSS("#test-event"), `{"event_name": `),
		chromedp.Click(chromedp.CSS("#test-dry-run")))
	b.waitText("#test-event-error", "not valid JSON", 5*time.Second)
	b.run("a dry run",
		chromedp.SetValue(chromedp.CSS("#test-event"), `{"event_name":"probe","context":{"event_id":"probe-1"}}`),
		chromedp.Click(chromedp.CSS("#test-dry-run")))
	b.waitText("#test-result", "Dry run", 10*time.Second)
	b.waitHidden("#test-event-error")
	shown := b.text("#test-result")
	for _, want := range []string{"POST " + h.srv.URL + "/in", "Webhook-Signature", "REDACTED", `"event_name": "probe"`} {
		if !strings.Contains(shown, want) {
			t.Errorf("the dry run does not show %q:\n%s", want, shown)
		}
	}
	if strings.Contains(shown, secret) || strings.Contains(shown, "v1,") {
		t.Errorf("the dry run shows a secret or a signature:\n%s", shown)
	}
	h.mu.Lock()
	sent := len(h.signatures)
	h.mu.Unlock()
	if sent != 0 {
		t.Errorf("a dry run sent %d requests", sent)
	}

	// Events from a sender: two delivered, one refused by the receiver, one filtered out.
	batch := `{"batch":[` + strings.Join([]string{validEvent("good", "b-1"), validEvent("good", "b-2"),
		validEvent("bad", "b-3"), validEvent("ignored", "b-4")}, ",") + `]}`
	if r := a.collect(t, "/events/batch", "1", a.key, batch); r.Accepted != 4 {
		t.Fatalf("send: %+v", r)
	}
	b.refreshUntil(`[data-total="delivered"]`, "two events delivered", 20*time.Second, equals("2"))
	b.refreshUntil(`[data-total="filtered"]`, "one event filtered", 10*time.Second, equals("1"))
	b.refreshUntil(`[data-total="failed"]`, "one event rejected", 10*time.Second, equals("1"))
	b.waitVisible(`tr[data-issue-type="rejected"][data-issue-reason="http_400"]`)
	b.run("showing the issue's samples", chromedp.Click(chromedp.CSS(`tr[data-issue-type="rejected"] button[data-samples]`)))
	b.waitText("tr.samples", "the test receiver refuses events named bad", 10*time.Second)
	samples := b.text("tr.samples")
	for _, want := range []string{"Status 400", "REDACTED", `"event_name": "bad"`} {
		if !strings.Contains(samples, want) {
			t.Errorf("the sample does not show %q:\n%s", want, samples)
		}
	}
	b.waitText("#dead-letters", "http_400", 5*time.Second)
	b.waitText(`[data-state="dead_letters"]`, "1", 5*time.Second)
	b.shot("destination-page")

	// The receiver takes them now: replay from the page.
	h.set(func(h *hook) { h.acceptBad = true })
	b.run("replaying", chromedp.Click(chromedp.CSS("#replay-all")))
	b.waitText("#dl-status", "1 dead letter queued", 10*time.Second)
	b.refreshUntil("#dead-letters", "the dead letter replayed", 20*time.Second, equals("No dead letters."))
	b.refreshUntil(`[data-total="delivered"]`, "the replayed event delivered", 10*time.Second, equals("3"))
	b.waitText(`[data-state="dead_letters"]`, "0", 5*time.Second)
	if n := h.count("bad"); n != 1 {
		t.Errorf("the receiver took %d bad events, want the one replayed", n)
	}
	b.run("showing the table of the chart", chromedp.Click(chromedp.CSS("details.chart-table summary")))
	b.waitVisible("details.chart-table table")
	b.shot("destination-page-replayed")
	// The last hour comes in minutes: one bar a minute, empty minutes included.
	b.choose("#stats-period", "1")
	if g := b.value("#stats-granularity"); g != "minute" {
		t.Errorf("the last hour is shown per %s", g)
	}
	bars := func() int {
		n, _ := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelector('svg.delivery-chart').viewBox.baseVal.width / 10`))
		return n
	}
	for start := time.Now(); bars() < 60 && time.Since(start) < 5*time.Second; {
		time.Sleep(100 * time.Millisecond)
	}
	if n := bars(); n < 60 || n > 61 {
		t.Errorf("the last hour's chart has %d bars, want 60 or 61", n)
	}
	b.shot("destination-chart-minutes")
	b.waitText(`[data-total="delivered"]`, "3", 5*time.Second)
}

// From a destination's page: pause and resume, edit (a condition added with the builder), rotate
// the signing secret (the new one shown once and signing), a real test, purge a dead letter, and
// delete.
func TestBrowserDestinationActions(t *testing.T) {
	a := startAdmin(t, browserDelivery...)
	h := newHook(t, 0)
	url := h.srv.URL + "/in?auth=hook-secret"
	allow, batchSize := true, 1
	created, err := a.api.CreateDestinationWithResponse(context.Background(), adminapi.CreateDestinationJSONRequestBody{
		Name: "hooked", Type: adminapi.Webhook, Url: &url, AllowPrivate: &allow, BatchSize: &batchSize})
	if err != nil || created.JSON201 == nil || created.JSON201.SigningSecret == nil {
		t.Fatalf("create destination: %v %s", err, created.Body)
	}
	id := created.JSON201.Destination.Id
	h.set(func(h *hook) { h.secret = *created.JSON201.SigningSecret })

	b := newBrowser(t)

	b.login(a.AdminURL, a.token)
	b.run("opening the destinations", chromedp.Click(chromedp.CSS(`#nav a[href="#/destinations"]`)))
	b.run("opening the page", chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[data-destination-link="%d"]`, id))))
	b.waitText("#dest-title", "hooked", 5*time.Second)

	b.run("pausing", chromedp.Click(chromedp.CSS("#toggle-status")))
	b.waitText("#dest-title", "paused", 5*time.Second)
	b.waitText("#toggle-status", "Resume", 5*time.Second)
	b.run("resuming", chromedp.Click(chromedp.CSS("#toggle-status")))
	b.waitText("#dest-title", "active", 5*time.Second)

	// Edit: the name, and a condition. The URL is left as shown (without its query string), so
	// it is not sent, and the destination keeps its credentials.
	b.run("editing", chromedp.Click(chromedp.CSS("#edit-toggle")))
	b.waitVisible("#edit-name")
	if got := b.value("#edit-url"); got != h.srv.URL+"/in" {
		t.Errorf("the edit form shows the URL %q", got)
	}
	b.run("changing the name and adding a condition",
		chromedp.SetValue(chromedp.CSS("#edit-name"), "hooked too"),
		chromedp.Click(chromedp.CSS("#edit-add-condition")),
		chromedp.SendKeys(chromedp.CSS("#edit-cond-1-path"), "/page_type"),
		chromedp.SendKeys(chromedp.CSS("#edit-cond-1-value"), "secret-page"))
	b.choose("#edit-cond-1-op", "is_not")
	b.shot("destination-edit")
	b.run("saving", chromedp.Click(chromedp.CSS("#edit-save")))
	b.waitText("#manage-status", "Saved", 5*time.Second)
	b.waitText("#dest-title", "hooked too", 5*time.Second)
	b.waitText("#dest-settings", `/page_type is not "secret-page"`, 5*time.Second)

	// Rotate at once: the new secret is shown, and the test request is signed with it alone.
	b.run("rotating", chromedp.Click(chromedp.CSS("#rotate-toggle")))
	b.choose("#rotate-overlap", "0")
	b.run("rotating now", chromedp.Click(chromedp.CSS("#rotate")))
	b.waitVisible("#new-secret")
	secret := b.value("#new-secret")
	if !strings.HasPrefix(secret, "whsec_") || secret == *created.JSON201.SigningSecret {
		t.Fatalf("the rotated secret shown is %q", secret)
	}
	h.set(func(h *hook) { h.secret = secret })
	b.run("a real test", chromedp.Click(chromedp.CSS("#test-send")))
	b.waitText("#test-outcome", "Delivered", 10*time.Second)
	result := b.text("#test-result")
	// A success keeps no sample of the answer (the webhook sink's rule), so the page says so.
	for _, want := range []string{"POST " + h.srv.URL + "/in?auth=REDACTED", "Webhook-Signature", "REDACTED", "page_view", "its answer is kept only when a delivery fails"} {
		if !strings.Contains(result, want) {
			t.Errorf("the test result does not show %q:\n%s", want, result)
		}
	}
	if strings.Contains(result, "hook-secret") {
		t.Errorf("the test result shows the URL's query:\n%s", result)
	}
	b.shot("destination-test")

	// A dead letter, purged after a confirmation. The delivery engine applies the rotation within
	// a second (admin.yaml): an event sent before would be signed with the old secret alone.
	time.Sleep(1500 * time.Millisecond)
	if r := a.collect(t, "/events", "1", a.key, validEvent("bad", "p-1")); r.Accepted != 1 {
		t.Fatalf("send: %+v", r)
	}
	b.refreshUntil(`[data-state="dead_letters"]`, "a dead letter", 20*time.Second, equals("1"))
	b.waitText("#dead-letters", "http_400", 5*time.Second)
	b.run("purging", chromedp.Click(chromedp.CSS("#purge")))
	b.waitVisible("#purge-confirm")
	b.run("confirming the purge", chromedp.Click(chromedp.CSS("#purge-confirm")))
	b.waitText("#dl-status", "Purged 1 dead letter", 5*time.Second)
	b.waitText("#dead-letters", "No dead letters.", 5*time.Second)

	b.run("deleting", chromedp.Click(chromedp.CSS("#delete-toggle")))
	b.waitVisible("#delete-confirm")
	b.run("confirming the delete", chromedp.Click(chromedp.CSS("#delete-confirm")))
	b.waitText("#destinations-flash", "Deleted destination hooked too", 5*time.Second)
	b.waitText("#destinations-list", "No destinations yet", 5*time.Second)
	got, err := a.api.GetDestinationWithResponse(context.Background(), id)
	if err != nil || got.StatusCode() != http.StatusNotFound {
		t.Errorf("after the delete, GET the destination: %v %d", err, got.StatusCode())
	}
}
