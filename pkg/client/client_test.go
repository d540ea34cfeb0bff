package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/httpapi/contracttest"
	"github.com/keyplane/keyplane/internal/wire"
)

const adminToken = "test-admin-token-0123456789"

// newServer runs the whole keyplane API on the embedded backends, built
// by the same composition root as `keyplane serve`, and returns its URL.
// Every request the client sends and every answer it gets is checked
// against docs/openapi.yaml.
func newServer(t *testing.T) string {
	t.Helper()
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken = t.TempDir(), adminToken
	app, err := wire.ServeAll(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(contracttest.Load(t).Handler(t, app.Server.Handler(), nil))
	t.Cleanup(func() { srv.Close(); app.Close() })
	return srv.URL
}

// newClient returns a Client of a fresh keyplane server.
func newClient(t *testing.T) *Client {
	t.Helper()
	c, err := New(newServer(t), adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCreate(t *testing.T, c *Client, req CreateKeyRequest) *KeyWithSecret {
	t.Helper()
	k, err := c.CreateKey(context.Background(), req, "")
	if err != nil {
		t.Fatalf("CreateKey(%+v): %v", req, err)
	}
	return k
}

func apiErr(t *testing.T, err error) *APIError {
	t.Helper()
	var e *APIError
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return e
}

func TestCreateKeyReturnsResourceAndSecret(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	k, err := c.CreateKey(ctx, CreateKeyRequest{
		Owner: "acct_123", Name: "ci runner", Plan: "pro", Scopes: []string{"generate"},
		ExpiresAt: &exp, Metadata: map[string]string{"team": "ml"},
		Limits:       Limits{"requests_per_day": 10},
		Restrictions: &Restrictions{AllowedIPs: []string{"203.0.113.0/24"}, AllowedReferrers: []string{"*.example.com"}},
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Secret, "kp_live_") || k.Last4 != k.Secret[len(k.Secret)-4:] || k.Replayed {
		t.Errorf("secret %q, last4 %q, replayed %v", k.Secret, k.Last4, k.Replayed)
	}
	if !strings.HasPrefix(k.ID, "key_") || k.Owner != "acct_123" || k.Name != "ci runner" || k.Plan != "pro" ||
		k.Status != StatusActive || !slices.Equal(k.Scopes, []string{"generate"}) || k.Metadata["team"] != "ml" ||
		k.ExpiresAt == nil || !k.ExpiresAt.Equal(exp) || k.CreatedAt.IsZero() || k.RotatedFrom != "" {
		t.Errorf("created key = %+v", k.Key)
	}
	if k.Limits["requests_per_day"] != 10 || k.Limits["requests_per_minute"] != 1000 {
		t.Errorf("limits = %v, want the pro plan's with requests_per_day 10", k.Limits)
	}
	if !slices.Equal(k.Restrictions.AllowedIPs, []string{"203.0.113.0/24"}) || !slices.Equal(k.Restrictions.AllowedReferrers, []string{"*.example.com"}) {
		t.Errorf("restrictions = %+v", k.Restrictions)
	}
	got, err := c.GetKey(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || got.Last4 != k.Last4 || got.Limits["requests_per_day"] != 10 || got.Metadata["team"] != "ml" {
		t.Errorf("GetKey = %+v, want %+v", got, k.Key)
	}
}

func TestCreateKeyIdempotency(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	req := CreateKeyRequest{Owner: "o", Name: "signup"}
	first, err := c.CreateKey(ctx, req, "signup-42")
	if err != nil {
		t.Fatal(err)
	}
	replay, err := c.CreateKey(ctx, req, "signup-42")
	if err != nil {
		t.Fatal(err)
	}
	if replay.ID != first.ID || replay.Secret != first.Secret || first.Replayed || !replay.Replayed {
		t.Errorf("first %s replayed=%v, replay %s replayed=%v: want the same key, only the replay marked",
			first.ID, first.Replayed, replay.ID, replay.Replayed)
	}
	_, err = c.CreateKey(ctx, CreateKeyRequest{Owner: "someone-else"}, "signup-42")
	if e := apiErr(t, err); e.Status != 422 || e.Code != "UNPROCESSABLE" {
		t.Errorf("same Idempotency-Key, other body: got %d %s, want 422 UNPROCESSABLE", e.Status, e.Code)
	}
}

func TestListKeysPaginates(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	want := map[string]bool{}
	for range 5 {
		want[mustCreate(t, c, CreateKeyRequest{Owner: "pager"}).ID] = true
	}
	mustCreate(t, c, CreateKeyRequest{Owner: "someone-else"})

	got := map[string]bool{}
	pages := 0
	opts := ListKeysOptions{Owner: "pager", PageSize: 2}
	for {
		l, err := c.ListKeys(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, k := range l.Keys {
			if k.Owner != "pager" {
				t.Errorf("listed %s of owner %q", k.ID, k.Owner)
			}
			got[k.ID] = true
		}
		if opts.PageToken = l.NextPageToken; opts.PageToken == "" {
			break
		}
	}
	if len(got) != len(want) || pages != 3 {
		t.Errorf("listed %d keys in %d pages, want %d in 3", len(got), pages, len(want))
	}
	for id := range want {
		if !got[id] {
			t.Errorf("key %s missing from the listing", id)
		}
	}
	all, err := c.ListKeys(ctx, ListKeysOptions{})
	if err != nil || len(all.Keys) != 6 || all.NextPageToken != "" {
		t.Errorf("ListKeys() = %d keys, next %q, %v; want 6, none", len(all.Keys), all.NextPageToken, err)
	}
}

func TestUpdateKeyRequestSendsOnlySetFields(t *testing.T) {
	at := time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		req  UpdateKeyRequest
		want string
	}{
		{"nothing", UpdateKeyRequest{}, `{}`},
		{"name", UpdateKeyRequest{Name: Ptr("x")}, `{"name":"x"}`},
		{"empty scopes", UpdateKeyRequest{Scopes: Ptr([]string{})}, `{"scopes":[]}`},
		{"limits", UpdateKeyRequest{Limits: &Limits{"requests_per_day": 0}}, `{"limits":{"requests_per_day":0}}`},
		{"set expiry", UpdateKeyRequest{ExpiresAt: &at}, `{"expires_at":"2030-01-02T15:04:05Z"}`},
		{"clear expiry", UpdateKeyRequest{Plan: Ptr("pro"), ClearExpiresAt: true}, `{"plan":"pro","expires_at":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.req)
			if err != nil || string(b) != tc.want {
				t.Errorf("got %s, %v; want %s", b, err, tc.want)
			}
		})
	}
	if _, err := json.Marshal(UpdateKeyRequest{ExpiresAt: &at, ClearExpiresAt: true}); err == nil {
		t.Error("ExpiresAt with ClearExpiresAt encoded; want an error")
	}
}

func TestUpdateKey(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	k := mustCreate(t, c, CreateKeyRequest{Owner: "o", Name: "before", Metadata: map[string]string{"team": "ml"}, ExpiresAt: &exp})

	got, err := c.UpdateKey(ctx, k.ID, UpdateKeyRequest{Name: Ptr("after"), Scopes: Ptr([]string{"embed"})})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "after" || !slices.Equal(got.Scopes, []string{"embed"}) || got.Metadata["team"] != "ml" ||
		got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) {
		t.Errorf("after a name and scopes PATCH: %+v; want the other fields unchanged", got)
	}
	later := exp.Add(time.Hour)
	if got, err = c.UpdateKey(ctx, k.ID, UpdateKeyRequest{ExpiresAt: &later}); err != nil || got.ExpiresAt == nil || !got.ExpiresAt.Equal(later) {
		t.Errorf("setting expires_at: %v, %v; want %v", got.ExpiresAt, err, later)
	}
	if got, err = c.UpdateKey(ctx, k.ID, UpdateKeyRequest{ClearExpiresAt: true}); err != nil || got.ExpiresAt != nil || got.Name != "after" {
		t.Errorf("clearing expires_at: %v, %v; want no expiry", got.ExpiresAt, err)
	}
	if _, err := c.UpdateKey(ctx, k.ID, UpdateKeyRequest{ExpiresAt: &later, ClearExpiresAt: true}); err == nil {
		t.Error("an update that sets and clears expires_at was sent")
	}
}

func TestLifecycle(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	k := mustCreate(t, c, CreateKeyRequest{Owner: "o"})

	d, err := c.DisableKey(ctx, k.ID, "investigating")
	if err != nil || d.Status != StatusDisabled || d.StatusReason != "investigating" {
		t.Fatalf("DisableKey = %+v, %v", d, err)
	}
	if _, err := c.RotateKey(ctx, k.ID, time.Hour, ""); !IsConflict(err) {
		t.Errorf("rotating a disabled key: %v, want a 409", err)
	}
	if e, err := c.EnableKey(ctx, k.ID); err != nil || e.Status != StatusActive {
		t.Fatalf("EnableKey = %+v, %v", e, err)
	}
	before := time.Now()
	n, err := c.RotateKey(ctx, k.ID, time.Hour, "rotate-1")
	if err != nil {
		t.Fatal(err)
	}
	if n.RotatedFrom != k.ID || n.ID == k.ID || !strings.HasPrefix(n.Secret, "kp_live_") || n.Replayed {
		t.Errorf("rotated key = %+v", n)
	}
	old, err := c.GetKey(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.RotatedTo != n.ID || old.ExpiresAt == nil || old.ExpiresAt.Before(before.Add(time.Hour-time.Minute)) || old.ExpiresAt.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Errorf("old key after rotation: rotated_to %q, expires_at %v; want %s, in an hour", old.RotatedTo, old.ExpiresAt, n.ID)
	}
	if secret, err := c.RevealSecret(ctx, n.ID); err != nil || secret != n.Secret {
		t.Errorf("RevealSecret = %v; want the rotated key's secret", err)
	}
	r, err := c.RevokeKey(ctx, n.ID, "leaked")
	if err != nil || r.Status != StatusRevoked || r.StatusReason != "leaked" {
		t.Fatalf("RevokeKey = %+v, %v", r, err)
	}
	if _, err := c.EnableKey(ctx, n.ID); !IsConflict(err) || apiErr(t, err).Code != "FAILED_PRECONDITION" {
		t.Errorf("enabling a revoked key: %v, want 409 FAILED_PRECONDITION", err)
	}
	if _, err := c.RevealSecret(ctx, n.ID); !IsConflict(err) {
		t.Errorf("revealing a revoked key: %v, want 409", err)
	}
}

func TestRotateKeyGracePeriod(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		grace time.Duration
		want  time.Duration // old key's remaining validity
		code  Code          // the old key's verification right after
	}{
		{"zero means the server default", 0, 24 * time.Hour, CodeValid},
		{"explicit", 90 * time.Minute, 90 * time.Minute, CodeValid},
		{"none", NoGracePeriod, 0, CodeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := mustCreate(t, c, CreateKeyRequest{Owner: "o"})
			if _, err := c.RotateKey(ctx, k.ID, tc.grace, ""); err != nil {
				t.Fatal(err)
			}
			old, err := c.GetKey(ctx, k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if left := time.Until(*old.ExpiresAt); left > tc.want || left < tc.want-time.Minute {
				t.Errorf("old key expires in %v, want %v", left, tc.want)
			}
			d, err := c.Verify(ctx, VerifyRequest{Key: k.Secret})
			if err != nil || d.Code != tc.code {
				t.Errorf("verifying the old key: %+v, %v; want %s", d, err, tc.code)
			}
		})
	}
	if _, err := c.RotateKey(ctx, "key_0000000000000000", -time.Hour, ""); err == nil || strings.Contains(err.Error(), "404") {
		t.Errorf("a negative grace period: %v; want a local error", err)
	}
}

func TestVerify(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	k := mustCreate(t, c, CreateKeyRequest{Owner: "acct_9", Scopes: []string{"generate"}, Metadata: map[string]string{"tier": "gold"}})
	d, err := c.Verify(ctx, VerifyRequest{Key: k.Secret, Scope: "generate", IP: "192.0.2.1", Referrer: "https://a.example/", Units: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Valid || d.Code != CodeValid || d.KeyID != k.ID || d.Owner != "acct_9" || d.Plan != "free" ||
		!slices.Equal(d.Scopes, []string{"generate"}) || d.Metadata["tier"] != "gold" || d.RetryAfterSeconds != 0 {
		t.Errorf("decision = %+v", d)
	}
	rpm, ok := d.Limits["requests_per_minute"]
	if !ok || rpm.Limit != 15 || rpm.Remaining != 14 || rpm.ResetAt.IsZero() || rpm.Used != nil {
		t.Errorf("requests_per_minute = %+v, want 15 with 14 left", rpm)
	}
	if upm := d.Limits["units_per_minute"]; upm.Remaining != upm.Limit-3 {
		t.Errorf("units_per_minute = %+v, want 3 units used", upm)
	}
	for _, tc := range []struct {
		req  VerifyRequest
		want Code
	}{
		{VerifyRequest{Key: k.Secret, Scope: "embed"}, CodeInsufficientPermissions},
		{VerifyRequest{Key: "kp_live_nope"}, CodeNotFound},
	} {
		d, err := c.Verify(ctx, tc.req)
		if err != nil || d.Code != tc.want || d.Valid {
			t.Errorf("Verify(scope %q) = %+v, %v; want %s", tc.req.Scope, d, err, tc.want)
		}
	}
}

func TestListAudit(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	k := mustCreate(t, c, CreateKeyRequest{Owner: "o"})
	mustCreate(t, c, CreateKeyRequest{Owner: "o"})
	if _, err := c.UpdateKey(ctx, k.ID, UpdateKeyRequest{Name: Ptr("renamed")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevealSecret(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	l, err := c.ListAudit(ctx, AuditOptions{KeyID: k.ID})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range l.Entries {
		actions = append(actions, e.Action)
		if e.KeyID != k.ID || e.Actor != "admin" || e.Time.IsZero() || e.ID == "" {
			t.Errorf("entry = %+v", e)
		}
	}
	if want := []string{"key.secret.reveal", "key.update", "key.create"}; !slices.Equal(actions, want) {
		t.Errorf("actions = %v, want %v (newest first)", actions, want)
	}
	p, err := c.ListAudit(ctx, AuditOptions{PageSize: 1})
	if err != nil || len(p.Entries) != 1 || p.NextPageToken == "" {
		t.Fatalf("first page of one = %+v, %v", p, err)
	}
	p2, err := c.ListAudit(ctx, AuditOptions{PageSize: 1, PageToken: p.NextPageToken})
	if err != nil || len(p2.Entries) != 1 || p2.Entries[0].ID == p.Entries[0].ID {
		t.Errorf("second page = %+v, %v", p2, err)
	}
}

func TestAPIErrorsAreDecoded(t *testing.T) {
	url := newServer(t)
	c, _ := New(url, adminToken, nil)
	ctx := context.Background()
	revoked := mustCreate(t, c, CreateKeyRequest{Owner: "o"})
	if _, err := c.RevokeKey(ctx, revoked.ID, ""); err != nil {
		t.Fatal(err)
	}
	wrong, _ := New(url, "wrong-token-0123456789", nil)
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		code   string
		msg    string
	}{
		{"unknown key", func() error { _, err := c.GetKey(ctx, "key_0000000000000000"); return err }, 404, "NOT_FOUND", "not found"},
		{"revoked key", func() error { _, err := c.EnableKey(ctx, revoked.ID); return err }, 409, "FAILED_PRECONDITION", "revoked"},
		{"missing owner", func() error { _, err := c.CreateKey(ctx, CreateKeyRequest{}, ""); return err }, 400, "INVALID_ARGUMENT", "owner is required"},
		{"bad page size", func() error { _, err := c.ListKeys(ctx, ListKeysOptions{PageSize: 5000}); return err }, 400, "INVALID_ARGUMENT", "page_size"},
		{"patching a revoked key", func() error { _, err := c.UpdateKey(ctx, revoked.ID, UpdateKeyRequest{Name: Ptr("x")}); return err }, 409, "FAILED_PRECONDITION", "revoked"},
		{"wrong token", func() error { _, err := wrong.ListKeys(ctx, ListKeysOptions{}); return err }, 401, "UNAUTHENTICATED", "invalid credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := apiErr(t, tc.call())
			if e.Status != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("got %d %s %q, want %d %s containing %q", e.Status, e.Code, e.Message, tc.status, tc.code, tc.msg)
			}
			if want := fmt.Sprintf("keyplane: %d %s: %s", e.Status, e.Code, e.Message); e.Error() != want {
				t.Errorf("Error() = %q, want it to name %s and the message", e.Error(), e.Code)
			}
			if IsNotFound(e) != (tc.status == 404) || IsConflict(e) != (tc.status == 409) {
				t.Errorf("IsNotFound %v, IsConflict %v for a %d", IsNotFound(e), IsConflict(e), tc.status)
			}
		})
	}
}

func TestErrorsNeverShowSecrets(t *testing.T) {
	url := newServer(t)
	c, _ := New(url, adminToken, nil)
	k := mustCreate(t, c, CreateKeyRequest{Owner: "o"})
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name        string
		base, token string
	}{
		{"rejected token", url, "wrong-token-0123456789"},
		{"unreachable", closed.URL, adminToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := New(tc.base, tc.token, nil)
			_, err := c.Verify(context.Background(), VerifyRequest{Key: k.Secret})
			if err == nil {
				t.Fatal("no error")
			}
			if msg := err.Error(); strings.Contains(msg, k.Secret) || strings.Contains(msg, tc.token) {
				t.Errorf("error %q shows the key or the token", msg)
			}
		})
	}
}

// sent is what a fakeAPI received.
type sent struct {
	Method, URI string
	Header      http.Header
	Body        string
}

// fakeAPI answers every request with a fixed status, header and body, and
// returns a function that reports the last request it received.
func fakeAPI(t *testing.T, status int, header map[string]string, body string) (*httptest.Server, func() sent) {
	t.Helper()
	var mu sync.Mutex
	var last sent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = sent{Method: r.Method, URI: r.URL.RequestURI(), Header: r.Header.Clone(), Body: string(b)}
		mu.Unlock()
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, func() sent { mu.Lock(); defer mu.Unlock(); return last }
}

func TestAPIErrorFromAnAnswerThatIsNotKeyplanes(t *testing.T) {
	srv, _ := fakeAPI(t, 503, map[string]string{"Retry-After": "7", "Content-Type": "text/html"}, "<html>upstream kp_live_secret</html>")
	c, _ := New(srv.URL, adminToken, nil)
	_, err := c.GetKey(context.Background(), "key_0000000000000000")
	e := apiErr(t, err)
	want := APIError{Status: 503, RetryAfter: 7 * time.Second}
	if e.Status != want.Status || e.Code != "" || e.Message != "" || e.RetryAfter != want.RetryAfter {
		t.Errorf("got %+v, want %+v", *e, want)
	}
	if got := e.Error(); got != "keyplane: 503 Service Unavailable" {
		t.Errorf("Error() = %q", got)
	}
}

func TestResponseSizeIsLimited(t *testing.T) {
	srv, _ := fakeAPI(t, 200, nil, `{"id": "`+strings.Repeat("x", MaxResponseSize)+`"}`)
	c, _ := New(srv.URL, adminToken, nil)
	if _, err := c.GetKey(context.Background(), "key_0000000000000000"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a 1 MiB+ answer: %v, want a size error", err)
	}
}

func TestRequestHeaders(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		token, ua            string
		wantAuth, wantUA     string
		wantIdem, wantCT     string
		call                 func(*Client) error
		wantMethod, wantPath string
		wantBody             string
	}{
		{name: "create", token: "tok", wantAuth: "Bearer tok", wantUA: "keyplane-go-client", wantIdem: "i-1", wantCT: "application/json",
			call: func(c *Client) error {
				_, err := c.CreateKey(context.Background(), CreateKeyRequest{Owner: "o"}, "i-1")
				return err
			},
			wantMethod: "POST", wantPath: "/base/v1/keys", wantBody: `{"owner":"o"}`},
		{name: "no token, custom agent", ua: "gw/1.0", wantUA: "gw/1.0",
			call: func(c *Client) error {
				_, err := c.ListKeys(context.Background(), ListKeysOptions{Owner: "a b", PageSize: 3})
				return err
			},
			wantMethod: "GET", wantPath: "/base/v1/keys?owner=a+b&page_size=3"},
		{name: "stale keys", token: "tok", wantAuth: "Bearer tok", wantUA: "keyplane-go-client",
			call: func(c *Client) error {
				since := time.Date(2030, 1, 15, 1, 2, 3, 0, time.FixedZone("", 3600))
				_, err := c.ListKeys(context.Background(), ListKeysOptions{UnusedSince: since})
				return err
			},
			wantMethod: "GET", wantPath: "/base/v1/keys?unused_since=2030-01-15T00%3A02%3A03Z"},
		{name: "escaped id", token: "tok", wantAuth: "Bearer tok", wantUA: "keyplane-go-client", wantCT: "application/json",
			call:       func(c *Client) error { _, err := c.DisableKey(context.Background(), "key/x", "why"); return err },
			wantMethod: "POST", wantPath: "/base/v1/keys/key%2Fx/disable", wantBody: `{"reason":"why"}`},
		{name: "rotate", token: "tok", wantAuth: "Bearer tok", wantUA: "keyplane-go-client", wantIdem: "r-1", wantCT: "application/json",
			call: func(c *Client) error {
				_, err := c.RotateKey(context.Background(), "key_1", 90*time.Minute, "r-1")
				return err
			},
			wantMethod: "POST", wantPath: "/base/v1/keys/key_1/rotate", wantBody: `{"grace_period":"1h30m0s"}`},
		{name: "enable has no body", token: "tok", wantAuth: "Bearer tok", wantUA: "keyplane-go-client",
			call:       func(c *Client) error { _, err := c.EnableKey(context.Background(), "key_1"); return err },
			wantMethod: "POST", wantPath: "/base/v1/keys/key_1/enable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := fakeAPI(t, 200, nil, `{}`)
			c, err := New(srv.URL+"/base/", tc.token, &Options{UserAgent: tc.ua})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			r := got()
			for _, f := range []struct{ name, got, want string }{
				{"method", r.Method, tc.wantMethod},
				{"path", r.URI, tc.wantPath},
				{"Authorization", r.Header.Get("Authorization"), tc.wantAuth},
				{"User-Agent", r.Header.Get("User-Agent"), tc.wantUA},
				{"Idempotency-Key", r.Header.Get("Idempotency-Key"), tc.wantIdem},
				{"Content-Type", r.Header.Get("Content-Type"), tc.wantCT},
				{"body", r.Body, tc.wantBody},
			} {
				if f.got != f.want {
					t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestNewValidatesBaseURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},
		{"https://keyplane.example.com/prefix/", true},
		{"127.0.0.1:8080", false},
		{"ftp://example.com", false},
		{"https://", false},
		{"https://example.com/?a=b", false},
		{"https://user:pw@example.com", false},
	} {
		_, err := New(tc.url, "t", nil)
		if (err == nil) != tc.ok {
			t.Errorf("New(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestEmptyKeyIDIsRejectedLocally(t *testing.T) {
	srv, got := fakeAPI(t, 200, nil, `{}`)
	c, _ := New(srv.URL, "t", nil)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"GetKey":       func() error { _, err := c.GetKey(ctx, ""); return err },
		"UpdateKey":    func() error { _, err := c.UpdateKey(ctx, "", UpdateKeyRequest{}); return err },
		"DisableKey":   func() error { _, err := c.DisableKey(ctx, "", ""); return err },
		"EnableKey":    func() error { _, err := c.EnableKey(ctx, ""); return err },
		"RevokeKey":    func() error { _, err := c.RevokeKey(ctx, "", ""); return err },
		"RotateKey":    func() error { _, err := c.RotateKey(ctx, "", 0, ""); return err },
		"RevealSecret": func() error { _, err := c.RevealSecret(ctx, ""); return err },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "key id is required") {
			t.Errorf("%s(\"\") = %v, want a local error", name, err)
		}
	}
	if r := got(); r.Method != "" {
		t.Errorf("a request was sent: %s %s", r.Method, r.URI)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
