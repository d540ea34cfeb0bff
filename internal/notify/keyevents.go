package notify

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/store"
)

// ReasonManual is the reason of key.disabled and key.enabled for a change
// an operator made through the management API.
const ReasonManual = "manual"

// KeyEvents tells owners about key state changes: it is the keys.Service
// Notifier, on top of Service.Notify. The event's time is the key's
// UpdatedAt, the time of the change, so the webhook-id is the same however
// often one change is reported, and two changes are two notifications.
//
// For a manual change the payload's reason is ReasonManual, not the
// operator's free-text reason, which is written for operators (and the
// audit log) and may say things the owner should not read. The actor is
// not sent either.
type KeyEvents struct {
	Service *Service
}

// KeyDisabled enqueues key.disabled for k, which was just disabled.
func (e KeyEvents) KeyDisabled(ctx context.Context, k *store.Key, actor string) error {
	d := KeyStatusData{KeyID: k.ID, Owner: k.Owner, Status: string(store.Disabled), Reason: ReasonManual, DisabledUntil: k.DisabledUntil}
	return e.notify(ctx, k, actor, KeyDisabledEvent(d, e.at(k)))
}

// KeyEnabled enqueues key.enabled for k, which was just re-enabled.
func (e KeyEvents) KeyEnabled(ctx context.Context, k *store.Key, actor string) error {
	d := KeyStatusData{KeyID: k.ID, Owner: k.Owner, Status: string(store.Active), Reason: ReasonManual}
	return e.notify(ctx, k, actor, KeyEnabledEvent(d, e.at(k)))
}

func (e KeyEvents) at(k *store.Key) time.Time {
	if k.UpdatedAt.IsZero() {
		return e.Service.now()
	}
	return k.UpdatedAt
}

func (e KeyEvents) notify(ctx context.Context, k *store.Key, actor string, ev Event) error {
	id, outcome, err := e.Service.Notify(ctx, k.Owner, ev)
	if err != nil {
		return err
	}
	e.Service.logger().DebugContext(ctx, "key state change notified", "key_id", k.ID, "owner", k.Owner,
		"type", ev.Type, "actor", actor, "notification_id", id, "outcome", string(outcome))
	return nil
}

// KeySwept enqueues key.disabled or key.enabled for k, which the sweep
// just suspended or whose suspension it lifted. The reason is the key's
// own (quota_exceeded, an abuse rule's, window_reset: machine-readable,
// meant for the owner) and a suspension carries its evidence. The event
// id is the change's, "sweep|<key id>|<status>|<updated_at>", so a repeat
// (an overlapping sweep, a later one finishing this one's effects) sends
// nothing new.
func (e KeyEvents) KeySwept(ctx context.Context, k *store.Key, evidence map[string]any) error {
	d := KeyStatusData{KeyID: k.ID, Owner: k.Owner, Status: string(k.Status), Reason: k.StatusReason, DisabledUntil: k.DisabledUntil}
	typ := KeyEnabled
	if k.Status == store.Disabled {
		typ, d.Evidence = KeyDisabled, evidence
	}
	id := eventID("sweep", k.ID, string(k.Status), stamp(k.UpdatedAt))
	_, _, err := e.Service.Notify(ctx, k.Owner, Event{Type: typ, ID: id, Time: k.UpdatedAt, Data: d})
	return err
}

// KeyLeaked enqueues key.leaked for k, which was just disabled, revoked or
// quarantined because it was reported leaked (keys.Service.Leaked). The evidence (the
// reporter, and where the key was found: url, source) is sent as it is:
// the owner needs it to find and remove the leaked copy. The event id is
// the change's, "leak|<key id>|<status>|<updated_at>", so a repeated
// report of one change tells the owner once.
func (e KeyEvents) KeyLeaked(ctx context.Context, k *store.Key, evidence map[string]any) error {
	d := KeyStatusData{KeyID: k.ID, Owner: k.Owner, Status: string(k.Status), Reason: k.StatusReason, Evidence: evidence}
	id := eventID("leak", k.ID, string(k.Status), stamp(k.UpdatedAt))
	return e.notify(ctx, k, "", Event{Type: KeyLeaked, ID: id, Time: k.UpdatedAt, Data: d})
}
