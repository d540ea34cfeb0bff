package httpapi_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/config"
)

// The newcomer's walkthrough over HTTP: a key on a small plan, usage over
// its quota through the signed webhook, a dry run that changes nothing,
// the sweep disabling the key with its evidence, the audit entry, and the
// signed notification at the owner's receiver.
func TestSweepOverHTTP(t *testing.T) {
	plans := filepath.Join(t.TempDir(), "plans.json")
	os.WriteFile(plans, []byte(`{"plans": {"tiny": {"scopes": ["generate"], "limits": {"requests_per_day": 3}}}, "default": "tiny"}`), 0o600)
	a := newAPIWith(t, func(c *config.Config) {
		c.WebhookAllowPrivate, c.PlansFile = true, plans
		c.SweepInterval = 0 // only on request, so the test decides when it runs
	})
	recv := newOwnerReceiver(t)
	put := a.do("PUT", "/v1/owners/acct_small/webhook", `{"url": "`+recv.srv.URL+`/hook"}`)
	if put.Status != 200 {
		t.Fatalf("PUT webhook = %d %s", put.Status, put.Raw)
	}
	recv.setSecret(t, put.Body["secret"].(string))
	id, secret := a.create(`{"owner": "acct_small"}`)

	now := time.Now().UTC().Format(time.RFC3339)
	if r := a.sendUsage(fmt.Sprintf(`{"events": [{"id": "e1", "key_id": %q, "time": %q, "requests": 5}]}`, id, now), true); r.Status != 202 {
		t.Fatalf("usage = %d %s", r.Status, r.Raw)
	}
	waitFor(t, "the usage to be counted", func() bool {
		r := a.do("GET", "/v1/keys/"+id+"/usage?window=day", "")
		return r.Body["requests"] == 5.0
	})

	dry := a.do("POST", "/v1/sweep", `{"dry_run": true}`)
	if dry.Status != 200 || dry.Body["dry_run"] != true || !strings.Contains(dry.Raw, `"reason":"quota_exceeded"`) {
		t.Fatalf("dry run = %d %s", dry.Status, dry.Raw)
	}
	if k := a.do("GET", "/v1/keys/"+id, ""); k.Body["status"] != "active" {
		t.Fatalf("status after a dry run = %v", k.Body["status"])
	}

	rep := a.do("POST", "/v1/sweep", ``)
	if rep.Status != 200 || rep.Body["complete"] != true {
		t.Fatalf("sweep = %d %s", rep.Status, rep.Raw)
	}
	dis, _ := rep.Body["disabled"].([]any)
	if len(dis) != 1 {
		t.Fatalf("disabled = %s", rep.Raw)
	}
	d := dis[0].(map[string]any)
	if d["key_id"] != id || d["limit"] != "requests_per_day" || d["used"] != 5.0 || d["max"] != 3.0 || d["until"] == nil {
		t.Errorf("decision = %v", d)
	}
	k := a.do("GET", "/v1/keys/"+id, "")
	if k.Body["status"] != "disabled" || k.Body["status_reason"] != "quota_exceeded" || k.Body["disabled_until"] != d["until"] {
		t.Errorf("key = %s", k.Raw)
	}
	if v := a.do("POST", "/v1/verify", `{"key": "`+secret+`"}`); v.Body["code"] != "DISABLED" {
		t.Errorf("verify after the sweep = %s", v.Raw)
	}
	au := a.do("GET", "/v1/audit?key_id="+id, "")
	if !strings.Contains(au.Raw, `"actor":"sweep"`) || !strings.Contains(au.Raw, `"action":"key.disable"`) {
		t.Errorf("audit = %s", au.Raw)
	}
	n := recv.waitNotified(t, "key.disabled", id)
	if n.Data["reason"] != "quota_exceeded" || n.Data["disabled_until"] != d["until"] {
		t.Errorf("notification = %+v", n)
	}
	recv.waitNotified(t, "usage.threshold", id)

	for _, body := range []string{`{"dry_run": "yes"}`, `{"dryrun": true}`, `[]`} {
		if r := a.do("POST", "/v1/sweep", body); r.Status != 400 {
			t.Errorf("POST /v1/sweep %s = %d %s, want 400", body, r.Status, r.Raw)
		}
	}
}
