package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/webhook"
	"github.com/keyplane/keyplane/internal/wire"
)

const adminToken = "console-test-admin-token-0123456789"

var webhookSecret = webhook.NewSecret()

// env is keyplane as `keyplane serve` builds it (embedded backends, the
// same composition root), served over loopback HTTP.
type env struct {
	t   *testing.T
	srv *httptest.Server
	app *wire.App
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = t.TempDir(), adminToken, webhookSecret
	app, err := wire.ServeAll(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Handler)
	t.Cleanup(func() { cancel(); srv.Close(); app.Close() })
	return &env{t: t, srv: srv, app: app}
}

// api calls the JSON API with bearer credential and decodes the answer.
func (e *env) api(credential, method, path, body string) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+credential)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// createKey creates a key through the API and returns its id and secret.
func (e *env) createKey(body string) (string, string) {
	e.t.Helper()
	st, out := e.api(adminToken, "POST", "/v1/keys", body)
	if st != 201 {
		e.t.Fatalf("POST /v1/keys %s = %d %v", body, st, out)
	}
	return out["id"].(string), out["secret"].(string)
}

// mintToken mints a caller token through the API.
func (e *env) mintToken(body string) string {
	e.t.Helper()
	st, out := e.api(adminToken, "POST", "/v1/tokens", body)
	if st != 201 {
		e.t.Fatalf("POST /v1/tokens %s = %d %v", body, st, out)
	}
	return out["token"].(string)
}

// meter posts a signed usage batch of one event to the usage webhook,
// the path gateways report usage on.
func (e *env) meter(keyID, eventID, feature string, units int) {
	e.t.Helper()
	e.meterAt(keyID, eventID, feature, units, time.Now())
}

// meterAt is meter for an event at a given time.
func (e *env) meterAt(keyID, eventID, feature string, units int, at time.Time) {
	e.t.Helper()
	f := ""
	if feature != "" {
		f = fmt.Sprintf(`, "feature": %q`, feature)
	}
	body := fmt.Sprintf(`{"events": [{"id": %q, "key_id": %q, "time": %q, "units": %d%s}]}`,
		eventID, keyID, at.UTC().Format(time.RFC3339), units, f)
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/usage", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	s, _ := webhook.ParseSecret(webhookSecret)
	s.SetHeaders(req.Header, "msg_"+apikey.RandomString(8), time.Now(), []byte(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 202 {
		e.t.Fatalf("usage webhook = %d", res.StatusCode)
	}
}

// browser is a cookie-keeping client, as a browser would be (it follows
// redirects).
type browser struct {
	e    *env
	c    *http.Client
	csrf string // the CSRF token of the last page read
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get reads a page; it fails the test unless the status is want.
func (b *browser) get(path string, want int) string {
	b.e.t.Helper()
	res, err := b.c.Get(b.e.srv.URL + path)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.read(res, "GET "+path, want)
}

func (b *browser) read(res *http.Response, what string, want int) string {
	b.e.t.Helper()
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		b.e.t.Fatalf("%s = %d, want %d:\n%s", what, res.StatusCode, want, raw)
	}
	if m := csrfField.FindSubmatch(raw); m != nil {
		b.csrf = html.UnescapeString(string(m[1]))
	}
	return string(raw)
}

// post submits a form as a browser would (same-origin headers), with the
// CSRF token of the last page read unless form sets one.
func (b *browser) post(path string, form url.Values, want int) string {
	b.e.t.Helper()
	if !form.Has("csrf") {
		form.Set("csrf", b.csrf)
	}
	return b.postRaw(path, form, want, map[string]string{"Origin": b.e.srv.URL, "Sec-Fetch-Site": "same-origin"})
}

func (b *browser) postRaw(path string, form url.Values, want int, headers map[string]string) string {
	b.e.t.Helper()
	req, _ := http.NewRequest("POST", b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.read(res, "POST "+path, want)
}

// signIn signs in with credential.
func (b *browser) signIn(credential string) string {
	b.e.t.Helper()
	b.get("/console/signin", 200)
	return b.post("/console/signin", url.Values{"credential": {credential}}, 200)
}

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
