package keys

import (
	"context"
	"fmt"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/store"
)

// ReasonLeaked is the reason of a key disabled or revoked because it was
// reported leaked (Leaked). Disable refuses it, so a disabled key with it
// was stopped by a leak report, whose owner was told (key.leaked); an
// operator may revoke with it (a revoked key is final either way).
const ReasonLeaked = "leaked"

// LeakAction is what Leaked does to a key reported leaked.
type LeakAction string

// Leak actions.
const (
	// LeakDisable disables the key with ReasonLeaked: it stops verifying
	// at once, and an operator can enable it again (a false report).
	LeakDisable LeakAction = "disable"
	// LeakRevoke revokes the key with ReasonLeaked and destroys its secret.
	LeakRevoke LeakAction = "revoke"
	// LeakQuarantine keeps the key working for a grace, only from the
	// client IPs it was recently seen from, starts its rotation, and has
	// the sweep disable it when the grace ends (see quarantine).
	LeakQuarantine LeakAction = "quarantine"
)

// Leak is where a leaked key was found, as the report said.
type Leak struct {
	Reporter string // who reported it: "github", or the caller of POST /v1/leaks
	URL      string // where the key was found, e.g. a GitHub blob URL; may be empty
	Source   string // the kind of place, lowercase, e.g. "content", "commit"; may be empty
	Type     string // the token type the reporter matched, e.g. "keyplane_api_key"; may be empty
}

// details are the leak's audit entry details.
func (l Leak) details() map[string]string {
	d := map[string]string{"reason": ReasonLeaked, "reporter": l.Reporter}
	if l.URL != "" {
		d["url"] = l.URL
	}
	if l.Source != "" {
		d["source"] = l.Source
	}
	if l.Type != "" {
		d["token_type"] = l.Type
	}
	return d
}

// evidence is what the owner is told of the leak: where it was found and
// who reported it.
func (l Leak) evidence() map[string]any {
	e := map[string]any{"reporter": l.Reporter}
	if l.URL != "" {
		e["url"] = l.URL
	}
	if l.Source != "" {
		e["source"] = l.Source
	}
	return e
}

// LeakNotifier is told of a key stopped or quarantined because it leaked. A Notifier
// that also implements it is told through it (key.leaked); one that does
// not is told nothing about leaks.
type LeakNotifier interface {
	// KeyLeaked tells k's owner that k, just disabled or revoked with
	// ReasonLeaked, was found leaked; evidence holds the report's
	// reporter and, when known, url and source. Service logs its errors.
	KeyLeaked(ctx context.Context, k *store.Key, evidence map[string]any) error
}

// Leaked stops key id, reported leaked, by action: one store write of the
// key with its audit entry (key.disable or key.revoke, with reason leaked
// and the leak's reporter, url, source and token type), then the secret
// version is disabled (or destroyed) and the owner is told (key.leaked).
// It reports whether it changed the key.
//
// A report of a key already stopped changes nothing, audits nothing and
// tells nobody: for LeakDisable a key disabled for a leak or revoked, for
// LeakRevoke a revoked key. So a replayed report changes nothing twice;
// the secret is still brought in line, which retries an earlier report's
// unfinished work. A key disabled for another reason is disabled for the
// leak instead (an operator enabling it later must know why it was
// stopped). NotFound if there is no key id; Invalid for another action.
func (s *Service) Leaked(ctx context.Context, id string, action LeakAction, leak Leak) (*store.Key, bool, error) {
	if !ids.ValidKeyID(id) {
		return nil, false, errs.E(errs.NotFound, "key %q not found", id)
	}
	if action == LeakQuarantine {
		return s.quarantine(ctx, id, leak)
	}
	actor := "leak:" + leak.Reporter
	now := s.now()
	var mutate func(*store.Key) (*store.AuditEntry, error)
	switch action {
	case LeakDisable:
		mutate = func(k *store.Key) (*store.AuditEntry, error) {
			if k.Status == store.Revoked || k.Status == store.Disabled && k.StatusReason == ReasonLeaked && k.DisabledUntil == nil {
				return nil, errNoChange
			}
			d := leak.details()
			if k.Status == store.Disabled {
				d["previous_reason"] = k.StatusReason
			}
			k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Disabled, ReasonLeaked, nil, now
			return &store.AuditEntry{Time: now, Actor: actor, Action: ActionDisable, KeyID: id, Details: d}, nil
		}
	case LeakRevoke:
		mutate = func(k *store.Key) (*store.AuditEntry, error) {
			if k.Status == store.Revoked {
				return nil, errNoChange
			}
			k.Status, k.StatusReason, k.DisabledUntil, k.UpdatedAt = store.Revoked, ReasonLeaked, nil, now
			return &store.AuditEntry{Time: now, Actor: actor, Action: ActionRevoke, KeyID: id, Details: leak.details()}, nil
		}
	default:
		return nil, false, errs.E(errs.Invalid, "leak action must be %q, %q or %q, got %q", LeakDisable, LeakRevoke, LeakQuarantine, action)
	}
	k, changed, err := s.updateChanged(ctx, id, mutate)
	if err != nil {
		return nil, false, err
	}
	if changed {
		if ln, ok := s.Notifier.(LeakNotifier); ok {
			s.tellOwner(ctx, "key.leaked", k, actor, func(ctx context.Context, k *store.Key, _ string) error {
				return ln.KeyLeaked(ctx, k, leak.evidence())
			})
		}
	}
	switch {
	case k.Status == store.Revoked:
		if err := s.Vault.DestroyKeySecret(ctx, id); err != nil {
			return nil, changed, fmt.Errorf("key %s is revoked for a leak but its secret was not destroyed (report it again to retry): %w", id, err)
		}
	case k.Status == store.Disabled:
		if err := s.setSecretEnabled(ctx, id, false); err != nil {
			return nil, changed, err
		}
	}
	return k, changed, nil
}
