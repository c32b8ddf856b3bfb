package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/webhook"
)

// The receiver of the README takes a batch signed by the webhook sink, prints each envelope once,
// and refuses a request signed with another secret.
func TestReceiverVerifiesAndDeduplicates(t *testing.T) {
	secret, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	srv := httptest.NewServer(newHandler(secret, &out))
	defer srv.Close()
	sink := func(secret string) *webhook.Sink {
		s, err := webhook.New(trackapi.Destination{ID: 1, Type: trackapi.DestinationWebhook,
			Config: trackapi.DestinationConfig{URL: srv.URL, AllowPrivate: true, Secrets: []trackapi.SigningSecret{{Secret: secret}}}},
			webhook.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	batch := []trackapi.Envelope{{ID: "2:e1", SourceID: 2, Site: "1", ReceivedAt: 1, Event: []byte(`{"event_name":"page_view"}`)}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	good := sink(secret)
	for range 2 {
		if r := good.Deliver(ctx, batch); r[0].Err != nil {
			t.Fatalf("a signed batch: %v", r[0].Err)
		}
	}
	if n := strings.Count(out.String(), "verified 2:e1"); n != 1 {
		t.Errorf("printed %d times:\n%s", n, out.String())
	}
	other, _ := webhook.NewSecret()
	if r := sink(other).Deliver(ctx, batch); r[0].Err == nil || r[0].Reason != "http_401" {
		t.Errorf("a batch signed with another secret: %+v", r[0])
	}
}
