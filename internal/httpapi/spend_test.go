package httpapi_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/config"
)

// An owner's spend is its metered usage priced once per event by its
// plan: in total and by feature, in the plan's currency, as exact decimals.
func TestOwnerSpendPricesUsageByFeature(t *testing.T) {
	plans := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(plans, []byte(`{"default": "paid", "plans": {"paid": {"scopes": ["generate"], "limits": {},
		"currency": "EUR",
		"features": {"pro-model": {}, "flash": {}},
		"prices": {"pro-model": {"per_request": "0.0005", "per_1k_units": "0.00125"}, "*": {"per_request": "0.0001"}}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newAPIWith(t, func(cfg *config.Config) { cfg.WebhookAllowPrivate, cfg.PlansFile = true, plans })
	key, _ := a.create(`{"owner": "acct_m"}`)
	now := time.Now().UTC().Format(time.RFC3339)
	ev := func(id, feature string, units int) string {
		f := ""
		if feature != "" {
			f = fmt.Sprintf(`, "feature": %q`, feature)
		}
		return fmt.Sprintf(`{"id": %q, "key_id": %q, "time": %q, "units": %d%s}`, id, key, now, units, f)
	}
	body := `{"events": [` + strings.Join([]string{ev("e1", "pro-model", 1000), ev("e2", "pro-model", 3), ev("e3", "flash", 0), ev("e4", "", 0)}, ",") + `]}`
	for range 2 { // a redelivery is priced once
		if r := a.sendUsage(body, true); r.Status != 202 {
			t.Fatalf("usage webhook = %d %s", r.Status, r.Raw)
		}
	}
	type spend struct {
		Owner, Month, Currency, Amount string
		ByFeature                      []struct {
			Feature, Amount string
			Requests, Units int64
		} `json:"by_feature"`
		Cap, Credits *string
	}
	var got spend
	waitFor(t, "the events priced", func() bool {
		r := a.do("GET", "/v1/owners/acct_m/spend", "")
		json.Unmarshal([]byte(r.Raw), &got)
		return r.Status == 200 && len(got.ByFeature) == 3
	})
	// pro-model: 2 × 0.0005 + 1,003 units × 0.00125/1k = 0.001 + 0.00125375 → 0.002254 (each event
	// rounded half up: 0.00175 and 0.00050375 → 0.000504); flash and no feature: 0.0001 each.
	want := spend{Owner: "acct_m", Month: time.Now().UTC().Format("2006-01"), Currency: "EUR", Amount: "0.002454"}
	want.ByFeature = append(want.ByFeature,
		struct {
			Feature, Amount string
			Requests, Units int64
		}{"", "0.000100", 1, 0},
		struct {
			Feature, Amount string
			Requests, Units int64
		}{"flash", "0.000100", 1, 0},
		struct {
			Feature, Amount string
			Requests, Units int64
		}{"pro-model", "0.002254", 2, 1003})
	if d := gocmp.Diff(want, got); d != "" {
		t.Errorf("spend mismatch (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/v1/owners/acct_m/spend?month=2026-13", 400},
		{"/v1/owners/acct_m/spend?month=december", 400},
		{"/v1/owners/acct_nobody/spend", 404},
	} {
		if r := a.do("GET", tc.path, ""); r.Status != tc.status {
			t.Errorf("GET %s = %d %s, want %d", tc.path, r.Status, r.Raw, tc.status)
		}
	}
	if r := a.do("GET", "/v1/owners/acct_m/spend?month=2020-01", ""); r.Status != 200 || !strings.Contains(r.Raw, `"amount":"0.000000"`) {
		t.Errorf("an earlier month = %d %s, want zero spend", r.Status, r.Raw)
	}
}

// writePlans writes a plans file and returns its path.
func writePlans(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// refusedLimit returns the limit object of a verify answer.
func refusedLimit(r response) map[string]any {
	l, _ := r.Body["limit"].(map[string]any)
	return l
}

// A spend cap set by PATCH refuses verify with spend_per_month once
// reached (reservations count at once); bad amounts are 400 and change
// nothing; a cleared cap stops refusing. A top-up makes the owner
// prepaid: it is idempotent by id (a replay answers the same top-up, one
// with another amount is 409), audited, listed, and verify refuses with
// limit credits once the balance is used up.
func TestSpendCapAndCreditsOverHTTP(t *testing.T) {
	plans := writePlans(t, `{"default": "paid", "plans": {"paid": {"scopes": ["generate"], "limits": {},
		"prices": {"*": {"per_request": "0.01"}}}}}`)
	a := newAPIWith(t, func(cfg *config.Config) { cfg.PlansFile = plans })
	_, secret := a.create(`{"owner": "acct_c"}`)
	verifyKey := func() response { return a.do("POST", "/v1/verify", `{"key": "`+secret+`"}`) }

	for _, body := range []string{`{"spend_cap": {"monthly": "-1"}}`, `{"spend_cap": {"monthly": "abc"}}`,
		`{"spend_cap": {"monthly": "1.0000001"}}`, `{"spend_cap": {"monthly": "1e3"}}`, `{"spend_cap": {"weekly": "1"}}`, `{"spend_cap": 5}`} {
		if r := a.do("PATCH", "/v1/owners/acct_c", body); r.Status != 400 {
			t.Errorf("PATCH %s = %d %s, want 400", body, r.Status, r.Raw)
		}
	}
	if r := a.do("GET", "/v1/owners/acct_c", ""); r.Body["spend_cap"] != nil {
		t.Fatalf("after refused PATCHes: spend_cap %v, want null", r.Body["spend_cap"])
	}
	r := a.do("PATCH", "/v1/owners/acct_c", `{"spend_cap": {"monthly": "0.02"}}`)
	if cp, _ := r.Body["spend_cap"].(map[string]any); r.Status != 200 || cp["monthly"] != "0.020000" {
		t.Fatalf("PATCH spend_cap = %d %s", r.Status, r.Raw)
	}
	for i := range 2 {
		if r := verifyKey(); r.Body["code"] != "VALID" {
			t.Fatalf("verify %d under the cap = %s", i, r.Raw)
		}
	}
	r = verifyKey()
	l := refusedLimit(r)
	if r.Body["code"] != "USAGE_EXCEEDED" || l["name"] != "spend_per_month" || l["scope"] != "owner" || l["limit"] != 20000.0 ||
		l["currency"] != "USD" || l["source"] != "owner override" {
		t.Fatalf("verify at the cap = %s, want USAGE_EXCEEDED naming spend_per_month 20000 µUSD, owner override", r.Raw)
	}
	r = a.do("GET", "/v1/owners/acct_c/spend", "")
	if r.Body["cap"] != "0.020000" || r.Body["cap_source"] != "owner override" || r.Body["credits"] != nil {
		t.Errorf("spend with a cap = %s", r.Raw)
	}
	if r := a.do("PATCH", "/v1/owners/acct_c", `{"spend_cap": null}`); r.Status != 200 || r.Body["spend_cap"] != nil {
		t.Fatalf("PATCH spend_cap null = %d %s", r.Status, r.Raw)
	}
	if r := verifyKey(); r.Body["code"] != "VALID" {
		t.Fatalf("verify with the cap cleared = %s", r.Raw)
	}

	// A second owner, whose verifies above reserved nothing, for credits.
	_, secret = a.create(`{"owner": "acct_p"}`)
	for _, body := range []string{`{"id": "t1", "amount": "-1"}`, `{"id": "t1", "amount": "0"}`, `{"id": "t1", "amount": "1e3"}`,
		`{"id": "t1", "amount": "abc"}`, `{"id": "t1", "amount": "0.0000001"}`, `{"id": "", "amount": "1"}`, `{"id": "a b", "amount": "1"}`,
		`{"id": "t1"}`, `{"id": "t1", "amount": 1}`, `{"id": "t1", "amount": "1", "extra": true}`} {
		if r := a.do("POST", "/v1/owners/acct_p/credits", body); r.Status != 400 {
			t.Errorf("POST credits %s = %d %s, want 400", body, r.Status, r.Raw)
		}
	}
	if r := a.do("POST", "/v1/owners/acct_nobody/credits", `{"id": "t1", "amount": "1"}`); r.Status != 404 {
		t.Errorf("top-up of an unknown owner = %d %s, want 404", r.Status, r.Raw)
	}
	if r := a.do("GET", "/v1/owners/acct_p/credits", ""); r.Status != 200 || r.Body["balance"] != "0.000000" || len(r.Body["credits"].([]any)) != 0 {
		t.Fatalf("credits after refused top-ups = %d %s, want none", r.Status, r.Raw)
	}
	first := a.do("POST", "/v1/owners/acct_p/credits", `{"id": "topup_42", "amount": "0.01"}`)
	if first.Status != 201 || first.Body["amount"] != "0.010000" || first.Body["balance"] != "0.010000" || first.Body["currency"] != "USD" {
		t.Fatalf("top-up = %d %s", first.Status, first.Raw)
	}
	if again := a.do("POST", "/v1/owners/acct_p/credits", `{"id": "topup_42", "amount": "0.010"}`); again.Status != 201 || again.Body["at"] != first.Body["at"] {
		t.Errorf("replayed top-up = %d %s, want 201 with the first one's at %v", again.Status, again.Raw, first.Body["at"])
	}
	if r := a.do("POST", "/v1/owners/acct_p/credits", `{"id": "topup_42", "amount": "5"}`); r.Status != 409 || !strings.Contains(errMessage(r), "0.010000") {
		t.Errorf("top-up replayed with another amount = %d %s, want 409 naming the first amount", r.Status, r.Raw)
	}
	r = a.do("GET", "/v1/owners/acct_p/credits", "")
	if cs := r.Body["credits"].([]any); len(cs) != 1 || r.Body["granted"] != "0.010000" {
		t.Errorf("credits = %s, want the one top-up", r.Raw)
	}
	if r := a.do("GET", "/v1/audit", ""); strings.Count(r.Raw, `"owner.credit"`) != 1 {
		t.Errorf("audit = %s, want one owner.credit entry", r.Raw)
	}
	if r := verifyKey(); r.Body["code"] != "VALID" { // reserves the whole balance
		t.Fatalf("verify with credits = %s", r.Raw)
	}
	r = verifyKey()
	if l := refusedLimit(r); r.Body["code"] != "USAGE_EXCEEDED" || l["name"] != "credits" || l["source"] != "prepaid credits" || l["remaining"] != 0.0 || l["reset_at"] != nil {
		t.Fatalf("verify with the credits used up = %s, want USAGE_EXCEEDED naming credits, without a reset", r.Raw)
	}
	if r := a.do("GET", "/v1/owners/acct_p/spend", ""); r.Body["credits"] != "0.010000" {
		t.Errorf("spend of a prepaid owner = %s, want credits 0.010000 (nothing metered yet)", r.Raw)
	}
}
