package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/webhook"
)

// notification is what the owner's receiver got, its signature verified.
type notification struct {
	ID   string // webhook-id
	Type string
	Data map[string]any
}

// ownerReceiver is the owner's webhook endpoint: a real HTTP server that
// verifies every request's Standard Webhooks signature with internal/webhook
// against the secret PUT returned, and keeps what it verified. A request
// that fails verification is kept as a problem and answered 401.
type ownerReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	secret   []webhook.Secret
	got      []notification
	problems []string
}

func newOwnerReceiver(t *testing.T) *ownerReceiver {
	t.Helper()
	o := &ownerReceiver{}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *ownerReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := webhook.Verify(o.secret, r.Header, body, time.Now(), webhook.DefaultTolerance); err != nil {
		o.problems = append(o.problems, "signature: "+err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var n notification
	if err := json.Unmarshal(body, &n); err != nil {
		o.problems = append(o.problems, "body: "+err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	n.ID = r.Header.Get(webhook.HeaderID)
	o.got = append(o.got, n)
	w.WriteHeader(http.StatusNoContent)
}

func (o *ownerReceiver) setSecret(t *testing.T, s string) {
	t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatalf("the returned secret %q: %v", s, err)
	}
	o.mu.Lock()
	o.secret = []webhook.Secret{sec}
	o.mu.Unlock()
}

// received returns the notifications of one type for one key, and the
// problems seen so far.
func (o *ownerReceiver) received(typ, keyID string) ([]notification, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []notification
	for _, n := range o.got {
		if n.Type == typ && n.Data["key_id"] == keyID {
			out = append(out, n)
		}
	}
	return out, append([]string(nil), o.problems...)
}

// waitNotified waits, within waitFor's deadline, for the receiver to have
// verified a notification of typ about keyID, and returns it. The first
// attempt goes out as soon as the message is queued; nothing here waits
// for a retry (the first one comes 5 s after a failure).
func (o *ownerReceiver) waitNotified(t *testing.T, typ, keyID string) notification {
	t.Helper()
	var got []notification
	waitFor(t, typ+" for "+keyID, func() bool {
		var problems []string
		got, problems = o.received(typ, keyID)
		if len(problems) > 0 {
			t.Fatalf("the receiver refused deliveries: %q", problems)
		}
		return len(got) > 0
	})
	return got[0]
}

func TestManualDisableAndEnableNotifyTheOwnerSigned(t *testing.T) {
	a := newAPI(t)
	recv := newOwnerReceiver(t)
	put := a.do("PUT", "/v1/owners/acct_hooks/webhook",
		`{"url": "`+recv.srv.URL+`/keyplane", "events": ["key.enabled", "key.disabled"]}`)
	if put.Status != 200 {
		t.Fatalf("PUT webhook = %d %s", put.Status, put.Raw)
	}
	secret, _ := put.Body["secret"].(string)
	if !strings.HasPrefix(secret, "whsec_") || put.Body["url"] != recv.srv.URL+"/keyplane" {
		t.Fatalf("PUT webhook = %s, want the url and a whsec_ secret", put.Raw)
	}
	if ev, _ := json.Marshal(put.Body["events"]); string(ev) != `["key.disabled","key.enabled"]` {
		t.Errorf("events = %s, want [key.disabled key.enabled] (the canonical order)", ev)
	}
	if cc := put.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q on a response carrying a secret, want no-store", cc)
	}
	recv.setSecret(t, secret)

	id, _ := a.create(`{"owner": "acct_hooks"}`)
	other, _ := a.create(`{"owner": "acct_without_webhook"}`)
	if r := a.do("POST", "/v1/keys/"+other+"/disable", `{"reason": "x"}`); r.Status != 200 {
		t.Fatalf("disable of a key whose owner has no webhook = %d %s, want 200", r.Status, r.Raw)
	}

	if r := a.do("POST", "/v1/keys/"+id+"/disable", `{"reason": "fraud review #4711"}`); r.Status != 200 {
		t.Fatalf("disable = %d %s", r.Status, r.Raw)
	}
	dis := recv.waitNotified(t, "key.disabled", id)
	if !strings.HasPrefix(dis.ID, "ntf_") || dis.Data["owner"] != "acct_hooks" || dis.Data["status"] != "disabled" || dis.Data["reason"] != "manual" {
		t.Errorf("key.disabled = %+v; want webhook-id ntf_…, owner acct_hooks, status disabled, reason manual", dis)
	}
	// Disabling a disabled key again changes nothing and tells nobody.
	if r := a.do("POST", "/v1/keys/"+id+"/disable", `{"reason": "fraud review #4711"}`); r.Status != 200 {
		t.Fatalf("second disable = %d %s", r.Status, r.Raw)
	}

	if r := a.do("POST", "/v1/keys/"+id+"/enable", ``); r.Status != 200 {
		t.Fatalf("enable = %d %s", r.Status, r.Raw)
	}
	en := recv.waitNotified(t, "key.enabled", id)
	if en.Data["status"] != "active" || en.ID == dis.ID {
		t.Errorf("key.enabled = %+v; want status active and a webhook-id of its own", en)
	}
	// Both deliveries succeeded at once, and the second disable was
	// queued (had it been) before the enable: by now it would have come.
	if got, _ := recv.received("key.disabled", id); len(got) != 1 {
		t.Errorf("the owner got %d key.disabled notifications, want 1: %+v", len(got), got)
	}
	if strings.Contains(a.logs.String(), "fraud review") {
		// The operator's reason is for the audit log, not for logs or owners.
		t.Errorf("the operator's reason leaked into the logs")
	}

	g := a.do("GET", "/v1/owners/acct_hooks/webhook", "")
	if g.Status != 200 || g.Body["url"] != recv.srv.URL+"/keyplane" || strings.Contains(g.Raw, "secret") || strings.Contains(g.Raw, "whsec_") {
		t.Errorf("GET webhook = %d %s; want the url and events, never the secret", g.Status, g.Raw)
	}
	if ev, _ := json.Marshal(g.Body["events"]); string(ev) != `["key.disabled","key.enabled"]` {
		t.Errorf("GET webhook events = %s", ev)
	}
}

func TestWebhookRequestsGetClearErrors(t *testing.T) {
	a := newAPI(t)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"unknown event", "PUT", "/v1/owners/o/webhook", `{"url": "https://127.0.0.1/h", "events": ["key.deleted"]}`, 400, "INVALID_ARGUMENT", `"key.deleted" is not an event type`},
		{"events not a list", "PUT", "/v1/owners/o/webhook", `{"url": "https://127.0.0.1/h", "events": "key.disabled"}`, 400, "INVALID_ARGUMENT", `"events" must be a JSON array`},
		{"no url", "PUT", "/v1/owners/o/webhook", `{"events": ["key.disabled"]}`, 400, "INVALID_ARGUMENT", "url is required"},
		{"not a url", "PUT", "/v1/owners/o/webhook", `{"url": "hooks.example.com"}`, 400, "INVALID_ARGUMENT", "https://"},
		{"unknown field", "PUT", "/v1/owners/o/webhook", `{"url": "https://127.0.0.1/h", "secret": "mine"}`, 400, "INVALID_ARGUMENT", `unknown field "secret"`},
		{"no body", "PUT", "/v1/owners/o/webhook", ``, 400, "INVALID_ARGUMENT", "body is required"},
		{"bad owner", "PUT", "/v1/owners/a%20b/webhook", `{"url": "https://127.0.0.1/h"}`, 400, "INVALID_ARGUMENT", "owner must be"},
		{"no webhook yet", "GET", "/v1/owners/nobody/webhook", ``, 404, "NOT_FOUND", "has no webhook"},
		{"bad owner on read", "GET", "/v1/owners/a%20b/webhook", ``, 400, "INVALID_ARGUMENT", "owner must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(tc.method, tc.path, tc.body)
			if r.Status != tc.status || errCode(r) != tc.code || !strings.Contains(errMessage(r), tc.msg) {
				t.Errorf("got %d %s, want %d %s containing %q", r.Status, r.Raw, tc.status, tc.code, tc.msg)
			}
		})
	}
	req, _ := http.NewRequest("PUT", a.srv.URL+"/v1/owners/o/webhook", strings.NewReader(`{"url": "https://127.0.0.1/h"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("PUT webhook without credentials = %d, want 401", res.StatusCode)
	}
}

// TestWebhookMustBePublicHTTPS is the SSRF guard as deployed: without
// KEYPLANE_WEBHOOK_ALLOW_PRIVATE a webhook may not be plain http or point
// at loopback, private or link-local addresses, and the error says why.
func TestWebhookMustBePublicHTTPS(t *testing.T) {
	a := newAPIWith(t, func(cfg *config.Config) { cfg.WebhookAllowPrivate = false })
	for _, tc := range []struct{ url, msg string }{
		{"http://127.0.0.1:8080/hook", "url must start with https://"},
		{"https://127.0.0.1/hook", "is a loopback address; webhook URLs must resolve only to public addresses"},
		{"https://10.1.2.3/hook", "is a private address"},
		{"https://169.254.169.254/computeMetadata/v1/", "link-local address"},
		{"https://[::1]/hook", "loopback address"},
	} {
		r := a.do("PUT", "/v1/owners/o/webhook", `{"url": "`+tc.url+`"}`)
		if r.Status != 400 || errCode(r) != "INVALID_ARGUMENT" || !strings.Contains(errMessage(r), tc.msg) {
			t.Errorf("PUT webhook %s = %d %s, want 400 containing %q", tc.url, r.Status, r.Raw, tc.msg)
		}
	}
	if r := a.do("GET", "/v1/owners/o/webhook", ""); r.Status != 404 {
		t.Errorf("a refused webhook was stored: GET = %d %s", r.Status, r.Raw)
	}
}
