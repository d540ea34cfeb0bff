package verify

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/puzpuzpuz/xsync/v4"
	"golang.org/x/sync/singleflight"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/restrict"
	"github.com/keyplane/keyplane/internal/store"
)

// Code is the outcome of a verification.
type Code string

// The codes, in the order they are checked (after format and existence).
const (
	Valid                   Code = "VALID"
	NotFound                Code = "NOT_FOUND"
	Revoked                 Code = "REVOKED"
	Expired                 Code = "EXPIRED"
	Disabled                Code = "DISABLED"
	Forbidden               Code = "FORBIDDEN"
	InsufficientPermissions Code = "INSUFFICIENT_PERMISSIONS"
	UsageExceeded           Code = "USAGE_EXCEEDED"
	RateLimited             Code = "RATE_LIMITED"
)

// The reasons of a FORBIDDEN decision (Decision.Reason).
const (
	ReasonIPMissing          = "the key is restricted to allowed_ips and the request carries no ip: send the client's IP address in ip"
	ReasonIPNotAllowed       = "ip is not an address in the key's allowed_ips"
	ReasonReferrerMissing    = "the key is restricted to allowed_referrers and the request carries no referrer: send the request's Referer in referrer"
	ReasonReferrerNotAllowed = "referrer does not match the key's allowed_referrers"
	ReasonFeatureMissing     = "the key is restricted to allowed_features and the request names no feature: send the feature (model) in feature"
	ReasonFeatureNotAllowed  = "feature is not in the key's allowed_features"
	ReasonFeatureNotOffered  = "feature is not offered by the owner's plan"
	// ReasonQuarantined refuses a key in a leak quarantine used from an IP
	// it was not seen from before the leak was reported, or once the
	// quarantine's grace has ended (the sweep then disables it).
	ReasonQuarantined = "the key was reported leaked and is quarantined: it works only from the IPs it was used from before the report, until its grace ends; use its replacement (rotated_to)"
)

// The scopes of a limit (LimitState.Scope): one key's own, or shared by
// all the keys of an owner (for one feature when LimitState.Feature is set).
const (
	ScopeKey   = "key"
	ScopeOwner = "owner"
)

// The sources of a limit's value (LimitState.Source), besides
// "plan <name>": an override on the key or on the owner.
const (
	SourceKeyOverride   = "key override"
	SourceOwnerOverride = "owner override"
	// SourceCredits is the source of the credits limit: the owner's
	// top-ups.
	SourceCredits = "prepaid credits"
)

// Codes lists every Code, in the order of Counts.Decisions.
var Codes = [...]Code{Valid, NotFound, Revoked, Expired, Disabled, Forbidden, InsufficientPermissions, UsageExceeded, RateLimited}

// codeIndex returns the index of c in Codes (a few comparisons of short
// strings, no allocation).
func codeIndex(c Code) int {
	for i, k := range Codes {
		if k == c {
			return i
		}
	}
	panic("verify: a decision with code " + string(c) + ", which is not in Codes")
}

// Request is what a gateway asks about one API request.
type Request struct {
	Key      string
	Scope    string // "" skips the scope check
	IP       string // the client's address; required if the key is IP-restricted
	Referrer string // the request's Referer; required if the key is referrer-restricted
	// Units is the cost against units_per_minute; >= 0. More than
	// limiter.MaxValue (2^53) counts as limiter.MaxValue (the HTTP API
	// refuses it).
	Units int64
	// Feature is the feature (model) the request uses; "" for none, which
	// checks no feature restriction or limit.
	Feature string
}

// LimitState is the state of one limit after the decision.
type LimitState struct {
	Scope     string // ScopeKey or ScopeOwner
	Feature   string // for an owner's limit on one feature
	Source    string // where the value comes from: "plan <name>", SourceKeyOverride or SourceOwnerOverride
	Name      string
	Limit     int64
	Used      int64 // metered usage, for day and month quotas (HasUsed)
	HasUsed   bool
	Remaining int64
	ResetAt   time.Time // zero for credits, which do not reset
	// Currency is set for the money limits (spend_per_month, credits),
	// whose figures are micro-units of it.
	Currency string
}

// MaxLimits is the most limits a decision reports: the key's (3 metrics ×
// 3 windows) and the per-minute ones of its owner and of the feature.
const MaxLimits = 16

// Decision is the outcome of Verify. Key is shared with the cache and must
// not be modified.
type Decision struct {
	Code Code
	// Reason says why a FORBIDDEN decision refused the key, in words a
	// gateway operator can act on; "" for the other codes, whose code
	// says it all. It is one of a few constant strings: a decision
	// allocates nothing for it.
	Reason     string
	Key        *store.Key // nil for NotFound
	RetryAfter time.Duration
	limits     [MaxLimits]LimitState
	nLimits    int
	refused    int // 1 + the index in limits of the limit that refused the request; 0 for none
}

// reset makes d the empty decision its Limits and Refused read: the
// limit states past nLimits are never read, so they are not cleared.
func (d *Decision) reset() {
	d.Code, d.Reason, d.Key, d.RetryAfter, d.nLimits, d.refused = "", "", nil, 0, 0, 0
}

// Valid reports whether the key may be used.
func (d *Decision) Valid() bool { return d.Code == Valid }

// Limits returns the state of the key's limits (VALID, RATE_LIMITED and
// USAGE_EXCEEDED decisions).
func (d *Decision) Limits() []LimitState { return d.limits[:d.nLimits] }

// Refused returns the index in Limits of the limit that refused a
// RATE_LIMITED or USAGE_EXCEEDED decision (which limit, whose, where its
// value came from, when it resets), or -1.
func (d *Decision) Refused() int { return d.refused - 1 }

// addLimit adds s to the decision's limits and returns its index there
// (-1 if they are full).
func (d *Decision) addLimit(s LimitState) int {
	if d.nLimits < MaxLimits {
		d.limits[d.nLimits] = s
		d.nLimits++
		return d.nLimits - 1
	}
	return -1
}

// refuse records the limit at index i as the decision's refusal (the
// first one wins).
func (d *Decision) refuse(i int) {
	if d.refused == 0 && i >= 0 {
		d.refused = i + 1
	}
}

// QuotaStates holds the state of a key's day and month quotas (at most
// 3 metrics × 2 windows). It is returned by value so that a verify
// allocates nothing for it.
type QuotaStates struct {
	States [6]LimitState
	N      int
}

// Add appends a state; extra states beyond the array are dropped.
func (q *QuotaStates) Add(s LimitState) {
	if q.N < len(q.States) {
		q.States[q.N] = s
		q.N++
	}
}

// Quota reports metered usage against day and month quotas (Quotas
// implements it); a nil Quota checks none.
type Quota interface {
	// Check returns, for every day/month limit in limits, the usage of key
	// id in the window containing now, and whether any has been reached.
	// It must not block on I/O in steady state; ctx is the request's, and
	// bounds any read it waits for.
	Check(ctx context.Context, id string, limits plan.Limits, now time.Time) (states QuotaStates, exceeded bool)
	// CheckOwner is Check for the usage of an owner (all its keys), or
	// with a feature the owner's usage of that feature; the states carry
	// the feature.
	CheckOwner(ctx context.Context, owner, feature string, limits plan.Limits, now time.Time) (states QuotaStates, exceeded bool)
	// Reserve checks an owner's spend against its cap and credits and,
	// if neither is reached, reserves the request's cost (spend.go).
	Reserve(ctx context.Context, owner string, r SpendRequest, now time.Time) SpendState
	// Release gives back a reservation for a request refused after it.
	Release(owner string, cost int64)
}

// ClientIPs records the client IPs keys are used from, for the sweep's
// distinct-IPs rule, and when each key was last used (clientips.Recorder
// implements it). Its methods run on the request path and must not block
// on I/O.
type ClientIPs interface {
	// Saw records that key id was used from ip at now, remembering at
	// most limit distinct IPs per key and day.
	Saw(id, ip string, limit int, now time.Time)
	// Used records that key id was presented at now, for its last use.
	Used(id string, now time.Time)
}

// Options tunes a Verifier; the zero value means the defaults.
type Options struct {
	CacheSize         int           // keys cached (100,000)
	NegativeCacheSize int           // unknown hashes remembered (100,000)
	TTL               time.Duration // how long a cached record or miss is trusted without a re-read (10 min)
	SyncInterval      time.Duration // change-feed poll interval (1 s)
	FeedOverlap       time.Duration // how much of the feed each poll re-reads (5 s)
	MaxStale          time.Duration // how long cached keys verify without a successful poll (5 min)
	Quota             Quota         // nil: no quota checks
	ClientIPs         ClientIPs     // nil: client IPs are not recorded
	// Limiter, if set, counts the per-minute limits of keys, owners and
	// features across instances (redislimiter: Redis, Memorystore in
	// production), one Admit per verify in the group of the key's owner.
	// While it fails, verify falls back to this process's own counts,
	// which bound what each instance admits (Counts.LimiterFallbacks
	// counts those verifies). nil: the per-minute limits are counted in
	// this process only.
	Limiter limiter.Limiter
	Logger  *slog.Logger
	// ObserveLatency, if set, is told how long each Verify took (the
	// latency histogram of internal/telemetry); nil measures nothing.
	ObserveLatency func(time.Duration)
}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if out.CacheSize <= 0 {
		out.CacheSize = 100_000
	}
	if out.NegativeCacheSize <= 0 {
		out.NegativeCacheSize = 100_000
	}
	def(&out.TTL, 10*time.Minute)
	def(&out.SyncInterval, time.Second)
	def(&out.FeedOverlap, 5*time.Second)
	def(&out.MaxStale, 5*time.Minute)
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

// entry is a cached key with everything the hot path derives from it.
type entry struct {
	recency
	key       *store.Key
	restr     *restrict.Set
	limits    plan.Limits // effective: plan limits with the key's overrides
	perMinute level       // the key's per-minute limits, their sources and its window
	planSrc   string      // "plan <name>": the source of the limits the key does not override
	hasQuotas bool        // a day or month limit is set
	ipLimit   int         // > 0: record client IPs, this many distinct per day at most
	// quarantine, if not nil, is the IPs of the key's leak quarantine in
	// force, which ends at quarantineUntil.
	quarantine      *ipList
	quarantineUntil time.Time
	loadedAt        time.Time
}

// Verifier makes verification decisions. It is safe for concurrent use.
type Verifier struct {
	store  store.Store
	hasher *apikey.Hasher
	plans  *plan.Catalog
	clock  clock.Clock
	opt    Options

	cache  *lru.Cache[apikey.Hash, *entry]
	miss   *lru.Cache[apikey.Hash, time.Time]
	owners *lru.Cache[string, *ownerEntry] // by owner id
	loads  singleflight.Group

	syncMu sync.Mutex // serialises polls
	// lastSync is the start of the last successful poll, written by Sync
	// (under syncMu) and read by every verify: an atomic load of a line
	// no request writes, where a read lock would be a write to it.
	lastSync atomic.Pointer[time.Time]

	// Counters for Counts, so that counting costs the hot path no
	// allocation and no call into a metrics library, which reads them when
	// it collects (internal/telemetry). The two every verify adds to are
	// striped: requests on different CPUs add to different cache lines,
	// where one atomic would move its line between CPUs on every request.
	decisions [len(Codes)]*xsync.Counter      // by codeIndex
	lookups   [numCacheResults]*xsync.Counter // by cache result
	failures  atomic.Uint64                   // Verify returned an error
	fallbacks atomic.Uint64                   // per-minute limits decided without the shared limiter
	// sharedDown is set while the shared limiter fails, so that a run of
	// fallbacks is logged once.
	sharedDown atomic.Bool
}

// The results of a cache lookup, for Counts.CacheResults.
const (
	CacheHit         = iota // a cached key, within its TTL
	CacheNegativeHit        // a remembered miss
	CacheMiss               // read from the store (absent, or past its TTL)
	numCacheResults
)

// Counts is what a Verifier has counted since it was made.
type Counts struct {
	Decisions    [len(Codes)]uint64 // by the index of the code in Codes
	Failures     uint64             // verifies that returned an error
	CacheResults [numCacheResults]uint64
	// LimiterFallbacks counts the verifies whose per-minute limits were
	// decided on this instance's counts because the shared limiter
	// (Options.Limiter) failed.
	LimiterFallbacks uint64
}

// Counts returns the counters of v.
func (v *Verifier) Counts() Counts {
	var c Counts
	for i := range v.decisions {
		c.Decisions[i] = uint64(v.decisions[i].Value())
	}
	c.Failures = v.failures.Load()
	for i := range v.lookups {
		c.CacheResults[i] = uint64(v.lookups[i].Value())
	}
	c.LimiterFallbacks = v.fallbacks.Load()
	return c
}

// FeedLag returns how far behind the change feed v's cache may be: the
// time since the last successful poll began. A revocation is seen by
// verify within that time (plus the feed's overlap).
func (v *Verifier) FeedLag() time.Duration {
	return v.clock.Now().Sub(*v.lastSync.Load())
}

// New returns a Verifier. The feed is read from now on (less the overlap):
// keys cached later are loaded fresh.
func New(st store.Store, h *apikey.Hasher, plans *plan.Catalog, clk clock.Clock, opts *Options) *Verifier {
	o := opts.withDefaults()
	cache, _ := lru.New[apikey.Hash, *entry](o.CacheSize)
	miss, _ := lru.New[apikey.Hash, time.Time](o.NegativeCacheSize)
	owners, _ := lru.New[string, *ownerEntry](o.CacheSize)
	now := clk.Now()
	v := &Verifier{store: st, hasher: h, plans: plans, clock: clk, opt: o, cache: cache, miss: miss, owners: owners}
	v.lastSync.Store(&now)
	for i := range v.decisions {
		v.decisions[i] = xsync.NewCounter()
	}
	for i := range v.lookups {
		v.lookups[i] = xsync.NewCounter()
	}
	return v
}

// Verify decides req. It returns an error only when no safe decision can
// be made (the datastore is unreachable and the key is not usable from the
// cache); the caller must then refuse the request.
func (v *Verifier) Verify(ctx context.Context, req Request) (Decision, error) {
	var d Decision
	err := v.VerifyInto(ctx, req, &d)
	return d, err
}

// VerifyInto is Verify deciding into d, which it overwrites. A caller
// that reuses a Decision (the HTTP handler pools them) saves clearing and
// copying its array of limit states, over 2 KB of which a decision uses
// the first few.
func (v *Verifier) VerifyInto(ctx context.Context, req Request, d *Decision) error {
	var start time.Time
	if v.opt.ObserveLatency != nil {
		start = time.Now()
	}
	d.reset()
	err := v.verify(ctx, req, d)
	if err != nil {
		v.failures.Add(1)
	} else {
		v.decisions[codeIndex(d.Code)].Inc()
	}
	if v.opt.ObserveLatency != nil {
		v.opt.ObserveLatency(time.Since(start))
	}
	return err
}

func (v *Verifier) verify(ctx context.Context, req Request, d *Decision) error {
	if _, err := apikey.Parse(req.Key); err != nil {
		d.Code = NotFound
		return nil
	}
	now := v.clock.Now()
	if err := v.fresh(ctx, now); err != nil {
		return err
	}
	h := v.hasher.Sum(req.Key)
	e, err := v.lookup(ctx, h, now)
	if err != nil {
		return err
	}
	if e == nil {
		d.Code = NotFound
		return nil
	}
	k := e.key
	d.Key = k
	if v.opt.ClientIPs != nil {
		// Every verify of an existing key is a use, refused or not: the
		// key is still in someone's hands, which is what a search for
		// stale keys needs to know.
		v.opt.ClientIPs.Used(k.ID, now)
	}
	switch {
	case k.Status == store.Revoked:
		d.Code = Revoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		d.Code = Expired
	case k.Status != store.Active:
		d.Code = Disabled
	case !e.restr.AllowsIP(req.IP):
		d.Code, d.Reason = Forbidden, ReasonIPNotAllowed
		if req.IP == "" {
			d.Reason = ReasonIPMissing
		}
	case e.quarantine != nil && (!now.Before(e.quarantineUntil) || !e.quarantine.allows(req.IP)):
		d.Code, d.Reason = Forbidden, ReasonQuarantined
	case !e.restr.AllowsReferrer(req.Referrer):
		d.Code, d.Reason = Forbidden, ReasonReferrerNotAllowed
		if req.Referrer == "" {
			d.Reason = ReasonReferrerMissing
		}
	case len(k.Restrictions.AllowedFeatures) > 0 && !hasScope(k.Restrictions.AllowedFeatures, req.Feature):
		d.Code, d.Reason = Forbidden, ReasonFeatureNotAllowed
		if req.Feature == "" {
			d.Reason = ReasonFeatureMissing
		}
	case req.Scope != "" && !hasScope(k.Scopes, req.Scope):
		d.Code = InsufficientPermissions
	default:
		o, err := v.ownerOf(ctx, k, now)
		if err != nil {
			return err
		}
		var f *featureEntry
		if req.Feature != "" {
			if f = o.features[req.Feature]; f == nil && o.closed {
				d.Code, d.Reason = Forbidden, ReasonFeatureNotOffered
				return nil
			}
		}
		if e.ipLimit > 0 && req.IP != "" && v.opt.ClientIPs != nil {
			v.opt.ClientIPs.Saw(k.ID, req.IP, e.ipLimit, now)
		}
		if v.opt.Quota != nil && e.hasQuotas {
			qs, exceeded := v.opt.Quota.Check(ctx, k.ID, e.limits, now)
			for _, s := range qs.States[:qs.N] {
				s.Scope, s.Source = ScopeKey, e.source(s.Name)
				d.addQuota(s, exceeded)
			}
			if exceeded {
				d.Code = UsageExceeded
				return nil
			}
		}
		if sp := o.owner.Suspension; sp != nil && now.Before(sp.Until) && (sp.Feature == "" || sp.Feature == req.Feature) {
			// The sweep suspended the owner (over its own quota: every
			// request; over a feature's: that feature's requests).
			d.addQuota(LimitState{Scope: ScopeOwner, Feature: sp.Feature, Source: o.source(sp.Feature, sp.Limit), Name: sp.Limit,
				Limit: sp.Max, Used: sp.Used, HasUsed: true, ResetAt: sp.Until}, true)
			d.Code = UsageExceeded
			return nil
		}
		if v.opt.Quota != nil && o.hasQuotas && v.ownerQuota(ctx, d, o, "", o.limits, now) {
			d.Code = UsageExceeded
			return nil
		}
		if v.opt.Quota != nil && f != nil && f.hasQuotas && v.ownerQuota(ctx, d, o, req.Feature, f.limits, now) {
			d.Code = UsageExceeded
			return nil
		}
		var spend SpendState
		var cost int64
		if v.opt.Quota != nil && o.spendLimited() {
			cost, _ = o.plan.Cost(req.Feature, 1, req.Units, 0)
			if spend = v.spend(ctx, d, o, cost, now); spend.Refused != "" {
				d.Code = UsageExceeded
				return nil
			}
		}
		d.Code = v.admit(ctx, d, e, o, f, now, req.Units)
		if d.Code != Valid && spend.Reserved {
			v.opt.Quota.Release(o.owner.ID, cost)
		}
	}
	return nil
}

// spend checks the owner's spend cap and credits for a request costing
// cost (reserving it if neither is reached) and adds their states to d.
func (v *Verifier) spend(ctx context.Context, d *Decision, o *ownerEntry, cost int64, now time.Time) SpendState {
	st := v.opt.Quota.Reserve(ctx, o.owner.ID, SpendRequest{Cap: o.spendCap, Granted: o.granted, Since: o.since, Offset: o.offset, Cost: cost}, now)
	if !st.Known {
		return st // fail open, as the quotas do
	}
	refused := st.Refused != ""
	if o.spendCap >= 0 {
		_, end := plan.Month.Bounds(now)
		d.addQuota(LimitState{Scope: ScopeOwner, Source: o.capSrc, Name: LimitSpendPerMonth, Limit: o.spendCap, Used: st.Month, HasUsed: true,
			Remaining: max(o.spendCap-st.Month, 0), ResetAt: end, Currency: o.currency}, refused && st.Refused == LimitSpendPerMonth)
	}
	if o.granted >= 0 && st.Refused != LimitSpendPerMonth {
		d.addQuota(LimitState{Scope: ScopeOwner, Source: SourceCredits, Name: LimitCredits, Limit: o.granted, Used: o.granted - st.Balance, HasUsed: true,
			Remaining: st.Balance, Currency: o.currency}, refused)
	}
	return st
}

// ownerQuota checks the owner's day and month quotas in limits (those on
// feature, if not ""), adds their states to d and reports whether one
// was reached.
func (v *Verifier) ownerQuota(ctx context.Context, d *Decision, o *ownerEntry, feature string, limits plan.Limits, now time.Time) bool {
	qs, exceeded := v.opt.Quota.CheckOwner(ctx, o.owner.ID, feature, limits, now)
	for _, s := range qs.States[:qs.N] {
		s.Scope, s.Source = ScopeOwner, o.source(feature, s.Name)
		d.addQuota(s, exceeded)
	}
	return exceeded
}

// addQuota adds the state of a quota; if exceeded and it is reached, it
// is the refusal, recorded even when the limits are full (in the last
// slot).
func (d *Decision) addQuota(s LimitState, exceeded bool) {
	i := d.addLimit(s)
	if exceeded && s.Used >= s.Limit && d.refused == 0 {
		if i < 0 {
			i = MaxLimits - 1
			d.limits[i] = s
		}
		d.refuse(i)
	}
}

// source returns where the value of the key's limit name comes from.
func (e *entry) source(name string) string {
	if _, ok := e.key.Limits[name]; ok {
		return SourceKeyOverride
	}
	return e.planSrc
}

func hasScope(scopes []string, s string) bool {
	for _, x := range scopes {
		if x == s {
			return true
		}
	}
	return false
}

// admit applies the per-minute limits of the key, of its owner and of the
// owner's feature f (nil for none), all or nothing.
func (v *Verifier) admit(ctx context.Context, d *Decision, e *entry, o *ownerEntry, f *featureEntry, now time.Time, units int64) Code {
	var ls [3]level
	ls[0] = e.perMinute
	n := 1
	if o.perMinute.limited() {
		ls[n] = o.perMinute
		n++
	}
	if f != nil && f.perMinute.limited() {
		ls[n] = f.perMinute
		n++
	}
	ok := v.admitLevels(ctx, ls[:n], e.key.Owner, now, units)
	reset := now.Truncate(time.Minute).Add(time.Minute)
	for i := range ls[:n] {
		l := &ls[i]
		if l.rpm >= 0 {
			j := d.addLimit(LimitState{Scope: l.scope, Feature: l.feature, Source: l.rpmSrc, Name: "requests_per_minute", Limit: l.rpm, Remaining: max(l.reqsLeft, 0), ResetAt: reset})
			if !ok && l.refusedReqs {
				d.refuse(j)
			}
		}
		if l.upm >= 0 {
			j := d.addLimit(LimitState{Scope: l.scope, Feature: l.feature, Source: l.upmSrc, Name: "units_per_minute", Limit: l.upm, Remaining: max(l.unitsLeft, 0), ResetAt: reset})
			if !ok && l.refusedUnits {
				d.refuse(j)
			}
		}
	}
	if !ok {
		d.RetryAfter = reset.Sub(now)
		return RateLimited
	}
	return Valid
}

// lookup returns the cache entry for h, loading it if it is missing or
// older than the TTL; nil means no key has hash h.
func (v *Verifier) lookup(ctx context.Context, h apikey.Hash, now time.Time) (*entry, error) {
	if e, ok := cached(v.cache, h, now); ok {
		if now.Sub(e.loadedAt) < v.opt.TTL {
			v.countLookup(CacheHit)
			return e, nil
		}
		v.countLookup(CacheMiss)
		fresh, err := v.load(ctx, h)
		if err != nil {
			if errs.Is(err, errs.Unavailable) && now.Sub(e.loadedAt) < v.opt.TTL+v.opt.MaxStale {
				return e, nil // ride out a short outage on the cached record
			}
			return nil, err
		}
		return fresh, nil
	}
	if at, ok := v.miss.Get(h); ok && now.Sub(at) < v.opt.TTL {
		v.countLookup(CacheNegativeHit)
		return nil, nil
	}
	v.countLookup(CacheMiss)
	return v.load(ctx, h)
}

func (v *Verifier) countLookup(cacheResult int) { v.lookups[cacheResult].Inc() }

// load reads the key with hash h once for all concurrent callers and
// caches the result (or the miss).
func (v *Verifier) load(ctx context.Context, h apikey.Hash) (*entry, error) {
	res, err, _ := v.loads.Do(string(h[:]), func() (any, error) {
		now := v.clock.Now()
		// A caller that missed the cache just before another caller's
		// load cached h, and asks after that load's flight ended, gets
		// its result rather than a second read.
		if e, ok := v.cache.Peek(h); ok && now.Sub(e.loadedAt) < v.opt.TTL {
			return e, nil
		}
		if at, ok := v.miss.Peek(h); ok && now.Sub(at) < v.opt.TTL {
			return (*entry)(nil), nil
		}
		k, err := v.store.LookupHash(context.WithoutCancel(ctx), h)
		if errs.Is(err, errs.NotFound) {
			v.cache.Remove(h)
			v.miss.Add(h, now)
			return (*entry)(nil), nil
		}
		if err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "the key store is unreachable")
		}
		return v.put(k, now), nil
	})
	if err != nil {
		return nil, err
	}
	return res.(*entry), nil
}

// put caches k unless a newer version of it is cached already, and returns
// the cached entry.
func (v *Verifier) put(k *store.Key, now time.Time) *entry {
	win := &window{}
	if old, ok := v.cache.Peek(k.Hash); ok {
		if old.key.UpdatedAt.After(k.UpdatedAt) {
			return old
		}
		win = old.perMinute.win
	}
	e := &entry{key: k, loadedAt: now, planSrc: "plan " + k.Plan}
	e.limits = k.Limits
	var planLimits plan.Limits
	if p, ok := v.plans.Get(k.Plan); ok {
		planLimits = p.Limits
		e.limits = p.Limits.With(k.Limits)
		// The distinct-IPs rule skips browser keys (referrer-restricted)
		// and IP-restricted keys, as the sweep does (internal/sweep).
		if r := p.Abuse.DistinctIPs; r != nil && len(k.Restrictions.AllowedReferrers) == 0 && len(k.Restrictions.AllowedIPs) == 0 {
			e.ipLimit = r.MaxPerDay + 1
		}
	} else {
		v.opt.Logger.Warn("key's plan is not in the plan catalog; only its own limits apply", "key_id", k.ID, "plan", k.Plan)
	}
	e.perMinute = perMinute(win, ScopeKey, "", planLimits, k.Limits, e.planSrc, SourceKeyOverride)
	e.perMinute.buckets(bucketKey + k.ID)
	e.hasQuotas = hasQuota(e.limits)
	// Stored restrictions were validated when written; a parse failure
	// here means a corrupt record, which must not widen access.
	restr, _, _, err := restrict.Parse(k.Restrictions.AllowedIPs, k.Restrictions.AllowedReferrers)
	if err != nil {
		v.opt.Logger.Error("stored restrictions do not parse; refusing the key's requests", "key_id", k.ID, "error", err)
		restr, _, _, _ = restrict.Parse([]string{"0.0.0.0/32"}, []string{"invalid.invalid"})
	}
	e.restr = restr
	if q := k.Quarantine; q.InForce() {
		e.quarantine, e.quarantineUntil = newIPList(q.AllowedIPs), q.Until
	}
	v.cache.Add(k.Hash, e)
	v.miss.Remove(k.Hash)
	return e
}

// fresh makes sure the change feed was polled within SyncInterval,
// polling now if not. It fails (closed) only when no poll has succeeded
// for MaxStale.
func (v *Verifier) fresh(ctx context.Context, now time.Time) error {
	last := *v.lastSync.Load()
	if now.Sub(last) < v.opt.SyncInterval {
		return nil
	}
	err := v.Sync(ctx)
	if err == nil {
		return nil
	}
	if now.Sub(last) >= v.opt.MaxStale {
		return errs.Wrap(errs.Unavailable, err, "the key store has been unreachable for too long to verify safely")
	}
	return nil
}

// Sync polls the change feed once and applies it to the cache. Concurrent
// calls share one poll.
func (v *Verifier) Sync(ctx context.Context) error {
	_, err, _ := v.loads.Do("\x00sync", func() (any, error) {
		v.syncMu.Lock()
		defer v.syncMu.Unlock()
		start := v.clock.Now()
		last := *v.lastSync.Load()
		if start.Sub(last) < v.opt.SyncInterval/2 {
			return nil, nil // a poll just finished
		}
		// Read every change stamped since the previous poll began, less
		// the overlap: late commits and lagging writer clocks land there.
		since := last.Add(-v.opt.FeedOverlap)
		cursor, after := since, ""
		for {
			ks, err := v.store.ChangedKeys(context.WithoutCancel(ctx), cursor, after, 500)
			if err != nil {
				return nil, err
			}
			for _, k := range ks {
				v.apply(k, start)
			}
			if len(ks) < 500 {
				break
			}
			cursor, after = ks[len(ks)-1].UpdatedAt, ks[len(ks)-1].ID
		}
		// Owners' changes (plan, overrides) reach verify the same way.
		cursor, after = since, ""
		for {
			changed, err := v.store.ChangedOwners(context.WithoutCancel(ctx), cursor, after, 500)
			if err != nil {
				return nil, err
			}
			for _, o := range changed {
				v.applyOwner(o, start)
			}
			if len(changed) < 500 {
				break
			}
			cursor, after = changed[len(changed)-1].UpdatedAt, changed[len(changed)-1].ID
		}
		v.lastSync.Store(&start)
		return nil, nil
	})
	return err
}

// apply brings the cache up to date with a changed key: a cached older
// version is replaced, a remembered miss for its hash is forgotten.
func (v *Verifier) apply(k *store.Key, now time.Time) {
	v.miss.Remove(k.Hash)
	// Equal timestamps are re-applied: two changes can share a
	// microsecond, and re-applying the same version is harmless.
	if old, ok := v.cache.Peek(k.Hash); ok && !k.UpdatedAt.Before(old.key.UpdatedAt) {
		v.put(k, now)
	}
}

// KeyChanged applies a change committed by this process (keys.Service
// calls it, as its KeyObserver) the way a poll applies the feed's, so that
// verify answers from the new state at once rather than after the next
// poll. Other processes still learn of the change from the feed.
func (v *Verifier) KeyChanged(k *store.Key) { v.apply(k, v.clock.Now()) }

// Run polls the change feed every SyncInterval until ctx ends.
func (v *Verifier) Run(ctx context.Context) {
	t := time.NewTicker(v.opt.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.Sync(ctx); err != nil && ctx.Err() == nil {
				v.opt.Logger.Warn("polling the key change feed", "error", err)
			}
		}
	}
}

// NegativeCacheLen returns how many unknown hashes are remembered.
func (v *Verifier) NegativeCacheLen() int { return v.miss.Len() }
