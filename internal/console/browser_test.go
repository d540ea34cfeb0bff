package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromium finds a Chromium or Chrome binary. Without one the browser
// test fails where emulator-backed tests are required
// (KEYPLANE_REQUIRE_EMULATORS=1, set by scripts/with-emulators.sh, as in
// CI) and is skipped elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("KEYPLANE_REQUIRE_EMULATORS") == "1" {
		t.Fatal("no chromium on PATH: scripts/install-prereqs.sh installs it (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); KEYPLANE_REQUIRE_EMULATORS=1 makes this a failure")
	return ""
}

// TestBrowserSignInCreateMeterChartRevoke drives the console in headless
// Chromium: sign in, create a key and see its secret once, meter usage
// through the usage webhook, see it charted, revoke the key through the
// confirmation page. With KEYPLANE_SCREENSHOTS=1 it writes screenshots
// of the main pages to docs/screenshots.
func TestBrowserSignInCreateMeterChartRevoke(t *testing.T) {
	exe := chromium(t)
	e := newEnv(t)
	shots := os.Getenv("KEYPLANE_SCREENSHOTS") == "1"

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, on a context without deadline
		t.Fatalf("starting %s: %v", exe, err)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// submit clicks a button that loads another page, and waits for it.
	submit := func(what, sel string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	html := func() string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		if !shots {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		dir := filepath.Join("..", "..", "docs", "screenshots")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Some data for the pages beside the key the test creates.
	other, _ := e.createKey(`{"owner": "acct_globex", "name": "<b>batch</b> jobs", "metadata": {"team": "data"}}`)
	e.createKey(`{"owner": "acct_initech", "name": "staging"}`)
	// Usage over the last 40 minutes, so that the minute charts have a shape.
	for i := range 40 {
		at := time.Now().Add(-time.Duration(40-i) * time.Minute)
		e.meterAt(other, fmt.Sprintf("seed_%d", i), []string{"pro-model", "flash"}[i%2], 40+(i*37)%90, at)
		if i%3 == 0 {
			e.meterAt(other, fmt.Sprintf("seed_b%d", i), "pro-model", 25, at)
		}
	}

	// Sign in: signed out, the console sends to the sign-in form.
	do("open the console", chromedp.Navigate(e.srv.URL+"/console"), chromedp.WaitVisible(chromedp.ID("credential")))
	shot("signin")
	do("type the admin token", chromedp.SendKeys(chromedp.ID("credential"), adminToken))
	submit("sign in", `button[type="submit"]`)
	if got := text(".signout span"); !strings.Contains(got, "admin") {
		t.Fatalf("after sign-in the header says %q", got)
	}

	// Create a key; its secret shows once.
	do("open keys", chromedp.Navigate(e.srv.URL+"/console/keys"), chromedp.WaitVisible(chromedp.ID("c-owner")))
	do("fill the create form", chromedp.SendKeys(chromedp.ID("c-owner"), "acct_acme"), chromedp.SendKeys(chromedp.ID("c-name"), "checkout service"),
		chromedp.SendKeys(chromedp.ID("c-metadata"), "team=payments"))
	submit("create the key", `form[method="post"][action="/console/keys"] button`)
	secret, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(".secret-value")))
	if err != nil || secret == "" {
		t.Fatalf("the new key's secret is not shown: %v", err)
	}
	keyURL, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	id := keyURL[strings.LastIndex(keyURL, "/")+1:]
	if st, out := e.api(adminToken, "POST", "/v1/verify", fmt.Sprintf(`{"key": %q}`, secret)); st != 200 || out["valid"] != true {
		t.Fatalf("the secret the console showed does not verify: %d %v", st, out)
	}
	shot("key-created")
	do("reload the key page", chromedp.Navigate(keyURL), chromedp.WaitVisible(chromedp.CSS("dl.facts")))
	if strings.Contains(html(), secret) {
		t.Fatal("the secret shows again on reload")
	}

	// Meter usage and see it on the key's chart and data table.
	now := time.Now() // one time for both events: one minute bucket
	e.meterAt(id, "ev_a", "pro-model", 120, now)
	e.meterAt(id, "ev_b", "flash", 30, now)
	for i := range 20 {
		e.meterAt(id, fmt.Sprintf("ev_past_%d", i), "flash", 10+i%5*20, time.Now().Add(-time.Duration(20-i)*time.Minute))
	}
	waitFor(t, "the usage counted and charted", func() bool {
		do("open the key's minute chart", chromedp.Navigate(keyURL+"?bucket=minute"), chromedp.WaitVisible(chromedp.CSS("svg.chart polyline.series")))
		h := html()
		return strings.Contains(h, `<td class="num">150</td>`) && strings.Contains(h, "Units per minute")
	})
	shot("key")
	do("open the owner", chromedp.Navigate(e.srv.URL+"/console/owners/acct_globex?bucket=minute"), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	shot("owner")
	do("open owners", chromedp.Navigate(e.srv.URL+"/console/owners"), chromedp.WaitVisible(chromedp.CSS("table")))
	shot("owners")
	do("open keys", chromedp.Navigate(e.srv.URL+"/console/keys"), chromedp.WaitVisible(chromedp.CSS("table")))
	if !strings.Contains(html(), "&lt;b&gt;batch&lt;/b&gt; jobs") {
		t.Error("the keys page does not show the HTML-looking name as text")
	}
	shot("keys")

	// Revoke, through the confirmation page.
	do("open the key", chromedp.Navigate(keyURL), chromedp.WaitVisible(chromedp.CSS("a.danger")))
	submit("ask to revoke", "a.danger")
	shot("revoke")
	do("give a reason", chromedp.SendKeys(chromedp.ID("reason"), "test done"))
	submit("confirm revoke", "button.danger")
	if got := text(".status"); got != "revoked" {
		t.Fatalf("after revoking the status is %q", got)
	}
	if st, out := e.api(adminToken, "POST", "/v1/verify", fmt.Sprintf(`{"key": %q}`, secret)); st != 200 || out["valid"] != false {
		t.Fatalf("the revoked key still verifies: %d %v", st, out)
	}
	do("open the audit trail", chromedp.Navigate(e.srv.URL+"/console/audit"), chromedp.WaitVisible(chromedp.CSS("table")))
	if !strings.Contains(html(), "key.revoke") {
		t.Error("the audit trail lacks the revocation")
	}
	shot("audit")
	do("open the sweep page", chromedp.Navigate(e.srv.URL+"/console/sweep"), chromedp.WaitVisible(chromedp.CSS("form")))
	submit("dry-run the sweep", `form[action="/console/sweep"] button`)
	shot("sweep")
	do("open dead letters", chromedp.Navigate(e.srv.URL+"/console/dead-letters"), chromedp.WaitVisible(chromedp.CSS("table")))
	shot("dead-letters")
}
