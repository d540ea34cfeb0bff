package notify

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/store"
)

// OwnerEvents tells owners about changes to their plan or overrides: it
// is the owners.Service Notifier. The event's time is the owner's
// UpdatedAt, so one change is one notification however often it is told.
type OwnerEvents struct {
	Service *Service
}

// OwnerChanged enqueues owner.plan_changed for o, which was just changed
// from plan previous.
func (e OwnerEvents) OwnerChanged(ctx context.Context, o *store.Owner, previous string) error {
	d := OwnerPlanData{Owner: o.ID, Plan: o.Plan, PreviousPlan: previous, Limits: o.Limits, Features: o.Features}
	_, _, err := e.Service.Notify(ctx, o.ID, OwnerPlanChangedEvent(d, o.UpdatedAt))
	return err
}

// OwnerSuspension enqueues owner.suspended for o's suspension sp or, if
// reinstated is a reason (window_reset, limit_raised), owner.reinstated:
// the event's id names the suspension, so telling it again sends nothing
// new.
func (e OwnerEvents) OwnerSuspension(ctx context.Context, o *store.Owner, sp store.OwnerSuspension, reinstated string) error {
	d := OwnerSuspensionData{Owner: o.ID, Reason: "quota_exceeded", Limit: sp.Limit, Feature: sp.Feature, Used: sp.Used, Max: sp.Max, Until: sp.Until}
	if reinstated != "" {
		d.Reason = reinstated
	}
	_, _, err := e.Service.Notify(ctx, o.ID, OwnerSuspensionEvent(d, reinstated != "", o.UpdatedAt))
	return err
}

// SpendThreshold enqueues spend.threshold for d: its id names the owner,
// month and threshold, so telling it again sends nothing new.
func (e OwnerEvents) SpendThreshold(ctx context.Context, d SpendThresholdData, at time.Time) error {
	_, _, err := e.Service.Notify(ctx, d.Owner, SpendThresholdEvent(d, at))
	return err
}
