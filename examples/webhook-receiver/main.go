// Command webhook-receiver is the smallest useful receiver of trackapi's webhook destinations: it
// checks each request's Standard Webhooks signature with the destination's secret, prints every
// envelope, and deduplicates on the envelope id, since delivery is at least once.
//
//	go run ./examples/webhook-receiver -addr 127.0.0.1:9000 -secret whsec_...
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/trackapi/trackapi/webhook"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "address to listen on")
	secret := flag.String("secret", os.Getenv("WEBHOOK_SECRET"), "the destination's signing secret (whsec_...); default $WEBHOOK_SECRET")
	flag.Parse()
	if *secret == "" {
		log.Fatal("-secret (or $WEBHOOK_SECRET) is required")
	}
	log.Printf("listening on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, newHandler(*secret, os.Stdout)))
}

// newHandler answers 401 to a request without a valid signature, 400 to a body that is not a
// batch of envelopes, and 200 after printing the envelopes it had not seen yet.
func newHandler(secret string, out io.Writer) http.Handler {
	var mu sync.Mutex
	seen := map[string]bool{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read the body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, r.Header, body, time.Now(), webhook.DefaultTolerance); err != nil {
			http.Error(w, "bad signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
		var batch struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &batch); err != nil {
			http.Error(w, "not a batch of envelopes", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, raw := range batch.Events {
			var env struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(raw, &env) != nil || seen[env.ID] {
				continue // a repeat of an envelope already taken: at-least-once delivery
			}
			seen[env.ID] = true
			fmt.Fprintf(out, "verified %s: %s\n", env.ID, raw)
		}
	})
}
