package owners

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// Audit actions of an owner's money.
const (
	ActionCredit = "owner.credit"
)

// CapPatch is the spend_cap field of a PATCH: absent keeps the owner's
// cap, null clears it (the plan's default applies again), an object sets
// it.
type CapPatch struct {
	Set  bool               // the field was present
	Spec *plan.SpendCapSpec // nil: clear
}

// UnmarshalJSON implements json.Unmarshaler.
func (c *CapPatch) UnmarshalJSON(b []byte) error {
	c.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		c.Spec = nil
		return nil
	}
	var spec plan.SpendCapSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	c.Spec = &spec
	return nil
}

// parseCap validates a PATCH's spend cap: nil for a clear.
func parseCap(c CapPatch) (*int64, error) {
	if c.Spec == nil {
		return nil, nil
	}
	m, err := plan.ParseMicros(c.Spec.Monthly, plan.MaxAmount)
	if err != nil {
		return nil, invalid("spend_cap.monthly: %v (a decimal amount such as \"25.00\", at most 6 decimals)", err)
	}
	return &m, nil
}

// creditIDPattern is the syntax of a top-up id: the caller's own
// reference (a payment id), unique per owner.
var creditIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// CreditRequest is a prepaid top-up.
type CreditRequest struct {
	ID     string `json:"id"`
	Amount string `json:"amount"`
}

// AddCredit grants a prepaid top-up to owner id, once per top-up id: a
// replay with the same amount changes nothing and reports created false;
// one with a different amount is a Conflict. The first top-up of an owner
// makes it prepaid from then: the month's spend so far is not drawn from
// its credits.
func (s *Service) AddCredit(ctx context.Context, actor, id string, req CreditRequest) (o *store.Owner, grant store.CreditGrant, created bool, err error) {
	if !creditIDPattern.MatchString(req.ID) {
		return nil, grant, false, invalid("id must be 1 to 128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit (your payment's reference); got %.140q", req.ID)
	}
	amount, err := plan.ParseMicros(req.Amount, plan.MaxAmount)
	if err != nil {
		return nil, grant, false, invalid("amount: %v (a decimal amount such as \"10.00\", at most 6 decimals)", err)
	}
	if amount == 0 {
		return nil, grant, false, invalid("amount must be more than zero")
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, grant, false, err
	}
	now := s.now()
	monthStart, _ := plan.Month.Bounds(now)
	var offset int64
	if cur.Billing == nil || cur.Billing.Credits == nil {
		if s.Spend == nil {
			return nil, grant, false, errs.E(errs.Internal, "owners: no spend reader to open the credits of owner %s", id)
		}
		u, err := s.Spend.OwnerUsage(ctx, id, plan.Month, monthStart)
		if err != nil {
			return nil, grant, false, err
		}
		offset = u.Cost
	}
	grant = store.CreditGrant{ID: req.ID, Amount: amount, At: now}
	updated, err := s.Store.UpdateOwner(ctx, id, func(o *store.Owner) (*store.AuditEntry, error) {
		b := store.OwnerBilling{}
		if o.Billing != nil {
			b = *o.Billing
		}
		c := store.Credits{Since: monthStart, Offset: offset}
		if b.Credits != nil {
			c = *b.Credits
			c.Grants = append([]store.CreditGrant(nil), c.Grants...)
		}
		for _, g := range c.Grants {
			if g.ID != req.ID {
				continue
			}
			if g.Amount != amount {
				return nil, errs.E(errs.Conflict, "top-up %s was already applied with amount %s; a replay must carry the same amount (use a new id for a new top-up)", req.ID, plan.FormatMicros(g.Amount))
			}
			grant = g
			return nil, errNoChange
		}
		if len(c.Grants) >= store.MaxCreditGrants {
			return nil, errs.E(errs.Conflict, "owner %s holds the most top-ups (%d)", id, store.MaxCreditGrants)
		}
		c.Grants = append(c.Grants, grant)
		b.Credits = &c
		o.Billing = &b
		o.UpdatedAt = now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionCredit,
			Details: map[string]string{"owner": id, "credit": req.ID, "amount": plan.FormatMicros(amount)}}, nil
	})
	if errors.Is(err, errNoChange) {
		o, err := s.Store.GetOwner(ctx, id)
		return o, grant, false, err
	}
	if err != nil {
		return nil, grant, false, err
	}
	if s.Observer != nil { // nothing to tell the owner: its platform made the top-up
		s.Observer.OwnerChanged(updated)
	}
	return updated, grant, true, nil
}

// Balance is an owner's money this month: its spend, its cap and, if it
// is prepaid, its credits.
type Balance struct {
	Currency string
	Month    time.Time
	Spend    int64  // the month's spend
	Cap      *int64 // the monthly cap, nil for none
	CapFrom  string // "plan <name>" or "owner override"
	Prepaid  bool
	Granted  int64 // the credits granted
	Credits  int64 // what remains of them (>= 0)
}

// capOf returns owner o's monthly spend cap on plan p and where it comes
// from, or nil.
func capOf(o *store.Owner, p *plan.Plan) (*int64, string) {
	if b := o.Billing; b != nil && b.SpendCap != nil {
		c := *b.SpendCap
		return &c, "owner override"
	}
	if c, ok := p.DefaultSpendCap(); ok {
		return &c, "plan " + o.Plan
	}
	return nil, ""
}

// Money returns owner o's spend in the month starting at month (a UTC
// month start) with its cap and, for a prepaid owner, its credit balance
// now.
func (s *Service) Money(ctx context.Context, o *store.Owner, month time.Time) (Balance, ledger.Usage, error) {
	p, ok := s.Plans.Get(o.Plan)
	if !ok {
		p = &plan.Plan{}
	}
	bal := Balance{Currency: p.Currency, Month: month}
	if bal.Currency == "" {
		bal.Currency = plan.DefaultCurrency
	}
	if s.Spend == nil {
		return bal, ledger.Usage{}, errs.E(errs.Internal, "owners: no spend reader to read the spend of owner %s", o.ID)
	}
	u, err := s.Spend.OwnerUsage(ctx, o.ID, plan.Month, month)
	if err != nil {
		return bal, u, err
	}
	bal.Spend = u.Cost
	bal.Cap, bal.CapFrom = capOf(o, p)
	b := o.Billing
	bal.Prepaid = p.Prepaid || (b != nil && b.Credits != nil)
	if !bal.Prepaid {
		return bal, u, nil
	}
	if b == nil || b.Credits == nil {
		return bal, u, nil // prepaid by plan, never topped up: nothing to draw
	}
	c := b.Credits
	bal.Granted = c.Granted()
	// The balance is now's: the spend of the months from Since to the
	// current one, and of the current one (u, when month is it).
	current, _ := plan.Month.Bounds(s.now())
	before, err := ledger.CostOfMonths(ctx, s.Spend, o.ID, c.Since, current)
	if err != nil {
		return bal, u, err
	}
	now := u.Cost
	if !month.Equal(current) {
		cu, err := s.Spend.OwnerUsage(ctx, o.ID, plan.Month, current)
		if err != nil {
			return bal, u, err
		}
		now = cu.Cost
	}
	bal.Credits = max(bal.Granted-(before+now-c.Offset), 0)
	return bal, u, nil
}

// SpendThresholds are the percentages of its monthly cap an owner's spend
// is told at (spend.threshold), once each per month.
var SpendThresholds = []int{50, 80, 100}

// SpendAlert is one spend threshold an owner's spend reached.
type SpendAlert struct {
	Owner     string `json:"owner"`
	Threshold int    `json:"threshold"`
	Spend     string `json:"spend"`
	Cap       string `json:"cap"`
	Currency  string `json:"currency"`
}

// SpendNotifier tells an owner that its spend reached a threshold of its
// cap; notify.OwnerEvents is one. It must deduplicate by owner, month and
// threshold: a crash between telling and recording tells again.
type SpendNotifier interface {
	SpendThreshold(ctx context.Context, d notify.SpendThresholdData, at time.Time) error
}

// AlertSpend tells owner o of every spend threshold of its cap that its
// spend this month reached and that was not told this month, lowest
// first, and records the highest told on the owner (so each is told
// once per month). dry reports without telling or recording.
func (s *Service) AlertSpend(ctx context.Context, o *store.Owner, tell SpendNotifier, dry bool) ([]SpendAlert, error) {
	if p, ok := s.Plans.Get(o.Plan); !ok {
		return nil, nil
	} else if c, _ := capOf(o, p); c == nil {
		return nil, nil
	}
	now := s.now()
	month, _ := plan.Month.Bounds(now)
	bal, _, err := s.Money(ctx, o, month)
	if err != nil || bal.Cap == nil {
		return nil, err
	}
	told := 0
	if b := o.Billing; b != nil && b.AlertMonth.Equal(month) {
		told = b.AlertPercent
	}
	var out []SpendAlert
	for _, th := range SpendThresholds {
		// spend/cap >= th%, in integers; a zero cap is reached by any spend.
		if th <= told || bal.Spend == 0 || bal.Spend*100 < *bal.Cap*int64(th) {
			continue
		}
		a := SpendAlert{Owner: o.ID, Threshold: th, Spend: plan.FormatMicros(bal.Spend), Cap: plan.FormatMicros(*bal.Cap), Currency: bal.Currency}
		if !dry && tell != nil {
			d := notify.SpendThresholdData{Owner: o.ID, Month: month, Threshold: th, Spend: a.Spend, Cap: a.Cap, Currency: a.Currency}
			if err := tell.SpendThreshold(ctx, d, now); err != nil {
				return out, err
			}
		}
		out = append(out, a)
		told = th
	}
	if len(out) == 0 || dry {
		return out, nil
	}
	_, err = s.Store.UpdateOwner(ctx, o.ID, func(cur *store.Owner) (*store.AuditEntry, error) {
		b := store.OwnerBilling{}
		if cur.Billing != nil {
			b = *cur.Billing
		}
		if b.AlertMonth.Equal(month) && b.AlertPercent >= told {
			return nil, errNoChange // another run recorded it
		}
		b.AlertMonth, b.AlertPercent = month, told
		cur.Billing = &b
		cur.UpdatedAt = now
		return nil, nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	return out, err
}
