package webhook_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/webhook"
)

// addedByTransport are the headers net/http adds to a request on the wire, which the request the
// sink builds (and so its preview) does not carry.
var addedByTransport = []string{"Accept-Encoding", "Content-Length"}

// sortedKeys lists a preview's header names, or a received request's less those net/http added.
func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		if !slices.Contains(addedByTransport, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestPreviewIsTheRequestDeliverSends(t *testing.T) {
	rec := newRecorder(t, nil)
	current, previous := newSecret(t), newSecret(t)
	// Two secrets sign during a rotation: both signatures are credentials.
	d := destination(rec.srv.URL+"/hook?token=tok-secret-1&v=2",
		trackapi.SigningSecret{Secret: current}, trackapi.SigningSecret{Secret: previous, ExpiresAt: t0.Add(time.Hour)})
	s := newSink(t, d, webhook.Options{})
	batch := envelopes("p", 3)
	// Bytes encoding/json would change: the preview must show them as the receiver gets them.
	batch[1].Event = json.RawMessage("{ \"event\" : \"<b>&</b>\",\n  \"n\": 1.50 }")

	var _ trackapi.Previewer = s
	preview, err := s.Preview(batch)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("Preview sent %d requests", n)
	}
	requireDelivered(t, deliver(t, s, batch))
	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	got := reqs[0]

	if preview.Body != string(got.body) {
		t.Fatalf("preview body\n%s\nreceived\n%s", preview.Body, got.body)
	}
	if preview.Method != http.MethodPost {
		t.Errorf("method %q", preview.Method)
	}
	if want := rec.srv.URL + "/hook?token=REDACTED&v=REDACTED"; preview.URL != want {
		t.Errorf("URL %q, want %q", preview.URL, want)
	}
	if sig := preview.Headers["Webhook-Signature"]; sig != "REDACTED" {
		t.Errorf("Webhook-Signature %q, want REDACTED", sig)
	}
	// Every header the receiver got is shown, with the value it got unless redacted.
	if pk, gk := sortedKeys(preview.Headers), sortedKeys(got.header); !slices.Equal(pk, gk) {
		t.Fatalf("preview headers %v, received %v", pk, gk)
	}
	for name, v := range preview.Headers {
		if v != "REDACTED" && got.header.Get(name) != v {
			t.Errorf("header %s: preview %q, received %q", name, v, got.header.Get(name))
		}
	}
	for _, name := range []string{"Content-Type", "User-Agent", webhook.HeaderID, webhook.HeaderTimestamp} {
		if preview.Headers[http.CanonicalHeaderKey(name)] == "" {
			t.Errorf("the preview has no %s", name)
		}
	}
	// What the receiver got verifies: the preview is of a signed request.
	if err := webhook.Verify(current, got.header, got.body, t0, 0); err != nil {
		t.Fatalf("the delivered request does not verify: %v", err)
	}

	shown, err := json.Marshal(preview)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"tok-secret-1"}
	for _, sec := range []string{current, previous} {
		secrets = append(secrets, sec, strings.TrimPrefix(sec, webhook.SecretPrefix))
	}
	for _, sig := range strings.Fields(got.header.Get(webhook.HeaderSignature)) {
		secrets = append(secrets, strings.TrimPrefix(sig, "v1,"))
	}
	if len(secrets) != 7 {
		t.Fatalf("%d credentials to look for, want 7 (two signatures were sent?)", len(secrets))
	}
	for _, sec := range secrets { // base64 and these tokens need no JSON escaping: found as they are
		if strings.Contains(string(shown), sec) {
			t.Errorf("the preview shows the credential %q: %s", sec, shown)
		}
	}
}

func TestPreviewShowsTheFirstOfSeveralRequests(t *testing.T) {
	rec := newRecorder(t, nil)
	s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: newSecret(t)}), webhook.Options{})
	batch := envelopes("big", 6)
	for i := range batch {
		batch[i].Event = json.RawMessage(`{"event":"page_view","pad":"` + strings.Repeat(string(rune('a'+i)), 150_000) + `"}`)
	}

	preview, err := s.Preview(batch)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	requireDelivered(t, deliver(t, s, batch))
	reqs := rec.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d requests: the batch was meant to need several", len(reqs))
	}
	if want := trackapi.SampleBody(reqs[0].body); preview.Body != want || len(preview.Body) != trackapi.SampleBodyLimit {
		t.Fatalf("preview body (%d bytes) is not the first request's, cut at %d", len(preview.Body), trackapi.SampleBodyLimit)
	}
	if id := preview.Headers["Webhook-Id"]; id != reqs[0].header.Get(webhook.HeaderID) || id == reqs[1].header.Get(webhook.HeaderID) {
		t.Fatalf("preview webhook-id %q, first request's %q", id, reqs[0].header.Get(webhook.HeaderID))
	}
}

func TestPreviewFailsAsDeliverWould(t *testing.T) {
	rec := newRecorder(t, nil)
	sec := newSecret(t)

	t.Run("invalid envelopes are left out", func(t *testing.T) {
		s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: sec}), webhook.Options{})
		batch := envelopes("m", 2)
		batch[0].Event = json.RawMessage(`{"not json`)
		preview, err := s.Preview(batch)
		if err != nil {
			t.Fatalf("Preview: %v", err)
		}
		if strings.Contains(preview.Body, "not json") || !strings.Contains(preview.Body, `"id":"3:m-1"`) {
			t.Fatalf("preview body %s, want the valid envelope only", preview.Body)
		}
		_, err = s.Preview(batch[:1])
		if err == nil || !strings.Contains(err.Error(), "not valid JSON") {
			t.Fatalf("Preview of an invalid envelope alone: %v, want the invalid_event error", err)
		}
	})
	t.Run("every secret expired", func(t *testing.T) {
		s := newSink(t, destination(rec.srv.URL, trackapi.SigningSecret{Secret: sec, ExpiresAt: t0.Add(-time.Second)}), webhook.Options{})
		_, err := s.Preview(envelopes("x", 1))
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Preview: %v, want the no-signing-secret error", err)
		}
		r := deliver(t, s, envelopes("x", 1))[0]
		if r.Reason != "no_signing_secret" || r.Err.Error() != err.Error() {
			t.Fatalf("Deliver: %+v; Preview's error %q", r, err)
		}
	})
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}
