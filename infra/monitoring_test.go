package infra

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/keyplane/keyplane/internal/telemetry"
)

// TestDashboardChartsEveryMetric checks that infra/dashboard.json is
// valid JSON with a chart of each metric internal/telemetry exports, under
// the name the Cloud Monitoring exporter gives it.
func TestDashboardChartsEveryMetric(t *testing.T) {
	src, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		DisplayName string `json:"displayName"`
	}
	if err := json.Unmarshal(src, &d); err != nil || d.DisplayName == "" {
		t.Fatalf("dashboard.json: %v (displayName %q)", err, d.DisplayName)
	}
	for _, name := range []string{
		telemetry.NameDecisions, telemetry.NameDuration, telemetry.NameCache, telemetry.NameFeedLag,
		telemetry.NameEvents, telemetry.NameDeadLetters, telemetry.NameQueueDepth, telemetry.NameSweep,
		telemetry.NameLimiterFallbacks,
	} {
		if !strings.Contains(string(src), `metric.type=\"workload.googleapis.com/`+name+`\"`) {
			t.Errorf("dashboard.json charts no %s", name)
		}
	}
}

// TestAlertPolicies checks the two alerts: dead letters growing, and the
// feed lag over the revocation bound (2 s), on the metrics telemetry
// exports.
func TestAlertPolicies(t *testing.T) {
	m := loadModule(t)
	want := map[string]struct {
		metric    string
		threshold float64
	}{
		"dead_letters_growing":           {telemetry.NameDeadLetters, 0},
		"feed_lag_over_revocation_bound": {telemetry.NameFeedLag, 2},
	}
	policies := m.blocksOfType("google_monitoring_alert_policy")
	if len(policies) != len(want) {
		t.Errorf("%d alert policies, want %d", len(policies), len(want))
	}
	for _, p := range policies {
		w, ok := want[p.Labels[1]]
		if !ok {
			t.Errorf("unexpected alert policy %s", p.Labels[1])
			continue
		}
		conds := blocks(p.Body, "conditions")
		if len(conds) != 1 || len(blocks(conds[0].Body, "condition_threshold")) != 1 {
			t.Fatalf("%s: want one conditions block with a condition_threshold", p.Labels[1])
		}
		ct := blocks(conds[0].Body, "condition_threshold")[0].Body
		filter, _ := literalString(attr(t, ct, "filter"))
		if !strings.Contains(filter, `metric.type="workload.googleapis.com/`+w.metric+`"`) {
			t.Errorf("%s: filter %q is not on %s", p.Labels[1], filter, w.metric)
		}
		v, diags := attr(t, ct, "threshold_value").Value(nil)
		if diags.HasErrors() || v.Type() != cty.Number {
			t.Fatalf("%s: threshold_value is not a number", p.Labels[1])
		}
		if f, _ := v.AsBigFloat().Float64(); f != w.threshold {
			t.Errorf("%s: threshold %v, want %v", p.Labels[1], f, w.threshold)
		}
		if c, _ := literalString(attr(t, ct, "comparison")); c != "COMPARISON_GT" {
			t.Errorf("%s: comparison %q, want COMPARISON_GT", p.Labels[1], c)
		}
	}
}

func attr(t *testing.T, body *hclsyntax.Body, name string) hclsyntax.Expression {
	t.Helper()
	a, ok := body.Attributes[name]
	if !ok {
		t.Fatalf("%s: no %s", body.SrcRange, name)
	}
	return a.Expr
}

// TestFunctionsMayWriteTelemetry checks that every function's service
// account is granted the roles the Cloud Monitoring and Cloud Trace
// exporters need.
func TestFunctionsMayWriteTelemetry(t *testing.T) {
	m := loadModule(t)
	def, ok := m.locals["telemetry_roles"]
	if !ok {
		t.Fatal("no local.telemetry_roles")
	}
	roles := literalStrings(t, def.Expr, "local.telemetry_roles")
	for _, want := range []string{"roles/monitoring.metricWriter", "roles/cloudtrace.agent"} {
		found := false
		for _, r := range roles {
			found = found || r == want
		}
		if !found {
			t.Errorf("local.telemetry_roles lacks %s", want)
		}
	}
	b, ok := m.resources["google_project_iam_member.fn_telemetry_roles"]
	if !ok {
		t.Fatal("no google_project_iam_member.fn_telemetry_roles")
	}
	src := string(m.files["monitoring.tf"][b.Range().Start.Byte:b.Range().End.Byte])
	for _, want := range []string{"local.fn_telemetry_roles", "google_service_account.fn[each.value.function].email", "each.value.role"} {
		if !strings.Contains(src, want) {
			t.Errorf("fn_telemetry_roles does not use %s", want)
		}
	}
	if !strings.Contains(string(m.files["monitoring.tf"]), "for name, f in local.functions") {
		t.Error("local.fn_telemetry_roles does not cover every function (local.functions)")
	}
}
