package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/webhook"
	"github.com/keyplane/keyplane/internal/wire"
)

const token = "test-admin-token-0123456789"

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type api struct {
	t    *testing.T
	srv  *httptest.Server
	logs *syncBuffer
	dir  string
	app  *wire.App
	// offset is the server's clock offset (config.ClockOffset), which
	// signed usage is timestamped with.
	offset time.Duration
	// stop stops the server and closes the App; the test's cleanup calls
	// it too, and later calls do nothing.
	stop func()
}

// newAPI runs the whole HTTP API on the embedded backends, built by the
// same composition root as `keyplane serve`. Owner webhooks may point at
// local receivers (KEYPLANE_WEBHOOK_ALLOW_PRIVATE=1).
func newAPI(t *testing.T) *api {
	t.Helper()
	return newAPIWith(t, func(cfg *config.Config) { cfg.WebhookAllowPrivate = true })
}

// newAPIWith is newAPI with the configuration changed by configure.
func newAPIWith(t *testing.T, configure func(*config.Config)) *api {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = dir, token, webhookSecret
	configure(&cfg)
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app, err := wire.ServeAll(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checked(t, app.Server.Handler()))
	stop := sync.OnceFunc(func() { cancel(); srv.Close(); app.Close() })
	t.Cleanup(stop)
	return &api{t: t, srv: srv, logs: logs, dir: cfg.DataDir, app: app, offset: cfg.ClockOffset, stop: stop}
}

var webhookSecret = webhook.NewSecret()

// sendUsage posts a signed usage batch.
func (a *api) sendUsage(body string, sign bool) response {
	a.t.Helper()
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/usage", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sign {
		s, _ := webhook.ParseSecret(webhookSecret)
		s.SetHeaders(req.Header, "msg_"+apikey.RandomString(8), time.Now().Add(a.offset), []byte(body))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	json.Unmarshal(raw, &out.Body)
	return out
}

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (a *api) do(method, path, body string, headers ...string) response {
	a.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, a.srv.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	json.Unmarshal(raw, &out.Body)
	return out
}

func (a *api) create(body string) (id, secret string) {
	a.t.Helper()
	r := a.do("POST", "/v1/keys", body)
	if r.Status != 201 {
		a.t.Fatalf("POST /v1/keys %s = %d %s", body, r.Status, r.Raw)
	}
	return r.Body["id"].(string), r.Body["secret"].(string)
}

func errCode(r response) string {
	e, _ := r.Body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func errMessage(r response) string {
	e, _ := r.Body["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

func TestCreateReturnsResourceWithSecretOnce(t *testing.T) {
	a := newAPI(t)
	r := a.do("POST", "/v1/keys", `{"owner": "acct_123", "name": "ci runner", "metadata": {"team": "ml"},
		"limits": {"requests_per_day": 10}, "restrictions": {"allowed_ips": ["203.0.113.0/24"]}}`)
	if r.Status != 201 {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	secret, _ := r.Body["secret"].(string)
	if !strings.HasPrefix(secret, "kp_live_") || r.Body["last4"] != secret[len(secret)-4:] {
		t.Fatalf("secret %q, last4 %v", secret, r.Body["last4"])
	}
	limits := r.Body["limits"].(map[string]any)
	if limits["requests_per_day"] != 10.0 || limits["requests_per_minute"] != 15.0 {
		t.Errorf("effective limits = %v, want the free plan's with the override", limits)
	}
	if r.Body["status"] != "active" || r.Body["plan"] != "free" || r.Body["owner"] != "acct_123" {
		t.Errorf("resource = %v", r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Error("creation response may be cached")
	}
	id := r.Body["id"].(string)
	for _, path := range []string{"/v1/keys/" + id, "/v1/keys", "/v1/keys?owner=acct_123", "/v1/audit"} {
		g := a.do("GET", path, "")
		if g.Status != 200 || strings.Contains(g.Raw, secret) || strings.Contains(g.Raw, `"secret"`) {
			t.Errorf("GET %s = %d and shows the secret: %s", path, g.Status, g.Raw)
		}
	}
}

func TestRevealIsAudited(t *testing.T) {
	a := newAPI(t)
	id, secret := a.create(`{"owner": "o"}`)
	r := a.do("GET", "/v1/keys/"+id+"/secret", "")
	if r.Status != 200 || r.Body["secret"] != secret {
		t.Fatalf("reveal = %d %s", r.Status, r.Raw)
	}
	au := a.do("GET", "/v1/audit?key_id="+id, "")
	entries := au.Body["entries"].([]any)
	first := entries[0].(map[string]any)
	if first["action"] != "key.secret.reveal" || first["actor"] != "admin" {
		t.Errorf("newest audit entry = %v", first)
	}
}

func TestLifecycleRoutes(t *testing.T) {
	a := newAPI(t)
	id, _ := a.create(`{"owner": "o", "plan": "pro"}`)
	for _, tc := range []struct {
		method, path, body string
		status             int
		field, want        string
	}{
		{"PATCH", "/v1/keys/" + id, `{"name": "renamed", "scopes": ["generate"]}`, 200, "name", "renamed"},
		{"POST", "/v1/keys/" + id + "/disable", `{"reason": "investigating"}`, 200, "status", "disabled"},
		{"POST", "/v1/keys/" + id + "/rotate", ``, 409, "", ""}, // disabled keys are not rotated
		{"POST", "/v1/keys/" + id + "/enable", ``, 200, "status", "active"},
		{"POST", "/v1/keys/" + id + "/rotate", `{"grace_period": "1h"}`, 201, "rotated_from", id},
		{"POST", "/v1/keys/" + id + "/revoke", `{}`, 200, "status", "revoked"},
		{"POST", "/v1/keys/" + id + "/enable", ``, 409, "", ""},
		{"GET", "/v1/keys/" + id + "/secret", ``, 409, "", ""},
		{"PATCH", "/v1/keys/" + id, `{"name": "x"}`, 409, "", ""},
	} {
		r := a.do(tc.method, tc.path, tc.body)
		if r.Status != tc.status {
			t.Fatalf("%s %s %s = %d %s, want %d", tc.method, tc.path, tc.body, r.Status, r.Raw, tc.status)
		}
		if tc.field != "" && r.Body[tc.field] != tc.want {
			t.Fatalf("%s %s: %s = %v, want %s", tc.method, tc.path, tc.field, r.Body[tc.field], tc.want)
		}
	}
}

func TestListPaginatesNewestFirst(t *testing.T) {
	a := newAPI(t)
	var ids []string
	for range 5 {
		id, _ := a.create(`{"owner": "pager"}`)
		ids = append(ids, id)
	}
	a.create(`{"owner": "someone-else"}`)
	var got []string
	token := ""
	for {
		r := a.do("GET", "/v1/keys?owner=pager&page_size=2&page_token="+token, "")
		if r.Status != 200 {
			t.Fatalf("list = %d %s", r.Status, r.Raw)
		}
		for _, k := range r.Body["keys"].([]any) {
			got = append(got, k.(map[string]any)["id"].(string))
		}
		if token = r.Body["next_page_token"].(string); token == "" {
			break
		}
	}
	if len(got) != 5 {
		t.Fatalf("listed %d keys, want 5", len(got))
	}
	seen := map[string]bool{}
	for _, id := range got {
		seen[id] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("key %s missing from the listing", id)
		}
	}
}

// TestUnusedSinceListsKeysNotVerifiedSince: a verify, refused or not,
// reaches last_used_at with the client-IP flush, and unused_since lists the
// keys never used or last used before it.
func TestUnusedSinceListsKeysNotVerifiedSince(t *testing.T) {
	a := newAPI(t)
	used, secret := a.create(`{"owner": "stale"}`)
	never, _ := a.create(`{"owner": "stale"}`)
	a.create(`{"owner": "someone-else"}`)
	before := time.Now().UTC()
	if r := a.do("POST", "/v1/verify", `{"key": "`+secret+`", "scope": "no-such-scope"}`); r.Status != 200 {
		t.Fatalf("verify = %d %s", r.Status, r.Raw)
	}
	if err := a.app.ClientIPs.Flush(t.Context()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	after := time.Now().UTC()
	r := a.do("GET", "/v1/keys/"+used, "")
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r.Body["last_used_at"]))
	if err != nil || at.Before(before.Truncate(time.Microsecond)) || at.After(after) {
		t.Errorf("last_used_at of the verified key = %v, want between %v and %v", r.Body["last_used_at"], before, after)
	}
	for _, tc := range []struct {
		since time.Time
		want  []string // newest first
	}{
		{before, []string{never}},
		{after.Add(time.Second), []string{never, used}},
	} {
		r := a.do("GET", "/v1/keys?owner=stale&unused_since="+tc.since.Format(time.RFC3339Nano), "")
		if r.Status != 200 {
			t.Fatalf("list = %d %s", r.Status, r.Raw)
		}
		var got []string
		for _, k := range r.Body["keys"].([]any) {
			got = append(got, k.(map[string]any)["id"].(string))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("unused_since %v: got %v, want %v", tc.since, got, tc.want)
		}
	}
}

func TestIdempotencyOverHTTP(t *testing.T) {
	a := newAPI(t)
	body := `{"owner": "o", "name": "signup"}`
	first := a.do("POST", "/v1/keys", body, "Idempotency-Key", "abc")
	replay := a.do("POST", "/v1/keys", `{"name":"signup","owner":"o"}`, "Idempotency-Key", "abc")
	if first.Status != 201 || replay.Status != 201 || first.Body["id"] != replay.Body["id"] || first.Body["secret"] != replay.Body["secret"] {
		t.Fatalf("first %d %v, replay %d %v", first.Status, first.Body["id"], replay.Status, replay.Body["id"])
	}
	if replay.Header.Get("Idempotent-Replayed") != "true" {
		t.Error("replay not marked Idempotent-Replayed")
	}
	if r := a.do("POST", "/v1/keys", `{"owner": "other"}`, "Idempotency-Key", "abc"); r.Status != 422 {
		t.Errorf("same key, other body = %d %s, want 422", r.Status, r.Raw)
	}
}

func TestClientMistakesGetClearErrors(t *testing.T) {
	a := newAPI(t)
	id, _ := a.create(`{"owner": "o"}`)
	big := `{"owner": "o", "name": "` + strings.Repeat("x", 70<<10) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"bad json", "POST", "/v1/keys", `{"owner": `, 400, "INVALID_ARGUMENT", "truncated JSON"},
		{"unknown field", "POST", "/v1/keys", `{"owner": "o", "colour": "red"}`, 400, "INVALID_ARGUMENT", `unknown field "colour"`},
		{"wrong type", "POST", "/v1/keys", `{"owner": 5}`, 400, "INVALID_ARGUMENT", `"owner" must be a JSON string`},
		{"trailing data", "POST", "/v1/keys", `{"owner": "o"} {}`, 400, "INVALID_ARGUMENT", "after the JSON object"},
		{"missing owner", "POST", "/v1/keys", `{}`, 400, "INVALID_ARGUMENT", "owner is required"},
		{"empty body", "POST", "/v1/keys", ``, 400, "INVALID_ARGUMENT", "body is required"},
		{"bad time", "POST", "/v1/keys", `{"owner": "o", "expires_at": "tomorrow"}`, 400, "INVALID_ARGUMENT", "RFC 3339"},
		{"too large", "POST", "/v1/keys", big, 413, "PAYLOAD_TOO_LARGE", "larger than 65536"},
		{"unknown key", "GET", "/v1/keys/key_0000000000000000", "", 404, "NOT_FOUND", "not found"},
		{"malformed id", "GET", "/v1/keys/nope", "", 404, "NOT_FOUND", "not found"},
		{"bad page size", "GET", "/v1/keys?page_size=5000", "", 400, "INVALID_ARGUMENT", "page_size"},
		{"bad unused_since", "GET", "/v1/keys?unused_since=yesterday", "", 400, "INVALID_ARGUMENT", "unused_since must be an RFC 3339 time"},
		{"bad page token", "GET", "/v1/keys?page_token=!!", "", 400, "INVALID_ARGUMENT", ""},
		{"bad grace", "POST", "/v1/keys/" + id + "/rotate", `{"grace_period": "forever"}`, 400, "INVALID_ARGUMENT", "grace_period"},
		{"bad audit filter", "GET", "/v1/audit?key_id=x", "", 400, "INVALID_ARGUMENT", "key_id"},
		{"no route", "GET", "/v2/nothing", "", 404, "NOT_FOUND", "no route"},
		{"wrong method", "DELETE", "/v1/keys", "", 405, "METHOD_NOT_ALLOWED", "allowed"},
		{"wrong method on a key", "DELETE", "/v1/keys/" + id, "", 405, "METHOD_NOT_ALLOWED", "allowed: GET, PATCH"},
		{"wrong method on healthz", "POST", "/healthz", "", 405, "METHOD_NOT_ALLOWED", "allowed: GET"},
		{"body on a read", "GET", "/v1/keys/" + id, `{"owner": "o"}`, 400, "INVALID_ARGUMENT", "takes no request body"},
		{"body too large for verify", "POST", "/v1/verify", `{"key": "` + strings.Repeat("x", 9<<10) + `"}`, 413, "PAYLOAD_TOO_LARGE", "larger than 8192"},
		{"unknown field on enable", "POST", "/v1/keys/" + id + "/enable", `{"reason": "x"}`, 400, "INVALID_ARGUMENT", `unknown field "reason"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(tc.method, tc.path, tc.body)
			if r.Status != tc.status || errCode(r) != tc.code || !strings.Contains(errMessage(r), tc.msg) {
				t.Errorf("got %d %s, want %d %s containing %q", r.Status, r.Raw, tc.status, tc.code, tc.msg)
			}
		})
	}
	// Nothing was written by the failed creates.
	if r := a.do("GET", "/v1/keys", ""); len(r.Body["keys"].([]any)) != 1 {
		t.Errorf("failed requests left keys behind: %s", r.Raw)
	}
}

func TestAuthRequired(t *testing.T) {
	a := newAPI(t)
	for _, h := range []string{"", "Bearer wrong-token-0123456789", "Basic dXNlcjpwYXNz", "Bearer "} {
		req, _ := http.NewRequest("GET", a.srv.URL+"/v1/keys", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: status %d, want 401 with WWW-Authenticate", h, res.StatusCode)
		}
	}
	res, err := http.Get(a.srv.URL + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Errorf("healthz = %v %v", res, err)
	}
}

func TestPlaintextNeverInLogsOrDataFiles(t *testing.T) {
	a := newAPI(t)
	_, secret := a.create(`{"owner": "o"}`)
	id, secret2 := a.create(`{"owner": "o"}`)
	a.do("GET", "/v1/keys/"+id+"/secret", "")
	a.do("POST", "/v1/verify", `{"key": "`+secret+`"}`) // not a route yet: must still not log the body
	for _, s := range []string{secret, secret2} {
		if strings.Contains(a.logs.String(), s) {
			t.Fatal("a plaintext key appears in the logs")
		}
		body := s[len("kp_live_"):]
		filepath.WalkDir(a.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, []byte(body)) {
				t.Errorf("plaintext key found on disk in %s", filepath.Base(path))
			}
			return nil
		})
	}
	if !strings.Contains(a.logs.String(), `"requestMethod":"POST"`) {
		t.Error("no request summary was logged")
	}
}

func TestVerifyOverHTTP(t *testing.T) {
	a := newAPI(t)
	id, secret := a.create(`{"owner": "o", "scopes": ["generate"], "limits": {"requests_per_minute": 1}, "metadata": {"tier": "gold"}}`)
	r := a.do("POST", "/v1/verify", `{"key": "`+secret+`", "scope": "generate"}`)
	if r.Status != 200 || r.Body["code"] != "VALID" || r.Body["valid"] != true || r.Body["key_id"] != id ||
		r.Body["owner"] != "o" || strings.Contains(r.Raw, secret) {
		t.Fatalf("verify = %d %s", r.Status, r.Raw)
	}
	rpm := r.Body["limits"].(map[string]any)["requests_per_minute"].(map[string]any)
	if rpm["limit"] != 1.0 || rpm["remaining"] != 0.0 || rpm["reset_at"] == nil {
		t.Errorf("requests_per_minute state = %v", rpm)
	}
	r = a.do("POST", "/v1/verify", `{"key": "`+secret+`", "scope": "generate"}`)
	if r.Body["code"] != "RATE_LIMITED" || r.Body["valid"] != false || r.Header.Get("Retry-After") == "" || r.Body["retry_after"] == nil {
		t.Errorf("second verify = %d %s (Retry-After %q)", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
	for body, code := range map[string]string{
		`{"key": "` + secret + `", "scope": "embed"}`: "INSUFFICIENT_PERMISSIONS",
		`{"key": "kp_live_nope"}`:                     "NOT_FOUND",
	} {
		if r := a.do("POST", "/v1/verify", body); r.Status != 200 || r.Body["code"] != code {
			t.Errorf("verify %s = %d %s, want %s", body, r.Status, r.Raw, code)
		}
	}
	if r := a.do("POST", "/v1/verify", `{"key": "x", "units": -1}`); r.Status != 400 {
		t.Errorf("negative units = %d, want 400", r.Status)
	}
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/verify", strings.NewReader(`{"key": "`+secret+`"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("verify without credentials = %d, want 401", res.StatusCode)
	}
}

func events(keyID string, ids ...string) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf(`{"id": %q, "key_id": %q, "time": %q, "units": 10}`, id, keyID, time.Now().UTC().Format(time.RFC3339)))
	}
	return `{"events": [` + strings.Join(parts, ",") + `]}`
}

// waitFor polls cond until it holds; delivery through the queue is
// asynchronous, so waiting is inherent, bounded by the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUsageCountedOnceThenQuotaRefusesInVerify(t *testing.T) {
	a := newAPI(t)
	id, secret := a.create(`{"owner": "o", "limits": {"requests_per_day": 3}}`)
	for _, body := range []string{events(id, "e1", "e2"), events(id, "e1", "e2"), events(id, "e3")} {
		if r := a.sendUsage(body, true); r.Status != 202 {
			t.Fatalf("usage webhook = %d %s, want 202", r.Status, r.Raw)
		}
	}
	waitFor(t, "3 requests counted", func() bool {
		r := a.do("GET", "/v1/keys/"+id+"/usage?window=day", "")
		return r.Body["requests"] == 3.0
	})
	r := a.do("GET", "/v1/keys/"+id+"/usage?window=day", "")
	if r.Body["units"] != 30.0 {
		t.Errorf("units = %v, want 30 (each event once)", r.Body["units"])
	}
	d := a.do("POST", "/v1/verify", `{"key": "`+secret+`"}`)
	if d.Body["code"] != "USAGE_EXCEEDED" {
		t.Fatalf("verify after the quota = %s", d.Raw)
	}
	rpd := d.Body["limits"].(map[string]any)["requests_per_day"].(map[string]any)
	if rpd["used"] != 3.0 || rpd["remaining"] != 0.0 {
		t.Errorf("requests_per_day state = %v, want used 3, remaining 0", rpd)
	}
	export := a.do("GET", "/v1/usage?owner=o&window=day", "")
	rows := export.Body["usage"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["requests"] != 3.0 {
		t.Errorf("billing export = %s", export.Raw)
	}
	csvRes := a.do("GET", "/v1/usage?owner=o&window=day&format=csv", "")
	if !strings.Contains(csvRes.Raw, id+",o,day,") || !strings.HasPrefix(csvRes.Raw, "key_id,owner,window") {
		t.Errorf("csv export = %q", csvRes.Raw)
	}
}

func TestUsageForUnknownKeyIsDeadLettered(t *testing.T) {
	a := newAPI(t)
	if r := a.sendUsage(events("key_0000000000000000", "ghost"), true); r.Status != 202 {
		t.Fatalf("usage webhook = %d %s", r.Status, r.Raw)
	}
	waitFor(t, "a dead letter", func() bool {
		r := a.do("GET", "/v1/usage/dead-letters", "")
		dl, _ := r.Body["dead_letters"].([]any)
		return len(dl) == 1 && dl[0].(map[string]any)["reason"] == "unknown_key"
	})
}

func TestUsageWebhookRejectsBadInput(t *testing.T) {
	a := newAPI(t)
	id, _ := a.create(`{"owner": "o"}`)
	if r := a.sendUsage(events(id, "x"), false); r.Status != 401 {
		t.Errorf("unsigned = %d %s, want 401", r.Status, r.Raw)
	}
	r := a.sendUsage(`{"events": [{"id": "a", "key_id": "`+id+`", "time": "2020-01-01T00:00:00Z"}, {"id": "", "key_id": "`+id+`", "time": "2020-01-01T00:00:00Z"}]}`, true)
	if r.Status != 400 || !strings.Contains(r.Raw, "events[0].time") || !strings.Contains(r.Raw, "events[1].id") {
		t.Errorf("invalid batch = %d %s, want 400 with per-index details", r.Status, r.Raw)
	}
	if r := a.sendUsage(`{"events": [`+strings.Repeat(`{"id":"x"},`, 100000)+`{}]}`, true); r.Status != 413 {
		t.Errorf("oversized = %d, want 413", r.Status)
	}
	if r := a.do("GET", "/v1/keys/"+id+"/usage?window=year", ""); r.Status != 400 {
		t.Errorf("bad window = %d, want 400", r.Status)
	}
}

func TestVerifyTokenVerifiesButCannotManage(t *testing.T) {
	t.Run("env", func(t *testing.T) {
		testVerifyToken(t, newAPIWith(t, func(c *config.Config) { c.VerifyTokens = []string{"gateway-token-0123456789"} }))
	})
	// As Terraform provisions it: a version of the verify-token secret.
	t.Run("vault", func(t *testing.T) {
		testVerifyToken(t, newAPIWith(t, func(c *config.Config) {
			key, err := filevault.LoadOrCreateKey(filepath.Join(c.DataDir, "vault.key"))
			if err != nil {
				t.Fatal(err)
			}
			v, err := filevault.Open(filepath.Join(c.DataDir, "vault.json.enc"), key)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if err := v.AddSecretVersion(context.Background(), secrets.VerifyToken, []byte("gateway-token-0123456789")); err != nil {
				t.Fatal(err)
			}
		}))
	})
}

func testVerifyToken(t *testing.T, a *api) {
	id, secret := a.create(`{"owner": "o"}`)
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer gateway-token-0123456789")
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(raw)
	}
	if got, raw := call("POST", "/v1/verify", `{"key": "`+secret+`"}`); got != 200 {
		t.Errorf("verify with the gateway token = %d %s, want 200", got, raw)
	}
	// Every other authenticated route: 403 naming the permission it lacks,
	// not 401, which would send the operator looking for a typo.
	for _, rt := range (&httpapi.Server{}).Routes() {
		if !rt.Auth || rt.Function == httpapi.FuncVerify {
			continue
		}
		path := strings.NewReplacer("{id}", id, "{owner}", "o").Replace(rt.Path)
		body := ""
		if rt.Method != "GET" {
			body = `{}`
		}
		got, raw := call(rt.Method, path, body)
		if want := "lacks the " + rt.Perm.String() + " permission"; got != 403 || !strings.Contains(raw, want) {
			t.Errorf("%s %s with the gateway token = %d %s, want 403 saying it %s", rt.Method, path, got, raw, want)
		}
	}
	if got, _ := call("GET", "/v1/keys/"+id, ""); got != 403 {
		t.Errorf("GET /v1/keys/{id} with the gateway token = %d, want 403", got)
	}
}

// TestOwnChangesVerifyAtOnceOverHTTP: in `keyplane serve` a verify right
// after a change answers from the new state; it does not wait for the
// verifier's next poll of the change feed.
func TestOwnChangesVerifyAtOnceOverHTTP(t *testing.T) {
	a := newAPI(t)
	for _, tc := range []struct{ path, body, want string }{
		{"/disable", `{"reason": "investigating"}`, "DISABLED"},
		{"/revoke", `{}`, "REVOKED"},
		{"/rotate", `{"grace_period": "0s"}`, "EXPIRED"},
	} {
		id, secret := a.create(`{"owner": "o"}`)
		verifyBody := `{"key": "` + secret + `"}`
		if r := a.do("POST", "/v1/verify", verifyBody); r.Body["code"] != "VALID" {
			t.Fatalf("verify before %s = %d %s", tc.path, r.Status, r.Raw)
		}
		if r := a.do("POST", "/v1/keys/"+id+tc.path, tc.body); r.Status/100 != 2 {
			t.Fatalf("POST %s = %d %s", tc.path, r.Status, r.Raw)
		}
		if r := a.do("POST", "/v1/verify", verifyBody); r.Body["code"] != tc.want {
			t.Errorf("verify right after %s = %d %s, want %s", tc.path, r.Status, r.Raw, tc.want)
		}
	}
}
