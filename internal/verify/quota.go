package verify

import (
	"context"
	"log/slog"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
)

// Quotas is verify's view of metered usage against day and month quotas
// (Quota). It keeps each key's current day and month totals in a
// bounded cache and refreshes an entry in the background once it is older
// than Staleness, so a verify never waits on the ledger except for the
// first request of a key with quotas. A verify therefore sees usage at most
// Staleness plus one ledger read old, on top of the metering pipeline's own
// lag (webhook → queue → RecordUsage).
//
// If the ledger cannot be read, the quota check passes (the key is not
// refused for it): quotas are also enforced persistently by the sweep, and
// refusing every request of a paying key during a ledger outage is worse
// than admitting a few over quota.
type Quotas struct {
	ledger    QuotaReader
	clock     clock.Clock
	staleness time.Duration
	log       *slog.Logger

	cache *lru.Cache[string, *quotaEntry]
	loads singleflight.Group
}

type quotaEntry struct {
	mu         sync.Mutex
	dayStart   time.Time
	day        ledger.Totals
	month      ledger.Totals
	monthAt    time.Time
	fetchedAt  time.Time
	refreshing bool // a background refresh is running
}

var _ Quota = (*Quotas)(nil)

// QuotaReader reads metered totals; a ledger.Ledger is one.
type QuotaReader interface {
	// Totals returns key id's totals in the window of kind w starting at
	// start (zero if nothing was counted).
	Totals(ctx context.Context, keyID string, w plan.Window, start time.Time) (ledger.Totals, error)
}

// NewQuotas returns a Quotas refreshing entries older than staleness
// (default 5 s).
func NewQuotas(l QuotaReader, clk clock.Clock, staleness time.Duration, log *slog.Logger) *Quotas {
	if staleness <= 0 {
		staleness = 5 * time.Second
	}
	cache, _ := lru.New[string, *quotaEntry](100_000)
	return &Quotas{ledger: l, clock: clk, staleness: staleness, log: log, cache: cache}
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
func (q *Quotas) Check(id string, limits plan.Limits, now time.Time) (states QuotaStates, exceeded bool) {
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
	day, month, ok := q.totals(id, now)
	if !ok {
		return states, false
	}
	_, dayEnd := plan.Day.Bounds(now)
	_, monthEnd := plan.Month.Bounds(now)
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
		states.Add(LimitState{Name: ql.name, Limit: limit, Used: used, HasUsed: true, Remaining: max(limit-used, 0), ResetAt: end})
		if used >= limit {
			exceeded = true
		}
	}
	return states, exceeded
}

// totals returns the key's totals in the day and month containing now.
func (q *Quotas) totals(id string, now time.Time) (day, month ledger.Totals, ok bool) {
	dayStart, _ := plan.Day.Bounds(now)
	monthStart, _ := plan.Month.Bounds(now)
	e, cached := q.cache.Get(id)
	if !cached {
		var err error
		if e, err = q.load(id, now); err != nil {
			q.log.Warn("reading usage for quotas; not enforcing them for this request", "key_id", id, "error", err)
			return day, month, false
		}
	}
	e.mu.Lock()
	stale := now.Sub(e.fetchedAt) >= q.staleness && !e.refreshing
	if stale {
		e.refreshing = true
	}
	if e.dayStart.Equal(dayStart) {
		day = e.day // a new day starts at zero until the refresh lands
	}
	if e.monthAt.Equal(monthStart) {
		month = e.month
	}
	e.mu.Unlock()
	if stale {
		go func() {
			q.load(id, now)
			e.mu.Lock()
			e.refreshing = false
			e.mu.Unlock()
		}()
	}
	return day, month, true
}

// load reads a key's totals once for all concurrent callers.
func (q *Quotas) load(id string, now time.Time) (*quotaEntry, error) {
	v, err, _ := q.loads.Do(id, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dayStart, _ := plan.Day.Bounds(now)
		monthStart, _ := plan.Month.Bounds(now)
		day, err := q.ledger.Totals(ctx, id, plan.Day, dayStart)
		if err != nil {
			return nil, err
		}
		month, err := q.ledger.Totals(ctx, id, plan.Month, monthStart)
		if err != nil {
			return nil, err
		}
		e, ok := q.cache.Peek(id)
		if !ok {
			e = &quotaEntry{}
		}
		e.mu.Lock()
		e.dayStart, e.day, e.monthAt, e.month, e.fetchedAt = dayStart, day, monthStart, month, now
		e.mu.Unlock()
		if !ok {
			q.cache.Add(id, e)
		}
		return e, nil
	})
	if err != nil {
		if e, ok := q.cache.Peek(id); ok {
			return e, err
		}
		return nil, err
	}
	return v.(*quotaEntry), nil
}
