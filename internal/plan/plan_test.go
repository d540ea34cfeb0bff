package plan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuiltinPlansAreValid(t *testing.T) {
	c := Builtin()
	if got := c.Names(); strings.Join(got, ",") != "enterprise,free,pro" {
		t.Errorf("Names() = %v", got)
	}
	if c.Default() != "free" {
		t.Errorf("Default() = %q, want free", c.Default())
	}
}

func TestLoadPlansFile(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"p.json": `{"plans": {"tiny": {"scopes": ["generate", "embed"], "limits": {"requests_per_minute": 3, "requests_per_day": 5}}}}`,
		"p.yaml": "plans:\n  tiny:\n    scopes: [generate, embed]\n    limits: {requests_per_minute: 3, requests_per_day: 5}\n",
	} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(body), 0o600)
		c, err := Load(path)
		if err != nil {
			t.Fatalf("Load(%s) = %v", name, err)
		}
		p, ok := c.Get("tiny")
		if !ok || p.Limits["requests_per_day"] != 5 || strings.Join(p.Scopes, ",") != "embed,generate" {
			t.Errorf("%s: tiny = %+v", name, p)
		}
		if c.Default() != "" {
			t.Errorf("%s: Default() = %q, want none (no free plan)", name, c.Default())
		}
	}
}

func TestInvalidPlansFileNamesTheProblem(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"plans": {"tiny": {"scopes": ["g"], "limits": {"requests_per_hour": 3}}}}`, `unknown limit "requests_per_hour"`},
		{`{"plans": {"tiny": {"scopes": ["g"], "limits": {"tokens_per_day": 3}}}}`, `unknown limit "tokens_per_day"`},
		{`{"plans": {"tiny": {"scopes": ["g"], "limits": {"units_per_day": -1}}}}`, `units_per_day must be >= 0`},
		{`{"plans": {"tiny": {"scopes": ["g"], "quota": 1}}}`, `unknown field "quota"`},
		{`{"plans": {}}`, `at least one plan`},
		{`{"plans": {"Tiny!": {"scopes": ["g"]}}}`, `plan name "Tiny!"`},
		{`{"plans": {"tiny": {"scopes": []}}}`, `at least one scope`},
		{`{"plans": {"tiny": {"scopes": ["g"]}}, "default": "big"}`, `default plan "big"`},
		{`{"plans": `, `unexpected EOF`},
		{`{"plans": {"tiny": {"scopes": ["g"], "abuse": {"spike": {"factor": 5}}}}}`, `abuse.spike.floor must be at least 1`},
		{`{"plans": {"tiny": {"scopes": ["g"], "abuse": {"spike": {"floor": 5, "factor": 1.5}}}}}`, `abuse.spike.factor must be between 2`},
		{`{"plans": {"tiny": {"scopes": ["g"], "abuse": {"spike": {"floor": 5, "metric": "tokens"}}}}}`, `abuse.spike.metric must be one of`},
		{`{"plans": {"tiny": {"scopes": ["g"], "abuse": {"distinct_ips": {"max_per_day": 0}}}}}`, `abuse.distinct_ips.max_per_day must be between 1 and 1000`},
		{`{"plans": {"tiny": {"scopes": ["g"], "abuse": {"velocity": {}}}}}`, `unknown field "velocity"`},
		{`{"plans": {"tiny": {"scopes": ["g"], "owner_limits": {"requests_per_minute": -3}}}}`, `owner_limits: limit requests_per_minute must be >= 0`},
		{`{"plans": {"tiny": {"scopes": ["g"], "owner_limits": {"calls_per_minute": 3}}}}`, `owner_limits: unknown limit "calls_per_minute"`},
		{`{"plans": {"tiny": {"scopes": ["g"], "features": {"pro model": {}}}}}`, `feature "pro model": a feature name is`},
		{`{"plans": {"tiny": {"scopes": ["g"], "features": {"pro": {"requests_per_hour": 1}}}}}`, `features.pro: unknown limit "requests_per_hour"`},
	} {
		_, err := Parse([]byte(tc.body), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestOwnerLimitsAndFeatures(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"json", `{"plans": {"tier1": {"scopes": ["generate"], "owner_limits": {"requests_per_minute": 3},
			"features": {"pro-model": {"requests_per_minute": 1, "units_per_minute": 250000, "requests_per_day": 100}, "flash": {}}}}}`},
		{"yaml", "plans:\n  tier1:\n    scopes: [generate]\n    owner_limits: {requests_per_minute: 3}\n" +
			"    features:\n      pro-model: {requests_per_minute: 1, units_per_minute: 250000, requests_per_day: 100}\n      flash: {}\n"},
	} {
		c, err := Parse([]byte(tc.body), tc.name == "yaml")
		if err != nil {
			t.Fatalf("%s: Parse = %v", tc.name, err)
		}
		p, _ := c.Get("tier1")
		if p.OwnerLimits["requests_per_minute"] != 3 || p.Features["pro-model"]["units_per_minute"] != 250000 || len(p.Features) != 2 {
			t.Errorf("%s: tier1 = %+v", tc.name, p)
		}
		if !p.OffersFeature("flash") || !p.OffersFeature("pro-model") || p.OffersFeature("ultra") {
			t.Errorf("%s: a plan with features offers exactly those", tc.name)
		}
	}
	// A plan without features (every plan before they existed) offers any.
	if free, _ := Builtin().Get("free"); !free.OffersFeature("anything") || len(free.OwnerLimits) != 0 {
		t.Errorf("builtin free: OffersFeature(anything) = false or owner limits %v", free.OwnerLimits)
	}
}

func TestLimitsWithOverrides(t *testing.T) {
	base := Limits{"requests_per_minute": 60, "requests_per_day": 1500}
	got := base.With(Limits{"requests_per_day": 10, "units_per_day": 0})
	if got["requests_per_minute"] != 60 || got["requests_per_day"] != 10 || got["units_per_day"] != 0 || len(got) != 3 {
		t.Errorf("With = %v", got)
	}
	if base["requests_per_day"] != 1500 {
		t.Error("With changed its receiver")
	}
}

func TestWindowBoundsAreUTC(t *testing.T) {
	at := time.Date(2026, 2, 28, 23, 59, 30, 0, time.FixedZone("x", -5*3600)) // Mar 1 04:59:30 UTC
	for _, tc := range []struct {
		w          Window
		start, end string
	}{
		{Minute, "2026-03-01T04:59:00Z", "2026-03-01T05:00:00Z"},
		{Day, "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"},
		{Month, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
	} {
		s, e := tc.w.Bounds(at)
		if s.Format(time.RFC3339) != tc.start || e.Format(time.RFC3339) != tc.end {
			t.Errorf("%s.Bounds = %s, %s; want %s, %s", tc.w, s.Format(time.RFC3339), e.Format(time.RFC3339), tc.start, tc.end)
		}
	}
}

func TestAbuseRuleDefaults(t *testing.T) {
	c, err := Parse([]byte("plans:\n  tiny:\n    scopes: [g]\n    abuse:\n      spike: {floor: 100}\n      distinct_ips: {max_per_day: 5}\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Get("tiny")
	if r := p.Abuse.Spike; r == nil || r.Metric != "requests" || r.Factor != DefaultSpikeFactor || r.Floor != 100 {
		t.Errorf("spike = %+v, want requests, factor %d, floor 100", r, DefaultSpikeFactor)
	}
	if r := p.Abuse.DistinctIPs; r == nil || r.MaxPerDay != 5 {
		t.Errorf("distinct_ips = %+v", r)
	}
}

func TestHourIsCountedButIsNotALimitWindow(t *testing.T) {
	if _, err := ParseWindow("hour"); err != nil {
		t.Errorf("ParseWindow(hour) = %v", err)
	}
	if _, _, err := SplitLimitName("requests_per_hour"); err == nil {
		t.Error("requests_per_hour is accepted as a limit")
	}
	at := time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC)
	start, end := Hour.Bounds(at)
	if !start.Equal(time.Date(2030, 1, 2, 15, 0, 0, 0, time.UTC)) || end.Sub(start) != time.Hour {
		t.Errorf("Hour.Bounds = %v, %v", start, end)
	}
}

// Day and month windows, for every day over four centuries (all leap-year
// rules) at a time late in the day and in a zone east of UTC: the window
// starts at UTC midnight of the UTC date, and ends one calendar day or
// month later, as AddDate counts them.
func TestDayAndMonthBoundsEveryDay(t *testing.T) {
	zone := time.FixedZone("east", 5*3600+30*60)
	for at := time.Date(1999, 12, 1, 23, 59, 59, 999, time.UTC); at.Year() < 2400; at = at.AddDate(0, 0, 1) {
		u := at.In(zone) // the same instant, written in another zone
		day := time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
		if s, e := Day.Bounds(u); !s.Equal(day) || !e.Equal(day.AddDate(0, 0, 1)) || s.Location() != time.UTC {
			t.Fatalf("Day.Bounds(%s) = %s, %s; want %s, %s", u, s, e, day, day.AddDate(0, 0, 1))
		}
		month := time.Date(at.Year(), at.Month(), 1, 0, 0, 0, 0, time.UTC)
		if s, e := Month.Bounds(u); !s.Equal(month) || !e.Equal(month.AddDate(0, 1, 0)) || e.Location() != time.UTC {
			t.Fatalf("Month.Bounds(%s) = %s, %s; want %s, %s", u, s, e, month, month.AddDate(0, 1, 0))
		}
	}
}
