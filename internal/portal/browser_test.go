package portal_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyplane/keyplane/internal/testenv"
)

// chromium finds a headless-capable Chromium: skips without one, or fails
// when KEYPLANE_REQUIRE_EMULATORS is set (apt-get install chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testenv.Required() {
		t.Fatal("chromium is not installed but KEYPLANE_REQUIRE_EMULATORS is set: apt-get install chromium")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// screenshot saves the page to docs/screenshots/portal-<name>.png when
// KEYPLANE_SCREENSHOTS=1.
func screenshot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if os.Getenv("KEYPLANE_SCREENSHOTS") != "1" {
			return nil
		}
		png, err := chromedp.FullScreenshot(100)(ctx, t)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join("..", "..", "docs", "screenshots", "portal-"+name+".png"), png, 0o644)
	})
}

// TestBrowserSeesOwnKeysCreatesOnceRevokesAndCannotReuseTheLink drives a
// headless Chromium through the portal as an owner would.
func TestBrowserSeesOwnKeysCreatesOnceRevokesAndCannotReuseTheLink(t *testing.T) {
	exe := chromium(t)
	e := newEnv(t)
	prod := e.createKey(`{"owner": "acct_1", "name": "production", "metadata": {"team": "<b>ml</b>"}}`)
	e.count("acct_1", prod, map[int]int64{0: 40, 1: 55, 2: 31, 4: 62, 5: 48, 8: 20, 12: 75})
	e.createKey(`{"owner": "acct_2", "name": "someone else's"}`)
	link := e.link("acct_1", allPerms...)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1100, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, for the context's life
		t.Fatalf("start chromium: %v", err)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		for i, step := range steps {
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := chromedp.Do(sctx, step)
			cancel()
			if err != nil {
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				html, _ := chromedp.Run(sctx, chromedp.OuterHTML(chromedp.CSS("body")))
				cancel()
				t.Fatalf("%s, step %d: %v; the page:\n%s", what, i+1, err, html)
			}
		}
	}
	get := func(a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	do("open the link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("keys")), screenshot("keys"))
	if url := get(chromedp.Location()); url != e.srv.URL+"/portal/" {
		t.Errorf("after the exchange the address bar shows %s, want %s/portal/ (no token)", url, e.srv.URL)
	}
	if list := get(chromedp.Text(chromedp.ID("keys"))); !strings.Contains(list, "production") || strings.Contains(list, "someone else") {
		t.Errorf("the key list = %q, want acct_1's key only", list)
	}

	do("create a key", chromedp.Click(chromedp.ID("create")), chromedp.WaitVisible(chromedp.ID("new-key")),
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "browser key"),
		chromedp.Click(chromedp.CSS(`#new-key button[type="submit"]`)), chromedp.WaitVisible(chromedp.ID("secret")), screenshot("created"))
	secret := strings.TrimSpace(get(chromedp.Text(chromedp.ID("secret"))))
	if !regexp.MustCompile(`^kp_[a-z]+_[A-Za-z0-9]+$`).MatchString(secret) {
		t.Errorf("the created key's secret = %q, want a key", secret)
	}

	do("revoke it", chromedp.Click(chromedp.CSS(`a[href^="/portal/keys/key_"]`)), chromedp.WaitVisible(chromedp.ID("revoke")), screenshot("key"),
		chromedp.Click(chromedp.ID("revoke")), chromedp.WaitVisible(chromedp.ID("revoke-form")),
		chromedp.Click(chromedp.CSS(`input[name="confirm"]`)), chromedp.Click(chromedp.CSS(`#revoke-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("status")))
	if status := get(chromedp.Text(chromedp.ID("status"))); !strings.Contains(status, "revoked") {
		t.Errorf("the key's status after revoking = %q, want revoked", status)
	}

	do("list again", chromedp.Navigate(e.srv.URL+"/portal/"), chromedp.WaitVisible(chromedp.ID("keys")))
	if after := get(chromedp.OuterHTML(chromedp.CSS("html"))); strings.Contains(after, secret) || !strings.Contains(after, "browser key") {
		t.Errorf("the list after creating shows the secret again, or lacks the new key")
	}

	do("reopen the link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("error")), screenshot("reused"))
	if reused := get(chromedp.Text(chromedp.ID("error"))); !strings.Contains(reused, "used already") {
		t.Errorf("reopening the link says %q, want that it was used already", reused)
	}
}
