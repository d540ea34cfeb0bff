package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/keyplane/keyplane/internal/ids"
)

// Metrics that limits may name, the windows usage is counted in, and the
// windows limits may name. Hour is counted (for the sweep's spike rule and
// usage queries) but is not a limit window.
var (
	Metrics      = []string{"requests", "units", "bytes"}
	Windows      = []Window{Minute, Hour, Day, Month}
	LimitWindows = []Window{Minute, Day, Month}
)

// Window is a counting window.
type Window string

// The windows.
const (
	Minute Window = "minute"
	Hour   Window = "hour"
	Day    Window = "day"
	Month  Window = "month"
)

// ParseWindow validates a window name.
func ParseWindow(s string) (Window, error) {
	switch w := Window(s); w {
	case Minute, Hour, Day, Month:
		return w, nil
	}
	return "", fmt.Errorf("window must be one of minute, hour, day, month; got %q", s)
}

// Bounds returns the UTC window of kind w that contains t: [start, end).
func (w Window) Bounds(t time.Time) (start, end time.Time) {
	t = t.UTC()
	switch w {
	case Minute:
		start = t.Truncate(time.Minute)
		return start, start.Add(time.Minute)
	case Hour:
		start = t.Truncate(time.Hour)
		return start, start.Add(time.Hour)
	}
	// One Date call: Year, Month and Day would each compute the date.
	y, m, d := t.Date()
	if w == Day {
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC), time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
}

// LimitName is the name of the limit on metric per window.
func LimitName(metric string, w Window) string { return metric + "_per_" + string(w) }

// SplitLimitName parses a limit name into its metric and window.
func SplitLimitName(name string) (metric string, w Window, err error) {
	m, ws, ok := strings.Cut(name, "_per_")
	if !ok || !slices.Contains(Metrics, m) {
		return "", "", fmt.Errorf("unknown limit %q: limits are <metric>_per_<window>, metric one of %s, window one of minute, day, month", name, strings.Join(Metrics, ", "))
	}
	w = Window(ws)
	if !slices.Contains(LimitWindows, w) {
		return "", "", fmt.Errorf("unknown limit %q: the window of a limit must be one of minute, day, month", name)
	}
	return m, w, nil
}

// Limits maps limit names to their maximum. Absent means unlimited.
type Limits map[string]int64

// Validate checks every name and value, naming the first problem.
func (l Limits) Validate() error {
	for _, name := range slices.Sorted(maps.Keys(l)) {
		if _, _, err := SplitLimitName(name); err != nil {
			return err
		}
		if l[name] < 0 {
			return fmt.Errorf("limit %s must be >= 0, got %d", name, l[name])
		}
	}
	return nil
}

// With returns the limits of l overridden by o; neither is changed.
func (l Limits) With(o Limits) Limits {
	out := make(Limits, len(l)+len(o))
	maps.Copy(out, l)
	maps.Copy(out, o)
	return out
}

// Plan is what a key is entitled to and, as an owner's tier, what the
// owner's keys share.
type Plan struct {
	Name   string   `json:"-"`
	Scopes []string `json:"scopes"`
	// Limits are each key's own.
	Limits Limits `json:"limits"`
	// OwnerLimits are shared by all the keys of an owner on this plan.
	OwnerLimits Limits `json:"owner_limits,omitempty"`
	// Features are the features (models) an owner on this plan may use,
	// each with the limits the owner's keys share for it. If a plan names
	// features, they are all it offers: verify refuses any other (as a
	// model API refuses an unknown model). A plan without features
	// offers every feature, none limited.
	Features map[string]Limits `json:"features,omitempty"`
	// Abuse are the rules the sweep disables a key of this plan by,
	// beyond its quotas. Absent rules are off.
	Abuse Abuse `json:"abuse,omitzero"`
	// Currency is the ISO 4217 code of the plan's prices; default USD.
	Currency string `json:"currency,omitempty"`
	// Prices are the prices of usage by feature; "*" prices features not
	// listed and usage without a feature. Absent prices are zero (see
	// money.go for the precision).
	Prices map[string]PriceSpec `json:"prices,omitempty"`
	prices map[string]Price
	// SpendCap is the default monthly spend cap of the plan's owners
	// (an owner's own cap overrides it).
	SpendCap *SpendCapSpec `json:"spend_cap,omitempty"`
	// Prepaid makes the plan's owners pay ahead: verify refuses their
	// priced requests once their credit balance is used up (an owner
	// with no top-up has none).
	Prepaid  bool  `json:"prepaid,omitempty"`
	spendCap int64 // micro-units; -1 for none
}

// SpendCapSpec is a spend cap as a plans file or PATCH /v1/owners
// states it: a decimal amount in the plan's currency.
type SpendCapSpec struct {
	Monthly string `json:"monthly"`
}

// Abuse holds a plan's abuse rules (see internal/sweep for how each is
// applied). A key disabled by one stays disabled until an operator
// enables it.
type Abuse struct {
	Spike       *SpikeRule       `json:"spike,omitempty"`
	DistinctIPs *DistinctIPsRule `json:"distinct_ips,omitempty"`
}

// SpikeRule flags a key whose usage of Metric in the current hour is over
// Factor times its trailing hourly average and over Floor.
type SpikeRule struct {
	Metric string  `json:"metric,omitempty"` // requests (default), units or bytes
	Factor float64 `json:"factor,omitempty"` // default 10, at least 2
	Floor  int64   `json:"floor"`            // at least 1: usage in an hour below this never trips the rule
}

// DistinctIPsRule flags a key used from more than MaxPerDay distinct
// client IPs (as verify sees them) in a UTC day.
type DistinctIPsRule struct {
	MaxPerDay int `json:"max_per_day"` // 1..MaxDistinctIPsPerDay
}

// Defaults and bounds of the abuse rules.
const (
	DefaultSpikeFactor   = 10
	MinSpikeFactor       = 2
	MaxDistinctIPsPerDay = 1000
)

// validate checks r and fills in its defaults.
func (a *Abuse) validate() error {
	if r := a.Spike; r != nil {
		if r.Metric == "" {
			r.Metric = "requests"
		}
		if !slices.Contains(Metrics, r.Metric) {
			return fmt.Errorf("abuse.spike.metric must be one of %s, got %q", strings.Join(Metrics, ", "), r.Metric)
		}
		if r.Factor == 0 {
			r.Factor = DefaultSpikeFactor
		}
		if r.Factor < MinSpikeFactor || r.Factor > 1e6 {
			return fmt.Errorf("abuse.spike.factor must be between %d and 1000000, got %g", MinSpikeFactor, r.Factor)
		}
		if r.Floor < 1 {
			return fmt.Errorf("abuse.spike.floor must be at least 1 (usage in an hour below it never trips the rule), got %d", r.Floor)
		}
	}
	if r := a.DistinctIPs; r != nil && (r.MaxPerDay < 1 || r.MaxPerDay > MaxDistinctIPsPerDay) {
		return fmt.Errorf("abuse.distinct_ips.max_per_day must be between 1 and %d, got %d", MaxDistinctIPsPerDay, r.MaxPerDay)
	}
	return nil
}

// clone returns a deep copy of a.
func (a Abuse) clone() Abuse {
	if a.Spike != nil {
		r := *a.Spike
		a.Spike = &r
	}
	if a.DistinctIPs != nil {
		r := *a.DistinctIPs
		a.DistinctIPs = &r
	}
	return a
}

// MaxFeatures is the most features one plan may name.
const MaxFeatures = 100

// OffersFeature reports whether an owner on p may use feature f.
func (p *Plan) OffersFeature(f string) bool {
	if len(p.Features) == 0 {
		return true
	}
	_, ok := p.Features[f]
	return ok
}

// Catalog is the set of plans a deployment offers.
type Catalog struct {
	plans       map[string]*Plan
	defaultPlan string
}

// Get returns the named plan.
func (c *Catalog) Get(name string) (*Plan, bool) {
	p, ok := c.plans[name]
	return p, ok
}

// Default returns the name of the plan given to keys created without one,
// or "" if there is none.
func (c *Catalog) Default() string { return c.defaultPlan }

// Priced reports whether any plan of c sets a price.
func (c *Catalog) Priced() bool {
	for _, p := range c.plans {
		if p.Priced() {
			return true
		}
	}
	return false
}

// Names returns the plan names, sorted.
func (c *Catalog) Names() []string { return slices.Sorted(maps.Keys(c.plans)) }

var (
	planNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	// ScopeRE is the syntax of a scope name.
	ScopeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)
)

// File is the plans file schema.
type File struct {
	// Plans by name.
	Plans map[string]*Plan `json:"plans"`
	// Default is the plan of keys created without one; "free" if omitted
	// and a plan of that name exists.
	Default string `json:"default,omitempty"`
}

// NewCatalog validates f and builds a Catalog.
func NewCatalog(f File) (*Catalog, error) {
	if len(f.Plans) == 0 {
		return nil, fmt.Errorf("plans: at least one plan is required")
	}
	c := &Catalog{plans: make(map[string]*Plan, len(f.Plans))}
	for _, name := range slices.Sorted(maps.Keys(f.Plans)) {
		p := f.Plans[name]
		if !planNameRE.MatchString(name) {
			return nil, fmt.Errorf("plans: plan name %q must match %s", name, planNameRE)
		}
		if p == nil {
			return nil, fmt.Errorf("plans: plan %q is empty", name)
		}
		if len(p.Scopes) == 0 {
			return nil, fmt.Errorf("plans: plan %q must grant at least one scope", name)
		}
		for _, s := range p.Scopes {
			if !ScopeRE.MatchString(s) {
				return nil, fmt.Errorf("plans: plan %q: scope %q must match %s", name, s, ScopeRE)
			}
		}
		if err := p.Limits.Validate(); err != nil {
			return nil, fmt.Errorf("plans: plan %q: %w", name, err)
		}
		if err := p.OwnerLimits.Validate(); err != nil {
			return nil, fmt.Errorf("plans: plan %q: owner_limits: %w", name, err)
		}
		cp := &Plan{Name: name, Scopes: slices.Clone(p.Scopes), Limits: Limits{}.With(p.Limits),
			OwnerLimits: Limits{}.With(p.OwnerLimits), Abuse: p.Abuse.clone()}
		if len(p.Features) > MaxFeatures {
			return nil, fmt.Errorf("plans: plan %q: at most %d features, got %d", name, MaxFeatures, len(p.Features))
		}
		for _, f := range slices.Sorted(maps.Keys(p.Features)) {
			if !ids.ValidFeature(f) {
				return nil, fmt.Errorf("plans: plan %q: feature %q: a feature name is %s", name, f, ids.FeatureSyntax)
			}
			if err := p.Features[f].Validate(); err != nil {
				return nil, fmt.Errorf("plans: plan %q: features.%s: %w", name, f, err)
			}
			if cp.Features == nil {
				cp.Features = make(map[string]Limits, len(p.Features))
			}
			cp.Features[f] = Limits{}.With(p.Features[f])
		}
		if err := cp.Abuse.validate(); err != nil {
			return nil, fmt.Errorf("plans: plan %q: %w", name, err)
		}
		cp.Currency, cp.Prices, cp.Prepaid = p.Currency, maps.Clone(p.Prices), p.Prepaid
		if p.SpendCap != nil {
			c := *p.SpendCap
			cp.SpendCap = &c
		}
		if err := cp.validateMoney(); err != nil {
			return nil, fmt.Errorf("plans: plan %q: %w", name, err)
		}
		slices.Sort(cp.Scopes)
		cp.Scopes = slices.Compact(cp.Scopes)
		c.plans[name] = cp
	}
	switch {
	case f.Default != "":
		if _, ok := c.plans[f.Default]; !ok {
			return nil, fmt.Errorf("plans: default plan %q is not defined", f.Default)
		}
		c.defaultPlan = f.Default
	case c.plans["free"] != nil:
		c.defaultPlan = "free"
	}
	return c, nil
}

// Builtin returns the plans a deployment has without a plans file, modelled
// on a paid AI API's tiers. Units are the API's billing unit, e.g. tokens.
func Builtin() *Catalog {
	scopes := []string{"embed", "generate"}
	c, err := NewCatalog(File{Plans: map[string]*Plan{
		"free": {Scopes: scopes, Limits: Limits{
			"requests_per_minute": 15, "requests_per_day": 1_500,
			"units_per_minute": 1_000_000, "units_per_day": 50_000_000,
		}, Abuse: Abuse{
			Spike:       &SpikeRule{Metric: "requests", Factor: 10, Floor: 500},
			DistinctIPs: &DistinctIPsRule{MaxPerDay: 20},
		}},
		"pro": {Scopes: scopes, Limits: Limits{
			"requests_per_minute": 1_000, "requests_per_day": 100_000,
			"units_per_minute": 4_000_000, "units_per_month": 2_000_000_000,
		}, Abuse: Abuse{
			Spike:       &SpikeRule{Metric: "requests", Factor: 20, Floor: 20_000},
			DistinctIPs: &DistinctIPsRule{MaxPerDay: 200},
		}},
		"enterprise": {Scopes: append(scopes, "tune"), Limits: Limits{
			"requests_per_minute": 10_000, "units_per_minute": 30_000_000,
		}},
	}})
	if err != nil {
		panic(err) // the literal above is valid; a test checks it
	}
	return c
}

// Load reads a plans file (JSON, or YAML if the name ends in .yaml or .yml).
// Unknown fields are errors. An empty path returns Builtin().
func Load(path string) (*Catalog, error) {
	if path == "" {
		return Builtin(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plans: %w", err)
	}
	c, err := Parse(data, strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a plans file.
func Parse(data []byte, isYAML bool) (*Catalog, error) {
	if isYAML {
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return nil, fmt.Errorf("plans: %w", err)
		}
		data = j
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("plans: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("plans: unexpected data after the JSON object")
	}
	return NewCatalog(f)
}
