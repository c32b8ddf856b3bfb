package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testenv"
)

// exampleServer starts a trackapi server in this process, over a temporary SQLite file, and
// returns its URL and a source's site and key: partners use their collector's URL and the key
// of their source instead. Every answer it gives is checked against openapi.yaml; a mismatch
// is printed, which makes the example's output wrong.
func exampleServer() (url, site, key string, stop func()) {
	dir, err := os.MkdirTemp("", "trackapi-example")
	if err != nil {
		log.Fatal(err)
	}
	env, err := testenv.Open(testenv.Options{DBPath: filepath.Join(dir, "trackapi.db")})
	if err != nil {
		log.Fatal(err)
	}
	real := env.Handler
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		real.ServeHTTP(rec, r)
		if err := apitest.ValidateResponse(r, rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
			fmt.Println("response does not match openapi.yaml:", err)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	return ts.URL, env.Site, env.Key, func() {
		ts.Close()
		env.Close()
		os.RemoveAll(dir)
	}
}

// Send one event. The client gives it an event_id and a timestamp, so that a retry after a lost
// answer is recognised by the server as a duplicate.
func Example() {
	url, site, key, stop := exampleServer() // your collector, and your source's site and key
	defer stop()

	c, err := client.New(url, site, key)
	if err != nil {
		log.Fatal(err)
	}
	user := client.NewUser("67892", "1", "3") // anonymous id, consented categories
	res, err := c.Send(context.Background(), client.Search("t-shirts", user))
	if err != nil {
		log.Fatal(err) // res.Status says whether it was rejected (res.Code) or failed
	}
	fmt.Println(res.Status, len(res.EventID), len(res.Warnings))
	// Output: delivered 36 0
}

// Send many events: they are packed into as few requests as the limits allow, and each gets its
// own result, in the order given.
func ExampleClient_SendBatch() {
	url, site, key, stop := exampleServer()
	defer stop()
	c, err := client.New(url, site, key)
	if err != nil {
		log.Fatal(err)
	}

	user := client.NewUser("67892", "1")
	events := []gen.Event{
		client.PageView("home", user),
		client.Search("rain jacket", user),
		client.Custom("newsletter_optin", map[string]any{"list": "weekly"}, user),
	}
	res, err := c.SendBatch(context.Background(), events)
	if err != nil {
		// Some events were not delivered: the results say which, and why.
		for _, r := range res.Results {
			if r.Status != client.StatusDelivered {
				fmt.Println(r.Index, r.Status, r.Code, r.Err)
			}
		}
		return
	}
	fmt.Printf("%d requests: %d accepted, %d duplicates\n", res.Requests, res.Accepted, res.Duplicates)

	// The same events again (the same ids, as a retry would send them) are duplicates.
	again := make([][]byte, len(res.Results))
	for i, r := range res.Results {
		again[i] = r.Event
	}
	res, _ = c.SendRawBatch(context.Background(), again)
	fmt.Printf("again: %d accepted, %d duplicates\n", res.Accepted, res.Duplicates)
	// Output:
	// 1 requests: 3 accepted, 0 duplicates
	// again: 0 accepted, 3 duplicates
}

// An event over the server's limit is refused before anything is sent, with an error naming it.
func ExampleEventError() {
	c, err := client.New("http://127.0.0.1:8080", "1", "key") // never reached
	if err != nil {
		log.Fatal(err)
	}
	huge := client.Custom("upload", map[string]any{"blob": string(make([]byte, 40000))}, client.NewUser("u"))
	_, err = c.SendBatch(context.Background(), []gen.Event{client.Login("", client.NewUser("u")), huge})
	var tooLarge *client.EventError
	if errors.As(err, &tooLarge) {
		fmt.Println("event", tooLarge.Index, "refused:", errors.Is(err, client.ErrEventTooLarge))
	}
	// Output: event 1 refused: true
}

// A purchase with its required properties as parameters; optional ones are added with Set.
func ExamplePurchase() {
	url, site, key, stop := exampleServer()
	defer stop()
	c, err := client.New(url, site, key)
	if err != nil {
		log.Fatal(err)
	}

	items := []client.Item{{
		ID: "SKU-RUN-42", Quantity: 2,
		Product: client.Product{ID: "P-1001", Name: "Blue runner", Price: 49.92, Brand: "Stride"},
	}}
	purchase := client.Purchase("ORD-88231", "online", 131.4, 104.5, "EUR",
		client.PaymentCard, client.OrderInProgress, items, client.NewUser("c0a8e1f2", "1", "2", "4"))
	purchase.Set("coupon", "SUMMER10")
	purchase.Context.EventId = "order-ORD-88231" // your own id: a resend is then always a duplicate

	res, err := c.Send(context.Background(), purchase)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Status, res.EventID, len(res.Warnings))
	// Output: delivered order-ORD-88231 0
}

// A Batcher takes events from any number of goroutines without waiting for the network, and
// sends them in batches in the background. Close sends what is left and returns what it could
// not deliver.
func ExampleBatcher() {
	url, site, key, stop := exampleServer()
	defer stop()
	c, err := client.New(url, site, key)
	if err != nil {
		log.Fatal(err)
	}

	b := c.NewBatcher(client.BatcherOptions{
		MaxEvents:     500,                    // a request at most every 500 events...
		FlushInterval: 200 * time.Millisecond, // ...or 200 ms after its first event
		Overflow:      client.Drop,            // never make a request handler wait
		OnResult: func(r client.Result) {
			if r.Status != client.StatusDelivered {
				log.Printf("event %s %s: %v", r.EventID, r.Status, r.Err) // keep r.Event to resend it
			}
		},
	})
	for i := range 1200 {
		ev := client.PageView("product", client.NewUser(fmt.Sprint("visitor-", i%50), "1"))
		if err := b.Enqueue(context.Background(), ev); err != nil {
			log.Printf("not queued: %v", err) // ErrQueueFull with Drop, counted in Stats().Dropped
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	undelivered, err := b.Close(ctx)
	if err != nil {
		log.Printf("%d events not delivered: %v", len(undelivered), err)
	}
	s := b.Stats()
	fmt.Printf("enqueued %d, delivered %d, rejected %d, failed %d, dropped %d\n",
		s.Enqueued, s.Delivered(), s.Rejected, s.Failed, s.Dropped)
	// Output: enqueued 1200, delivered 1200, rejected 0, failed 0, dropped 0
}
