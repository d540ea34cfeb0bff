package portal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/wire"
)

const adminToken = "test-admin-token-0123456789"

// env is keyplane serve's whole HTTP surface on the embedded backends, with
// the portal's clock under the test's control.
type env struct {
	t   *testing.T
	srv *httptest.Server
	clk *clock.Fake
	app *wire.App
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken = t.TempDir(), adminToken
	app, err := wire.ServeAll(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Now())
	app.Server.Portal.Clock = clk
	srv := httptest.NewServer(app.Server.Handler())
	t.Cleanup(func() { cancel(); srv.Close(); app.Close() })
	return &env{t: t, srv: srv, clk: clk, app: app}
}

// api calls the JSON API with the admin token.
func (e *env) api(method, path, body string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func (e *env) createKey(body string) string {
	e.t.Helper()
	st, out := e.api("POST", "/v1/keys", body)
	if st != 201 {
		e.t.Fatalf("POST /v1/keys %s = %d %v", body, st, out)
	}
	return out["id"].(string)
}

// link opens a portal session for owner with perms and returns its URL.
func (e *env) link(owner string, perms ...string) string {
	e.t.Helper()
	p, _ := json.Marshal(perms)
	st, out := e.api("POST", "/v1/portal/sessions", `{"owner": "`+owner+`", "return_url": "https://platform.example/account", "permissions": `+string(p)+`}`)
	if st != 201 {
		e.t.Fatalf("POST /v1/portal/sessions = %d %v", st, out)
	}
	return out["url"].(string)
}

// count records usage of key id (owner's) straight into the ledger:
// requests on each of the days before now given.
func (e *env) count(owner, id string, requestsByDaysAgo map[int]int64) {
	e.t.Helper()
	var events []ledger.Counted
	for ago, n := range requestsByDaysAgo {
		events = append(events, ledger.Counted{Owner: owner, Cost: n * 1000, Event: usage.Event{
			ID: fmt.Sprintf("evt_%s_%d", id, ago), KeyID: id, Time: e.clk.Now().AddDate(0, 0, -ago), Requests: n, Units: 10 * n}})
	}
	if _, err := e.app.Ledger.Count(e.t.Context(), events, 40*24*time.Hour); err != nil {
		e.t.Fatalf("Count: %v", err)
	}
}

var allPerms = []string{"keys:read", "keys:create", "keys:roll", "keys:revoke", "usage:read"}

// browser is a cookie-keeping client that follows redirects.
type browser struct {
	t *testing.T
	c *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar}}
}

type page struct {
	Status int
	Body   string
	URL    string
}

func (b *browser) get(u string) page {
	b.t.Helper()
	res, err := b.c.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	return read(b.t, res)
}

// post submits a form as the portal's own page would, with Origin set.
func (b *browser) post(base, path string, form url.Values, headers ...string) page {
	b.t.Helper()
	req, _ := http.NewRequest("POST", base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	return read(b.t, res)
}

func read(t *testing.T, res *http.Response) page {
	t.Helper()
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return page{Status: res.StatusCode, Body: string(b), URL: res.Request.URL.String()}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrf(t *testing.T, p page) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no CSRF token on the page %s", p.URL)
	}
	return m[1]
}

func TestLinkExchangesOnceForASessionAndLeavesTheURL(t *testing.T) {
	e := newEnv(t)
	id := e.createKey(`{"owner": "acct_1", "name": "mine"}`)
	u := e.link("acct_1", allPerms...)
	b := newBrowser(t)
	p := b.get(u)
	if p.Status != 200 || !strings.Contains(p.Body, id) || p.URL != e.srv.URL+"/portal/" {
		t.Fatalf("exchange = %d at %s, want 200 at /portal/ listing %s:\n%s", p.Status, p.URL, id, p.Body)
	}
	if again := newBrowser(t).get(u); again.Status != 403 || !strings.Contains(again.Body, "used already") {
		t.Errorf("second exchange = %d %s, want 403 saying the link was used", again.Status, again.Body)
	}
	if p := b.get(e.srv.URL + "/portal/"); p.Status != 200 {
		t.Errorf("the first browser's session after the reuse = %d, want it still served", p.Status)
	}
}

func TestConcurrentExchangesOneWins(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	u := e.link("acct_1", "keys:read")
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for range n {
		wg.Go(func() {
			res, err := noRedirect.Get(u)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			switch res.StatusCode {
			case http.StatusSeeOther:
				wins++
				if res.Header.Get("Set-Cookie") == "" {
					t.Errorf("the winning exchange set no cookie")
				}
			case http.StatusForbidden:
			default:
				t.Errorf("exchange = %d, want 303 or 403", res.StatusCode)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of %d concurrent exchanges won, want exactly 1", wins, n)
	}
}

func TestExpiredLinkAndExpiredSessionAreRefused(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	u := e.link("acct_1", "keys:read")
	e.clk.Advance(10 * time.Minute)
	if p := newBrowser(t).get(u); p.Status != 403 {
		t.Errorf("exchange 10 minutes after the link was made = %d, want 403", p.Status)
	}
	b := newBrowser(t)
	if p := b.get(e.link("acct_1", "keys:read")); p.Status != 200 {
		t.Fatalf("exchange of a fresh link = %d", p.Status)
	}
	e.clk.Advance(time.Hour)
	if p := b.get(e.srv.URL + "/portal/"); p.Status != 401 {
		t.Errorf("the portal an hour after the exchange = %d, want 401", p.Status)
	}
}

func TestSessionCookieIsLockedDown(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(e.link("acct_1", "keys:read"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	c := res.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/portal"} {
		if !strings.Contains(c, want) {
			t.Errorf("Set-Cookie %q lacks %s", c, want)
		}
	}
	if strings.Contains(c, "Secure") {
		t.Errorf("Set-Cookie %q over loopback http is Secure: a browser would not send it back", c)
	}
	if loc := res.Header.Get("Location"); loc != "/portal/" {
		t.Errorf("exchange redirects to %q, want /portal/ (the token leaves the address bar)", loc)
	}
	// Behind a TLS terminator (Cloud Run says X-Forwarded-Proto: https)
	// the cookie is Secure.
	req, _ := http.NewRequest("GET", e.link("acct_1", "keys:read"), nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if c := res.Header.Get("Set-Cookie"); !strings.Contains(c, "Secure") {
		t.Errorf("Set-Cookie %q behind https lacks Secure", c)
	}
}

func TestSignOutClearsTheSessionAndReturnsToThePlatform(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	b := newBrowser(t)
	home := b.get(e.link("acct_1", "keys:read"))
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest("POST", e.srv.URL+"/portal/logout", strings.NewReader(url.Values{"csrf": {csrf(t, home)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "https://platform.example/account" {
		t.Errorf("sign out = %d to %q, want 303 to the return_url", res.StatusCode, res.Header.Get("Location"))
	}
	b.c.CheckRedirect = nil
	if p := b.get(e.srv.URL + "/portal/"); p.Status != 401 {
		t.Errorf("the portal after signing out = %d, want 401", p.Status)
	}
	// Without a return_url there is no back link, and signing out says so.
	st, out := e.api("POST", "/v1/portal/sessions", `{"owner": "acct_1"}`)
	if st != 201 {
		t.Fatalf("a session without return_url = %d %v", st, out)
	}
	b = newBrowser(t)
	home = b.get(out["url"].(string))
	if strings.Contains(home.Body, "Back to your account") {
		t.Errorf("a session without return_url shows a back link")
	}
	if p := b.post(e.srv.URL, "/portal/logout", url.Values{"csrf": {csrf(t, home)}}); p.Status != 200 || !strings.Contains(p.Body, "Signed out") {
		t.Errorf("sign out without return_url = %d, want the signed-out page", p.Status)
	}
}

func TestForgedOrMissingSessionOrCSRFIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	b := newBrowser(t)
	home := b.get(e.link("acct_1", allPerms...))
	token := csrf(t, home)
	for _, tc := range []struct {
		name    string
		form    url.Values
		headers []string
	}{
		{"missing CSRF token", url.Values{"name": {"x"}}, nil},
		{"forged CSRF token", url.Values{"name": {"x"}, "csrf": {token[:len(token)-2] + "AA"}}, nil},
		{"cross-site request", url.Values{"name": {"x"}, "csrf": {token}}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"another origin", url.Values{"name": {"x"}, "csrf": {token}}, []string{"Origin", "https://evil.example"}},
	} {
		if p := b.post(e.srv.URL, "/portal/keys", tc.form, tc.headers...); p.Status != 403 {
			t.Errorf("%s: POST /portal/keys = %d, want 403", tc.name, p.Status)
		}
	}
	// A forged session cookie: another owner's name with the MAC of ours.
	stranger := newBrowser(t)
	pu, _ := url.Parse(e.srv.URL + "/portal/")
	stranger.c.Jar.SetCookies(pu, []*http.Cookie{{Name: "kp_portal", Value: "eyJzaWQiOiJ4Iiwib3duIjoiYWNjdF8yIn0.AAAA", Path: "/portal"}})
	if p := stranger.get(e.srv.URL + "/portal/"); p.Status != 401 {
		t.Errorf("a forged session cookie = %d, want 401", p.Status)
	}
	if p := newBrowser(t).get(e.srv.URL + "/portal/"); p.Status != 401 {
		t.Errorf("no session = %d, want 401", p.Status)
	}
	// With the token, the same form is accepted.
	if p := b.post(e.srv.URL, "/portal/keys", url.Values{"name": {"ok"}, "csrf": {token}}); p.Status != 201 {
		t.Errorf("POST /portal/keys with the CSRF token = %d %s, want 201", p.Status, p.Body)
	}
}

func TestAnotherOwnersKeyIsNotFound(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1", "name": "mine"}`)
	theirs := e.createKey(`{"owner": "acct_2", "name": "theirs"}`)
	b := newBrowser(t)
	home := b.get(e.link("acct_1", allPerms...))
	if strings.Contains(home.Body, theirs) || strings.Contains(home.Body, "theirs") {
		t.Errorf("acct_1's portal lists acct_2's key:\n%s", home.Body)
	}
	token := csrf(t, home)
	for _, tc := range []struct {
		method, path string
	}{
		{"GET", "/portal/keys/" + theirs},
		{"GET", "/portal/keys/" + theirs + "/revoke"},
		{"POST", "/portal/keys/" + theirs + "/roll"},
		{"POST", "/portal/keys/" + theirs + "/revoke"},
		{"GET", "/portal/keys/key_doesnotexist"},
	} {
		var p page
		if tc.method == "GET" {
			p = b.get(e.srv.URL + tc.path)
		} else {
			p = b.post(e.srv.URL, tc.path, url.Values{"csrf": {token}, "confirm": {"yes"}})
		}
		if p.Status != 404 || strings.Contains(p.Body, "theirs\n") {
			t.Errorf("%s %s = %d, want 404", tc.method, tc.path, p.Status)
		}
	}
	if st, out := e.api("GET", "/v1/keys/"+theirs, ""); st != 200 || out["status"] != "active" || out["rotated_to"] != nil {
		t.Errorf("acct_2's key after acct_1's attempts = %d %v, want it active and not rolled", st, out)
	}
}

func TestNamesAndMetadataAreEscaped(t *testing.T) {
	e := newEnv(t)
	const evil = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`
	body, _ := json.Marshal(map[string]any{"owner": "acct_1", "name": evil, "metadata": map[string]string{evil: evil}})
	id := e.createKey(string(body))
	b := newBrowser(t)
	home := b.get(e.link("acct_1", allPerms...))
	key := b.get(e.srv.URL + "/portal/keys/" + id)
	for name, p := range map[string]page{"list": home, "key page": key} {
		if p.Status != 200 {
			t.Fatalf("%s = %d", name, p.Status)
		}
		if strings.Contains(p.Body, "<script>alert") || strings.Contains(p.Body, "<img src=x") {
			t.Errorf("the %s holds the name or metadata unescaped:\n%s", name, p.Body)
		}
		if !strings.Contains(p.Body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("the %s does not show the name escaped", name)
		}
	}
}

func TestWithoutKeysCreateThereIsNoFormAndPostIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	b := newBrowser(t)
	home := b.get(e.link("acct_1", "keys:read"))
	if strings.Contains(home.Body, "/portal/keys/new") {
		t.Errorf("a session without keys:create links to the create form")
	}
	if p := b.get(e.srv.URL + "/portal/keys/new"); p.Status != 403 {
		t.Errorf("GET /portal/keys/new without keys:create = %d, want 403", p.Status)
	}
	if p := b.post(e.srv.URL, "/portal/keys", url.Values{"csrf": {csrf(t, home)}, "name": {"x"}}); p.Status != 403 || !strings.Contains(p.Body, "keys:create") {
		t.Errorf("POST /portal/keys without keys:create = %d, want 403 naming keys:create", p.Status)
	}
	if st, out := e.api("GET", "/v1/keys?owner=acct_1", ""); st != 200 || len(out["keys"].([]any)) != 1 {
		t.Errorf("acct_1's keys after the refused create = %v, want the one key", out)
	}
}

func TestCreateShowsTheSecretOnceThenRollAndRevoke(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	b := newBrowser(t)
	home := b.get(e.link("acct_1", allPerms...))
	token := csrf(t, home)
	created := b.post(e.srv.URL, "/portal/keys", url.Values{"csrf": {token}, "name": {"ci runner"}})
	secret := regexp.MustCompile(`id="secret"[^>]*>([^<]+)<`).FindStringSubmatch(created.Body)
	if created.Status != 201 || secret == nil {
		t.Fatalf("create = %d, want 201 with the secret:\n%s", created.Status, created.Body)
	}
	id := regexp.MustCompile(`/portal/keys/(key_[A-Za-z0-9]+)`).FindStringSubmatch(created.Body)[1]
	key := b.get(e.srv.URL + "/portal/keys/" + id)
	if key.Status != 200 || strings.Contains(key.Body, secret[1]) || strings.Contains(b.get(e.srv.URL+"/portal/").Body, secret[1]) {
		t.Errorf("the key page or list shows the secret after creation")
	}
	rolled := b.post(e.srv.URL, "/portal/keys/"+id+"/roll", url.Values{"csrf": {token}, "grace_period": {"1h"}})
	if rolled.Status != 201 || !strings.Contains(rolled.Body, `id="secret"`) {
		t.Fatalf("roll = %d %s", rolled.Status, rolled.Body)
	}
	if st, out := e.api("GET", "/v1/keys/"+id, ""); st != 200 || out["rotated_to"] == nil {
		t.Errorf("the rolled key = %v, want rotated_to set", out)
	}
	if p := b.post(e.srv.URL, "/portal/keys/"+id+"/revoke", url.Values{"csrf": {token}}); p.Status != 400 {
		t.Errorf("revoke without the confirmation = %d, want 400", p.Status)
	}
	if p := b.post(e.srv.URL, "/portal/keys/"+id+"/revoke", url.Values{"csrf": {token}, "confirm": {"yes"}}); p.Status != 200 || !strings.Contains(p.Body, "revoked") {
		t.Errorf("revoke = %d, want the key page showing it revoked", p.Status)
	}
	if _, out := e.api("GET", "/v1/keys/"+id, ""); out["status"] != "revoked" {
		t.Errorf("the key after the portal's revoke = %v, want revoked", out["status"])
	}
}

func TestKeysListIsPaginated(t *testing.T) {
	e := newEnv(t)
	for range 25 {
		e.createKey(`{"owner": "acct_1"}`)
	}
	b := newBrowser(t)
	first := b.get(e.link("acct_1", "keys:read"))
	next := regexp.MustCompile(`id="next" href="([^"]+)"`).FindStringSubmatch(first.Body)
	if next == nil {
		t.Fatalf("the first page of 25 keys has no next link")
	}
	rows := func(p page) int { return strings.Count(p.Body, `<tr><td><a href="/portal/keys/`) }
	second := b.get(e.srv.URL + strings.ReplaceAll(next[1], "&amp;", "&"))
	if rows(first) != 20 || rows(second) != 5 || strings.Contains(second.Body, `id="next"`) {
		t.Errorf("pages hold %d and %d keys, want 20 and 5 and no third page", rows(first), rows(second))
	}
	if p := b.get(e.srv.URL + "/portal/?page_token=garbage"); p.Status != 400 {
		t.Errorf("a garbage page token = %d, want 400", p.Status)
	}
}

func TestSessionRequestIsValidated(t *testing.T) {
	e := newEnv(t)
	e.createKey(`{"owner": "acct_1"}`)
	for _, tc := range []struct {
		body string
		want int
		says string
	}{
		{`{"owner": "acct_nobody", "return_url": "https://p.example/"}`, 404, "acct_nobody"},
		{`{"owner": "acct_1", "return_url": "/relative"}`, 400, "return_url"},
		{`{"owner": "acct_1", "return_url": "javascript:alert(1)"}`, 400, "return_url"},
		{`{"owner": "acct_1", "return_url": "https://p.example/", "permissions": ["keys:read", "keys:reveal"]}`, 400, "keys:reveal"},
		{`{"owner": "acct_1", "return_url": "https://p.example/", "ttl": "11m"}`, 400, "ttl"},
		{`{"owner": "acct_1", "return_url": "https://p.example/", "extra": 1}`, 400, "extra"},
	} {
		st, out := e.api("POST", "/v1/portal/sessions", tc.body)
		raw, _ := json.Marshal(out)
		if st != tc.want || !strings.Contains(string(raw), tc.says) {
			t.Errorf("POST /v1/portal/sessions %s = %d %s, want %d naming %s", tc.body, st, raw, tc.want, tc.says)
		}
	}
	st, out := e.api("POST", "/v1/portal/sessions", `{"owner": "acct_1", "return_url": "https://p.example/", "ttl": "2m"}`)
	if st != 201 {
		t.Fatalf("a valid request = %d %v", st, out)
	}
	exp, _ := time.Parse(time.RFC3339, out["expires_at"].(string))
	if d := exp.Sub(e.clk.Now()); d < time.Minute || d > 2*time.Minute {
		t.Errorf("expires_at is %s after now, want 2m", d)
	}
	if u := out["url"].(string); !strings.HasPrefix(u, e.srv.URL+"/portal/exchange?token=") {
		t.Errorf("url = %q, want one under %s/portal/", u, e.srv.URL)
	}
}

func TestUsageChartLimitsAndSpendShowTheOwnersUsageOnly(t *testing.T) {
	e := newEnv(t)
	mine := e.createKey(`{"owner": "acct_1", "plan": "pro"}`)
	theirs := e.createKey(`{"owner": "acct_2"}`)
	if st, out := e.api("PATCH", "/v1/owners/acct_1", `{"limits": {"requests_per_day": 100}, "features": {"generate": {"requests_per_day": 50}},
		"spend_cap": {"monthly": "1000"}}`); st != 200 {
		t.Fatalf("PATCH owner = %d %v", st, out)
	}
	if st, out := e.api("POST", "/v1/owners/acct_1/credits", `{"id": "pay_1", "amount": "500"}`); st != 201 {
		t.Fatalf("top-up = %d %v", st, out)
	}
	e.count("acct_1", mine, map[int]int64{0: 7, 2: 3})
	if _, err := e.app.Ledger.Count(t.Context(), []ledger.Counted{{Owner: "acct_1", Event: usage.Event{
		ID: "evt_gen", KeyID: mine, Time: e.clk.Now(), Requests: 4, Feature: "generate"}}}, 40*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	e.count("acct_2", theirs, map[int]int64{0: 500})
	b := newBrowser(t)
	home := b.get(e.link("acct_1", allPerms...))
	if home.Status != 200 {
		t.Fatalf("home = %d", home.Status)
	}
	if got := strings.Count(home.Body, "<rect "); got != 30 {
		t.Errorf("the chart has %d bars, want 30 (one a day)", got)
	}
	today := e.clk.Now().Format("Jan 2")
	// The owner's shared day limit: 11 of 100 used today; on generate 4 of 50.
	if !strings.Contains(home.Body, "<td>requests_per_day</td><td>100</td><td>11</td><td>89</td>") {
		t.Errorf("the owner's limits do not show 11 of 100 used:\n%s", home.Body)
	}
	if !strings.Contains(home.Body, "On generate") || !strings.Contains(home.Body, "<td>requests_per_day</td><td>50</td><td>4</td><td>46</td>") {
		t.Errorf("the owner's generate limits do not show 4 of 50 used:\n%s", home.Body)
	}
	if !strings.Contains(home.Body, "<title>"+today+": 11</title>") || !strings.Contains(home.Body, "max 11") {
		t.Errorf("the chart lacks today's 7 requests (or shows another owner's):\n%s", home.Body)
	}
	key := b.get(e.srv.URL + "/portal/keys/" + mine)
	if !strings.Contains(key.Body, "<title>"+today+": 11</title>") {
		t.Errorf("the key's chart lacks today's 11 requests")
	}
	// The pro plan's per-key requests_per_day, 100000, less today's 11.
	if !strings.Contains(key.Body, "<td>requests_per_day</td><td>100000</td><td>11</td><td>99989</td>") {
		t.Errorf("the key's limits do not show today's 11 requests used:\n%s", key.Body)
	}
	if !strings.Contains(home.Body, `<p id="cap">Monthly spend cap: 1000.000000 USD`) || !strings.Contains(home.Body, `<p id="credits">Prepaid credits left: 499.990000 USD`) {
		t.Errorf("the spend cap or the credits are not shown:\n%s", home.Body)
	}
	if !strings.Contains(home.Body, "for 14 requests") && e.clk.Now().Day() > 2 {
		t.Errorf("the month's spend does not count acct_1's 10 requests:\n%s", home.Body)
	}
}
