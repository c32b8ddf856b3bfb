package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/testdata/upstream"
)

func ptr[T any](v T) *T { return &v }

func consent(t *testing.T, ids ...any) *[]gen.ConsentCategory {
	t.Helper()
	out := make([]gen.ConsentCategory, len(ids))
	for i, id := range ids {
		var err error
		switch v := id.(type) {
		case string:
			err = out[i].FromConsentCategory0(v)
		case int:
			err = out[i].FromConsentCategory1(v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return &out
}

// The client generated from openapi.yaml sends single and batch events that come back out of the
// store with every field, custom ones included.
func TestGeneratedClientRoundTrip(t *testing.T) {
	e := newEnv(t)
	cl, err := gen.NewClientWithResponses(e.URL, gen.WithHTTPClient(e.client))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev := gen.Event{
		EventName:  "search",
		SearchTerm: ptr("t-shirts"),
		User:       gen.User{ConsistentAnonymousId: "67892", Email: ptr("toto@domain.fr"), ConsentCategories: consent(t, "1", 3)},
		Context: gen.Context{
			EventId: "client-1", EventTimestamp: 1639044446636,
			Page: &gen.Page{Url: ptr("https://shop.com/search?q=t-shirts")},
		},
	}
	ev.Set("plan", "pro")
	ev.Set("items", []any{map[string]any{"id": "sku-1", "quantity": 2}})

	single, err := cl.CollectEventWithResponse(ctx, &gen.CollectEventParams{TcS: &e.Site, Token: &e.Key}, ev)
	if err != nil {
		t.Fatal(err)
	}
	if single.JSON200 == nil {
		t.Fatalf("status %d: %s", single.StatusCode(), single.Body)
	}
	if got := *single.JSON200; got.Accepted != 1 || len(got.Warnings) != 0 {
		t.Errorf("single: %+v", got)
	}

	second, third := ev, ev
	second.Context.EventId, third.Context.EventId = "client-2", "client-3"
	bearer := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+e.Key)
		return nil
	}
	batch, err := cl.CollectBatchWithResponse(ctx, &gen.CollectBatchParams{TcS: &e.Site},
		gen.EventBatch{Batch: []gen.Event{second, third, ev}}, bearer)
	if err != nil {
		t.Fatal(err)
	}
	if batch.JSON200 == nil {
		t.Fatalf("status %d: %s", batch.StatusCode(), batch.Body)
	}
	if got := *batch.JSON200; got.Received != 3 || got.Accepted != 2 || got.Duplicates != 1 {
		t.Errorf("batch: %+v", got)
	}

	stored := e.stored()
	if len(stored) != 3 {
		t.Fatalf("%d events stored, want 3", len(stored))
	}
	var back gen.Event
	if err := json.Unmarshal(stored[0].Event, &back); err != nil {
		t.Fatal(err)
	}
	if plan, _ := back.Get("plan"); plan != "pro" || back.User.ConsentCategories == nil || len(*back.User.ConsentCategories) != 2 ||
		*back.Context.Page.Url != "https://shop.com/search?q=t-shirts" || *back.SearchTerm != "t-shirts" {
		t.Errorf("stored event lost fields: %s", stored[0].Event)
	}
	if n, err := (*back.User.ConsentCategories)[1].AsConsentCategory1(); err != nil || n != 3 {
		t.Errorf("numeric consent category came back as %v, %v", n, err)
	}
}

// A client generated from the vendor's own spec file works against trackapi unchanged, with the
// key in the query or in the Authorization header.
func TestUpstreamClientWorksUnchanged(t *testing.T) {
	e := newEnv(t)
	cl, err := upstream.NewClientWithResponses(e.URL+"/events", upstream.WithHTTPClient(e.client))
	if err != nil {
		t.Fatal(err)
	}
	var ev upstream.Event
	if err := json.Unmarshal(mustJSON(t, validEvent("vendor-1")), &ev); err != nil {
		t.Fatal(err)
	}
	for i, params := range []upstream.PostParams{
		{TcS: e.Site, Token: &e.Key, ContentType: "application/json", Authorization: "Bearer not-used"},
		{TcS: e.Site, ContentType: "application/json", Authorization: "Bearer " + e.Key},
	} {
		ev.Context.EventId = []string{"vendor-1", "vendor-2"}[i]
		resp, err := cl.PostWithResponse(context.Background(), &params, ev)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body)
		}
		var result gen.CollectResult
		if err := json.Unmarshal(resp.Body, &result); err != nil || result.Accepted != 1 {
			t.Errorf("call %d: %s (%v)", i, resp.Body, err)
		}
	}
	if n := len(e.stored()); n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
}
