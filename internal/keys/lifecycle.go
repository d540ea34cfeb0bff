package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/store"
)

// update runs a store update; a mutate that returns errNoChange leaves the
// key as it is (no write, no audit entry) and returns it.
func (s *Service) update(ctx context.Context, id string, mutate func(*store.Key) (*store.AuditEntry, error)) (*store.Key, error) {
	k, _, err := s.updateChanged(ctx, id, mutate)
	return k, err
}

// updateChanged is update, also reporting whether the key was written.
func (s *Service) updateChanged(ctx context.Context, id string, mutate func(*store.Key) (*store.AuditEntry, error)) (*store.Key, bool, error) {
	var unchanged *store.Key
	k, err := s.Store.UpdateKey(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
		a, err := mutate(k)
		if err == errNoChange {
			unchanged = k
		}
		return a, err
	})
	switch {
	case err == errNoChange:
		return unchanged, false, nil
	case errs.Is(err, errs.NotFound):
		return nil, false, errs.E(errs.NotFound, "key %q not found", id)
	case err != nil:
		return nil, false, err
	}
	if s.Observer != nil {
		s.Observer.KeyChanged(k)
	}
	return k, true, nil
}

// notifyTimeout bounds telling the owner about a change, which runs after
// the change is committed, detached from the request's cancellation.
const notifyTimeout = 10 * time.Second

// tellOwner calls a Notifier method for a committed change, detached from
// the caller's cancellation (a client that hangs up once its change is
// committed must not cost the owner the notification). A failure is
// logged, not returned: the change stands either way.
func (s *Service) tellOwner(ctx context.Context, event string, k *store.Key, actor string, send func(context.Context, *store.Key, string) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	if err := send(ctx, k, actor); err != nil {
		s.logger().ErrorContext(ctx, "the key changed but its owner's notification was not queued; the owner will not be told",
			"key_id", k.ID, "owner", k.Owner, "event", event, "error", err)
	}
}

// validateReason checks an operator's reason. The sweep's reasons are
// reserved: its changes are recognised by them (a key disabled with
// ReasonQuotaExceeded is re-enabled when its window resets; see Lift).
func validateReason(reason string) error {
	if reservedReason(reason) {
		return invalid("reason %q is reserved for the sweep; describe the manual change in other words (default \"manual\")", reason)
	}
	return validateText("reason", reason, MaxReasonLen)
}

// setSecretEnabled brings the key's secret version in line with its
// status: a disabled key's secret cannot be revealed (Secret Manager
// refuses a disabled version). A key with no secret, or a destroyed one,
// has nothing to change (logged at WARN: a key should have its secret).
func (s *Service) setSecretEnabled(ctx context.Context, id string, enabled bool) error {
	err := s.Vault.SetKeySecretEnabled(ctx, id, enabled)
	if err == nil {
		return nil
	}
	if errs.Is(err, errs.NotFound) || errs.Is(err, errs.FailedPrecondition) {
		s.logger().WarnContext(ctx, "the key's secret cannot be changed with the key", "key_id", id, "enabled", enabled, "error", err)
		return nil
	}
	verb := "disabled"
	if enabled {
		verb = "enabled"
	}
	return fmt.Errorf("key %s is %s but its secret version was not (repeat the request to retry): %w", id, verb, err)
}

// Disable stops a key from verifying until it is enabled again. The
// Notifier, if any, is told after the change is committed when the change
// is one the owner can see: an active key is disabled, or a timed
// suspension (disabled_until set, by the sweep) becomes a disable without
// an end. Changing only the reason of a disabled key changes the audit
// trail, not what the owner is told (see notify.KeyEvents).
func (s *Service) Disable(ctx context.Context, actor, id, reason string) (*store.Key, error) {
	if !ids.ValidKeyID(id) {
		return nil, errs.E(errs.NotFound, "key %q not found", id)
	}
	if err := validateReason(reason); err != nil {
		return nil, err
	}
	if reason == ReasonLeaked {
		// A key disabled for a leak is one a report stopped, whose owner
		// was told key.leaked (see Leaked).
		return nil, invalid("reason %q is reserved for leak reports: report the key with POST /v1/leaks, or describe the manual disable in other words", reason)
	}
	if reason == "" {
		reason = "manual"
	}
	now := s.now()
	var tell bool
	k, changed, err := s.updateChanged(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
		switch {
		case k.Status == store.Revoked:
			return nil, errs.E(errs.FailedPrecondition, "key %s is revoked; it cannot be disabled", id)
		case k.Status == store.Disabled && k.StatusReason == reason && k.DisabledUntil == nil:
			return nil, errNoChange
		}
		tell = k.Status != store.Disabled || k.DisabledUntil != nil
		k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Disabled, reason, nil, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionDisable, KeyID: id,
			Details: map[string]string{"reason": reason}}, nil
	})
	if err != nil {
		return nil, err
	}
	if changed && tell && s.Notifier != nil {
		s.tellOwner(ctx, "key.disabled", k, actor, s.Notifier.KeyDisabled)
	}
	// Also when nothing changed: repeating a disable retries this.
	if err := s.setSecretEnabled(ctx, id, false); err != nil {
		return nil, err
	}
	return k, nil
}

// Enable re-enables a disabled key. Enabling an active key changes nothing;
// a revoked key cannot be enabled (FailedPrecondition). When it enables the
// key, the Notifier, if any, is told after the change is committed.
func (s *Service) Enable(ctx context.Context, actor, id string) (*store.Key, error) {
	if !ids.ValidKeyID(id) {
		return nil, errs.E(errs.NotFound, "key %q not found", id)
	}
	now := s.now()
	k, changed, err := s.updateChanged(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
		switch k.Status {
		case store.Revoked:
			return nil, errs.E(errs.FailedPrecondition, "key %s is revoked; revocation is permanent", id)
		case store.Active:
			return nil, errNoChange
		}
		prev := k.StatusReason
		k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Active, "", nil, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionEnable, KeyID: id,
			Details: map[string]string{"previous_reason": prev}}, nil
	})
	if err != nil {
		return nil, err
	}
	if changed && s.Notifier != nil {
		s.tellOwner(ctx, "key.enabled", k, actor, s.Notifier.KeyEnabled)
	}
	if err := s.setSecretEnabled(ctx, id, true); err != nil {
		return nil, err
	}
	return k, nil
}

// Revoke permanently revokes a key and destroys its stored secret. The key
// record is revoked first, so that the key never verifies again even if
// destroying the secret fails; revoking a revoked key retries the destroy.
func (s *Service) Revoke(ctx context.Context, actor, id, reason string) (*store.Key, error) {
	if !ids.ValidKeyID(id) {
		return nil, errs.E(errs.NotFound, "key %q not found", id)
	}
	if err := validateReason(reason); err != nil {
		return nil, err
	}
	now := s.now()
	k, err := s.update(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
		if k.Status == store.Revoked {
			return nil, errNoChange
		}
		k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Revoked, reason, nil, now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionRevoke, KeyID: id,
			Details: map[string]string{"reason": reason}}, nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.Vault.DestroyKeySecret(ctx, id); err != nil {
		return nil, fmt.Errorf("key %s is revoked but its secret was not destroyed (revoke again to retry): %w", id, err)
	}
	return k, nil
}

// RotateRequest is the body of POST /v1/keys/{id}/rotate.
type RotateRequest struct {
	// GracePeriod is how long the old key keeps verifying, as a Go
	// duration ("24h", "90m", "0s"). Default 24h, at most 720h.
	GracePeriod string `json:"grace_period,omitempty"`
}

// Rotate creates a new key with the old key's settings. The old key keeps
// verifying until the grace period ends (its expires_at is brought forward
// to then) and records which key replaced it. With an Idempotency-Key a
// retry after a failure finishes the same rotation.
func (s *Service) Rotate(ctx context.Context, actor, id string, req RotateRequest, idemKey string) (*Created, error) {
	grace := 24 * time.Hour
	if req.GracePeriod != "" {
		d, err := time.ParseDuration(req.GracePeriod)
		if err != nil || d < 0 || d > MaxGracePeriod {
			return nil, invalid("grace_period must be a duration between 0s and %s, like \"24h\" or \"90m\"", MaxGracePeriod)
		}
		grace = d
	}
	old, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	// A rotation may start only on a rotatable key, or resume the one that
	// already replaced it; a finished one is replayed without this check.
	before := func(newID string) error {
		if old.RotatedTo != "" && old.RotatedTo == newID {
			return nil
		}
		return rotatable(old)
	}
	tmpl := *old
	tmpl.ID, tmpl.Hash, tmpl.Last4 = "", [32]byte{}, ""
	tmpl.Status, tmpl.StatusReason, tmpl.DisabledUntil = store.Active, "", nil
	tmpl.RotatedFrom, tmpl.RotatedTo, tmpl.LastUsedAt = old.ID, "", nil
	tmpl.Quarantine = nil // the new key replaces a leaked one; it did not leak
	tmpl.Prefix = s.Prefix
	finishOld := func(ctx context.Context, nk *store.Key) error {
		now := s.now()
		_, err := s.update(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
			if k.RotatedTo == nk.ID {
				return nil, errNoChange // a retry of a finished rotation
			}
			if err := rotatable(k); err != nil {
				return nil, err
			}
			until := now.Add(grace)
			if k.ExpiresAt == nil || until.Before(*k.ExpiresAt) {
				k.ExpiresAt = &until
			}
			k.RotatedTo, k.UpdatedAt = nk.ID, now
			return &store.AuditEntry{Time: now, Actor: actor, Action: ActionRotate, KeyID: id,
				Details: map[string]string{"rotated_to": nk.ID, "grace_period": grace.String()}}, nil
		})
		return err
	}
	c, err := s.provision(ctx, actor, "POST /v1/keys/"+id+"/rotate", req, idemKey, &tmpl, before, finishOld)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func rotatable(k *store.Key) error {
	switch {
	case k.Status == store.Revoked:
		return errs.E(errs.FailedPrecondition, "key %s is revoked; create a new key instead", k.ID)
	case k.Status == store.Disabled:
		return errs.E(errs.FailedPrecondition, "key %s is disabled; enable it before rotating, or revoke it and create a new key", k.ID)
	case k.RotatedTo != "":
		return errs.E(errs.FailedPrecondition, "key %s was already rotated to %s", k.ID, k.RotatedTo)
	}
	return nil
}

// Reveal returns a key's plaintext from the vault. The reveal is audited
// before the secret is returned: no audit entry, no secret.
func (s *Service) Reveal(ctx context.Context, actor, id string) (string, error) {
	k, err := s.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if k.Status == store.Revoked {
		return "", errs.E(errs.FailedPrecondition, "key %s is revoked; its secret was destroyed", id)
	}
	now := s.now()
	if err := s.Store.AppendAudit(ctx, store.AuditEntry{Time: now, Actor: actor, Action: ActionReveal, KeyID: id}); err != nil {
		return "", err
	}
	secret, err := s.Vault.KeySecret(ctx, id)
	if errs.Is(err, errs.FailedPrecondition) {
		return "", errs.E(errs.FailedPrecondition, "key %s's secret is disabled; enable the key first", id)
	}
	if err != nil {
		return "", err
	}
	return string(secret), nil
}

// ReapAbandoned removes provisioning intents older than the idempotency
// window (so no retry can still resume them) together with their secrets.
// It returns how many it removed. Safe to run concurrently with
// provisioning and with itself.
func (s *Service) ReapAbandoned(ctx context.Context) (int, error) {
	before := s.now().Add(-s.ttl() - s.lease())
	n := 0
	for {
		ps, err := s.Store.ListPending(ctx, before, 100)
		if err != nil {
			return n, err
		}
		for _, p := range ps {
			// Activate deletes the intent with the key's creation, so an
			// intent beside an active key should not exist; if one does,
			// never delete a live key's secret.
			if _, err := s.Store.GetKey(ctx, p.KeyID); errs.Is(err, errs.NotFound) {
				if err := s.Vault.DeleteKeySecret(ctx, p.KeyID); err != nil {
					return n, err
				}
			} else if err != nil {
				return n, err
			}
			if err := s.Store.DeletePending(ctx, p.KeyID); err != nil {
				return n, err
			}
			n++
		}
		if len(ps) < 100 {
			return n, nil
		}
	}
}
