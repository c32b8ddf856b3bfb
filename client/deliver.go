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
		resp, err = c.api.CollectEventWithBody(ctx, &gen.CollectEventParams{TcS: &c.site},
			"application/json", bytes.NewReader(body))
	} else {
		resp, err = c.api.CollectBatchWithBody(ctx, &gen.CollectBatchParams{TcS: &c.site},
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
// received = accepted + duplicates + rejected, and each rejected event has one rejection, listed
// in errors or counted in errors_omitted, the unlisted ones all after the last one listed).
func checkCounts(r *gen.CollectResult, sent int) error {
	rejected := map[int]bool{}
	last := -1
	for _, p := range r.Errors {
		if p.Index < 0 || p.Index >= sent {
			return fmt.Errorf("the answer has an error for event %d of %d", p.Index, sent)
		}
		rejected[p.Index] = true
		last = max(last, p.Index)
	}
	omitted, err := omittedCount(r.ErrorsOmitted)
	if err != nil {
		return err
	}
	if omitted > sent-1-last {
		return fmt.Errorf("the answer counts %d rejections not listed, but only %d events come after the last one listed", omitted, sent-1-last)
	}
	if r.Received != sent || r.Accepted+r.Duplicates+r.Rejected != r.Received || len(rejected)+omitted != r.Rejected {
		return fmt.Errorf("the answer counts %d received (%d accepted, %d duplicates, %d rejected, %d with errors listed, %d not listed) for %d events sent",
			r.Received, r.Accepted, r.Duplicates, r.Rejected, len(rejected), omitted, sent)
	}
	return nil
}

// omittedCount sums the counts of errors_omitted or warnings_omitted.
func omittedCount(omitted *[]gen.ProblemCount) (int, error) {
	if omitted == nil {
		return 0, nil
	}
	n := 0
	for _, c := range *omitted {
		if c.Count < 0 {
			return 0, fmt.Errorf("the answer counts %d problems %s left out", c.Count, c.Code)
		}
		n += c.Count
	}
	return n, nil
}

// record maps a 200's counts, errors and warnings back to the events of the request (checkCounts
// has accepted it).
//
// The server lists at most 100 errors and 100 warnings, the first ones, and counts the rest by
// code. Rejections it did not list all come after the last one listed (among the "unplaced"
// events). When every unplaced event must then be rejected (as many as the rejections left out)
// and those have one code, each is rejected with that code: a wrong key, which rejects every event
// of a request, is always such a case. Otherwise the answer does not say which of them were
// rejected, and the client does not guess: they end Failed with ErrOutcomeUnknown (sending them
// again is safe: those stored come back as duplicates), and the counts lose those of them the
// server stored, from Duplicates first, so that Accepted + Duplicates stays the number of events
// Delivered. With this client and a trackapi server that never happens: the only rejection other
// than invalid_source, missing_event_name, is refused before sending.
func record(batch []encoded, res *gen.CollectResult, out *BatchResult) {
	rejections := map[int]gen.Problem{}
	last := -1
	for _, p := range res.Errors {
		if _, seen := rejections[p.Index]; !seen {
			rejections[p.Index] = p
		}
		last = max(last, p.Index)
	}
	omitted, _ := omittedCount(res.ErrorsOmitted)
	unplaced := 0 // events after the last listed rejection, when some rejections are not listed
	var unlisted *gen.Problem
	if omitted > 0 {
		unplaced = len(batch) - 1 - last
		if unplaced == omitted && len(*res.ErrorsOmitted) == 1 {
			c := (*res.ErrorsOmitted)[0]
			unlisted = &gen.Problem{Code: c.Code, Message: fmt.Sprintf(
				"rejected: one of %d %s rejections the server counted without listing them", c.Count, c.Code)}
		}
	}
	accepted, duplicates := res.Accepted, res.Duplicates
	if unplaced > 0 && unlisted == nil {
		gone := unplaced - omitted // stored (or already stored) events among the unplaced
		fromDuplicates := min(gone, duplicates)
		duplicates -= fromDuplicates
		accepted -= gone - fromDuplicates
	}
	out.Accepted += accepted
	out.Duplicates += duplicates
	if res.WarningsOmitted != nil {
		n, _ := omittedCount(res.WarningsOmitted)
		out.WarningsOmitted += n
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
		p, listed := rejections[i]
		switch {
		case listed:
		case unplaced > 0 && i > last && unlisted != nil:
			p = *unlisted
		case unplaced > 0 && i > last:
			finish(out, e, StatusFailed, "", ErrOutcomeUnknown, warnings[i])
			continue
		default:
			finish(out, e, StatusDelivered, "", nil, warnings[i])
			continue
		}
		p.Index = e.index
		finish(out, e, StatusRejected, string(p.Code), &RejectedError{Problem: p}, warnings[i])
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
