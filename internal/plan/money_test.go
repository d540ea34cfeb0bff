package plan

import (
	"math"
	"math/big"
	"strings"
	"testing"
)

func TestParseNanos(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""},
		{"0.0005", 500_000, ""},
		{"0.00125", 1_250_000, ""},
		{"12", 12_000_000_000, ""},
		{"3.", 3_000_000_000, ""},
		{".5", 500_000_000, ""},
		{"0.000000001", 1, ""},
		{"1.5000000000000", 1_500_000_000, ""}, // trailing zeros are exact
		{"1000000", 1_000_000 * nanoPerUnit, ""},
		{"0.0000000001", 0, "more than 9 decimals"},
		{"1000000.000000001", 0, "over the maximum"},
		{"99999999999999999999999", 0, "over the maximum"},
		{"-1", 0, "not a decimal amount"},
		{"+1", 0, "not a decimal amount"},
		{"0.0o5", 0, "not a decimal amount"},
		{"1e3", 0, "not a decimal amount"},
		{" 1", 0, "not a decimal amount"},
		{"", 0, "not a decimal amount"},
		{".", 0, "not a decimal amount"},
		{"1.2.3", 0, "not a decimal amount"},
	} {
		got, err := ParseNanos(tc.in, MaxPrice)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseNanos(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseNanos(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.err)
		}
	}
}

func TestFormatMicros(t *testing.T) {
	for in, want := range map[int64]string{
		0: "0.000000", 1: "0.000001", 1_234_500: "1.234500", -5: "-0.000005",
		math.MaxInt64: "9223372036854.775807", math.MinInt64: "-9223372036854.775808",
	} {
		if got := FormatMicros(in); got != want {
			t.Errorf("FormatMicros(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestCostRoundsHalfUpOncePerEvent(t *testing.T) {
	pr := Price{PerRequest: 500_000, Per1kUnits: 1_250, PerMB: 100_000_000} // 0.0005, 0.00000125, 0.1
	for _, tc := range []struct {
		req, units, bytes int64
		want              int64
	}{
		{1, 0, 0, 500},             // 0.0005
		{0, 1000, 0, 1},            // 1.25 micro → 1
		{0, 400, 0, 1},             // 0.5 micro → 1 (half up)
		{0, 399, 0, 0},             // 0.49875 micro → 0
		{1, 1200, 0, 502},          // 500 + 1.5 → 502
		{0, 0, 1_000_000, 100_000}, // 1 MB at 0.1
		{0, 0, 5, 1},               // 0.5 micro → 1
		{-1, -1, -1, 0},            // negative amounts count as zero
	} {
		got, ok := pr.Cost(tc.req, tc.units, tc.bytes)
		if !ok || got != tc.want {
			t.Errorf("Cost(%d, %d, %d) = %d, %v; want %d", tc.req, tc.units, tc.bytes, got, ok, tc.want)
		}
	}
	if _, ok := (Price{PerRequest: MaxPrice * nanoPerUnit}).Cost(math.MaxInt64, 0, 0); ok {
		t.Error("Cost of MaxInt64 requests at the maximum price fits an int64; want ok false")
	}
}

func TestInvalidPricesNameTheField(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"plans": {"p": {"scopes": ["g"], "prices": {"pro-model": {"per_request": "0.0o5"}}}}}`, `plan "p": prices.pro-model.per_request: "0.0o5" is not a decimal amount`},
		{`{"plans": {"p": {"scopes": ["g"], "prices": {"*": {"per_1k_units": "-1"}}}}}`, `prices.*.per_1k_units: "-1" is not a decimal amount`},
		{`{"plans": {"p": {"scopes": ["g"], "prices": {"*": {"per_mb": "0.0000000001"}}}}}`, `prices.*.per_mb: "0.0000000001" has more than 9 decimals`},
		{`{"plans": {"p": {"scopes": ["g"], "prices": {"*": {"per_mb": "2000000"}}}}}`, `prices.*.per_mb: "2000000" is over the maximum`},
		{`{"plans": {"p": {"scopes": ["g"], "prices": {"*": {"per_request": 1}}}}}`, `cannot unmarshal number`},
		{`{"plans": {"p": {"scopes": ["g"], "prices": {"*": {"per_token": "1"}}}}}`, `unknown field "per_token"`},
		{`{"plans": {"p": {"scopes": ["g"], "currency": "usd"}}}`, `currency: "usd" is not a known ISO 4217 code`},
		{`{"plans": {"p": {"scopes": ["g"], "currency": "XYZ"}}}`, `currency: "XYZ" is not a known ISO 4217 code`},
		{`{"plans": {"p": {"scopes": ["g"], "features": {"a": {}}, "prices": {"b": {"per_request": "1"}}}}}`, `prices.b: the plan does not offer feature "b"`},
	} {
		_, err := Parse([]byte(tc.body), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestPlansWithPricesLoadFromJSONAndYAML(t *testing.T) {
	for name, tc := range map[string]struct {
		body   string
		isYAML bool
	}{
		"json": {`{"plans": {"pro": {"scopes": ["g"], "currency": "EUR", "prices": {"pro-model": {"per_request": "0.0005", "per_1k_units": "0.00125"}, "*": {"per_mb": "0.01"}}}}}`, false},
		"yaml": {"plans:\n  pro:\n    scopes: [g]\n    currency: EUR\n    prices:\n      pro-model: {per_request: \"0.0005\", per_1k_units: \"0.00125\"}\n      \"*\": {per_mb: \"0.01\"}\n", true},
	} {
		c, err := Parse([]byte(tc.body), tc.isYAML)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p, _ := c.Get("pro")
		if p.Currency != "EUR" {
			t.Errorf("%s: currency %q, want EUR", name, p.Currency)
		}
		if got, want := p.PriceOf("pro-model"), (Price{PerRequest: 500_000, Per1kUnits: 1_250_000}); got != want {
			t.Errorf("%s: PriceOf(pro-model) = %+v, want %+v", name, got, want)
		}
		for _, f := range []string{"", "other"} {
			if got, want := p.PriceOf(f), (Price{PerMB: 10_000_000}); got != want {
				t.Errorf("%s: PriceOf(%q) = %+v, want the * prices %+v", name, f, got, want)
			}
		}
	}
	p, _ := Builtin().Get("free")
	if p.Currency != DefaultCurrency || p.Priced() {
		t.Errorf("builtin free: currency %q, priced %v; want USD, unpriced", p.Currency, p.Priced())
	}
}

// FuzzParseNanos checks that every amount ParseNanos accepts is exact:
// its value, computed independently with big.Rat, equals the nanos, and
// formatting the nanos back parses to the same value.
func FuzzParseNanos(f *testing.F) {
	for _, s := range []string{"0", "0.0005", "0.00125", "1.5", ".5", "3.", "1000000", "0.000000001",
		"0.0000000001", "-1", "1e3", "0.0o5", "", ".", "00012.3400", "999999.999999999", "1000000.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNanos(s, MaxPrice)
		if err != nil {
			return
		}
		if n < 0 || n > MaxPrice*nanoPerUnit {
			t.Fatalf("ParseNanos(%q) = %d, out of range", s, n)
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("ParseNanos(%q) = %d, but big.Rat rejects it", s, n)
		}
		if want := new(big.Rat).SetFrac64(n, nanoPerUnit); r.Cmp(want) != 0 {
			t.Fatalf("ParseNanos(%q) = %d nanos, want %s", s, n, r.FloatString(9))
		}
		back, err := ParseNanos(new(big.Rat).SetFrac64(n, nanoPerUnit).FloatString(9), MaxPrice)
		if err != nil || back != n {
			t.Fatalf("round trip of %q: %d, %v", s, back, err)
		}
	})
}
