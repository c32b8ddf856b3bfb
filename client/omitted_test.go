package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
)

// A wrong key on a batch of more than 100 events: the server lists the first 100 rejections and
// counts the others, and every event still ends rejected with invalid_source, in one request.
func TestWrongKeyOnALargeBatch(t *testing.T) {
	e := newEnv(t)
	c, err := client.New(e.URL, e.Site, "not-the-key", client.WithLogger(quiet), client.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SendBatch(context.Background(), searches("wk", 500))
	if !errors.Is(err, client.ErrNotDelivered) {
		t.Fatalf("err = %v", err)
	}
	for i, r := range res.Results {
		var re *client.RejectedError
		if r.Status != client.StatusRejected || r.Code != string(gen.InvalidSource) || !errors.As(r.Err, &re) || re.Problem.Index != i {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if res.Rejected != 500 || res.Delivered() != 0 || res.Failed != 0 || res.Requests != 1 {
		t.Fatalf("counts %+v", res)
	}
}

// answering is a collector that answers every batch with what answer makes of its element count.
func answering(t *testing.T, answer func(n int) gen.CollectResult) (*client.Client, *atomic.Int64) {
	t.Helper()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		var batch struct {
			Batch []json.RawMessage `json:"batch"`
		}
		if err := json.Unmarshal(body, &batch); err != nil {
			t.Errorf("not a batch: %v", err)
		}
		writeJSON(w, http.StatusOK, answer(len(batch.Batch)))
	}))
	t.Cleanup(srv.Close)
	policy := fastRetry
	policy.MaxAttempts = 3
	c, err := client.New(srv.URL, "1", "key", client.WithLogger(quiet), client.WithRetry(policy))
	if err != nil {
		t.Fatal(err)
	}
	return c, &requests
}

func listed(code gen.ProblemCode, from, to int) []gen.Problem {
	var ps []gen.Problem
	for i := from; i < to; i++ {
		ps = append(ps, gen.Problem{Index: i, Code: code, Message: "listed"})
	}
	return ps
}

// checkInvariant: every event in exactly one status, and the counts of delivered events those of
// the results.
func checkInvariant(t *testing.T, res *client.BatchResult) map[client.Status]int {
	t.Helper()
	by := map[client.Status]int{}
	for _, r := range res.Results {
		by[r.Status]++
	}
	if by[client.StatusDelivered] != res.Delivered() || by[client.StatusRejected] != res.Rejected || by[client.StatusFailed] != res.Failed {
		t.Fatalf("results %v, counts %+v", by, res)
	}
	return by
}

// Answers with rejections counted but not listed: the client places them when the answer
// determines them, and never reports an event delivered that may have been rejected.
func TestAnswersWithUnlistedRejections(t *testing.T) {
	t.Run("every event after the last listed one, one code", func(t *testing.T) {
		c, requests := answering(t, func(n int) gen.CollectResult {
			return gen.CollectResult{Received: n, Accepted: 30, Rejected: n - 30,
				Errors: listed(gen.MissingEventName, 30, 130), Warnings: []gen.Problem{},
				ErrorsOmitted: &[]gen.ProblemCount{{Code: gen.MissingEventName, Count: n - 130}}}
		})
		res, _ := c.SendBatch(context.Background(), searches("a", 200))
		by := checkInvariant(t, res)
		for i, r := range res.Results {
			if (i < 30) != (r.Status == client.StatusDelivered) || (i >= 30 && r.Code != string(gen.MissingEventName)) {
				t.Fatalf("result %d: %+v", i, r)
			}
		}
		if by[client.StatusRejected] != 170 || res.Accepted != 30 || requests.Load() != 1 {
			t.Fatalf("%v %+v", by, res)
		}
	})
	t.Run("some events after the last listed one", func(t *testing.T) {
		c, requests := answering(t, func(n int) gen.CollectResult {
			// 100 listed, then 100 events of which 20 rejected and 80 stored, 10 of those before.
			return gen.CollectResult{Received: n, Accepted: 70, Duplicates: 10, Rejected: 120,
				Errors: listed(gen.MissingEventName, 0, 100), Warnings: []gen.Problem{},
				ErrorsOmitted: &[]gen.ProblemCount{{Code: gen.MissingEventName, Count: 20}}}
		})
		res, err := c.SendBatch(context.Background(), searches("b", 200))
		if !errors.Is(err, client.ErrNotDelivered) {
			t.Fatalf("err = %v", err)
		}
		by := checkInvariant(t, res)
		for i, r := range res.Results {
			switch {
			case i < 100 && r.Status != client.StatusRejected,
				i >= 100 && (r.Status != client.StatusFailed || !errors.Is(r.Err, client.ErrOutcomeUnknown)):
				t.Fatalf("result %d: %+v", i, r)
			}
		}
		// The 80 stored among the unplaced leave the counts, duplicates first.
		if by[client.StatusFailed] != 100 || res.Accepted != 0 || res.Duplicates != 0 || requests.Load() != 1 {
			t.Fatalf("%v %+v", by, res)
		}
	})
	t.Run("every event after the last listed one, two codes", func(t *testing.T) {
		c, _ := answering(t, func(n int) gen.CollectResult {
			return gen.CollectResult{Received: n, Rejected: n,
				Errors: listed(gen.InvalidSource, 0, 1), Warnings: []gen.Problem{},
				ErrorsOmitted: &[]gen.ProblemCount{{Code: gen.InvalidSource, Count: 4}, {Code: gen.MissingEventName, Count: n - 5}}}
		})
		res, _ := c.SendBatch(context.Background(), searches("c", 10))
		by := checkInvariant(t, res)
		if by[client.StatusRejected] != 1 || by[client.StatusFailed] != 9 {
			t.Fatalf("%v %+v", by, res)
		}
	})
	t.Run("warnings left out", func(t *testing.T) {
		c, _ := answering(t, func(n int) gen.CollectResult {
			return gen.CollectResult{Received: n, Accepted: n, Errors: []gen.Problem{},
				Warnings:        []gen.Problem{{Index: 1, Code: gen.SchemaViolation, Path: "/x", Message: "x: bad"}},
				WarningsOmitted: &[]gen.ProblemCount{{Code: gen.SchemaViolation, Count: 7}, {Code: gen.TimestampMoved, Count: 2}}}
		})
		res, err := c.SendBatch(context.Background(), searches("d", 5))
		if err != nil || res.WarningsOmitted != 9 || len(res.Results[1].Warnings) != 1 || res.Results[1].Warnings[0].Index != 1 {
			t.Fatalf("%v %+v", err, res)
		}
	})
	t.Run("more rejections left out than events after the last listed one", func(t *testing.T) {
		c, requests := answering(t, func(n int) gen.CollectResult {
			return gen.CollectResult{Received: n, Rejected: n,
				Errors: listed(gen.InvalidSource, 0, 2), Warnings: []gen.Problem{},
				ErrorsOmitted: &[]gen.ProblemCount{{Code: gen.InvalidSource, Count: n - 2}}}
		})
		// Consistent: every event rejected.
		if res, _ := c.SendBatch(context.Background(), searches("e", 5)); res.Rejected != 5 || requests.Load() != 1 {
			t.Fatalf("%+v", res)
		}
		c, requests = answering(t, func(n int) gen.CollectResult {
			return gen.CollectResult{Received: n, Accepted: 1, Rejected: n - 1,
				Errors: listed(gen.InvalidSource, 3, 4), Warnings: []gen.Problem{},
				ErrorsOmitted: &[]gen.ProblemCount{{Code: gen.InvalidSource, Count: n - 2}}}
		})
		// Not an answer that accounts for the events: retried, then failed.
		res, _ := c.SendBatch(context.Background(), searches("f", 5))
		if res.Failed != 5 || requests.Load() != 3 {
			t.Fatalf("%d requests, %+v", requests.Load(), res)
		}
	})
}
