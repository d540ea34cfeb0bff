package keys

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
)

// ActionQuarantine is the audit action of a key put in a leak quarantine.
const ActionQuarantine = "key.quarantine"

// Quarantine settings: the defaults, and the bounds the configuration
// checks.
const (
	// DefaultQuarantineDays is how many UTC days before the report (and
	// the day of the report) the client IPs a quarantined key keeps
	// working from are read.
	DefaultQuarantineDays = 7
	// MaxQuarantineDays is the most: the ledger keeps client IPs for
	// ledger.ClientIPRetention (8 days) after their day.
	MaxQuarantineDays = 7
	// DefaultQuarantineGrace is how long a quarantined key keeps working
	// from those IPs before the sweep disables it.
	DefaultQuarantineGrace = 72 * time.Hour
	// MaxQuarantineGrace is the longest grace: a rotation's longest.
	MaxQuarantineGrace = MaxGracePeriod
	// MaxQuarantineIPs bounds the IPs a quarantine keeps: the lowest ones,
	// in sorted order, if more were seen.
	MaxQuarantineIPs = 1000
)

// ClientIPReader reads the client IPs a key was seen from on one UTC day:
// the ledger's ClientIPs.
type ClientIPReader interface {
	ClientIPs(ctx context.Context, keyID string, day time.Time, sample int) (count int, ips []string, err error)
}

// QuarantinePolicy is what LeakQuarantine needs.
type QuarantinePolicy struct {
	IPs   ClientIPReader // required for LeakQuarantine
	Days  int            // default DefaultQuarantineDays
	Grace time.Duration  // default DefaultQuarantineGrace
}

func (p QuarantinePolicy) days() int {
	if p.Days <= 0 {
		return DefaultQuarantineDays
	}
	return min(p.Days, MaxQuarantineDays)
}

func (p QuarantinePolicy) grace() time.Duration {
	if p.Grace <= 0 {
		return DefaultQuarantineGrace
	}
	return min(p.Grace, MaxQuarantineGrace)
}

// allowedIPs is what a quarantine of k lets it keep working from: the
// key's own allowed_ips if it has them (it could be used from nowhere else
// before), otherwise the client IPs the ledger saw it from on the report's
// UTC day and the Days days before it. The ledger records client IPs only
// for keys whose plan has the distinct-IPs abuse rule (internal/verify),
// so for others this is empty.
func (s *Service) allowedIPs(ctx context.Context, k *store.Key, now time.Time) ([]string, error) {
	if len(k.Restrictions.AllowedIPs) > 0 {
		return slices.Clone(k.Restrictions.AllowedIPs), nil
	}
	if s.Quarantine.IPs == nil {
		return nil, errs.E(errs.Internal, "the quarantine leak policy needs the ledger's client IPs (keys.Service.Quarantine.IPs)")
	}
	seen := map[string]bool{}
	day := now.UTC().Truncate(24 * time.Hour)
	for i := 0; i <= s.Quarantine.days(); i++ {
		_, ips, err := s.Quarantine.IPs.ClientIPs(ctx, k.ID, day.AddDate(0, 0, -i), MaxQuarantineIPs)
		if err != nil {
			return nil, fmt.Errorf("read the client IPs of key %s for its quarantine: %w", k.ID, err)
		}
		for _, ip := range ips {
			seen[ip] = true
		}
	}
	out := slices.Sorted(maps.Keys(seen))
	return out[:min(len(out), MaxQuarantineIPs)], nil
}

// quarantine is Leaked with LeakQuarantine. An active key is put in a
// quarantine: until now+Grace it verifies only from the IPs allowedIPs
// returns, a rotation is started (the new key, without the quarantine,
// replaces it; the old one's rotation grace is the quarantine's), and the
// sweep disables it when the grace ends (EndQuarantine). The change is
// audited (key.quarantine, with the leak's details, the end and the number
// of IPs) and the owner told (key.leaked, evidence policy "quarantine",
// until, allowed_ips and, once made, rotated_to).
//
// A key with no IPs to keep, one already disabled for another reason, or
// an expired one, is disabled at once instead (as LeakDisable does, its quarantine
// recorded as ended when it began): a key nobody was seen using in the
// lookback has no use to protect, and a disabled key none to keep.
//
// A replayed report changes nothing and tells nobody: a key with a
// quarantine (in force or ended), disabled for a leak, or revoked is left
// as it is. It only finishes the earlier report's work: a rotation that
// did not complete is resumed (with the same idempotency key, so it makes
// one new key), and a disabled key's secret brought in line.
func (s *Service) quarantine(ctx context.Context, id string, leak Leak) (*store.Key, bool, error) {
	actor := "leak:" + leak.Reporter
	k, err := s.Get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	now := s.now()
	var ips []string
	if k.Quarantine == nil && !stoppedForLeak(k) {
		if ips, err = s.allowedIPs(ctx, k, now); err != nil {
			return nil, false, err
		}
	}
	grace := s.Quarantine.grace()
	k, changed, err := s.updateChanged(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
		if k.Quarantine != nil || stoppedForLeak(k) {
			return nil, errNoChange
		}
		q := &store.Quarantine{Since: now, Until: now.Add(grace), AllowedIPs: ips, Reporter: leak.Reporter, URL: leak.URL, Source: leak.Source}
		d := leak.details()
		d["policy"] = string(LeakQuarantine)
		d["allowed_ips"] = strconv.Itoa(len(ips))
		if len(ips) == 0 || k.Status != store.Active || k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
			if k.Status == store.Disabled {
				d["previous_reason"] = k.StatusReason
			}
			q.Until, q.AllowedIPs, q.EndedAt = now, nil, &now
			k.Status, k.StatusReason, k.DisabledUntil, k.Quarantine, k.UpdatedAt = store.Disabled, ReasonLeaked, nil, q, now
			return &store.AuditEntry{Time: now, Actor: actor, Action: ActionDisable, KeyID: id, Details: d}, nil
		}
		d["until"] = q.Until.Format(time.RFC3339)
		k.Quarantine, k.UpdatedAt = q, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionQuarantine, KeyID: id, Details: d}, nil
	})
	if err != nil {
		return nil, false, err
	}
	var rotateErr error
	rotatedTo := k.RotatedTo
	if q := k.Quarantine; q.InForce() && k.Status == store.Active && k.RotatedTo == "" {
		// The idempotency key names this quarantine, and the grace is its
		// own: a replay resumes the same rotation rather than making a
		// second new key.
		c, err := s.Rotate(ctx, actor, id, RotateRequest{GracePeriod: q.Until.Sub(q.Since).String()},
			"keyplane-leak-quarantine "+q.Since.UTC().Format(time.RFC3339Nano))
		if err != nil {
			rotateErr = fmt.Errorf("key %s is quarantined for a leak but its rotation did not complete (report it again to retry): %w", id, err)
		} else {
			rotatedTo = c.Key.ID
		}
	}
	if changed {
		if ln, ok := s.Notifier.(LeakNotifier); ok {
			e := leak.evidence()
			e["policy"] = string(LeakQuarantine)
			e["allowed_ips"] = len(k.Quarantine.AllowedIPs)
			if k.Quarantine.InForce() {
				e["until"] = k.Quarantine.Until
			}
			if rotatedTo != "" {
				e["rotated_to"] = rotatedTo
			}
			s.tellOwner(ctx, "key.leaked", k, actor, func(ctx context.Context, k *store.Key, _ string) error {
				return ln.KeyLeaked(ctx, k, e)
			})
		}
	}
	if rotateErr != nil {
		return nil, changed, rotateErr
	}
	if k.Status == store.Disabled {
		if err := s.setSecretEnabled(ctx, id, false); err != nil {
			return nil, changed, err
		}
	}
	return k, changed, nil
}

// stoppedForLeak reports whether k no longer verifies because of a leak
// (or at all): revoked, or disabled for a leak without an end.
func stoppedForLeak(k *store.Key) bool {
	return k.Status == store.Revoked || k.Status == store.Disabled && k.StatusReason == ReasonLeaked && k.DisabledUntil == nil
}

// QuarantineDue reports whether k's quarantine is in force and its grace
// has ended at now: EndQuarantine would end it.
func QuarantineDue(k *store.Key, now time.Time) bool {
	return k.Quarantine.InForce() && !k.Quarantine.Until.After(now)
}

// EndQuarantine ends the quarantine of the key due was read as, if it is
// still QuarantineDue: the key is disabled with ReasonLeaked (action
// key.disable, details with the policy, the quarantine's end and the
// leak's reporter, url and source; a key disabled for another reason,
// a quota suspension included, is disabled for the leak instead) and the
// quarantine recorded as ended. The quarantine of a key revoked or
// already disabled for a leak is only recorded as ended: no audit entry,
// no notification, false. It reports whether it disabled the key and, if it
// did, returns the key as stored (nil otherwise).
//
// After the change commits, the key's secret version is disabled and the
// Notifier, if any, is told as of the sweep's other disables (KeySwept:
// key.disabled, reason leaked); an error with true means those effects
// are not all made: FinishSweepChange makes them.
func (s *Service) EndQuarantine(ctx context.Context, actor string, due *store.Key) (*store.Key, bool, error) {
	now := s.now()
	if !QuarantineDue(due, now) {
		return nil, false, nil
	}
	var disabled bool
	k, changed, err := s.updateChanged(ctx, due.ID, func(k *store.Key) (*store.AuditEntry, error) {
		disabled = false
		if !QuarantineDue(k, now) {
			return nil, errNoChange
		}
		q := *k.Quarantine
		q.EndedAt = &now
		k.Quarantine = &q
		if stoppedForLeak(k) {
			// Revoked, or disabled for a leak already: only the record
			// ends. UpdatedAt is kept: nothing a verifier decides on
			// changes, and the sweep's recovery must not take this for
			// its own disable (quarantineEnded).
			return nil, nil
		}
		disabled = true
		k.UpdatedAt = now
		d := map[string]string{"reason": ReasonLeaked, "policy": string(LeakQuarantine), "reporter": q.Reporter,
			"quarantine_until": q.Until.Format(time.RFC3339)}
		if q.URL != "" {
			d["url"] = q.URL
		}
		if q.Source != "" {
			d["source"] = q.Source
		}
		if k.Status == store.Disabled {
			d["previous_reason"] = k.StatusReason
		}
		k.Status, k.StatusReason, k.DisabledUntil = store.Disabled, ReasonLeaked, nil
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionDisable, KeyID: k.ID, Details: d}, nil
	})
	switch {
	case errs.Is(err, errs.NotFound):
		return nil, false, nil
	case err != nil || !changed || !disabled:
		return nil, false, err
	}
	return k, true, s.sweepEffects(ctx, k, quarantineEvidence(k.Quarantine))
}

// quarantineEvidence is what the owner is told of a quarantine the sweep
// ended.
func quarantineEvidence(q *store.Quarantine) map[string]any {
	e := map[string]any{"policy": string(LeakQuarantine), "reporter": q.Reporter, "quarantine_until": q.Until}
	if q.URL != "" {
		e["url"] = q.URL
	}
	if q.Source != "" {
		e["source"] = q.Source
	}
	return e
}

// quarantineEnded reports whether k's state is the sweep's end of its
// quarantine: disabled for the leak at the moment the quarantine ended,
// after a grace (a quarantine disabled at once has none).
func quarantineEnded(k *store.Key) bool {
	q := k.Quarantine
	return k.Status == store.Disabled && k.StatusReason == ReasonLeaked && q != nil && q.EndedAt != nil &&
		q.EndedAt.Equal(k.UpdatedAt) && q.Until.After(q.Since)
}
