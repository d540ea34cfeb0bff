package console_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/wire"
)

func TestSignInKeepsTheCredentialInAStrictHttpOnlyCookie(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	// Signed out, every page sends to the sign-in page.
	if body := b.get("/console/keys", 200); !strings.Contains(body, `action="/console/signin"`) {
		t.Fatalf("signed out, /console/keys did not lead to the sign-in form:\n%s", body)
	}
	if body := b.post("/console/signin", url.Values{"credential": {"wrong-token"}}, 401); !strings.Contains(body, "not accepted") {
		t.Errorf("a wrong credential: %s", body)
	}
	b.get("/console/signin", 200)
	req, _ := http.NewRequest("POST", e.srv.URL+"/console/signin", strings.NewReader(url.Values{"credential": {adminToken}, "csrf": {b.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	u, _ := url.Parse(e.srv.URL + "/console/signin")
	cookies := b.c.Jar.Cookies(u)
	if len(cookies) == 0 {
		t.Fatal("no sign-in cookie")
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in = %d, want 303", res.StatusCode)
	}
	var session *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "keyplane_console" {
			session = c
		}
	}
	if session == nil {
		t.Fatal("no session cookie set")
	}
	if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/console" || session.Secure {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/console, not Secure on loopback http", session)
	}
	if strings.Contains(session.Value, adminToken) || strings.Contains(res.Header.Get("Location"), adminToken) {
		t.Error("the credential is in the cookie or the URL")
	}
	// Over HTTPS (a proxy's X-Forwarded-Proto) the cookie is Secure.
	req2, _ := http.NewRequest("GET", e.srv.URL+"/console/signin", nil)
	req2.Header.Set("X-Forwarded-Proto", "https")
	res2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if cs := res2.Cookies(); len(cs) == 0 || !cs[0].Secure {
		t.Errorf("behind HTTPS the sign-in cookie is not Secure: %v", cs)
	}

	body := b.signIn(adminToken)
	if !strings.Contains(body, "Signed in as <strong>admin</strong>") {
		t.Fatalf("after sign-in:\n%s", body)
	}
	b.post("/console/signout", url.Values{}, 200)
	if body := b.get("/console/owners", 200); !strings.Contains(body, `action="/console/signin"`) {
		t.Error("after sign-out the owners page still shows")
	}
}

func TestPostsWithoutTheSessionsCSRFTokenAre403(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn(adminToken)
	b.get("/console/keys", 200)
	good := b.csrf
	form := func(csrf string) url.Values {
		v := url.Values{"owner": {"acct_csrf"}, "name": {"x"}}
		if csrf != "" {
			v.Set("csrf", csrf)
		}
		return v
	}
	same := map[string]string{"Origin": e.srv.URL, "Sec-Fetch-Site": "same-origin"}
	b.postRaw("/console/keys", form(""), 403, same)
	b.postRaw("/console/keys", form("forged-"+good[:10]), 403, same)
	b.postRaw("/console/keys", form(good+"x"), 403, same)
	b.postRaw("/console/keys", form(good), 403, map[string]string{"Origin": "https://evil.example"})
	b.postRaw("/console/keys", form(good), 403, map[string]string{"Sec-Fetch-Site": "cross-site"})
	b.postRaw("/console/keys", form(good), 403, map[string]string{"Origin": "null"})
	// Another session's token is no good in this one.
	other := e.browser()
	other.signIn(adminToken)
	other.get("/console/keys", 200)
	b.postRaw("/console/keys", form(other.csrf), 403, same)
	// Nor a token without a session (a signed-out browser).
	e.browser().postRaw("/console/keys", form(good), 403, same)
	// Sign-in itself needs the sign-in form's token.
	e.browser().postRaw("/console/signin", url.Values{"credential": {adminToken}}, 403, same)
	if st, out := e.api(adminToken, "GET", "/v1/keys?owner=acct_csrf", ""); st != 200 || len(out["keys"].([]any)) != 0 {
		t.Errorf("a refused form created a key: %d %v", st, out)
	}
	// The right token works.
	b.postRaw("/console/keys", form(good), 200, same)
	if _, out := e.api(adminToken, "GET", "/v1/keys?owner=acct_csrf", ""); len(out["keys"].([]any)) != 1 {
		t.Errorf("the good form did not create the key: %v", out)
	}
}

func TestNamesAndMetadataAreEscapedEverywhere(t *testing.T) {
	e := newEnv(t)
	evil := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	id, _ := e.createKey(fmt.Sprintf(`{"owner": "acct_xss", "name": %q, "metadata": {"note": %q, %q: "v"}}`, evil, evil, "k<b>"))
	if _, err := e.app.Server.Keys.Disable(context.Background(), "admin", id, evil); err != nil {
		t.Fatal(err)
	}
	e.meter(id, "ev_xss", "", 2)
	b := e.browser()
	b.signIn(adminToken)
	for _, path := range []string{"/console/keys", "/console/keys?name=" + url.QueryEscape("<script>"), "/console/keys/" + id,
		"/console/audit", "/console/audit?key_id=" + id, "/console/owners/acct_xss", "/console/keys?owner=" + url.QueryEscape(`"><b>`)} {
		want := 200
		if strings.Contains(path, "%22%3E") {
			want = 400 // not an owner id; the message does not echo it
		}
		body := b.get(path, want)
		for _, raw := range []string{"<script>alert", "<img src=x", "k<b>", `"><b>`} {
			if strings.Contains(body, raw) {
				t.Errorf("%s holds %q unescaped", path, raw)
			}
		}
		if want == 200 && path != "/console/owners/acct_xss" && !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("%s does not show the escaped name", path)
		}
	}
}

func TestTablesArePaginatedWithTheStoresTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 120 {
		name := fmt.Sprintf("bulk-%03d", i)
		if i == 77 {
			name = "needle"
		}
		if _, err := e.app.Server.Keys.Create(ctx, "admin", keys.CreateRequest{Owner: "acct_bulk", Name: name}, ""); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	b.signIn(adminToken)
	rows := regexp.MustCompile(`<tr><th scope="row"><a href="/console/keys/`)
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next">`)
	path, seen := "/console/keys?owner=acct_bulk", 0
	var counts []int
	for path != "" {
		body := b.get(path, 200)
		n := len(rows.FindAllString(body, -1))
		counts = append(counts, n)
		seen += n
		path = ""
		if m := next.FindStringSubmatch(body); m != nil {
			path = strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if fmt.Sprint(counts) != "[50 50 20]" || seen != 120 {
		t.Errorf("pages of keys: %v", counts)
	}
	// A filter reads through the store's pages and finds the one match.
	body := b.get("/console/keys?owner=acct_bulk&name=NEED", 200)
	if n := len(rows.FindAllString(body, -1)); n != 1 || !strings.Contains(body, "needle") {
		t.Errorf("name filter found %d rows", n)
	}
	if n := len(rows.FindAllString(b.get("/console/keys?status=revoked", 200), -1)); n != 0 {
		t.Errorf("status=revoked found %d rows", n)
	}
	b.get("/console/keys?status=bogus", 400)
	// The audit trail pages too: 120 creations.
	body = b.get("/console/audit", 200)
	if m := next.FindStringSubmatch(body); m == nil {
		t.Error("the audit trail has no next page")
	} else {
		b.get(strings.ReplaceAll(m[1], "&amp;", "&"), 200)
	}
}

func TestScopedCallerTokenSeesOnlyWhatItMay(t *testing.T) {
	e := newEnv(t)
	mine, _ := e.createKey(`{"owner": "acct_mine", "name": "mine"}`)
	theirs, _ := e.createKey(`{"owner": "acct_theirs", "name": "theirs"}`)
	reader := e.mintToken(`{"name": "reader", "permissions": ["keys:read", "owners:read"], "owner": "acct_mine"}`)
	b := e.browser()
	body := b.signIn(reader)
	if !strings.Contains(body, "(owner acct_mine)") {
		t.Fatalf("signed in page:\n%s", body)
	}
	keysPage := b.get("/console/keys", 200)
	if !strings.Contains(keysPage, mine) || strings.Contains(keysPage, theirs) {
		t.Error("the keys page of a scoped token is not its owner's keys only")
	}
	if strings.Contains(keysPage, `action="/console/keys" class="stack"`) {
		t.Error("a token without keys:create sees the create form")
	}
	for _, nav := range []string{`href="/console/audit"`, `href="/console/sweep"`, `href="/console/dead-letters"`} {
		if strings.Contains(keysPage, nav) {
			t.Errorf("the scoped token's menu offers %s", nav)
		}
	}
	keyPage := b.get("/console/keys/"+mine, 200)
	if strings.Contains(keyPage, "/revoke") || strings.Contains(keyPage, "/disable") {
		t.Error("a read-only token is offered key actions")
	}
	b.get("/console/keys/"+theirs, 404)
	b.get("/console/owners/acct_theirs", 404)
	b.get("/console/keys?owner=acct_theirs", 404)
	if owners := b.get("/console/owners", 200); !strings.Contains(owners, "acct_mine") || strings.Contains(owners, "acct_theirs") {
		t.Error("the owners page of a scoped token lists other owners")
	}
	b.get("/console/audit", 403)
	b.get("/console/dead-letters", 403)
	b.get("/console/sweep", 403)
	b.post("/console/keys/"+mine+"/revoke", url.Values{"confirm": {"revoke"}}, 403)
	b.post("/console/keys", url.Values{"owner": {"acct_mine"}}, 403)

	// A scoped token with more permissions acts on its owner's keys only.
	ops := e.mintToken(`{"name": "ops", "permissions": ["keys:read", "keys:create", "keys:revoke", "usage:read", "audit:read"], "owner": "acct_mine"}`)
	o := e.browser()
	o.signIn(ops)
	o.get("/console/keys", 200)
	o.post("/console/keys", url.Values{"owner": {"acct_theirs"}}, 403)
	o.post("/console/keys/"+theirs+"/revoke", url.Values{"confirm": {"revoke"}}, 404)
	o.get("/console/audit?key_id="+theirs, 404)
	if body := o.get("/console/audit", 200); !strings.Contains(body, "name one of its keys") {
		t.Error("the scoped audit page does not ask for a key")
	}
	o.get("/console/audit?key_id="+mine, 200)
	o.get("/console/dead-letters", 403)
	if st, out := e.api(adminToken, "GET", "/v1/keys/"+theirs, ""); st != 200 || out["status"] != "active" {
		t.Errorf("the other owner's key changed: %v", out)
	}

	// Revoking the token signs its sessions out at the next request.
	st, list := e.api(adminToken, "GET", "/v1/tokens", "")
	if st != 200 {
		t.Fatal(st)
	}
	for _, tk := range list["tokens"].([]any) {
		if m := tk.(map[string]any); m["name"] == "reader" {
			if st, _ := e.api(adminToken, "POST", "/v1/tokens/"+m["id"].(string)+"/revoke", "{}"); st != 200 {
				t.Fatalf("revoke token = %d", st)
			}
		}
	}
	waitFor(t, "the revoked token's session to end", func() bool {
		return strings.Contains(b.get("/console/keys", 200), `action="/console/signin"`)
	})
}

func TestCreateShowsTheSecretOnceAndRevokeNeedsConfirmation(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn(adminToken)
	b.get("/console/keys", 200)
	page := b.post("/console/keys", url.Values{"owner": {"acct_once"}, "name": {"once"}, "metadata": {"team=a\nenv=prod"}}, 200)
	secret := regexp.MustCompile(`class="secret-value" readonly value="([^"]+)"`).FindStringSubmatch(page)
	if secret == nil {
		t.Fatalf("the created key's page does not show its secret:\n%s", page)
	}
	id := regexp.MustCompile(`<dt>Key</dt><dd><code>([^<]+)</code>`).FindStringSubmatch(page)[1]
	if !strings.Contains(page, "env") || !strings.Contains(page, "prod") {
		t.Error("metadata not shown")
	}
	// The secret verifies: it is the key's.
	if st, out := e.api(adminToken, "POST", "/v1/verify", fmt.Sprintf(`{"key": %q}`, secret[1])); st != 200 || out["valid"] != true {
		t.Errorf("the shown secret does not verify: %d %v", st, out)
	}
	// Shown once: not on the next view, nor in any list.
	for _, path := range []string{"/console/keys/" + id, "/console/keys", "/console/audit"} {
		if strings.Contains(b.get(path, 200), secret[1]) {
			t.Errorf("%s shows the secret again", path)
		}
	}
	// Revoke: the key page links to a confirmation page; a POST without its
	// confirmation is refused.
	b.get("/console/keys/"+id, 200)
	b.post("/console/keys/"+id+"/revoke", url.Values{}, 400)
	confirm := b.get("/console/keys/"+id+"/revoke", 200)
	if !strings.Contains(confirm, "cannot be undone") {
		t.Errorf("confirmation page:\n%s", confirm)
	}
	done := b.post("/console/keys/"+id+"/revoke", url.Values{"confirm": {"revoke"}, "reason": {"test"}}, 200)
	if !strings.Contains(done, `status-revoked">revoked`) {
		t.Errorf("after revoke:\n%s", done)
	}
	// Disable, enable and rotate, on another key.
	other, _ := e.createKey(`{"owner": "acct_once"}`)
	b.get("/console/keys/"+other, 200)
	if !strings.Contains(b.post("/console/keys/"+other+"/disable", url.Values{"reason": {"pause"}}, 200), `status-disabled">disabled`) {
		t.Error("disable did not disable")
	}
	if !strings.Contains(b.post("/console/keys/"+other+"/enable", url.Values{}, 200), `status-active">active`) {
		t.Error("enable did not enable")
	}
	rotated := b.post("/console/keys/"+other+"/rotate", url.Values{"grace_period": {"1h"}}, 200)
	if !strings.Contains(rotated, `class="secret-value"`) || !strings.Contains(rotated, "Replaces") {
		t.Errorf("rotation did not show the new key's secret:\n%s", rotated)
	}
	b.post("/console/keys/"+other+"/rotate", url.Values{"grace_period": {"forever"}}, 400)
}

func TestUsageChartsAndTablesShowMeteredUsageWithLimits(t *testing.T) {
	e := newEnv(t)
	id, _ := e.createKey(`{"owner": "acct_chart", "limits": {"requests_per_minute": 40, "units_per_day": 900}}`)
	at := time.Now() // one time for both events: one minute bucket
	e.meterAt(id, "ev_1", "pro-model", 123, at)
	e.meterAt(id, "ev_2", "pro-model", 7, at)
	b := e.browser()
	b.signIn(adminToken)
	waitFor(t, "the usage counted", func() bool {
		return strings.Contains(b.get("/console/keys/"+id, 200), `<td class="num">130</td>`)
	})
	page := b.get("/console/keys/"+id, 200)
	for _, want := range []string{`<svg class="chart"`, `class="series"`, `class="limit"`, "units_per_day: 900",
		`<td class="num">2</td>`, "Data table: Units per day (UTC)"} {
		if !strings.Contains(page, want) {
			t.Errorf("key page lacks %q", want)
		}
	}
	if minute := b.get("/console/keys/"+id+"?bucket=minute", 200); !strings.Contains(minute, "requests_per_minute: 40") {
		t.Error("the minute chart lacks the requests_per_minute limit line")
	}
	for _, bucket := range []string{"minute", "hour"} {
		if !strings.Contains(b.get("/console/keys/"+id+"?bucket="+bucket, 200), `<td class="num">130</td>`) {
			t.Errorf("the %s chart's table lacks the usage", bucket)
		}
	}
	b.get("/console/keys/"+id+"?bucket=month", 400)
	owner := b.get("/console/owners/acct_chart", 200)
	for _, want := range []string{`<th scope="col">pro-model</th>`, `<td class="num">130</td>`, "Spend this month"} {
		if !strings.Contains(owner, want) {
			t.Errorf("owner page lacks %q", want)
		}
	}
	if !strings.Contains(b.get("/console/owners", 200), "acct_chart") {
		t.Error("the owners page does not list the owner")
	}
	b.get("/console/dead-letters", 200)
	sweep := b.post("/console/sweep", url.Values{}, 200)
	if !strings.Contains(sweep, "Report (dry run)") {
		t.Errorf("sweep page:\n%s", sweep)
	}
}

func TestTheConsoleIsServedWithTheFacesFunctionOnly(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		functions []string
		want      int
	}{{nil, http.StatusSeeOther}, {[]string{httpapi.FuncFaces}, http.StatusSeeOther}, {[]string{httpapi.FuncKeys}, http.StatusNotFound},
		{[]string{httpapi.FuncVerify}, http.StatusNotFound}, {[]string{httpapi.FuncUsageWebhook}, http.StatusNotFound}} {
		rec := httptest.NewRecorder()
		e.app.Server.Handler(c.functions...).ServeHTTP(rec, httptest.NewRequest("GET", "/console/keys", nil))
		if rec.Code != c.want {
			t.Errorf("functions %v: GET /console/keys = %d, want %d", c.functions, rec.Code, c.want)
		}
	}
	// The pages forbid framing and scripts, and are not cached.
	res, err := http.Get(e.srv.URL + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", res.Header)
	}
}

func TestTheFacesFunctionServesTheConsoleWithoutTheSweep(t *testing.T) {
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = t.TempDir(), adminToken, webhookSecret
	app, err := wire.Faces(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	srv := httptest.NewServer(app.Handler)
	defer srv.Close()
	b := (&env{t: t, srv: srv, app: app}).browser()
	b.signIn(adminToken)
	if body := b.get("/console/sweep", 200); !strings.Contains(body, "does not run the sweep") {
		t.Errorf("the Faces function's sweep page:\n%s", body)
	}
	b.post("/console/sweep", url.Values{"mode": {"dry"}}, 409)
	b.get("/console/keys", 200)
}

// After 10 failed sign-ins in a minute a client is refused (429, even
// with the right credential) until the minute ends; another client is
// not.
func TestFailedSignInsAreThrottledPerClient(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/console/signin", 200)
	for i := range 10 {
		b.post("/console/signin", url.Values{"credential": {fmt.Sprint("wrong-", i)}}, 401)
	}
	if body := b.post("/console/signin", url.Values{"credential": {adminToken}}, 429); !strings.Contains(body, "Too many failed sign-ins") {
		t.Errorf("the 11th attempt: %s", body)
	}
	other := e.browser()
	other.get("/console/signin", 200)
	other.postRaw("/console/signin", url.Values{"credential": {adminToken}, "csrf": {other.csrf}}, 200,
		map[string]string{"Origin": e.srv.URL, "Sec-Fetch-Site": "same-origin", "X-Forwarded-For": "198.51.100.7"})
}
