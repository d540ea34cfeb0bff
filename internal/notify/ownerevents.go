package notify

import (
	"context"

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
