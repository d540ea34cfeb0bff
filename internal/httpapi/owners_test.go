package httpapi_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/config"
)

const tieredPlans = `{"plans": {
  "free": {"scopes": ["generate"], "limits": {"requests_per_minute": 100}, "owner_limits": {"requests_per_minute": 3},
    "features": {"pro-model": {"requests_per_minute": 1}, "flash": {}}},
  "tier1": {"scopes": ["generate"], "limits": {"requests_per_minute": 100}, "owner_limits": {"requests_per_minute": 30},
    "features": {"pro-model": {"requests_per_minute": 10}, "flash": {}}}}}`

func newTieredAPI(t *testing.T) *api {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(path, []byte(tieredPlans), 0o600); err != nil {
		t.Fatal(err)
	}
	return newAPIWith(t, func(cfg *config.Config) { cfg.WebhookAllowPrivate, cfg.PlansFile = true, path })
}

func TestOwnersShareLimitsAndRefusalsNameThem(t *testing.T) {
	a := newTieredAPI(t)
	_, k1 := a.create(`{"owner": "proj_1"}`)
	_, k2 := a.create(`{"owner": "proj_1"}`)

	r := a.do("GET", "/v1/owners/proj_1", "")
	if r.Status != 200 || r.Body["plan"] != "free" {
		t.Fatalf("GET owner = %d %s, want plan free (the plan of its first key)", r.Status, r.Raw)
	}
	if !strings.Contains(r.Raw, `"owner_limits":{"requests_per_minute":{"limit":3,"source":"plan free"}}`) {
		t.Errorf("effective limits missing from %s", r.Raw)
	}
	// Two keys, one per-model limit: the second pro-model request of the
	// project is refused, whichever key makes it, and says why.
	if r := a.do("POST", "/v1/verify", `{"key": "`+k1+`", "feature": "pro-model"}`); r.Body["code"] != "VALID" {
		t.Fatalf("first pro-model verify = %s", r.Raw)
	}
	r = a.do("POST", "/v1/verify", `{"key": "`+k2+`", "feature": "pro-model"}`)
	if r.Body["code"] != "RATE_LIMITED" || !strings.Contains(r.Raw, `"limit":{"scope":"owner","feature":"pro-model","name":"requests_per_minute","limit":1,"remaining":0,`) ||
		!strings.Contains(r.Raw, `"source":"plan free"}`) {
		t.Fatalf("second pro-model verify = %s, want RATE_LIMITED naming the owner's pro-model limit", r.Raw)
	}
	// The owner's own limit (3) is shared across its keys and features.
	a.do("POST", "/v1/verify", `{"key": "`+k2+`", "feature": "flash"}`)
	a.do("POST", "/v1/verify", `{"key": "`+k1+`"}`)
	r = a.do("POST", "/v1/verify", `{"key": "`+k2+`"}`)
	if r.Body["code"] != "RATE_LIMITED" || !strings.Contains(r.Raw, `"limit":{"scope":"owner","name":"requests_per_minute","limit":3,`) {
		t.Fatalf("fourth verify of the project = %s, want the owner's requests_per_minute", r.Raw)
	}
	if r := a.do("POST", "/v1/verify", `{"key": "`+k1+`", "feature": "ultra"}`); r.Body["code"] != "FORBIDDEN" ||
		!strings.Contains(r.Raw, "not offered by the owner's plan") {
		t.Errorf("unknown feature = %s", r.Raw)
	}

	// Upgrading the tier applies at once in this process.
	r = a.do("PATCH", "/v1/owners/proj_1", `{"plan": "tier1", "features": {"pro-model": {"requests_per_minute": 20}}}`)
	if r.Status != 200 || r.Body["plan"] != "tier1" ||
		!strings.Contains(r.Raw, `"pro-model":{"requests_per_minute":{"limit":20,"source":"owner override"}}`) {
		t.Fatalf("PATCH owner = %d %s", r.Status, r.Raw)
	}
	if r := a.do("POST", "/v1/verify", `{"key": "`+k1+`", "feature": "pro-model"}`); r.Body["code"] != "VALID" {
		t.Errorf("after the upgrade: %s", r.Raw)
	}
	audit := a.do("GET", "/v1/audit", "")
	if !strings.Contains(audit.Raw, `"action":"owner.update"`) || !strings.Contains(audit.Raw, `"previous_plan":"free"`) {
		t.Errorf("no owner.update audit entry in %s", audit.Raw)
	}
	list := a.do("GET", "/v1/owners?page_size=10", "")
	if list.Status != 200 || !strings.Contains(list.Raw, `"owner":"proj_1"`) {
		t.Errorf("GET /v1/owners = %d %s", list.Status, list.Raw)
	}
}

func TestOwnerBadInputChangesNothing(t *testing.T) {
	a := newTieredAPI(t)
	a.create(`{"owner": "proj_1"}`)
	before := a.do("GET", "/v1/owners/proj_1", "").Raw
	for _, tc := range []struct{ body, want string }{
		{`{"plan": "platinum"}`, `plan "platinum" does not exist`},
		{`{"limits": {"requests_per_minute": -1}}`, `must be >= 0`},
		{`{"limits": {"calls_per_minute": 1}}`, `unknown limit "calls_per_minute"`},
		{`{"features": {"ultra": {"requests_per_minute": 1}}}`, `does not offer "ultra"`},
		{`{"features": {"bad name": {}}}`, `not a feature name`},
		{`{"tier": "tier1"}`, `unknown field`},
		{`{"plan": "tier1", "limits": {"requests_per_hour": 5}}`, `unknown limit`},
	} {
		r := a.do("PATCH", "/v1/owners/proj_1", tc.body)
		if r.Status != 400 || !strings.Contains(errMessage(r), tc.want) {
			t.Errorf("PATCH %s = %d %s, want 400 containing %q", tc.body, r.Status, r.Raw, tc.want)
		}
	}
	if after := a.do("GET", "/v1/owners/proj_1", "").Raw; after != before {
		t.Errorf("a refused PATCH changed the owner:\n%s\n%s", before, after)
	}
	if r := a.do("GET", "/v1/owners/nobody", ""); r.Status != 404 {
		t.Errorf("owner without keys = %d, want 404", r.Status)
	}
	if r := a.do("PATCH", "/v1/owners/nobody", `{"plan": "tier1"}`); r.Status != 404 {
		t.Errorf("PATCH of an owner without keys = %d, want 404", r.Status)
	}
	if r := a.do("POST", "/v1/verify", `{"key": "kp_x", "feature": "bad name!"}`); r.Status != 400 || !strings.Contains(r.Raw, "feature must be") {
		t.Errorf("verify with a malformed feature = %d %s", r.Status, r.Raw)
	}
	if r := a.do("POST", "/v1/keys", `{"owner": "proj_1", "restrictions": {"allowed_features": ["no spaces"]}}`); r.Status != 400 {
		t.Errorf("key with a malformed allowed_features = %d %s", r.Status, r.Raw)
	}
}
