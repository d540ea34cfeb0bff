package verify

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/plan"
)

// Spend limits: an owner's monthly spend cap (limit spend_per_month) and
// its prepaid credit balance (limit credits). Both are amounts in
// micro-units of the owner's plan currency; the LimitState of either
// carries the currency, which tells a reader that its figures are money.
//
// Verify reads the owner's spend from the same cached owner usage as the
// owner's quotas (at most Staleness old), and adds to it what this
// process has reserved for the requests it admitted since: each admitted
// priced request reserves its estimated cost (one request and the
// request's units at the owner's prices for the feature). A reservation
// counts until two reads of the owner's usage have landed after it (by
// then its event is normally in the ledger), so it may count twice for a
// while (refusing early, never late), and the check and the reservation
// are one step under the owner entry's lock: one process never admits
// past the cap more than the request that reaches it.
//
// The overshoot bound, in docs/operations.md: across N instances, spend
// can pass the cap by at most what the other N-1 instances admit before
// their next read sees it (one Staleness interval plus the metering
// lag of their traffic), plus one request per instance, plus the
// difference between metered and estimated cost of requests in flight.

// Spend limit names.
const (
	LimitSpendPerMonth = "spend_per_month"
	LimitCredits       = "credits"
)

// SpendRequest is what Reserve checks for one request of an owner.
type SpendRequest struct {
	Cap     int64     // the monthly cap; < 0 for none
	Granted int64     // the prepaid credits granted; < 0 if not prepaid
	Since   time.Time // the start of the month of the first top-up
	Offset  int64     // Since's month spend before the first top-up
	Cost    int64     // the request's estimated cost, reserved if it is admitted
}

// SpendState is the outcome of Reserve.
type SpendState struct {
	Known    bool  // the owner's spend could be read: if not, nothing was checked
	Month    int64 // spend this month, with this process's reservations
	Balance  int64 // credits left (for a prepaid owner)
	Refused  string
	Reserved bool // Cost was reserved (Release undoes it)
}

// Reserve checks the owner's spend against r's cap and credits and, if
// neither is reached, reserves r.Cost.
func (q *Quotas) Reserve(ctx context.Context, owner string, r SpendRequest, now time.Time) SpendState {
	s := subject{id: owner, owner: true}
	if r.Granted >= 0 {
		s.since = r.Since
	}
	e, ok := q.entry(ctx, s, now)
	if !ok {
		return SpendState{}
	}
	monthStart, _ := plan.Month.Bounds(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	st := SpendState{Known: true}
	if e.monthAt.Equal(monthStart) {
		st.Month = e.month.Cost
	}
	st.Month += e.reserved + e.reservedPrev
	if r.Cap >= 0 && st.Month >= r.Cap {
		st.Refused = LimitSpendPerMonth
		return st
	}
	if r.Granted >= 0 {
		// entry read the months from Since to this one for r.Since.
		st.Balance = r.Granted - (e.before + st.Month - r.Offset)
		if st.Balance <= 0 {
			st.Balance = 0
			st.Refused = LimitCredits
			return st
		}
	}
	if r.Cost > 0 {
		e.reserved += r.Cost
		st.Reserved = true
	}
	return st
}

// Release gives back a reservation of Reserve for a request that was
// refused after it (by a per-minute limit).
func (q *Quotas) Release(owner string, cost int64) {
	e, ok := q.owners.Peek(owner)
	if !ok {
		return
	}
	e.mu.Lock()
	e.reserved = max(e.reserved-cost, 0)
	e.mu.Unlock()
}
