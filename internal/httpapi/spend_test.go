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
