package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// apiClient is the configClient over a running server's config API (admin.yaml), with the
// generated client: the server checks, applies and logs each change as it does for any client,
// and its caches see them at once rather than within 2 s.
type apiClient struct {
	server string
	api    *adminapi.ClientWithResponses
}

var _ configClient = (*apiClient)(nil)

// apiTimeout bounds one request: the config API answers from the database, so a request that takes
// longer is stuck, and a command should say so rather than hang.
const apiTimeout = 30 * time.Second

func newAPIClient(server, token string) (*apiClient, error) {
	api, err := adminapi.NewClientWithResponses(server,
		adminapi.WithHTTPClient(&http.Client{Timeout: apiTimeout}),
		adminapi.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		return nil, usageError{fmt.Errorf("--server %q: %w", server, err)}
	}
	return &apiClient{server: server, api: api}, nil
}

func (c *apiClient) Close() error { return nil }

// apiError is an error answer of the config API: its status and its Error body.
type apiError struct {
	Status  int
	Code    string
	Message string
}

// Error is the API's message with its code, and for a refused token what to do about it.
func (e *apiError) Error() string {
	msg := fmt.Sprintf("%s (%s)", e.Message, e.Code)
	switch e.Status {
	case http.StatusUnauthorized:
		return "the server refused the admin token (401): " + msg
	case http.StatusForbidden:
		return "the admin token may not do this (403): " + msg +
			"; this command needs a token of scope write (trackapi admin-tokens create --scope write)"
	}
	return msg
}

// ExitCode is 2 for a 400: what the API refuses as a bad request is what the database path
// refuses as a usage error (a destination's settings, a filter); every other error is a failure.
func (e *apiError) ExitCode() int {
	if e.Status == http.StatusBadRequest {
		return 2
	}
	return 1
}

// answer is what every generated response has.
type answer interface {
	Status() string
	StatusCode() int
	GetBody() []byte
}

// check returns nil when resp (the result of a call that returned err) has status want, and
// otherwise the error it carries.
func (c *apiClient) check(resp answer, err error, want int) error {
	if err != nil {
		return fmt.Errorf("reaching the config API at %s (is the server running? without one, use --data): %w", c.server, err)
	}
	if resp.StatusCode() == want {
		return nil
	}
	var body adminapi.Error
	if json.Unmarshal(resp.GetBody(), &body) != nil || body.Message == "" {
		// Not the API's Error: a proxy or another program on that address.
		return &apiError{Status: resp.StatusCode(), Code: strconv.Itoa(resp.StatusCode()),
			Message: fmt.Sprintf("%s answered %s: %.200q", c.server, resp.Status(), resp.GetBody())}
	}
	return &apiError{Status: resp.StatusCode(), Code: string(body.Code), Message: body.Message}
}

// decode checks resp like check and returns its JSON body. It reads the body rather than the
// generated JSON201-like fields, which are nil when the content type is not JSON: an error here,
// not a panic.
func decode[T any](c *apiClient, resp answer, err error, want int) (T, error) {
	var out T
	if err := c.check(resp, err, want); err != nil {
		return out, err
	}
	if err := json.Unmarshal(resp.GetBody(), &out); err != nil {
		return out, fmt.Errorf("the config API's answer: %w", err)
	}
	return out, nil
}

// optional is v for an optional field of a request: nil when it is the zero value.
func optional[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// seconds is an --expire-previous-in as the API takes it.
func seconds(d time.Duration) *int {
	s := int(d / time.Second)
	return &s
}

func (c *apiClient) CreateSource(ctx context.Context, site, name string) (string, error) {
	resp, err := c.api.CreateSourceWithResponse(ctx, adminapi.SourceCreate{Site: site, Name: &name})
	created, err := decode[adminapi.SourceCreated](c, resp, err, http.StatusCreated)
	return created.Key.Key, err
}

// listPage is the most items a page of a list holds (admin.yaml's page_limit_max).
const listPage = 1000

// allPages reads every page of a list of the API: get reads the page after a cursor (nil: the
// first) and returns the page's next cursor, nil on the last.
func allPages(get func(after *string) (next *string, err error)) error {
	var after *string
	for {
		next, err := get(after)
		if err != nil || next == nil {
			return err
		}
		after = next
	}
}

func (c *apiClient) Sources(ctx context.Context) ([]trackapi.Source, error) {
	var out []trackapi.Source
	err := allPages(func(after *string) (*string, error) {
		resp, err := c.api.ListSourcesWithResponse(ctx, &adminapi.ListSourcesParams{After: after, Limit: optional(listPage)})
		page, err := decode[adminapi.SourcePage](c, resp, err, http.StatusOK)
		for _, s := range page.Items {
			out = append(out, trackapi.Source{ID: s.Id, Site: s.Site, Name: s.Name, Active: s.Active, CreatedAt: s.CreatedAt})
		}
		return page.Next, err
	})
	return out, err
}

func (c *apiClient) UpdateSource(ctx context.Context, id int64, change sourceChange) error {
	resp, err := c.api.UpdateSourceWithResponse(ctx, id, adminapi.SourcePatch{Name: change.Name, Active: change.Active})
	return c.check(resp, err, http.StatusOK)
}

// SourceKeys returns the keys oldest first, as the database lists them (the API: newest first).
func (c *apiClient) SourceKeys(ctx context.Context, id int64) ([]trackapi.SourceKey, error) {
	resp, err := c.api.ListSourceKeysWithResponse(ctx, id)
	list, err := decode[adminapi.SourceKeyList](c, resp, err, http.StatusOK)
	if err != nil {
		return nil, err
	}
	out := make([]trackapi.SourceKey, 0, len(list.Items))
	for _, k := range list.Items {
		out = append(out, trackapi.SourceKey{ID: k.Id, SourceID: id, Prefix: k.Prefix, CreatedAt: k.CreatedAt,
			ExpiresAt: orZero(k.ExpiresAt), RevokedAt: orZero(k.RevokedAt), LastUsedAt: orZero(k.LastUsedAt)})
	}
	slices.SortFunc(out, func(a, b trackapi.SourceKey) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (c *apiClient) RotateSourceKey(ctx context.Context, id int64, overlap time.Duration) (string, error) {
	resp, err := c.api.RotateSourceKeyWithResponse(ctx, id, adminapi.KeyRotation{ExpirePreviousAfterSeconds: seconds(overlap)})
	key, err := decode[adminapi.NewSourceKey](c, resp, err, http.StatusCreated)
	return key.Key, err
}

func (c *apiClient) RevokeSourceKey(ctx context.Context, id, keyID int64) error {
	resp, err := c.api.RevokeSourceKeyWithResponse(ctx, id, keyID)
	return c.check(resp, err, http.StatusNoContent)
}

func (c *apiClient) CreateDestination(ctx context.Context, d trackapi.Destination) (int64, string, error) {
	body := adminapi.DestinationCreate{Name: d.Name, Type: adminapi.DestinationType(d.Type),
		Url: optional(d.Config.URL), AllowPrivate: optional(d.Config.AllowPrivate), Site: optional(d.Config.Site),
		Token: optional(d.Config.Token), Topic: optional(d.Config.Topic), Path: optional(d.Config.Path),
		ConsentCategory: optional(d.ConsentCategory), BatchSize: optional(d.BatchSize)}
	if len(d.Config.Brokers) > 0 {
		body.Brokers = &d.Config.Brokers
	}
	if len(d.Sources) > 0 {
		body.Sources = &d.Sources
	}
	if len(d.Filter) > 0 {
		// Strictly, as the API reads it: an unknown field is a mistake, not something to drop.
		dec := json.NewDecoder(bytes.NewReader(d.Filter))
		dec.DisallowUnknownFields()
		body.Filter = &adminapi.DestinationFilter{}
		if err := dec.Decode(body.Filter); err != nil {
			return 0, "", usageError{fmt.Errorf("--filter: %w", err)}
		}
	}
	resp, err := c.api.CreateDestinationWithResponse(ctx, body)
	created, err := decode[adminapi.DestinationCreated](c, resp, err, http.StatusCreated)
	if err != nil {
		return 0, "", err
	}
	return created.Destination.Id, orZero(created.SigningSecret), nil
}

func (c *apiClient) Destinations(ctx context.Context) ([]destinationState, error) {
	var out []destinationState
	now := time.Now()
	err := allPages(func(after *string) (*string, error) {
		resp, err := c.api.ListDestinationsWithResponse(ctx, &adminapi.ListDestinationsParams{After: after, Limit: optional(listPage)})
		page, err := decode[adminapi.DestinationPage](c, resp, err, http.StatusOK)
		for _, d := range page.Items {
			out = append(out, destinationOf(d, now))
		}
		return page.Next, err
	})
	return out, err
}

// destinationOf is what listings show of a destination of the API. Its lag comes as seconds:
// LagSince is now less them, which listings turn back into the same seconds.
func destinationOf(d adminapi.Destination, now time.Time) destinationState {
	out := destinationState{
		Destination: trackapi.Destination{ID: d.Id, Name: d.Name, Type: string(d.Type), Status: string(d.Status),
			Config: trackapi.DestinationConfig{URL: orZero(d.Url), Brokers: orZero(d.Brokers), Topic: orZero(d.Topic), Path: orZero(d.Path)}},
		State: trackapi.DeliveryState{Cursor: d.State.Cursor, LagEvents: d.State.LagEvents, Retries: d.State.Retries,
			DeadLetters: d.State.DeadLetters, NextRetryAt: orZero(d.State.NextRetryAt)},
	}
	if d.State.LagSeconds != nil {
		out.State.LagSince = now.Add(-time.Duration(*d.State.LagSeconds) * time.Second)
	}
	return out
}

func (c *apiClient) SetDestinationStatus(ctx context.Context, id int64, status string) error {
	st := adminapi.DestinationStatus(status)
	resp, err := c.api.UpdateDestinationWithResponse(ctx, id, adminapi.DestinationPatch{Status: &st})
	return c.check(resp, err, http.StatusOK)
}

func (c *apiClient) DeleteDestination(ctx context.Context, id int64) error {
	resp, err := c.api.DeleteDestinationWithResponse(ctx, id)
	return c.check(resp, err, http.StatusNoContent)
}

func (c *apiClient) RotateSigningSecret(ctx context.Context, id int64, overlap time.Duration) (string, error) {
	resp, err := c.api.RotateSigningSecretWithResponse(ctx, id, adminapi.KeyRotation{ExpirePreviousAfterSeconds: seconds(overlap)})
	secret, err := decode[adminapi.NewSigningSecret](c, resp, err, http.StatusCreated)
	return secret.SigningSecret, err
}

func (c *apiClient) DeadLetters(ctx context.Context, destination int64, reason string, after int64) ([]trackapi.DeadLetter, int64, error) {
	params := &adminapi.ListDeadLettersParams{Limit: optional(deadLetterPage), Reason: optional(reason)}
	if after > 0 {
		params.After = optional(strconv.FormatInt(after, 10))
	}
	resp, err := c.api.ListDeadLettersWithResponse(ctx, destination, params)
	page, err := decode[adminapi.DeadLetterPage](c, resp, err, http.StatusOK)
	if err != nil {
		return nil, 0, err
	}
	out := make([]trackapi.DeadLetter, 0, len(page.Items))
	for _, d := range page.Items {
		out = append(out, trackapi.DeadLetter{Seq: d.Seq, DestinationID: destination, Kind: string(d.Kind), Reason: d.Reason,
			Error: d.Error, Attempts: d.Attempts, FirstFailedAt: d.FirstFailedAt, FailedAt: d.FailedAt, EventName: d.EventName})
	}
	var next int64
	if page.Next != nil {
		if next, err = strconv.ParseInt(*page.Next, 10, 64); err != nil {
			return nil, 0, fmt.Errorf("the config API's cursor %q: %w", *page.Next, err)
		}
	}
	return out, next, nil
}

func (c *apiClient) ReplayDeadLetters(ctx context.Context, destination int64, reason string) (int64, error) {
	resp, err := c.api.ReplayDeadLettersWithResponse(ctx, destination, adminapi.DeadLetterSelection{Reason: optional(reason)})
	n, err := decode[adminapi.Count](c, resp, err, http.StatusOK)
	return n.Count, err
}

func (c *apiClient) PurgeDeadLetters(ctx context.Context, destination int64, reason string) (int64, error) {
	resp, err := c.api.PurgeDeadLettersWithResponse(ctx, destination, &adminapi.PurgeDeadLettersParams{Reason: optional(reason)})
	n, err := decode[adminapi.Count](c, resp, err, http.StatusOK)
	return n.Count, err
}

// orZero is an optional field of an answer, or its zero value when absent.
func orZero[T any](v *T) T {
	if v == nil {
		var zero T
		return zero
	}
	return *v
}
