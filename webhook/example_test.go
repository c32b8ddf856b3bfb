package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/webhook"
)

// A receiver checks each request with Verify on the body's bytes as received, before decoding
// them, and deduplicates on the envelopes' ids (or the webhook-id).
func ExampleVerify() {
	secret, err := webhook.NewSecret() // shown to the receiver's owner once, kept in the destination
	if err != nil {
		panic(err)
	}

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, webhook.MaxBodyBytes+1))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, r.Header, body, time.Now(), 0); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized) // a 4xx: the sender will not retry
			return
		}
		var payload struct {
			Events []trackapi.Envelope `json:"events"`
		}
		if err := json.Unmarshal(body, &payload); err != nil {
			http.Error(w, "bad JSON", http.StatusBadRequest)
			return
		}
		for _, e := range payload.Events {
			fmt.Println("received", e.ID)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(receiver)
	defer srv.Close()

	sink, err := webhook.New(trackapi.Destination{
		ID:   1,
		Type: trackapi.DestinationWebhook,
		Config: trackapi.DestinationConfig{
			URL:          srv.URL,
			AllowPrivate: true, // the example's receiver is on loopback
			Secrets:      []trackapi.SigningSecret{{Secret: secret}},
		},
	}, webhook.Options{})
	if err != nil {
		panic(err)
	}
	defer sink.Close()

	results := sink.Deliver(context.Background(), []trackapi.Envelope{
		{ID: "1:a", SourceID: 1, Site: "shop.example", ReceivedAt: 1767225600000, Event: json.RawMessage(`{"event":"page_view"}`)},
		{ID: "1:b", SourceID: 1, Site: "shop.example", ReceivedAt: 1767225600001, Event: json.RawMessage(`{"event":"purchase"}`)},
	})
	for _, r := range results {
		fmt.Println("delivered:", r.Err == nil)
	}
	// Output:
	// received 1:a
	// received 1:b
	// delivered: true
	// delivered: true
}
