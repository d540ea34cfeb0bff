package keys

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
)

// Reasons reserved for the sweep. Disable and Revoke refuse them, so a
// key's reason says who changed it: the sweep's changes are recognised by
// them (FinishSweepChange), and Lift ends only the sweep's own quota
// suspensions, never an operator's disable.
const (
	// ReasonQuotaExceeded suspends a key over a day or month quota until
	// its window ends (Suspension.Until); Lift ends the suspension then.
	ReasonQuotaExceeded = "quota_exceeded"
	// ReasonSpike is the abuse rule of a usage spike; never lifted by Lift.
	ReasonSpike = "abuse_spike"
	// ReasonDistinctIPs is the abuse rule of too many client IPs in a day;
	// never lifted by Lift.
	ReasonDistinctIPs = "abuse_distinct_ips"
	// ReasonWindowReset is the reason of a key Lift re-enabled.
	ReasonWindowReset = "window_reset"

	// abusePrefix reserves the reason of every abuse rule, including rules
	// not yet written.
	abusePrefix = "abuse_"
)

// reservedReason reports whether reason is the sweep's.
func reservedReason(reason string) bool {
	return reason == ReasonQuotaExceeded || reason == ReasonWindowReset || strings.HasPrefix(reason, abusePrefix)
}

// sweepState reports whether k's current state is one the sweep made: a
// sweep reason on a disabled key, window_reset on an active one.
func sweepState(k *store.Key) bool {
	switch k.Status {
	case store.Disabled:
		return k.StatusReason == ReasonQuotaExceeded || strings.HasPrefix(k.StatusReason, abusePrefix) || quarantineEnded(k)
	case store.Active:
		return k.StatusReason == ReasonWindowReset
	}
	return false
}

// Suspension is a disable the sweep decided on.
type Suspension struct {
	// Reason is ReasonQuotaExceeded, ReasonSpike or ReasonDistinctIPs.
	Reason string
	// Until is when a quota suspension ends, and is set for
	// ReasonQuotaExceeded only: an abuse suspension lasts until an operator
	// enables the key.
	Until *time.Time
	// Evidence is what the decision was made on (limit, window, used,
	// max, …): the audit entry's details carry it as text, the owner's
	// notification as it is.
	Evidence map[string]any
}

func (sp Suspension) validate() error {
	switch sp.Reason {
	case ReasonQuotaExceeded:
		if sp.Until == nil {
			return errs.E(errs.Invalid, "a %s suspension needs the end of its window", sp.Reason)
		}
	case ReasonSpike, ReasonDistinctIPs:
		if sp.Until != nil {
			return errs.E(errs.Invalid, "a %s suspension does not end by itself; it has no end", sp.Reason)
		}
	default:
		return errs.E(errs.Invalid, "%q is not a reason the sweep suspends keys for", sp.Reason)
	}
	return nil
}

// auditDetails is the suspension's reason, end and evidence as audit
// entry details.
func (sp Suspension) auditDetails() map[string]string {
	out := map[string]string{"reason": sp.Reason}
	for k, v := range sp.Evidence {
		switch v := v.(type) {
		case []string:
			out[k] = strings.Join(v, ",")
		case float64:
			out[k] = fmt.Sprintf("%.2f", v)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	if sp.Until != nil {
		out["until"] = sp.Until.Format(time.RFC3339)
	}
	return out
}

// Suspend disables the key judged was read as, for sp, if the key is still
// that version: active, with judged's UpdatedAt. A key changed since it was
// judged (by an operator, or by another sweep that suspended it first) is
// left alone: no write, no audit entry, no notification, false. It
// reports whether it suspended the key and, if it did, returns the key as
// stored (nil otherwise).
//
// The change is one store write with its audit entry (action key.disable,
// details from sp by auditDetails). After it commits, the key's secret
// version is disabled and the Notifier, if any, is told (KeySwept, with
// sp.Evidence). An error with true means the key is suspended but those
// effects are not all made: FinishSweepChange makes them.
//
// Invalid if sp is not a suspension the sweep makes (see Suspension).
func (s *Service) Suspend(ctx context.Context, actor string, judged *store.Key, sp Suspension) (*store.Key, bool, error) {
	if err := sp.validate(); err != nil {
		return nil, false, err
	}
	var until *time.Time
	if sp.Until != nil {
		u := sp.Until.UTC()
		until = &u
	}
	now := s.now()
	k, changed, err := s.updateChanged(ctx, judged.ID, func(k *store.Key) (*store.AuditEntry, error) {
		if k.Status != store.Active || !k.UpdatedAt.Equal(judged.UpdatedAt) {
			return nil, errNoChange
		}
		k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Disabled, sp.Reason, until, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionDisable, KeyID: k.ID, Details: sp.auditDetails()}, nil
	})
	switch {
	case errs.Is(err, errs.NotFound):
		return nil, false, nil
	case err != nil || !changed:
		return nil, false, err
	}
	return k, true, s.sweepEffects(ctx, k, sp.Evidence)
}

// Liftable reports whether Lift would end k's suspension at now: k is
// suspended by the sweep for ReasonQuotaExceeded and its window has ended.
func Liftable(k *store.Key, now time.Time) bool {
	return k.Status == store.Disabled && k.StatusReason == ReasonQuotaExceeded &&
		k.DisabledUntil != nil && !k.DisabledUntil.After(now)
}

// Lift re-enables the key suspended was read as, with reason
// ReasonWindowReset, if it is still Liftable: only the sweep's own quota
// suspension ends by itself, never an abuse suspension or an operator's
// disable. A key that is not (a revoked key, one an operator disabled or
// enabled, one another sweep lifted or suspended again) is left alone:
// false, no audit entry, no notification. It reports whether it lifted
// the suspension and, if it did, returns the key as stored (nil
// otherwise).
//
// The secret version is enabled before the key, so that a crash between
// the two leaves a suspended key with an enabled secret, which a repeated
// Lift finishes; the other order could leave an active key whose secret
// cannot be revealed. When the key turns out not to be Liftable after
// all, its secret is brought back in line with it. After the change
// commits (action key.enable), the Notifier, if any, is told (KeySwept);
// an error with true means the key is active but its owner was not told:
// FinishSweepChange tells them.
func (s *Service) Lift(ctx context.Context, actor string, suspended *store.Key) (*store.Key, bool, error) {
	now := s.now()
	if !Liftable(suspended, now) {
		return nil, false, nil
	}
	if err := s.setSecretEnabled(ctx, suspended.ID, true); err != nil {
		return nil, false, err
	}
	k, changed, err := s.updateChanged(ctx, suspended.ID, func(k *store.Key) (*store.AuditEntry, error) {
		if !Liftable(k, now) {
			return nil, errNoChange
		}
		until := *k.DisabledUntil
		k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Active, ReasonWindowReset, nil, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionEnable, KeyID: k.ID, Details: map[string]string{
			"reason": ReasonWindowReset, "previous_reason": ReasonQuotaExceeded, "until": until.Format(time.RFC3339)}}, nil
	})
	switch {
	case errs.Is(err, errs.NotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	case !changed:
		// Changed since it was read: the secret enabled above must not
		// outlive a disable that is not this suspension.
		if k.Status == store.Disabled {
			return nil, false, s.setSecretEnabled(ctx, k.ID, false)
		}
		return nil, false, nil
	}
	return k, true, s.sweepEffects(ctx, k, nil)
}

// FinishSweepChange makes sure of the effects of a change the sweep made,
// k as it was read after the change (from the change feed): a suspended
// key's secret version is disabled and the owner is told (KeySwept,
// without evidence, which only the suspension knew). Both are idempotent:
// the Notifier tells one change once. It reports whether k's state is one
// the sweep made; for any other it does nothing.
func (s *Service) FinishSweepChange(ctx context.Context, k *store.Key) (bool, error) {
	if !sweepState(k) {
		return false, nil
	}
	if quarantineEnded(k) {
		return true, s.sweepEffects(ctx, k, quarantineEvidence(k.Quarantine))
	}
	return true, s.sweepEffects(ctx, k, nil)
}

// sweepEffects brings a key the sweep changed in line with its status: a
// suspended key's secret version disabled, the owner told. Unlike a manual
// change's, a failure to tell the owner is returned: the sweep finishes it
// later (FinishSweepChange), and only if it knows.
func (s *Service) sweepEffects(ctx context.Context, k *store.Key, evidence map[string]any) error {
	if k.Status == store.Disabled {
		if err := s.setSecretEnabled(ctx, k.ID, false); err != nil {
			return err
		}
	}
	if s.Notifier == nil {
		return nil
	}
	if err := s.Notifier.KeySwept(ctx, k, evidence); err != nil {
		return fmt.Errorf("key %s is %s but its owner was not told: %w", k.ID, k.Status, err)
	}
	return nil
}
