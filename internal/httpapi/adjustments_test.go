package httpapi_test

import (
	"encoding/csv"
	"fmt"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/plan"
)

// TestBillingExportOfAClosedMonthIsReproducible meters last month's usage
// twice: on time, by a server whose clock is in last month, and late, by
// one on the same data directory whose clock is now. The export of last
// month made after the late events has the same key, owner and feature
// rows as the one made before them, and lists the late events as
// adjustments counted this month; rows plus adjustments are the month's
// spend, in the CSV and the JSON export alike.
func TestBillingExportOfAClosedMonthIsReproducible(t *testing.T) {
	plans := writePlans(t, `{"default": "paid", "plans": {"paid": {"scopes": ["generate"], "limits": {},
		"prices": {"pro": {"per_request": "0.01", "per_1k_units": "0.002"}, "*": {"per_request": "0.001"}}}}}`)
	dir := t.TempDir()
	now := time.Now().UTC()
	this, _ := plan.Month.Bounds(now)
	last := this.AddDate(0, -1, 0)
	at := last.Add(9 * 24 * time.Hour)
	start := func(clock time.Time) *api {
		return newAPIWith(t, func(cfg *config.Config) {
			cfg.PlansFile, cfg.DataDir, cfg.ClockOffset = plans, dir, clock.Sub(now)
		})
	}
	ev := func(id, key string, t time.Time, units int, feature string) string {
		return fmt.Sprintf(`{"id": %q, "key_id": %q, "time": %q, "units": %d, "feature": %q}`, id, key, t.Format(time.RFC3339), units, feature)
	}
	meter := func(a *api, want int, events ...string) {
		t.Helper()
		if r := a.sendUsage(`{"events": [`+strings.Join(events, ", ")+`]}`, true); r.Status != 202 {
			t.Fatalf("POST /v1/usage = %d %s", r.Status, r.Raw)
		}
		waitFor(t, fmt.Sprintf("%d requests of last month counted", want), func() bool {
			r := a.do("GET", "/v1/usage?owner=acct_late&window=month&at="+at.Format(time.RFC3339)+"&format=csv", "")
			n := 0
			for _, row := range readCSV(t, r.Raw) {
				if row["level"] == "key" || row["level"] == "adjustment" {
					var v int
					fmt.Sscan(row["requests"], &v)
					n += v
				}
			}
			return n == want
		})
	}
	export := func(a *api) (rows, adjustments []map[string]string) {
		t.Helper()
		r := a.do("GET", "/v1/usage?owner=acct_late&window=month&at="+at.Format(time.RFC3339)+"&format=csv", "")
		for _, row := range readCSV(t, r.Raw) {
			if strings.HasSuffix(row["level"], "adjustment") {
				adjustments = append(adjustments, row)
			} else {
				rows = append(rows, row)
			}
		}
		return rows, adjustments
	}

	// Last month, on time: the clock 10 days into it.
	a := start(last.Add(10 * 24 * time.Hour))
	keyA, _ := a.create(`{"owner": "acct_late"}`)
	keyB, _ := a.create(`{"owner": "acct_late"}`)
	meter(a, 3, ev("e1", keyA, at, 500, "pro"), ev("e2", keyA, at, 0, ""), ev("e3", keyB, at, 100, "pro"))
	before, adj := export(a)
	if len(adj) != 0 {
		t.Fatalf("adjustments of a month still open: %v", adj)
	}
	a.stop()

	// Now, with last month closed: late events of its last hour, and one of
	// this month.
	a = start(now)
	lateAt := this.Add(-time.Hour)
	meter(a, 6, ev("e4", keyA, lateAt, 1000, "pro"), ev("e5", keyA, lateAt, 0, ""), ev("e6", keyB, lateAt, 0, "flash"),
		ev("e7", keyB, now.Add(-time.Minute), 10, "pro"))
	after, adj := export(a)
	if d := gocmp.Diff(before, after); d != "" {
		t.Errorf("rows of the closed month changed with late events (-before +after):\n%s", d)
	}
	in := this.Format(time.RFC3339)
	want := []map[string]string{
		{"level": "adjustment", "key_id": keyA, "feature": "", "requests": "2", "units": "1000", "amount": "0.013000", "counted_in": in},
		{"level": "feature_adjustment", "key_id": keyA, "feature": "pro", "requests": "1", "units": "1000", "amount": "0.012000", "counted_in": in},
		{"level": "adjustment", "key_id": keyB, "feature": "", "requests": "1", "units": "0", "amount": "0.001000", "counted_in": in},
		{"level": "feature_adjustment", "key_id": keyB, "feature": "flash", "requests": "1", "units": "0", "amount": "0.001000", "counted_in": in},
	}
	if keyB < keyA {
		want = append(want[2:], want[:2]...)
	}
	var got []map[string]string
	for _, row := range adj {
		got = append(got, map[string]string{"level": row["level"], "key_id": row["key_id"], "feature": row["feature"],
			"requests": row["requests"], "units": row["units"], "amount": row["amount"], "counted_in": row["counted_in"]})
	}
	if d := gocmp.Diff(want, got); d != "" {
		t.Errorf("adjustments (-want +got):\n%s", d)
	}

	// The month's spend is its rows plus its adjustments.
	var sum int64
	for _, row := range append(after, adj...) {
		if row["level"] == "key" || row["level"] == "adjustment" {
			sum += micros(t, row["amount"])
		}
	}
	spend := a.do("GET", "/v1/owners/acct_late/spend?month="+last.Format("2006-01"), "")
	if got := micros(t, spend.Body["amount"].(string)); spend.Status != 200 || got != sum {
		t.Errorf("spend of last month = %d %s; rows plus adjustments of the CSV sum to %s", spend.Status, spend.Raw, plan.FormatMicros(sum))
	}

	// The JSON export pages the same rows, adjustments with their keys.
	var jsum int64
	token := ""
	for page := 0; ; page++ {
		r := a.do("GET", "/v1/usage?owner=acct_late&window=month&page_size=1&at="+at.Format(time.RFC3339)+"&page_token="+token, "")
		if r.Status != 200 || page > 2 {
			t.Fatalf("JSON export page %d = %d %s", page, r.Status, r.Raw)
		}
		for _, u := range r.Body["usage"].([]any) {
			row := u.(map[string]any)
			jsum += micros(t, row["amount"].(string))
			as, _ := row["adjustments"].([]any)
			if len(as) != 1 {
				t.Fatalf("JSON row %v: want one adjustment", row)
			}
			a := as[0].(map[string]any)
			if a["counted_in"] != in {
				t.Errorf("JSON adjustment %v: counted_in, want %s", a, in)
			}
			jsum += micros(t, a["amount"].(string))
		}
		if token, _ = r.Body["next_page_token"].(string); token == "" {
			break
		}
	}
	if jsum != sum {
		t.Errorf("JSON export: rows plus adjustments sum to %s, the CSV to %s", plan.FormatMicros(jsum), plan.FormatMicros(sum))
	}

	// A key with only late usage in the month had no row at the close and
	// has none after: only its adjustment.
	keyC, _ := a.create(`{"owner": "acct_late"}`)
	meter(a, 7, ev("e8", keyC, lateAt, 0, ""))
	rows, adj := export(a)
	if d := gocmp.Diff(before, rows); d != "" {
		t.Errorf("rows of the closed month changed with a late key (-before +after):\n%s", d)
	}
	var ofC []string
	for _, row := range adj {
		if row["key_id"] == keyC {
			ofC = append(ofC, row["level"]+" "+row["requests"]+" "+row["amount"])
		}
	}
	if d := gocmp.Diff([]string{"adjustment 1 0.001000"}, ofC); len(adj) != 5 || d != "" {
		t.Errorf("adjustments with a late key: %v (-want +got of it):\n%s", adj, d)
	}
}

// readCSV reads a CSV export into one map per row, by header.
func readCSV(t *testing.T, raw string) []map[string]string {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(raw)).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("read CSV: %v\n%s", err, raw)
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		row := map[string]string{}
		for i, h := range recs[0] {
			row[h] = rec[i]
		}
		out = append(out, row)
	}
	return out
}

// micros parses an amount with 6 decimals.
func micros(t *testing.T, amount string) int64 {
	t.Helper()
	m, err := plan.ParseMicros(amount, 1_000_000)
	if err != nil {
		t.Fatalf("amount %q: %v", amount, err)
	}
	return m
}
