package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/trackapi/trackapi/gen"
)

// Status is what became of one event. Every event ends in exactly one of them.
type Status int

const (
	// StatusDelivered: the server has the event, stored by this call or already stored before (a
	// duplicate of an earlier attempt or send). Nothing more to do.
	StatusDelivered Status = iota + 1
	// StatusRejected: the server (or the client, on its behalf, before sending) refused the
	// event; Code says why. Sending it again unchanged will not help.
	StatusRejected
	// StatusFailed: the event could not be delivered (network, timeouts, 5xx after the retries,
	// a cancelled context, an unexpected answer). It was not refused: sending it again later may
	// work, and is safe, because its event_id makes a repeat a duplicate.
	StatusFailed
)

// String is the status as the CLI and logs show it: delivered, rejected or failed.
func (s Status) String() string {
	switch s {
	case StatusDelivered:
		return "delivered"
	case StatusRejected:
		return "rejected"
	case StatusFailed:
		return "failed"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of one event.
type Result struct {
	// Index is the event's position in the slice given to SendBatch (0 for Send). For a Batcher
	// it is the event's sequence number: the number of events Enqueue took before it.
	Index int
	// EventID is the event's context.event_id, given or filled by the client: the key the server
	// deduplicates on, and the one to look for in the server's export.
	EventID string
	Status  Status
	// Code says why an event was not delivered: the server's rejection code (invalid_source,
	// missing_event_name), the code of a 400 (event_too_large, invalid_json, ...), the same
	// codes for a local refusal, or "" for a failure.
	Code string
	// Err is why the event was not delivered (nil when delivered): a *RejectedError, a
	// *ServerError, an *EventError, or a network or context error.
	Err error
	// Warnings are the server's warnings about the event (stored anyway), with Index set to the
	// event's Index rather than its position in the request. The server lists at most 100
	// warnings a request (the first ones) and only counts the others
	// (BatchResult.WarningsOmitted), so an event of a large request may lack some. An
	// event_id_reused warning means that the server had stored a different event with this
	// event's id: this one was not stored (it still counts as delivered, a duplicate).
	Warnings []gen.Problem
	// Event is the event exactly as sent (or as it would have been sent): JSON with its
	// event_id and timestamp, ready to be stored and sent again.
	Event json.RawMessage
}

// String reads well in logs: "event 3 (id) rejected: ...".
func (r Result) String() string {
	s := fmt.Sprintf("event %d (%s) %s", r.Index, r.EventID, r.Status)
	if r.Err != nil {
		s += ": " + r.Err.Error()
	}
	return s
}

// BatchResult is the outcome of a SendBatch: one Result per event and the server's counts.
type BatchResult struct {
	// Results holds one Result per event, in the order given.
	Results []Result
	// Accepted and Duplicates are the server's counts: events stored by this call, and events it
	// had stored already (from an earlier attempt whose answer was lost, or an earlier send).
	// Their sum is the number of delivered events: when an answer leaves it open which events it
	// rejected (see ErrOutcomeUnknown), the events it stored among those are left out.
	Accepted, Duplicates int
	// Rejected and Failed count the events with those statuses.
	Rejected, Failed int
	// Requests is the number of HTTP requests made, retries included.
	Requests int
	// WarningsOmitted is how many warnings the server counted but did not list (it lists at most
	// 100 a request): no Result has them.
	WarningsOmitted int
}

// Delivered is the number of events the server has: Accepted + Duplicates.
func (b *BatchResult) Delivered() int { return b.Accepted + b.Duplicates }

func newBatchResult(n int) *BatchResult {
	return &BatchResult{Results: make([]Result, n)}
}

// err summarises the results as the error SendBatch returns.
func (b *BatchResult) err() error {
	if b.Rejected == 0 && b.Failed == 0 {
		return nil
	}
	var first error
	for _, r := range b.Results {
		if r.Status != StatusDelivered {
			first = fmt.Errorf("event %d (%s): %w", r.Index, r.EventID, r.Err)
			break
		}
	}
	return fmt.Errorf("client: %d of %d events not delivered (%d rejected, %d failed): %w; first: %w",
		b.Rejected+b.Failed, len(b.Results), b.Rejected, b.Failed, ErrNotDelivered, first)
}

// ErrNotDelivered is wrapped by SendBatch's error when some events were rejected or failed.
var ErrNotDelivered = errors.New("events not delivered")

// ErrOutcomeUnknown is the error of a Failed event whose request was answered, but whose answer
// does not say whether (or why) it was rejected: the server lists at most 100 rejections a request
// and counts the others by code, which all come after the last one listed; unless those events
// were all rejected with one code, which of them were, or with which code, is unknown. It may be
// stored; sending it again is safe (a stored one comes back as a duplicate) and tells.
var ErrOutcomeUnknown = errors.New("the server's answer does not say whether (or why) this event was rejected")

// RejectedError is the server's rejection of one event in a 200 answer: the
// request was fine, this event was not stored.
type RejectedError struct {
	Problem gen.Problem // Index is the event's Index, as in Result
}

// Error gives the server's code and message.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("rejected by the server: %s: %s", e.Problem.Code, e.Problem.Message)
}

// ServerError is an HTTP answer other than 200: a 400 (the request was refused and must not be
// sent again unchanged), a 503 or 429 (retried while the budget lasts) or anything a proxy may
// answer.
type ServerError struct {
	StatusCode int
	// Code and Message are the server's Error body, when it sent one ("" otherwise).
	Code    string
	Message string
	// Index is the batch element at fault, for a 400 that names one.
	Index *int
	// RetryAfter is the wait the server asked for (0 when it did not).
	RetryAfter time.Duration
}

// Error gives the HTTP status and the server's code and message, when it sent them.
func (e *ServerError) Error() string {
	msg := fmt.Sprintf("HTTP %d", e.StatusCode)
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// retryable tells whether the same request may succeed later: overload, unavailability and
// gateway errors, never a refusal.
func (e *ServerError) retryable() bool {
	switch {
	case e.StatusCode == 408 || e.StatusCode == 429:
		return true
	case e.StatusCode >= 500:
		return true
	}
	return false
}

// EventError is a local refusal: an event the server would refuse, so it was not sent. Index is
// its position (as in Result.Index); Err is ErrEventTooLarge or ErrInvalidEvent.
type EventError struct {
	Index int
	// Size is the event's encoded size in bytes, when it could be encoded.
	Size int
	// Reason says what is wrong, for ErrInvalidEvent.
	Reason string
	Err    error
}

// Error names the event by its index and says what is wrong with it.
func (e *EventError) Error() string {
	if errors.Is(e.Err, ErrEventTooLarge) {
		return fmt.Sprintf("event %d is %d bytes, over the %d-byte limit", e.Index, e.Size, MaxEventBytes)
	}
	return fmt.Sprintf("event %d: %v: %s", e.Index, e.Err, e.Reason)
}

// Unwrap gives ErrEventTooLarge or ErrInvalidEvent, for errors.Is.
func (e *EventError) Unwrap() error { return e.Err }

// The causes of an EventError.
var (
	// ErrEventTooLarge: the encoded event is over MaxEventBytes.
	ErrEventTooLarge = errors.New("event too large")
	// ErrInvalidEvent: the event is not something the server stores: not a JSON object, invalid
	// UTF-8, no string event_name, a context that is not an object.
	ErrInvalidEvent = errors.New("invalid event")
)

// Code is the server's code for what the refusal avoided: event_too_large, missing_event_name
// or invalid_payload.
func (e *EventError) Code() string {
	switch {
	case errors.Is(e.Err, ErrEventTooLarge):
		return string(gen.ErrorCodeEventTooLarge)
	case e.Reason == reasonNoName:
		return string(gen.MissingEventName)
	}
	return string(gen.ErrorCodeInvalidPayload)
}

// localCode is the server's code for a local refusal, "" for other errors.
func localCode(err error) string {
	var ee *EventError
	if !errors.As(err, &ee) {
		return ""
	}
	return ee.Code()
}
