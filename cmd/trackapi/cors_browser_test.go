package main_test

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trackapi/trackapi/internal/apitest"
)

// shopPage is a page of a shop with a tracker sending to the collector on another origin, each way a
// browser tracker sends: fetch with a JSON body and the key as Bearer (a preflight first), fetch
// with text/plain (no preflight), XHR, sendBeacon, and the pixel. Each function resolves to what
// the page could see of the answer, or to {error} when the browser withheld it.
var shopPage = template.Must(template.New("shop").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>A shop</title></head>
<body><h1>A shop</h1>
<script>
const api = {{.API}}, key = {{.Key}};
function ev(id) {
  return {event_name: "page_view", page_type: "home",
    user: {consistent_anonymous_id: "visitor-1", consent_categories: ["1"]},
    context: {event_id: id, event_timestamp: 1718003600000}};
}
async function answer(r) {
  return {status: r.status, body: await r.json()};
}
async function sendFetch(id) {
  const r = await fetch(api + "/events?tc_s=1", {method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key},
    body: JSON.stringify(ev(id))});
  return answer(r);
}
async function sendPlain(id) {
  const r = await fetch(api + "/events?tc_s=1&token=" + key, {method: "POST", credentials: "include",
    headers: {"Content-Type": "text/plain;charset=UTF-8"}, body: JSON.stringify(ev(id))});
  return answer(r);
}
function sendXHR(id) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("POST", api + "/events/batch?tc_s=1&token=" + key);
    x.withCredentials = true;
    x.setRequestHeader("Content-Type", "application/json");
    x.onload = () => resolve({status: x.status, body: JSON.parse(x.responseText)});
    x.onerror = () => reject(new Error("XHR failed"));
    x.send(JSON.stringify({batch: [ev(id)]}));
  });
}
function sendBeacon(id) {
  return {queued: navigator.sendBeacon(api + "/events?tc_s=1&token=" + key, JSON.stringify(ev(id)))};
}
function sendPixel(id) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({width: img.naturalWidth, height: img.naturalHeight});
    img.onerror = () => reject(new Error("pixel failed"));
    img.src = api + "/events?tc_s=1&token=" + key + "&event_name=page_view&page_type=home" +
      "&user[consistent_anonymous_id]=visitor-1&user[consent_categories][]=1&context[event_id]=" + id;
  });
}
// outcome runs one sender and gives its result, or the error the browser raised, as JSON.
async function outcome(send, id) {
  try { return JSON.stringify(await send(id)); }
  catch (e) { return JSON.stringify({error: String(e)}); }
}
</script></body></html>`))

// shop serves the shop's page on its own origin (127.0.0.1 and a port of its own), sending to the
// collector at api with the source key given in the page's query (?key=).
func shop(t *testing.T, api string) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := shopPage.Execute(w, map[string]string{"API": api, "Key": r.URL.Query().Get("key")}); err != nil {
			t.Errorf("the shop's page: %v", err)
		}
	}))
	t.Cleanup(ts.Close)
	return ts
}

// send runs one of the page's senders in the browser and decodes what the page saw.
func (b *browser) send(sender, id string) map[string]any {
	b.t.Helper()
	js := `outcome(` + sender + `, "` + id + `")`
	out, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s in the browser: %v", sender, err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		b.t.Fatalf("%s gave %q: %v", sender, out, err)
	}
	return got
}

// sawAccepted asserts the page read a 200 whose body says one event was accepted.
func sawAccepted(t *testing.T, sender string, got map[string]any) {
	t.Helper()
	body, _ := got["body"].(map[string]any)
	if got["status"] != float64(200) || body == nil || body["accepted"] != float64(1) {
		t.Errorf("%s: the page saw %v, want a 200 with accepted 1", sender, got)
	}
}

// waitStored waits until every id is stored once (a beacon's answer is seen by nobody), and
// returns the stored counts.
func waitStored(t *testing.T, data string, ids ...string) map[string]int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		counts, _ := export(t, data)
		missing := []string{}
		for _, id := range ids {
			if counts[id] != 1 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return counts
		}
		if time.Now().After(deadline) {
			t.Fatalf("not stored once: %v; stored %v", missing, counts)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A shop's page on one origin sends to trackapi on another with every browser method, credentials
// included; the page reads the answers where the method lets it, and every event is stored.
func TestBrowserTrackersCrossOrigin(t *testing.T) {
	data := t.TempDir()
	p := startServer(t, data)
	key := firstKey(t, p)
	page := shop(t, p.URL)
	if page.URL == p.URL {
		t.Fatal("the page and the collector share an origin")
	}
	b := newBrowser(t)
	b.run("opening the shop's page", chromedp.Navigate(page.URL+"/?key="+key))

	sawAccepted(t, "fetch (JSON, Bearer)", b.send("sendFetch", "browser-fetch"))
	sawAccepted(t, "fetch (text/plain)", b.send("sendPlain", "browser-plain"))
	sawAccepted(t, "XHR (batch)", b.send("sendXHR", "browser-xhr"))
	if got := b.send("sendBeacon", "browser-beacon"); got["queued"] != true {
		t.Errorf("sendBeacon did not queue the event: %v", got)
	}
	if got := b.send("sendPixel", "browser-pixel"); got["width"] != float64(1) || got["height"] != float64(1) {
		t.Errorf("the pixel: %v, want a 1×1 image", got)
	}
	waitStored(t, data, "browser-fetch", "browser-plain", "browser-xhr", "browser-beacon", "browser-pixel")
}

// With --cors-origins, a listed page reads its answers; another page's browser blocks them: its
// preflighted fetch and XHR never leave the browser (nothing stored), and its simple requests
// (text/plain, sendBeacon) are sent and stored, their answers withheld from the page, since CORS
// is the browser's rule: the source key is what authenticates a sender.
func TestBrowserCORSAllowList(t *testing.T) {
	data := t.TempDir()
	addr := freeAddr(t)
	api := "http://" + addr
	listed, other := shop(t, api), shop(t, api)
	p := startServerWith(t, data, "--addr", addr, "--cors-origins", "https://www.shop.example,"+listed.URL)
	key := firstKey(t, p)

	b := newBrowser(t)
	b.expectPageError("blocked by CORS policy") // what this test provokes
	b.run("opening the listed page", chromedp.Navigate(listed.URL+"/?key="+key))
	sawAccepted(t, "fetch from a listed origin", b.send("sendFetch", "listed-fetch"))
	sawAccepted(t, "XHR from a listed origin", b.send("sendXHR", "listed-xhr"))

	b.run("opening the other page", chromedp.Navigate(other.URL+"/?key="+key))
	for _, sender := range []string{"sendFetch", "sendXHR", "sendPlain"} {
		got := b.send(sender, "other-"+sender)
		if msg, _ := got["error"].(string); msg == "" {
			t.Errorf("%s from an origin not listed: the page saw %v, want the browser's error", sender, got)
		}
	}
	if got := b.send("sendBeacon", "other-beacon"); got["queued"] != true {
		t.Errorf("sendBeacon: %v", got)
	}
	counts := waitStored(t, data, "listed-fetch", "listed-xhr", "other-sendPlain", "other-beacon")
	for _, id := range []string{"other-sendFetch", "other-sendXHR"} {
		if counts[id] != 0 {
			t.Errorf("%s was stored: its preflight should have stopped it", id)
		}
	}

	// What the browser saw: no allow-origin for the other page, on the preflight or the answer.
	for _, method := range []string{http.MethodOptions, http.MethodPost} {
		req, err := http.NewRequest(method, p.URL+"/events?tc_s=1&token="+key, strings.NewReader(`{"event_name":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", other.URL)
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		resp, err := apitest.Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("%s from %s: Access-Control-Allow-Origin %q", method, other.URL, got)
		}
	}
}

// --cors-origins takes origins only: anything else is a usage error (exit 2) before the server
// starts.
func TestCORSOriginsFlagChecked(t *testing.T) {
	_, stderr, code := runCLIEnv(t, nil, "serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0", "--cors-origins", "https://a.example,www.b.example")
	if code != 2 || !strings.Contains(stderr, `--cors-origins: "www.b.example" is not an origin`) {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}
