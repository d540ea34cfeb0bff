package sweep

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// Actor is who the sweep's audit entries name.
const Actor = "sweep"

// maxIPSample bounds the client IPs a distinct-IPs decision carries.
const maxIPSample = 10

// Disable is the decision to disable a key, with its evidence.
type Disable struct {
	KeyID  string     `json:"key_id"`
	Reason string     `json:"reason"`
	Limit  string     `json:"limit"`  // the limit or rule measure, e.g. requests_per_day, distinct_ips_per_day
	Window string     `json:"window"` // hour, day or month
	Used   int64      `json:"used"`
	Max    int64      `json:"max"`             // the most allowed: usage over it trips the rule
	Until  *time.Time `json:"until,omitempty"` // quota suspensions only: when the window ends
	// BaselinePerHour is the trailing hourly average a spike was measured
	// against.
	BaselinePerHour *float64 `json:"baseline_per_hour,omitempty"`
	// IPs are some of the client IPs counted (distinct-IPs decisions).
	IPs []string `json:"ips,omitempty"`
}

// evidence is what d was decided on: keys.Service puts it in the audit
// entry's details and the owner's notification.
func (d Disable) evidence() map[string]any {
	out := map[string]any{"limit": d.Limit, "window": d.Window, "used": d.Used, "max": d.Max}
	if d.BaselinePerHour != nil {
		out["baseline_per_hour"] = *d.BaselinePerHour
	}
	if len(d.IPs) > 0 {
		out["ips"] = d.IPs
	}
	return out
}

// Threshold is a key's usage reaching 80% or 100% of a quota.
type Threshold struct {
	KeyID       string    `json:"key_id"`
	Limit       string    `json:"limit"`
	Threshold   int       `json:"threshold"` // percent
	Used        int64     `json:"used"`
	Max         int64     `json:"max"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
}

// Thresholds are the percentages of a quota that notify the owner.
var Thresholds = []int{80, 100}

// observed is what the sweep read about one key.
type observed struct {
	Day, Month, Hour, Yesterday ledger.Totals
	IPs                         int
	IPSample                    []string
}

// needs says which reads evaluating k under p takes beyond its day totals.
type needs struct{ month, spike, ips bool }

func needsOf(k *store.Key, p *plan.Plan) needs {
	var n needs
	for name := range effectiveLimits(k, p) {
		if _, w, err := plan.SplitLimitName(name); err == nil && w == plan.Month {
			n.month = true
		}
	}
	if p != nil {
		n.spike = p.Abuse.Spike != nil
		n.ips = p.Abuse.DistinctIPs != nil && ipRuleApplies(k)
	}
	return n
}

// ipRuleApplies: a key restricted to referrers is a browser key, used from
// as many IPs as the site has visitors; a key restricted to IPs cannot be
// used from others. The distinct-IPs rule means nothing for either.
func ipRuleApplies(k *store.Key) bool {
	return len(k.Restrictions.AllowedReferrers) == 0 && len(k.Restrictions.AllowedIPs) == 0
}

func effectiveLimits(k *store.Key, p *plan.Plan) plan.Limits {
	if p == nil {
		return k.Limits
	}
	return p.Limits.With(k.Limits)
}

// evaluate applies the rules to an active key: the abuse rules first (a
// leaked key over its quota must not come back when the window resets),
// then the quotas. It returns the decision to disable, if any, and the
// quota thresholds the key has reached.
func evaluate(k *store.Key, p *plan.Plan, o observed, now time.Time) (*Disable, []Threshold) {
	if k.Status != store.Active || k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
		return nil, nil
	}
	var d *Disable
	if p != nil {
		if r := p.Abuse.DistinctIPs; r != nil && ipRuleApplies(k) && o.IPs > r.MaxPerDay {
			d = &Disable{KeyID: k.ID, Reason: keys.ReasonDistinctIPs, Limit: "distinct_ips_per_day", Window: string(plan.Day),
				Used: int64(o.IPs), Max: int64(r.MaxPerDay), IPs: o.IPSample}
		}
		if r := p.Abuse.Spike; d == nil && r != nil {
			d = spike(k, r, o, now)
		}
	}
	quota, thresholds := quotas(k, effectiveLimits(k, p), o, now)
	if d == nil {
		d = quota
	}
	return d, thresholds
}

// spike applies the spike rule: usage in the current hour over Factor
// times the trailing hourly average and over Floor. The trailing average
// is the usage from the start of yesterday (or the key's creation, if
// later) to the start of the current hour, per hour; a key created in the
// current hour has none, and the rule does not apply to it yet.
func spike(k *store.Key, r *plan.SpikeRule, o observed, now time.Time) *Disable {
	hourStart, _ := plan.Hour.Bounds(now)
	dayStart, _ := plan.Day.Bounds(now)
	from := dayStart.AddDate(0, 0, -1)
	if c := k.CreatedAt.UTC().Truncate(time.Hour); c.After(from) {
		from = c
	}
	hours := hourStart.Sub(from).Hours()
	if hours < 1 {
		return nil
	}
	cur := o.Hour.Get(r.Metric)
	prior := o.Yesterday.Get(r.Metric) + max(o.Day.Get(r.Metric)-cur, 0)
	avg := float64(prior) / hours
	limit := max(float64(r.Floor), r.Factor*avg)
	if float64(cur) <= limit {
		return nil
	}
	maxUse := int64(math.Min(math.Floor(limit), math.MaxInt64))
	return &Disable{KeyID: k.ID, Reason: keys.ReasonSpike, Limit: r.Metric + "_per_hour", Window: string(plan.Hour),
		Used: cur, Max: maxUse, BaselinePerHour: &avg}
}

// quotas checks the day and month limits. Usage over a limit (more than
// its max) suspends the key until the window ends; of several, the one
// that ends last decides, so the key comes back once all have reset.
func quotas(k *store.Key, limits plan.Limits, o observed, now time.Time) (*Disable, []Threshold) {
	var (
		d          *Disable
		thresholds []Threshold
	)
	for _, name := range slices.Sorted(maps.Keys(limits)) {
		metric, w, err := plan.SplitLimitName(name)
		if err != nil || w == plan.Minute {
			continue
		}
		t := o.Day
		if w == plan.Month {
			t = o.Month
		}
		used, limit := t.Get(metric), limits[name]
		start, end := w.Bounds(now)
		for _, pct := range Thresholds {
			if reached(used, limit, pct) {
				thresholds = append(thresholds, Threshold{KeyID: k.ID, Limit: name, Threshold: pct, Used: used, Max: limit, WindowStart: start, WindowEnd: end})
			}
		}
		if used > limit && (d == nil || end.After(*d.Until)) {
			d = &Disable{KeyID: k.ID, Reason: keys.ReasonQuotaExceeded, Limit: name, Window: string(w), Used: used, Max: limit, Until: &end}
		}
	}
	return d, thresholds
}

// reached reports whether used is at least pct percent of limit; a limit
// of 0 has no thresholds.
func reached(used, limit int64, pct int) bool {
	switch {
	case limit <= 0:
		return false
	case pct >= 100:
		return used >= limit
	}
	return float64(used)*100 >= float64(pct)*float64(limit)
}
