package owners

import (
	"context"
	"strconv"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// Audit actions of the sweep's owner changes.
const (
	ActionSuspend = "owner.suspend"
	ActionLift    = "owner.lift"
)

// Reasons a suspension is lifted.
const (
	ReasonWindowReset = "window_reset" // the quota's window ended
	ReasonLimitRaised = "limit_raised" // the owner's limits no longer refuse its usage
)

// Effective returns the owner's own limits and its limits on each
// feature its plan offers or its overrides name: the plan's with the
// owner's overrides. A plan missing from the catalog contributes
// nothing.
func (s *Service) Effective(o *store.Owner) (own plan.Limits, features map[string]plan.Limits) {
	p, ok := s.Plans.Get(o.Plan)
	if !ok {
		p = &plan.Plan{}
	}
	own = p.OwnerLimits.With(o.Limits)
	features = map[string]plan.Limits{}
	for f, l := range p.Features {
		features[f] = l.With(o.Features[f])
	}
	for f, l := range o.Features {
		if _, ok := features[f]; !ok {
			features[f] = l
		}
	}
	return own, features
}

// Suspend suspends owner judged.ID over sp, if the owner is still as the
// sweep judged it (same UpdatedAt) and not suspended: one atomic write of
// the owner and its audit entry (owner.suspend), then the owner is told
// (owner.suspended). It reports whether it changed the owner; a change in
// between (an operator's, another run's) makes it do nothing.
func (s *Service) Suspend(ctx context.Context, actor string, judged *store.Owner, sp store.OwnerSuspension) (*store.Owner, bool, error) {
	if sp.Limit == "" || sp.Until.IsZero() {
		return nil, false, errs.E(errs.Internal, "owners: a suspension needs a limit and an end")
	}
	now := s.now()
	sp.At = now
	o, err := s.Store.UpdateOwner(ctx, judged.ID, func(o *store.Owner) (*store.AuditEntry, error) {
		if !o.UpdatedAt.Equal(judged.UpdatedAt) || o.Suspension != nil {
			return nil, errNoChange
		}
		o.Suspension, o.UpdatedAt = &sp, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionSuspend, Details: suspensionDetails(o.ID, sp, "quota_exceeded")}, nil
	})
	if err == errNoChange {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	s.committed(ctx, o, func(ctx context.Context) error { return s.Notifier.OwnerSuspension(ctx, o, sp, "") })
	return o, true, nil
}

// Lift lifts the suspension of owner suspended.ID for reason
// (ReasonWindowReset, ReasonLimitRaised), if the owner still carries the
// suspension it was listed with: the owner and its audit entry
// (owner.lift) in one write, then the owner is told (owner.reinstated).
func (s *Service) Lift(ctx context.Context, actor string, suspended *store.Owner, reason string) (*store.Owner, bool, error) {
	if suspended.Suspension == nil {
		return nil, false, nil
	}
	sp := *suspended.Suspension
	now := s.now()
	o, err := s.Store.UpdateOwner(ctx, suspended.ID, func(o *store.Owner) (*store.AuditEntry, error) {
		if !sameSuspension(o.Suspension, sp) {
			return nil, errNoChange
		}
		o.Suspension, o.UpdatedAt = nil, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionLift, Details: suspensionDetails(o.ID, sp, reason)}, nil
	})
	if err == errNoChange {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	s.committed(ctx, o, func(ctx context.Context) error { return s.Notifier.OwnerSuspension(ctx, o, sp, reason) })
	return o, true, nil
}

// Renotify tells a suspended owner of its suspension again: the
// notification's id names the suspension, so this queues nothing new
// unless the one after Suspend was lost (a crash between the two).
func (s *Service) Renotify(ctx context.Context, o *store.Owner) error {
	if s.Notifier == nil || o.Suspension == nil {
		return nil
	}
	return s.Notifier.OwnerSuspension(ctx, o, *o.Suspension, "")
}

// committed applies a committed change to this process's verifier and
// runs notify (if there is a Notifier), logging its error.
func (s *Service) committed(ctx context.Context, o *store.Owner, notify func(context.Context) error) {
	if s.Observer != nil {
		s.Observer.OwnerChanged(o)
	}
	if s.Notifier == nil {
		return
	}
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := notify(nctx); err != nil {
		s.logger().ErrorContext(ctx, "the owner changed but its notification was not queued", "owner", o.ID, "error", err)
	}
}

// sameSuspension reports whether cur is sp (times compared as instants).
func sameSuspension(cur *store.OwnerSuspension, sp store.OwnerSuspension) bool {
	return cur != nil && cur.Limit == sp.Limit && cur.Feature == sp.Feature && cur.Used == sp.Used && cur.Max == sp.Max &&
		cur.Until.Equal(sp.Until) && cur.At.Equal(sp.At)
}

func suspensionDetails(owner string, sp store.OwnerSuspension, reason string) map[string]string {
	d := map[string]string{"owner": owner, "reason": reason, "limit": sp.Limit,
		"used": strconv.FormatInt(sp.Used, 10), "max": strconv.FormatInt(sp.Max, 10), "until": sp.Until.UTC().Format(time.RFC3339)}
	if sp.Feature != "" {
		d["feature"] = sp.Feature
	}
	return d
}
