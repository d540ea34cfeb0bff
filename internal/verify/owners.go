package verify

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// ownerEntry is a cached owner with the limits its keys share, derived
// once from its record and its plan (its tier).
type ownerEntry struct {
	recency
	owner     *store.Owner
	loadedAt  time.Time
	planSrc   string                   // "plan <name>": the source of a limit the owner does not override
	limits    plan.Limits              // the owner's own limits: its plan's owner_limits with its overrides
	hasQuotas bool                     // limits has a day or month limit
	perMinute level                    // the owner's own per-minute limits
	features  map[string]*featureEntry // the features the owner's plan or overrides name
	closed    bool                     // the plan names its features: no other is offered
	wins      *ownerWindows
	// Money (spend.go): the plan (its prices), the monthly spend cap
	// (< 0 for none) and where it comes from, and the credits granted
	// (< 0 if the owner is not prepaid) with their Since and Offset.
	plan     *plan.Plan
	currency string
	spendCap int64
	capSrc   string
	granted  int64
	since    time.Time
	offset   int64
}

// spendLimited reports whether the owner has a spend cap or is prepaid.
func (o *ownerEntry) spendLimited() bool { return o.spendCap >= 0 || o.granted >= 0 }

// setBilling derives the owner's money limits from its plan p and record.
func (o *ownerEntry) setBilling(p *plan.Plan) {
	o.plan, o.currency = p, p.Currency
	if o.currency == "" {
		o.currency = plan.DefaultCurrency
	}
	o.spendCap, o.granted = -1, -1
	if c, ok := p.DefaultSpendCap(); ok {
		o.spendCap, o.capSrc = c, o.planSrc
	}
	if p.Prepaid {
		o.granted = 0
	}
	b := o.owner.Billing
	if b == nil {
		return
	}
	if b.SpendCap != nil {
		o.spendCap, o.capSrc = *b.SpendCap, SourceOwnerOverride
	}
	if c := b.Credits; c != nil {
		o.granted, o.since, o.offset = c.Granted(), c.Since, c.Offset
	}
}

// featureEntry is an owner's limits on one feature.
type featureEntry struct {
	limits    plan.Limits
	hasQuotas bool // limits has a day or month limit
	perMinute level
}

// hasQuota reports whether limits has a day or month limit.
func hasQuota(limits plan.Limits) bool {
	for name := range limits {
		if _, w, err := plan.SplitLimitName(name); err == nil && w != plan.Minute {
			return true
		}
	}
	return false
}

// source returns where the value of the owner's limit name (on feature,
// if not "") comes from.
func (o *ownerEntry) source(feature, name string) string {
	overrides := o.owner.Limits
	if feature != "" {
		overrides = o.owner.Features[feature]
	}
	if _, ok := overrides[name]; ok {
		return SourceOwnerOverride
	}
	return o.planSrc
}

// ownerWindows are an owner's per-minute counts, shared by every version
// of its cache entry.
type ownerWindows struct {
	owner    window
	mu       sync.Mutex
	features map[string]*window
}

func (w *ownerWindows) feature(name string) *window {
	w.mu.Lock()
	defer w.mu.Unlock()
	fw := w.features[name]
	if fw == nil {
		if w.features == nil {
			w.features = make(map[string]*window)
		}
		fw = &window{}
		w.features[name] = fw
	}
	return fw
}

// ownerOf returns the cache entry of k's owner, loading it if it is
// missing or older than the TTL. An owner with no record (its keys predate
// owner records) has the plan of the key that loads it, with no overrides.
func (v *Verifier) ownerOf(ctx context.Context, k *store.Key, now time.Time) (*ownerEntry, error) {
	o, ok := cached(v.owners, k.Owner, now)
	if ok && now.Sub(o.loadedAt) < v.opt.TTL {
		return o, nil
	}
	fresh, err := v.loadOwner(ctx, k)
	if err != nil {
		if ok && errs.Is(err, errs.Unavailable) && now.Sub(o.loadedAt) < v.opt.TTL+v.opt.MaxStale {
			return o, nil
		}
		return nil, err
	}
	return fresh, nil
}

func (v *Verifier) loadOwner(ctx context.Context, k *store.Key) (*ownerEntry, error) {
	res, err, _ := v.loads.Do("\x01owner\x00"+k.Owner, func() (any, error) {
		now := v.clock.Now()
		o, err := v.store.GetOwner(context.WithoutCancel(ctx), k.Owner)
		if errs.Is(err, errs.NotFound) {
			o, err = &store.Owner{ID: k.Owner, Plan: k.Plan}, nil
		}
		if err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "the owner store is unreachable")
		}
		return v.putOwner(o, now), nil
	})
	if err != nil {
		return nil, err
	}
	return res.(*ownerEntry), nil
}

// putOwner caches o unless a newer version of it is cached already, and
// returns the cached entry.
func (v *Verifier) putOwner(o *store.Owner, now time.Time) *ownerEntry {
	wins := &ownerWindows{}
	if old, ok := v.owners.Peek(o.ID); ok {
		if old.owner.UpdatedAt.After(o.UpdatedAt) {
			return old
		}
		wins = old.wins
	}
	planSrc := "plan " + o.Plan
	e := &ownerEntry{owner: o, loadedAt: now, wins: wins, planSrc: planSrc}
	p, ok := v.plans.Get(o.Plan)
	if !ok {
		v.opt.Logger.Warn("owner's plan is not in the plan catalog; only its own overrides apply", "owner", o.ID, "plan", o.Plan)
		p = &plan.Plan{}
	}
	e.setBilling(p)
	e.limits = p.OwnerLimits.With(o.Limits)
	e.hasQuotas = hasQuota(e.limits)
	e.perMinute = perMinute(&wins.owner, ScopeOwner, "", p.OwnerLimits, o.Limits, planSrc, SourceOwnerOverride)
	e.perMinute.buckets(bucketOwner)
	e.closed = len(p.Features) > 0
	names := slices.Sorted(maps.Keys(p.Features))
	for f := range o.Features {
		if _, inPlan := p.Features[f]; !inPlan && !e.closed {
			names = append(names, f)
		}
	}
	if len(names) > 0 {
		e.features = make(map[string]*featureEntry, len(names))
	}
	for _, f := range names {
		fe := &featureEntry{limits: p.Features[f].With(o.Features[f])}
		fe.hasQuotas = hasQuota(fe.limits)
		fe.perMinute = perMinute(wins.feature(f), ScopeOwner, f, p.Features[f], o.Features[f], planSrc, SourceOwnerOverride)
		fe.perMinute.buckets(bucketFeature + f)
		e.features[f] = fe
	}
	v.owners.Add(o.ID, e)
	return e
}

// perMinute returns the per-minute level of base limits (a plan's, whose
// source is planSrc) with overrides (whose source is overrideSrc).
func perMinute(w *window, scope, feature string, base, overrides plan.Limits, planSrc, overrideSrc string) level {
	l := level{win: w, scope: scope, feature: feature, rpm: -1, upm: -1}
	pick := func(name string, limit *int64, src *string) {
		if n, ok := overrides[name]; ok {
			*limit, *src = n, overrideSrc
		} else if n, ok := base[name]; ok {
			*limit, *src = n, planSrc
		}
	}
	pick("requests_per_minute", &l.rpm, &l.rpmSrc)
	pick("units_per_minute", &l.upm, &l.upmSrc)
	return l
}

// applyOwner brings the owner cache up to date with a changed owner.
func (v *Verifier) applyOwner(o *store.Owner, now time.Time) {
	if old, ok := v.owners.Peek(o.ID); ok && !o.UpdatedAt.Before(old.owner.UpdatedAt) {
		v.putOwner(o, now)
	}
}

// OwnerChanged applies a change to an owner committed by this process
// (owners.Service calls it) as KeyChanged does for keys.
func (v *Verifier) OwnerChanged(o *store.Owner) { v.applyOwner(o, v.clock.Now()) }
