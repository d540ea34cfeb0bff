package verify

import (
	"context"
	"log/slog"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
)

// Quotas is verify's view of metered usage against day and month quotas
// (Quota): a key's, its owner's and its owner's on one feature. It keeps
// each key's and each owner's current day and month usage in bounded
// caches and refreshes an entry in the background once it is older
// than Staleness, so a verify never waits on the ledger except for the
// first request of a key with quotas. A verify therefore sees usage at most
// Staleness plus one ledger read old, on top of the metering pipeline's own
// lag (webhook → queue → RecordUsage).
//
// If the ledger cannot be read, the quota check passes (the key is not
// refused for it): quotas are also enforced persistently by the sweep, and
// refusing every request of a paying key during a ledger outage is worse
// than admitting a few over quota.
//
// # Contexts
//
// The first request of a key waits for its read (a read-through), on its
// own context: it stops waiting when that context ends, and the check
// passes. The read itself is shared by every request of the key that comes
// meanwhile (single flight), so it runs on the first request's context
// without its cancellation (its values, such as the trace, are kept) and
// for at most 5 s: one caller giving up does not fail the others. A
// background refresh outlives the request that found the entry stale, so
// it too runs on that request's context without its cancellation, for at
// most 5 s. Stop, called when the process shuts down, waits for the
// running refreshes, so none reads a ledger being closed.
type Quotas struct {
	ledger    QuotaReader
	staleness time.Duration
	log       *slog.Logger

	cache  *lru.Cache[string, *quotaEntry] // by key id
	owners *lru.Cache[string, *quotaEntry] // by owner id
	loads  singleflight.Group

	refreshMu sync.Mutex     // guards stopped and the Add of refreshes
	stopped   bool           // Stop was called: no refresh starts
	refreshes sync.WaitGroup // running background refreshes
}

// quotaReadTimeout bounds one read of a key's totals.
const quotaReadTimeout = 5 * time.Second

type quotaEntry struct {
	recency
	mu         sync.Mutex
	dayStart   time.Time
	day        ledger.Usage // a key's has no Features
	month      ledger.Usage
	monthAt    time.Time
	fetchedAt  time.Time
	refreshing bool // a background refresh is running
	// For an owner's spend (spend.go): the spend of the whole months from
	// since to monthAt (read only for a prepaid owner, since not zero),
	// and this process's reservations since the last read and the one
	// before it.
	since                  time.Time
	before                 int64
	reserved, reservedPrev int64
}

var _ Quota = (*Quotas)(nil)

// QuotaReader reads metered totals; a ledger.Ledger is one.
type QuotaReader interface {
	// Totals returns key id's totals in the window of kind w starting at
	// start (zero if nothing was counted).
	Totals(ctx context.Context, keyID string, w plan.Window, start time.Time) (ledger.Totals, error)
	// OwnerUsage returns owner's usage, and its split by feature, in the
	// window of kind w starting at start.
	OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (ledger.Usage, error)
}

// subject is whose usage a quota entry holds: a key's or an owner's.
type subject struct {
	id    string
	owner bool
	since time.Time // an owner's first top-up month: read its spend since then too
}

// flightKey is the subject's key in the single-flight group, which keys
// and owners share: no key id starts with a NUL.
func (s subject) flightKey() string {
	if s.owner && !s.since.IsZero() {
		return "\x00" + s.since.Format("2006-01") + "\x00" + s.id
	}
	if s.owner {
		return "\x00" + s.id
	}
	return s.id
}

// NewQuotas returns a Quotas refreshing entries older than staleness
// (default 5 s).
func NewQuotas(l QuotaReader, staleness time.Duration, log *slog.Logger) *Quotas {
	if staleness <= 0 {
		staleness = 5 * time.Second
	}
	cache, _ := lru.New[string, *quotaEntry](100_000)
	owners, _ := lru.New[string, *quotaEntry](100_000)
	return &Quotas{ledger: l, staleness: staleness, log: log, cache: cache, owners: owners}
}

// quotaLimits are the day and month limits, named once so that a check
// builds no strings.
var quotaLimits = func() (out []struct {
	name, metric string
	w            plan.Window
}) {
	for _, m := range plan.Metrics {
		for _, w := range []plan.Window{plan.Day, plan.Month} {
			out = append(out, struct {
				name, metric string
				w            plan.Window
			}{plan.LimitName(m, w), m, w})
		}
	}
	return out
}()

// Check implements Quota.
func (q *Quotas) Check(ctx context.Context, id string, limits plan.Limits, now time.Time) (states QuotaStates, exceeded bool) {
	return q.check(ctx, subject{id: id}, "", limits, now)
}

// CheckOwner implements Quota.
func (q *Quotas) CheckOwner(ctx context.Context, owner, feature string, limits plan.Limits, now time.Time) (states QuotaStates, exceeded bool) {
	return q.check(ctx, subject{id: owner, owner: true}, feature, limits, now)
}

// check compares the subject's usage (its part of feature, if not "")
// with the day and month limits in limits.
func (q *Quotas) check(ctx context.Context, s subject, feature string, limits plan.Limits, now time.Time) (states QuotaStates, exceeded bool) {
	found := false
	for _, ql := range quotaLimits {
		if _, ok := limits[ql.name]; ok {
			found = true
			break
		}
	}
	if !found {
		return states, false
	}
	dayStart, dayEnd := plan.Day.Bounds(now)
	monthStart, monthEnd := plan.Month.Bounds(now)
	day, month, ok := q.totals(ctx, s, feature, now, dayStart, monthStart)
	if !ok {
		return states, false
	}
	for _, ql := range quotaLimits {
		limit, has := limits[ql.name]
		if !has {
			continue
		}
		t, end := day, dayEnd
		if ql.w == plan.Month {
			t, end = month, monthEnd
		}
		used := t.Get(ql.metric)
		states.Add(LimitState{Feature: feature, Name: ql.name, Limit: limit, Used: used, HasUsed: true, Remaining: max(limit-used, 0), ResetAt: end})
		if used >= limit {
			exceeded = true
		}
	}
	return states, exceeded
}

// totals returns the subject's totals (its part of feature, if not "") in
// the day and month containing now, which start at dayStart and monthStart.
func (q *Quotas) totals(ctx context.Context, s subject, feature string, now, dayStart, monthStart time.Time) (day, month ledger.Totals, ok bool) {
	e, ok := q.entry(ctx, s, now)
	if !ok {
		return day, month, false
	}
	part := func(u ledger.Usage) ledger.Totals {
		if feature == "" {
			return u.Totals
		}
		return u.Features[feature]
	}
	e.mu.Lock()
	if e.dayStart.Equal(dayStart) {
		day = part(e.day) // a new day starts at zero until the refresh lands
	}
	if e.monthAt.Equal(monthStart) {
		month = part(e.month)
	}
	e.mu.Unlock()
	return day, month, true
}

// entry returns the subject's cache entry, reading it through if it is
// missing (or, for an owner's spend since s.since, read for another
// since), and starting a background refresh if it is stale.
func (q *Quotas) entry(ctx context.Context, s subject, now time.Time) (*quotaEntry, bool) {
	cache := q.cache
	if s.owner {
		cache = q.owners
	}
	e, ok := cached(cache, s.id, now)
	if ok && !s.since.IsZero() {
		e.mu.Lock()
		ok = e.since.Equal(s.since)
		e.mu.Unlock()
	}
	if !ok {
		var err error
		if e, err = q.readThrough(ctx, s, now); err != nil {
			if ctx.Err() == nil {
				q.log.WarnContext(ctx, "reading usage for quotas; not enforcing them for this request", "id", s.id, "owner", s.owner, "error", err)
			}
			return nil, false
		}
	}
	e.mu.Lock()
	stale := now.Sub(e.fetchedAt) >= q.staleness && !e.refreshing
	if stale {
		e.refreshing = true
	}
	e.mu.Unlock()
	if stale {
		q.refresh(ctx, e, s, now)
	}
	return e, true
}

// readThrough reads the totals of a key that has no cache entry, for a
// request that waits for them until its ctx ends.
func (q *Quotas) readThrough(ctx context.Context, s subject, now time.Time) (*quotaEntry, error) {
	ch := q.loads.DoChan(s.flightKey(), func() (any, error) { return q.read(context.WithoutCancel(ctx), s, now) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*quotaEntry), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// refresh rereads e's totals in the background, on ctx without its
// cancellation, unless Stop was called.
func (q *Quotas) refresh(ctx context.Context, e *quotaEntry, s subject, now time.Time) {
	q.refreshMu.Lock()
	if q.stopped {
		q.refreshMu.Unlock()
		e.mu.Lock()
		e.refreshing = false
		e.mu.Unlock()
		return
	}
	q.refreshes.Add(1)
	q.refreshMu.Unlock()
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer q.refreshes.Done()
		q.loads.Do(s.flightKey(), func() (any, error) { return q.read(ctx, s, now) })
		e.mu.Lock()
		e.refreshing = false
		e.mu.Unlock()
	}()
}

// Stop makes later stale entries keep their totals instead of starting a
// refresh, and waits for the refreshes running. Checks go on working (a
// key read for the first time is still read through).
func (q *Quotas) Stop() {
	q.refreshMu.Lock()
	q.stopped = true
	q.refreshMu.Unlock()
	q.refreshes.Wait()
}

// read reads a subject's usage for at most quotaReadTimeout and caches
// it. It is called through q.loads, once at a time per subject.
func (q *Quotas) read(ctx context.Context, s subject, now time.Time) (*quotaEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, quotaReadTimeout)
	defer cancel()
	dayStart, _ := plan.Day.Bounds(now)
	monthStart, _ := plan.Month.Bounds(now)
	day, err := q.usage(ctx, s, plan.Day, dayStart)
	if err != nil {
		return nil, err
	}
	month, err := q.usage(ctx, s, plan.Month, monthStart)
	if err != nil {
		return nil, err
	}
	cache := q.cache
	if s.owner {
		cache = q.owners
	}
	e, ok := cache.Peek(s.id)
	if !ok {
		e = &quotaEntry{}
	}
	since := s.since
	if since.IsZero() && s.owner {
		e.mu.Lock()
		since = e.since // a refresh for a quota keeps the spend's since
		e.mu.Unlock()
	}
	var before int64
	if !since.IsZero() {
		if before, err = ledger.CostOfMonths(ctx, q.ledger, s.id, since, monthStart); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	e.dayStart, e.day, e.monthAt, e.month, e.fetchedAt = dayStart, day, monthStart, month, now
	e.since, e.before = since, before
	e.reservedPrev, e.reserved = e.reserved, 0
	e.mu.Unlock()
	if !ok {
		cache.Add(s.id, e)
	}
	return e, nil
}

// usage reads the subject's usage in one window.
func (q *Quotas) usage(ctx context.Context, s subject, w plan.Window, start time.Time) (ledger.Usage, error) {
	if s.owner {
		return q.ledger.OwnerUsage(ctx, s.id, w, start)
	}
	t, err := q.ledger.Totals(ctx, s.id, w, start)
	return ledger.Usage{Totals: t}, err
}
