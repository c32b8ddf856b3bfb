package admin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// do sends a raw request through the spec-checking client and decodes an Error body.
func (e *env) do(method, path, token, body string, headers ...string) (int, adminapi.Error, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.HTTP.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var apiErr adminapi.Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &apiErr); err != nil {
			e.t.Errorf("%s %s: %d with a body that is not an Error: %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, apiErr, b
}

// Every way of not having the right token gets its 401 or 403 as a JSON Error, and changes nothing.
func TestAuth(t *testing.T) {
	e := newEnv(t)
	expired := func() string {
		made, err := e.Tokens.Create(ctx(t), "short", trackapi.ScopeWrite, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		return made.Token
	}()
	revoked := func() string {
		made, err := e.Tokens.Create(ctx(t), "gone", trackapi.ScopeWrite, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Tokens.Revoke(ctx(t), made.Stored.ID); err != nil {
			t.Fatal(err)
		}
		return made.Token
	}()
	create := `{"site":"77","name":"should not exist"}`
	cases := []struct {
		name          string
		path, header  string
		token         string
		status        int
		code, message string
	}{
		{name: "no token", path: "/api/sources", status: 401, code: "unauthorized", message: "Authorization: Bearer"},
		{name: "not bearer", path: "/api/sources", header: "Basic " + e.Write, status: 401, code: "unauthorized"},
		{name: "malformed", path: "/api/sources", token: "hello", status: 401, code: "unauthorized", message: "not an admin token"},
		{name: "unknown", path: "/api/sources", token: trackapi.NewAdminToken(), status: 401, code: "unauthorized", message: "unknown"},
		{name: "expired", path: "/api/sources", token: expired, status: 401, code: "unauthorized", message: "expired"},
		{name: "revoked", path: "/api/sources", token: revoked, status: 401, code: "unauthorized", message: "revoked"},
		{name: "read token on a write route", path: "/api/sources", token: e.Read, status: 403, code: "forbidden", message: "scope write"},
		{name: "token in the query string", path: "/api/sources?token=" + e.Write, token: e.Write, status: 401, code: "unauthorized", message: "not accepted in the URL"},
		{name: "access_token in the query string", path: "/api/sources?access_token=" + e.Write, status: 401, code: "unauthorized", message: "not accepted in the URL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			headers := []string{}
			if c.header != "" {
				headers = append(headers, "Authorization", c.header)
			}
			status, apiErr, body := e.do(http.MethodPost, c.path, c.token, create, headers...)
			if status != c.status || string(apiErr.Code) != c.code || !strings.Contains(apiErr.Message, c.message) {
				t.Errorf("got %d %s, want %d %s with %q", status, body, c.status, c.code, c.message)
			}
			if strings.Contains(string(body), e.Write) || (c.token != "" && strings.Contains(string(body), c.token)) {
				t.Errorf("the answer repeats the token: %s", body)
			}
		})
	}
	list, err := e.ReadAPI.ListSourcesWithResponse(ctx(t), nil)
	if err != nil || list.JSON200 == nil {
		t.Fatalf("read token cannot list: %v %s", err, list.Body)
	}
	if n := len(list.JSON200.Items); n != 0 {
		t.Errorf("%d sources exist after refused creations, want 0", n)
	}
	// A read token reads; the operations API and the spec need no token.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/admin.yaml"} {
		if status, _, _ := e.do(http.MethodGet, path, "", ""); status != 200 {
			t.Errorf("GET %s without a token: %d, want 200", path, status)
		}
	}
}

// Bad input is a 400 from the validator, whose message names the field.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	src, err := e.API.CreateSourceWithResponse(ctx(t), adminapi.CreateSourceJSONRequestBody{Site: "29"})
	if err != nil || src.JSON201 == nil {
		t.Fatalf("create source: %v %s", err, src.Body)
	}
	cases := []struct {
		name, method, path, body string
		code, field              string
	}{
		{"wrong type in the body", "POST", "/api/sources", `{"site":29}`, "bad_request", "site"},
		{"unknown field", "POST", "/api/sources", `{"site":"29","colour":"red"}`, "bad_request", "colour"},
		{"missing field", "POST", "/api/sources", `{"name":"x"}`, "bad_request", "site"},
		{"not JSON", "POST", "/api/sources", `{"site":`, "bad_request", "body"},
		{"path id not a number", "GET", "/api/sources/abc", "", "bad_request", "sourceId"},
		{"limit out of range", "GET", "/api/sources?limit=5000", "", "bad_request", "limit"},
		{"limit not a number", "GET", "/api/destinations?limit=many", "", "bad_request", "limit"},
		{"bad cursor", "GET", "/api/sources?after=abc", "", "bad_request", "after"},
		{"cursor past int64", "GET", "/api/sources?after=99999999999999999999", "", "bad_request", "after"},
		{"bad time", "GET", "/api/inspector/events?since=yesterday", "", "bad_request", "since"},
		{"inverted time range", "GET", "/api/inspector/events?since=2026-12-07T10:00:00Z&until=2026-12-07T09:00:00Z", "", "bad_request", "until"},
		{"inverted report period", "GET", "/api/sources/1/data-quality?start=2026-12-07T10:00:00Z&end=2026-12-07T09:00:00Z", "", "bad_request", "end"},
		{"unknown enum", "GET", "/api/inspector/events?outcome=maybe", "", "bad_request", "outcome"},
		{"rotation overlap too long", "POST", "/api/sources/1/keys", `{"expire_previous_after_seconds":999999}`, "bad_request", "expire_previous_after_seconds"},
		{"empty patch", "PATCH", "/api/sources/1", `{}`, "bad_request", "properties"},
		{"destination without a url", "POST", "/api/destinations", `{"name":"h","type":"webhook"}`, "bad_request", "url"},
		{"unknown destination type", "POST", "/api/destinations", `{"name":"h","type":"ftp"}`, "bad_request", "type"},
		{"bad filter operator", "POST", "/api/destinations", `{"name":"h","type":"file","path":"/tmp/x","filter":{"conditions":[{"path":"/a","op":"like"}]}}`, "bad_request", "op"},
		{"bad regexp in a filter", "POST", "/api/destinations", `{"name":"h","type":"file","path":"/tmp/x","filter":{"conditions":[{"path":"/a","op":"matches","value":"("}]}}`, "bad_request", "filter"},
		{"oversized body", "POST", "/api/sources", `{"site":"29","name":"` + strings.Repeat("x", 70000) + `"}`, "body_too_large", "65536"},
		{"unknown route", "GET", "/api/nothing", "", "not_found", "/api/nothing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, apiErr, body := e.do(c.method, c.path, e.Write, c.body)
			wantStatus := 400
			if c.code == "not_found" {
				wantStatus = 404
			}
			if status != wantStatus || string(apiErr.Code) != c.code || !strings.Contains(apiErr.Message, c.field) {
				t.Errorf("got %d %s, want %d %s naming %q", status, body, wantStatus, c.code, c.field)
			}
		})
	}
}

// A chunked body over the limit is refused too (kin-openapi would read it whole otherwise).
func TestChunkedBodyOverLimit(t *testing.T) {
	e := newEnv(t)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"site":"29","name":"`))
		chunk := bytes.Repeat([]byte("x"), 8192)
		for range 20 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		_, _ = pw.Write([]byte(`"}`))
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, e.URL+"/api/sources", pr)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.Write)
	resp, err := e.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "body_too_large") {
		t.Errorf("got %d %s, want 400 body_too_large", resp.StatusCode, b)
	}
}

// Sources: create with a key shown once, rename, deactivate, rotate with an overlap, revoke.
func TestSourcesAndKeys(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	name := "web shop"
	created, err := e.API.CreateSourceWithResponse(c, adminapi.CreateSourceJSONRequestBody{Site: "29", Name: &name})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("create: %v %s", err, created.Body)
	}
	src, first := created.JSON201.Source, created.JSON201.Key
	if src.Site != "29" || src.Name != name || !src.Active || src.LiveKeys != 1 || !strings.HasPrefix(first.Key, first.Prefix) {
		t.Fatalf("created %+v with key %+v", src, first)
	}
	if auth, err := e.Sources.Authenticate(c, "29", first.Key); err != nil || !auth.OK() {
		t.Fatalf("the new key does not authenticate: %+v %v", auth, err)
	}

	renamed := "shop"
	active := false
	patched, err := e.API.UpdateSourceWithResponse(c, src.Id, adminapi.UpdateSourceJSONRequestBody{Name: &renamed, Active: &active})
	if err != nil || patched.JSON200 == nil || patched.JSON200.Name != renamed || patched.JSON200.Active {
		t.Fatalf("patch: %v %s", err, patched.Body)
	}
	if auth, _ := e.Sources.Authenticate(c, "29", first.Key); auth.OK() {
		t.Errorf("a deactivated source's key still authenticates")
	}
	active = true
	if r, err := e.API.UpdateSourceWithResponse(c, src.Id, adminapi.UpdateSourceJSONRequestBody{Active: &active}); err != nil || r.JSON200 == nil {
		t.Fatalf("reactivate: %v %s", err, r.Body)
	}

	overlap := 3600
	rotated, err := e.API.RotateSourceKeyWithResponse(c, src.Id, adminapi.RotateSourceKeyJSONRequestBody{ExpirePreviousAfterSeconds: &overlap})
	if err != nil || rotated.JSON201 == nil {
		t.Fatalf("rotate: %v %s", err, rotated.Body)
	}
	second := *rotated.JSON201
	if second.PreviousExpireAt == nil || second.PreviousExpireAt.Sub(second.CreatedAt) != time.Hour {
		t.Errorf("previous_expire_at %v, want an hour after %v", second.PreviousExpireAt, second.CreatedAt)
	}
	keys, err := e.ReadAPI.ListSourceKeysWithResponse(c, src.Id)
	if err != nil || keys.JSON200 == nil || len(keys.JSON200.Items) != 2 {
		t.Fatalf("keys: %v %s", err, keys.Body)
	}
	newest, oldest := keys.JSON200.Items[0], keys.JSON200.Items[1]
	if newest.Id != second.Id || oldest.Id != first.Id || oldest.ExpiresAt == nil || !newest.Live || !oldest.Live {
		t.Errorf("keys %+v", keys.JSON200.Items)
	}
	if strings.Contains(string(keys.Body), first.Key) || strings.Contains(string(keys.Body), second.Key) {
		t.Errorf("the key list shows a key: %s", keys.Body)
	}

	if r, err := e.API.RevokeSourceKeyWithResponse(c, src.Id, first.Id); err != nil || r.StatusCode() != 204 {
		t.Fatalf("revoke: %v %d %s", err, r.StatusCode(), r.Body)
	}
	if auth, _ := e.Sources.Authenticate(c, "29", first.Key); auth.OK() {
		t.Errorf("a revoked key still authenticates")
	}
	got, err := e.ReadAPI.GetSourceWithResponse(c, src.Id)
	if err != nil || got.JSON200 == nil || got.JSON200.LiveKeys != 1 {
		t.Errorf("get: %v %s", err, got.Body)
	}
	// Four more rotations with long overlaps make 5 live keys; the sixth is a conflict.
	long := 86400
	for range 4 {
		if r, _ := e.API.RotateSourceKeyWithResponse(c, src.Id, adminapi.RotateSourceKeyJSONRequestBody{ExpirePreviousAfterSeconds: &long}); r.JSON201 == nil {
			t.Fatalf("rotate: %s", r.Body)
		}
	}
	if r, _ := e.API.RotateSourceKeyWithResponse(c, src.Id, adminapi.RotateSourceKeyJSONRequestBody{ExpirePreviousAfterSeconds: &long}); r.JSON409 == nil {
		t.Errorf("a sixth live key: %d %s, want 409", r.StatusCode(), r.Body)
	}
	if r, _ := e.ReadAPI.GetSourceWithResponse(c, 999); r.JSON404 == nil {
		t.Errorf("unknown source: %d %s, want 404", r.StatusCode(), r.Body)
	}
	// Paging: three sources, two a page.
	for _, site := range []string{"30", "31"} {
		if r, _ := e.API.CreateSourceWithResponse(c, adminapi.CreateSourceJSONRequestBody{Site: site}); r.JSON201 == nil {
			t.Fatal(string(r.Body))
		}
	}
	limit := 2
	page, _ := e.ReadAPI.ListSourcesWithResponse(c, &adminapi.ListSourcesParams{Limit: &limit})
	if page.JSON200 == nil || len(page.JSON200.Items) != 2 || page.JSON200.Next == nil {
		t.Fatalf("first page: %s", page.Body)
	}
	page2, _ := e.ReadAPI.ListSourcesWithResponse(c, &adminapi.ListSourcesParams{Limit: &limit, After: page.JSON200.Next})
	if page2.JSON200 == nil || len(page2.JSON200.Items) != 1 || page2.JSON200.Next != nil || page2.JSON200.Items[0].Site != "31" {
		t.Errorf("second page: %s", page2.Body)
	}
}

// receiver is a webhook endpoint on 127.0.0.1 that records what it gets and answers with status.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	status int
}

func newReceiver(t testing.TB, status int) *receiver {
	r := &receiver{status: status}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, string(b))
		status := r.status
		r.mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte("receiver says " + http.StatusText(status)))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

// Destinations: create (secret shown once), read without credentials, pause, test, dry run,
// rotate the signing secret, delete.
func TestDestinations(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	hook := newReceiver(t, 200)
	allow := true
	url := hook.URL + "/in?auth=secret-in-url"
	consent := "1"
	names := []string{"purchase"}
	created, err := e.API.CreateDestinationWithResponse(c, adminapi.CreateDestinationJSONRequestBody{
		Name: "hook", Type: adminapi.Webhook, Url: &url, AllowPrivate: &allow, ConsentCategory: &consent,
		Filter: &adminapi.DestinationFilter{EventNames: &names}})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("create: %v %s", err, created.Body)
	}
	d := created.JSON201.Destination
	secret := created.JSON201.SigningSecret
	if secret == nil || !strings.HasPrefix(*secret, "whsec_") || d.Status != adminapi.Active || d.BatchSize != 100 {
		t.Fatalf("created %s", created.Body)
	}
	got, _ := e.ReadAPI.GetDestinationWithResponse(c, d.Id)
	if got.JSON200 == nil || strings.Contains(string(got.Body), *secret) || strings.Contains(string(got.Body), "secret-in-url") {
		t.Fatalf("get shows credentials or failed: %s", got.Body)
	}
	if f := got.JSON200.Filter; f == nil || f.EventNames == nil || (*f.EventNames)[0] != "purchase" {
		t.Errorf("filter %s", got.Body)
	}

	paused := adminapi.Paused
	p, _ := e.API.UpdateDestinationWithResponse(c, d.Id, adminapi.UpdateDestinationJSONRequestBody{Status: &paused})
	if p.JSON200 == nil || p.JSON200.Status != paused {
		t.Fatalf("pause: %s", p.Body)
	}
	stored, err := e.DB.Destination(c, d.Id)
	if err != nil || stored.Status != trackapi.DestinationPaused || stored.Config.URL != url {
		t.Errorf("stored after pause: %+v %v", stored, err)
	}
	kafka := adminapi.Kafka
	if r, _ := e.API.UpdateDestinationWithResponse(c, d.Id, adminapi.UpdateDestinationJSONRequestBody{Type: &kafka}); r.JSON400 == nil {
		t.Errorf("changing the type: %d %s, want 400", r.StatusCode(), r.Body)
	}

	// A dry run sends nothing and shows the signed request, the signature redacted.
	dry := true
	event := map[string]any{"event_name": "purchase", "id": "order-1", "value": 42.5}
	res, _ := e.API.TestDestinationWithResponse(c, d.Id, adminapi.TestDestinationJSONRequestBody{DryRun: &dry, Event: &event})
	if res.JSON200 == nil || !res.JSON200.DryRun || res.JSON200.Delivered || !strings.Contains(res.JSON200.Request.Body, `"order-1"`) {
		t.Fatalf("dry run: %s", res.Body)
	}
	if len(hook.received()) != 0 {
		t.Errorf("a dry run sent %d requests", len(hook.received()))
	}
	if sig := res.JSON200.Request.Headers["Webhook-Signature"]; sig == "" || strings.Contains(sig, "v1,") {
		t.Errorf("the dry run's signature header %q is not redacted", sig)
	}
	// A test sends, even to a paused destination and outside its filters.
	res, _ = e.API.TestDestinationWithResponse(c, d.Id, adminapi.TestDestinationJSONRequestBody{})
	if res.JSON200 == nil || !res.JSON200.Delivered || len(hook.received()) != 1 || !strings.Contains(hook.received()[0], "page_view") {
		t.Fatalf("test: %s; received %q", res.Body, hook.received())
	}
	// A failing test shows the destination's answer.
	hook.mu.Lock()
	hook.status = 422
	hook.mu.Unlock()
	res, _ = e.API.TestDestinationWithResponse(c, d.Id, adminapi.TestDestinationJSONRequestBody{Event: &event})
	if res.JSON200 == nil || res.JSON200.Delivered || res.JSON200.Reason == nil || *res.JSON200.Reason != "http_422" ||
		res.JSON200.Response == nil || res.JSON200.Response.Status != 422 || !strings.Contains(res.JSON200.Response.Body, "receiver says") {
		t.Errorf("failed test: %s", res.Body)
	}

	rot, _ := e.API.RotateSigningSecretWithResponse(c, d.Id, adminapi.RotateSigningSecretJSONRequestBody{})
	if rot.JSON201 == nil || rot.JSON201.SigningSecret == *secret || rot.JSON201.PreviousExpireAt == nil {
		t.Fatalf("rotate secret: %s", rot.Body)
	}
	got, _ = e.ReadAPI.GetDestinationWithResponse(c, d.Id)
	if ss := got.JSON200.SigningSecrets; ss == nil || len(*ss) != 2 || (*ss)[1].ExpiresAt == nil {
		t.Errorf("secrets after rotation: %s", got.Body)
	}

	dir := t.TempDir()
	fileDest, _ := e.API.CreateDestinationWithResponse(c, adminapi.CreateDestinationJSONRequestBody{Name: "files", Type: adminapi.File, Path: &dir})
	if fileDest.JSON201 == nil || fileDest.JSON201.SigningSecret != nil {
		t.Fatalf("file destination: %s", fileDest.Body)
	}
	if r, _ := e.API.RotateSigningSecretWithResponse(c, fileDest.JSON201.Destination.Id, adminapi.RotateSigningSecretJSONRequestBody{}); r.JSON409 == nil {
		t.Errorf("rotating a file destination's secret: %d %s, want 409", r.StatusCode(), r.Body)
	}
	list, _ := e.ReadAPI.ListDestinationsWithResponse(c, nil)
	if list.JSON200 == nil || len(list.JSON200.Items) != 2 {
		t.Fatalf("list: %s", list.Body)
	}
	if r, _ := e.API.DeleteDestinationWithResponse(c, d.Id); r.StatusCode() != 204 {
		t.Fatalf("delete: %d %s", r.StatusCode(), r.Body)
	}
	if r, _ := e.ReadAPI.GetDestinationWithResponse(c, d.Id); r.JSON404 == nil {
		t.Errorf("deleted destination: %d %s", r.StatusCode(), r.Body)
	}
	// A private address without allow_private is refused, naming the setting.
	private := hook.URL
	r, _ := e.API.CreateDestinationWithResponse(c, adminapi.CreateDestinationJSONRequestBody{Name: "p", Type: adminapi.Webhook, Url: &private})
	if r.JSON400 == nil || !strings.Contains(r.JSON400.Message, "allow_private") {
		t.Errorf("private target: %d %s", r.StatusCode(), r.Body)
	}
}
