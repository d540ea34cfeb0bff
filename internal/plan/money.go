package plan

import (
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Money in keyplane is integer, never float:
//
//   - a price is held in nano-units (1e-9 of the currency) per unit of its
//     metric: per request, per 1,000 units, per MB (1,000,000 bytes). A
//     price string may have at most 9 decimals, so every accepted price is
//     held exactly ("0.00125" per 1k units is 1,250,000 nano-units).
//   - an event's cost is computed exactly (in 128-bit integers) from its
//     requests, units and bytes and the prices, and rounded half up to
//     micro-units (1e-6 of the currency) once, per event. Counters and
//     spend sum those micro-unit costs.
//   - amounts are shown as decimal strings with 6 decimals ("1.234500").

// Currencies are the ISO 4217 codes a plan may price in.
var Currencies = []string{
	"AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "IDR",
	"ILS", "INR", "JPY", "KRW", "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "THB", "TRY",
	"TWD", "USD", "ZAR",
}

// DefaultCurrency is the currency of a plan that names none.
const DefaultCurrency = "USD"

// AnyFeature is the key of Prices that prices features not listed, and
// events that name no feature.
const AnyFeature = "*"

// MaxPrice is the largest price of one unit of a metric, in currency units.
const MaxPrice = 1_000_000

// PriceSpec is the prices of one feature as a plans file states them:
// decimal strings in the plan's currency. An absent price is zero.
type PriceSpec struct {
	PerRequest string `json:"per_request,omitempty"`
	Per1kUnits string `json:"per_1k_units,omitempty"`
	PerMB      string `json:"per_mb,omitempty"`
}

// Price is a feature's prices in nano-units of the currency per request,
// per 1,000 units and per MB (1,000,000 bytes).
type Price struct {
	PerRequest, Per1kUnits, PerMB int64
}

const (
	nanoDigits  = 9
	nanoPerUnit = 1_000_000_000
	// MicroPerUnit is how many micro-units one unit of a currency holds.
	MicroPerUnit = 1_000_000
)

// ParseNanos parses a non-negative decimal amount ("0.0005", "12", "3.")
// with at most 9 decimals into nano-units. It rejects signs, exponents,
// spaces, and amounts over max currency units.
func ParseNanos(s string, max int64) (int64, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" && (!dot || frac == "") {
		return 0, fmt.Errorf("%q is not a decimal amount", s)
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, fmt.Errorf("%q is not a decimal amount", s)
			}
		}
	}
	frac = strings.TrimRight(frac, "0")
	if len(frac) > nanoDigits {
		return 0, fmt.Errorf("%q has more than %d decimals", s, nanoDigits)
	}
	whole = strings.TrimLeft(whole, "0")
	var w int64
	if whole != "" {
		v, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || v > max {
			return 0, fmt.Errorf("%q is over the maximum of %d", s, max)
		}
		w = v
	}
	var f int64
	if frac != "" {
		v, _ := strconv.ParseInt(frac+strings.Repeat("0", nanoDigits-len(frac)), 10, 64) // 9 digits: cannot fail
		f = v
	}
	n := w*nanoPerUnit + f
	if n > max*nanoPerUnit {
		return 0, fmt.Errorf("%q is over the maximum of %d", s, max)
	}
	return n, nil
}

// ParseMicros parses a non-negative decimal amount with at most 6
// decimals into micro-units, at most max currency units.
func ParseMicros(s string, max int64) (int64, error) {
	n, err := ParseNanos(s, max)
	if err != nil {
		return 0, err
	}
	if n%1000 != 0 {
		return 0, fmt.Errorf("%q has more than 6 decimals", s)
	}
	return n / 1000, nil
}

// FormatMicros formats an amount in micro-units with 6 decimals.
func FormatMicros(m int64) string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-(m+1))+1
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/MicroPerUnit, u%MicroPerUnit)
}

// parse converts a PriceSpec; field names the spec in errors
// ("prices.pro-model").
func (s PriceSpec) parse(field string) (Price, error) {
	var p Price
	for _, f := range []struct {
		name string
		text string
		to   *int64
	}{{"per_request", s.PerRequest, &p.PerRequest}, {"per_1k_units", s.Per1kUnits, &p.Per1kUnits}, {"per_mb", s.PerMB, &p.PerMB}} {
		if f.text == "" {
			continue
		}
		v, err := ParseNanos(f.text, MaxPrice)
		if err != nil {
			return Price{}, fmt.Errorf("%s.%s: %w", field, f.name, err)
		}
		*f.to = v
	}
	return p, nil
}

// validateMoney checks p's currency and prices and fills in its default
// currency and its parsed prices.
func (p *Plan) validateMoney() error {
	if p.Currency == "" {
		p.Currency = DefaultCurrency
	}
	if !slices.Contains(Currencies, p.Currency) {
		return fmt.Errorf("currency: %q is not a known ISO 4217 code (one of %s)", p.Currency, strings.Join(Currencies, ", "))
	}
	if len(p.Prices) > MaxFeatures+1 {
		return fmt.Errorf("prices: at most %d entries, got %d", MaxFeatures+1, len(p.Prices))
	}
	p.spendCap = -1
	if p.SpendCap != nil {
		c, err := ParseMicros(p.SpendCap.Monthly, MaxAmount)
		if err != nil {
			return fmt.Errorf("spend_cap.monthly: %w", err)
		}
		p.spendCap = c
	}
	p.prices = make(map[string]Price, len(p.Prices))
	for _, f := range slices.Sorted(maps.Keys(p.Prices)) {
		if f != AnyFeature && !p.OffersFeature(f) {
			return fmt.Errorf("prices.%s: the plan does not offer feature %q", f, f)
		}
		pr, err := p.Prices[f].parse("prices." + f)
		if err != nil {
			return err
		}
		p.prices[f] = pr
	}
	return nil
}

// MaxAmount is the largest spend cap or top-up, in currency units.
const MaxAmount = 1_000_000_000

// DefaultSpendCap returns the plan's monthly spend cap in micro-units and
// whether it sets one.
func (p *Plan) DefaultSpendCap() (micros int64, ok bool) {
	if p.SpendCap == nil {
		return 0, false
	}
	return p.spendCap, true
}

// PriceOf returns the prices of feature f ("" for usage without one): its
// own, else those of "*", else zero.
func (p *Plan) PriceOf(f string) Price {
	if pr, ok := p.prices[f]; ok && f != "" {
		return pr
	}
	return p.prices[AnyFeature]
}

// Priced reports whether p sets any price.
func (p *Plan) Priced() bool { return len(p.prices) > 0 }

// Cost returns the cost in micro-units of requests, units and bytes of
// feature f at p's prices: exact, then rounded half up to a micro-unit.
// ok is false if the cost does not fit an int64.
func (p *Plan) Cost(f string, requests, units, bytes int64) (micros int64, ok bool) {
	return p.PriceOf(f).Cost(requests, units, bytes)
}

// Cost returns the cost in micro-units of requests, units and bytes at
// pr: the exact sum in 1e-15 of the currency, rounded half up to 1e-6
// once. ok is false if it does not fit an int64; negative amounts count
// as zero.
func (pr Price) Cost(requests, units, bytes int64) (micros int64, ok bool) {
	// Each term in 1e-15 of the currency: nano per request × 1e6, nano
	// per 1k units × 1e3 (units/1000 × 1e6), nano per MB × 1 (bytes/1e6 × 1e6).
	var hi, lo uint64
	for _, t := range []struct{ price, n, scale int64 }{
		{pr.PerRequest, requests, 1_000_000}, {pr.Per1kUnits, units, 1_000}, {pr.PerMB, bytes, 1},
	} {
		if t.price <= 0 || t.n <= 0 {
			continue
		}
		h1, l1 := bits.Mul64(uint64(t.price), uint64(t.n))
		// (h1,l1) × scale: h1×scale must not overflow.
		h2, l2 := bits.Mul64(l1, uint64(t.scale))
		hh, hl := bits.Mul64(h1, uint64(t.scale))
		if hh != 0 {
			return 0, false
		}
		h2, c := bits.Add64(h2, hl, 0)
		if c != 0 {
			return 0, false
		}
		var carry uint64
		lo, carry = bits.Add64(lo, l2, 0)
		hi, carry = bits.Add64(hi, h2, carry)
		if carry != 0 {
			return 0, false
		}
	}
	const per = 1_000_000_000 // 1e-15 per 1e-6
	if hi >= per {
		return 0, false // the quotient would not fit 64 bits
	}
	// Round half up: (x + per/2) / per.
	lo, c := bits.Add64(lo, per/2, 0)
	hi += c
	if hi >= per {
		return 0, false // the quotient would not fit 64 bits
	}
	q, _ := bits.Div64(hi, lo, per)
	if q > math.MaxInt64 {
		return 0, false
	}
	return int64(q), true
}
