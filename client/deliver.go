package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/trackapi/trackapi/gen"
)

// deliver sends one packed batch (or, when single, one event on POST /events) with retries, and
// records the outcome of each of its events in out.
//
// A 400 is never retried unchanged. When it names the element at fault (index), that event is
// rejected with the server's code and the others are sent again without it, so that one bad
// event does not cost its neighbours; each such round removes an event, so it ends. A
// payload_too_large for a batch (a proxy or server with lower limits than the spec's) splits the
// batch in two halves, sent one after the other. Any other 400 rejects every event of the request
// with the server's code.
func (c *Client) deliver(ctx context.Context, batch []encoded, single bool, out *BatchResult) {
	for len(batch) > 0 {
		body := batch[0].raw
		what := "POST /events"
		if !single {
			body = batchBody(batch)
			what = fmt.Sprintf("POST /events/batch (%d events, %d bytes)", len(batch), len(body))
		}
		var res *gen.CollectResult
		attempts, err := c.withRetries(ctx, what, func(actx context.Context) (bool, time.Duration, error) {
			r, retry, retryAfter, err := c.post(actx, single, body)
			if err != nil {
				return retry, retryAfter, err
			}
			if err := checkCounts(r, len(batch)); err != nil {
				// Not the answer of a trackapi server; a retry is safe and may reach one.
				return true, 0, err
			}
			res = r
			return false, 0, nil
		})
		out.Requests += attempts
		if err == nil {
			record(batch, res, out)
			return
		}
		var se *ServerError
		if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest {
			for _, e := range batch {
				finish(out, e, StatusFailed, "", err, nil)
			}
			return
		}
		switch {
		case !single && len(batch) > 1 && se.Index != nil && *se.Index >= 0 && *se.Index < len(batch):
			i := *se.Index
			finish(out, batch[i], StatusRejected, se.Code, err, nil)
			rest := make([]encoded, 0, len(batch)-1)
			batch = append(append(rest, batch[:i]...), batch[i+1:]...)
		case !single && len(batch) > 1 && se.Code == string(gen.ErrorCodePayloadTooLarge):
			half := len(batch) / 2
			c.deliver(ctx, batch[:half], false, out)
			batch = batch[half:]
		default:
			for _, e := range batch {
				finish(out, e, StatusRejected, se.Code, err, nil)
			}
			return
		}
	}
}

// post makes one attempt. retry tells whether its error is worth another attempt.
func (c *Client) post(ctx context.Context, single bool, body []byte) (res *gen.CollectResult, retry bool, retryAfter time.Duration, err error) {
	var resp *http.Response
	if single {
		resp, err = c.api.CollectEventWithBody(ctx, &gen.CollectEventParams{TcS: &c.site, Authorization: &c.auth},
			"application/json", bytes.NewReader(body))
	} else {
		resp, err = c.api.CollectBatchWithBody(ctx, &gen.CollectBatchParams{TcS: &c.site, Authorization: &c.auth},
			"application/json", bytes.NewReader(body))
	}
	if err != nil {
		// No answer: the connection failed, broke, or the attempt timed out. The server may have
		// stored the events; the retry will then find them duplicates.
		return nil, true, 0, err
	}
	defer resp.Body.Close()
	// The body is read and parsed here rather than by the generated ParseCollect*Response: a
	// proxy's 502 page or an HTTP-date Retry-After must stay a retryable answer, not a parse error.
	data, err := readLimited(resp.Body)
	if err != nil {
		return nil, true, 0, fmt.Errorf("reading the answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode == http.StatusOK {
		var r gen.CollectResult
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, true, 0, fmt.Errorf("a 200 whose body is not a collect result: %w", err)
		}
		return &r, false, 0, nil
	}
	se := &ServerError{StatusCode: resp.StatusCode}
	var e gen.Error
	if json.Unmarshal(data, &e) == nil {
		se.Code, se.Message, se.Index = string(e.Code), e.Message, e.Index
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), c.now()); ok {
		se.RetryAfter = d
	}
	return nil, se.retryable(), se.RetryAfter, se
}

// checkCounts refuses a 200 that does not account for the events sent (openapi.yaml:
// received = accepted + duplicates + rejected, one error for each rejected event).
func checkCounts(r *gen.CollectResult, sent int) error {
	rejected := map[int]bool{}
	for _, p := range r.Errors {
		if p.Index < 0 || p.Index >= sent {
			return fmt.Errorf("the answer has an error for event %d of %d", p.Index, sent)
		}
		rejected[p.Index] = true
	}
	if r.Received != sent || r.Accepted+r.Duplicates+r.Rejected != r.Received || len(rejected) != r.Rejected {
		return fmt.Errorf("the answer counts %d received (%d accepted, %d duplicates, %d rejected, %d with errors) for %d events sent",
			r.Received, r.Accepted, r.Duplicates, r.Rejected, len(rejected), sent)
	}
	return nil
}

// record maps a 200's counts, errors and warnings back to the events of the request.
func record(batch []encoded, res *gen.CollectResult, out *BatchResult) {
	out.Accepted += res.Accepted
	out.Duplicates += res.Duplicates
	rejections := map[int]gen.Problem{}
	for _, p := range res.Errors {
		if _, seen := rejections[p.Index]; !seen {
			rejections[p.Index] = p
		}
	}
	warnings := map[int][]gen.Problem{}
	for _, p := range res.Warnings {
		if p.Index >= 0 && p.Index < len(batch) {
			i := p.Index
			p.Index = batch[i].index
			warnings[i] = append(warnings[i], p)
		}
	}
	for i, e := range batch {
		if p, ok := rejections[i]; ok {
			p.Index = e.index
			finish(out, e, StatusRejected, string(p.Code), &RejectedError{Problem: p}, warnings[i])
			continue
		}
		finish(out, e, StatusDelivered, "", nil, warnings[i])
	}
}

func finish(out *BatchResult, e encoded, status Status, code string, err error, warnings []gen.Problem) {
	out.Results[e.slot] = Result{
		Index: e.index, EventID: e.id, Status: status, Code: code, Err: err,
		Warnings: warnings, Event: e.raw,
	}
	switch status {
	case StatusRejected:
		out.Rejected++
	case StatusFailed:
		out.Failed++
	}
}
