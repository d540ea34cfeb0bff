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
	} {
		_, err := Parse([]byte(tc.body), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", tc.body, err, tc.want)
		}
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
