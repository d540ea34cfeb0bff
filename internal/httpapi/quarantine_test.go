package httpapi_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/verify"
	"github.com/keyplane/keyplane/internal/wire"
)

// quarantineAPI runs the whole API on dir's embedded backends under the
// quarantine leak policy, its clock offset by offset, with no sweep timer
// (the test runs the sweep). stop closes it, flushing the client IPs
// verify saw into the ledger.
func quarantineAPI(t *testing.T, dir, keysFile string, offset time.Duration) (a *api, stop func()) {
	t.Helper()
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = dir, token, webhookSecret
	cfg.GitHubScanningKeys, cfg.LeakPolicy, cfg.SweepInterval, cfg.ClockOffset = keysFile, config.LeakQuarantine, 0, offset
	logs := &syncBuffer{}
	app, err := wire.ServeAll(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checked(t, app.Server.Handler()))
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			srv.Close()
			app.Close()
		}
	}
	t.Cleanup(stop)
	return &api{t: t, srv: srv, logs: logs, dir: dir, app: app}, stop
}

func verifyFrom(a *api, secret, ip string) response {
	a.t.Helper()
	r := a.do("POST", "/v1/verify", `{"key": "`+secret+`", "ip": "`+ip+`"}`)
	if r.Status != 200 {
		a.t.Fatalf("verify: %d %s", r.Status, r.Raw)
	}
	return r
}

// A GitHub report under KEYPLANE_LEAK_POLICY=quarantine: the leaked key
// keeps working from the IP it was used from, is refused from others,
// its replacement works from anywhere, a replay changes nothing, and when
// the grace ends the sweep disables the old key.
func TestGitHubReportQuarantinesThenTheSweepDisables(t *testing.T) {
	gh := newScanningKey(t, "gh-key-q")
	keysFile := filepath.Join(t.TempDir(), "github-keys.json")
	publishScanningKeys(t, keysFile, gh)
	dir := t.TempDir()

	// Day one: the key is used from one IP.
	a, stop := quarantineAPI(t, dir, keysFile, 0)
	id, secret := a.create(`{"owner": "acct_q", "plan": "free"}`)
	if r := verifyFrom(a, secret, "203.0.113.7"); r.Body["code"] != "VALID" {
		t.Fatalf("verify before the leak: %s", r.Raw)
	}
	stop() // flushes the client IPs

	// The report.
	a, stop = quarantineAPI(t, dir, keysFile, 0)
	body := `[{"token":"` + secret + `","type":"keyplane_api_key","url":"https://github.com/o/r/blob/abc/.env","source":"content"}]`
	r, results := a.postGitHub(body, gh.id, gh.sign(t, body))
	if r.Status != 200 || labels(results) != "true_positive" {
		t.Fatalf("signed report: %d %s", r.Status, r.Raw)
	}
	k := a.do("GET", "/v1/keys/"+id, "")
	q, _ := k.Body["quarantine"].(map[string]any)
	if k.Body["status"] != "active" || q == nil || q["ended_at"] != nil || q["url"] != "https://github.com/o/r/blob/abc/.env" ||
		q["source"] != "content" || q["reporter"] != "github" {
		t.Fatalf("key after the report: %s", k.Raw)
	}
	if ips, _ := q["allowed_ips"].([]any); len(ips) != 1 || ips[0] != "203.0.113.7" {
		t.Errorf("allowed_ips %v, want the IP the key was used from", q["allowed_ips"])
	}
	newID, _ := k.Body["rotated_to"].(string)
	if newID == "" || k.Body["expires_at"] == nil {
		t.Fatalf("no rotation: %s", k.Raw)
	}
	nk := a.do("GET", "/v1/keys/"+newID, "")
	if _, has := nk.Body["quarantine"]; has || nk.Body["status"] != "active" || nk.Body["rotated_from"] != id {
		t.Errorf("the new key: %s", nk.Raw)
	}
	sr := a.do("GET", "/v1/keys/"+newID+"/secret", "")
	newSecret, _ := sr.Body["secret"].(string)
	if newSecret == "" {
		t.Fatalf("reveal the new key: %d %s", sr.Status, sr.Raw)
	}
	if v := verifyFrom(a, secret, "203.0.113.7"); v.Body["code"] != "VALID" {
		t.Errorf("old key from its IP: %s", v.Raw)
	}
	if v := verifyFrom(a, secret, "198.51.100.1"); v.Body["code"] != "FORBIDDEN" || v.Body["message"] != verify.ReasonQuarantined {
		t.Errorf("old key from another IP: %s", v.Raw)
	}
	if v := verifyFrom(a, newSecret, "198.51.100.1"); v.Body["code"] != "VALID" {
		t.Errorf("new key from anywhere: %s", v.Raw)
	}
	audit := leakAudit(t, a, id)
	if len(audit) != 2 || audit[1]["action"] != "key.quarantine" || audit[0]["action"] != "key.rotate" {
		t.Fatalf("leak audit entries %v, want key.quarantine then key.rotate", audit)
	}
	if d := audit[1]["details"].(map[string]any); d["url"] != "https://github.com/o/r/blob/abc/.env" || d["source"] != "content" || d["policy"] != "quarantine" {
		t.Errorf("quarantine audit details %v", d)
	}

	// A replay changes nothing twice.
	r, results = a.postGitHub(body, gh.id, gh.sign(t, body))
	if r.Status != 200 || labels(results) != "true_positive" {
		t.Fatalf("replayed report: %d %s", r.Status, r.Raw)
	}
	if again := a.do("GET", "/v1/keys/"+id, ""); again.Body["updated_at"] != k.Body["updated_at"] || again.Body["rotated_to"] != newID {
		t.Errorf("a replay changed the key: %s", again.Raw)
	}
	if n := len(leakAudit(t, a, id)); n != 2 {
		t.Errorf("%d leak audit entries after a replay, want 2", n)
	}
	if l := a.do("GET", "/v1/keys?owner=acct_q", ""); len(l.Body["keys"].([]any)) != 2 {
		t.Errorf("owner's keys after a replay: %s", l.Raw)
	}
	if rep := a.do("POST", "/v1/sweep", `{}`); len(rep.Body["quarantined"].([]any)) != 0 {
		t.Errorf("a sweep within the grace: %s", rep.Raw)
	}
	stop()

	// After the grace.
	a, _ = quarantineAPI(t, dir, keysFile, 72*time.Hour+time.Minute)
	rep := a.do("POST", "/v1/sweep", `{}`)
	ended, _ := rep.Body["quarantined"].([]any)
	if rep.Status != 200 || len(ended) != 1 || ended[0].(map[string]any)["key_id"] != id || ended[0].(map[string]any)["reason"] != "leaked" {
		t.Fatalf("sweep after the grace: %d %s", rep.Status, rep.Raw)
	}
	k = a.do("GET", "/v1/keys/"+id, "")
	q, _ = k.Body["quarantine"].(map[string]any)
	if k.Body["status"] != "disabled" || k.Body["status_reason"] != "leaked" || q == nil || q["ended_at"] == nil {
		t.Errorf("old key after the grace: %s", k.Raw)
	}
	if v := verifyFrom(a, secret, "203.0.113.7"); v.Body["code"] == "VALID" {
		t.Errorf("old key after the grace: %s", v.Raw)
	}
	if v := verifyFrom(a, newSecret, "198.51.100.1"); v.Body["code"] != "VALID" {
		t.Errorf("new key after the grace: %s", v.Raw)
	}
	if last := a.do("GET", "/v1/audit?key_id="+id, ""); !strings.Contains(last.Raw, `"actor":"sweep"`) {
		t.Errorf("no sweep audit entry: %s", last.Raw)
	}
	if rep := a.do("POST", "/v1/sweep", `{}`); len(rep.Body["quarantined"].([]any)) != 0 {
		t.Errorf("a second sweep: %s", rep.Raw)
	}
}
