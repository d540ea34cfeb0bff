package sweep_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store"
)

// A leak quarantine's grace ends with the sweep disabling the key for the
// leak, audited and notified once; a dry run only reports it.
func TestQuarantineEndsWithADisableWhenItsGraceDoes(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.keys.Quarantine = keys.QuarantinePolicy{IPs: e.ledger, Grace: 2 * time.Hour}
		c := e.key("acct_q", "tiny")
		if err := e.ledger.AddClientIPs(ctx, t0.Truncate(24*time.Hour), map[string][]string{c.Key.ID: {"203.0.113.7"}}); err != nil {
			t.Fatal(err)
		}
		leak := keys.Leak{Reporter: "github", URL: "https://github.com/o/r/blob/1/a.env", Source: "content"}
		if _, changed, err := e.keys.Leaked(ctx, c.Key.ID, keys.LeakQuarantine, leak); err != nil || !changed {
			t.Fatalf("Leaked: %v %v", changed, err)
		}
		if rep := e.run(e.sweeper(), false); len(rep.Quarantined) != 0 {
			t.Fatalf("before the grace ends: quarantined %+v", rep.Quarantined)
		}
		e.clock.Advance(2 * time.Hour)
		if rep := e.run(e.sweeper(), true); len(rep.Quarantined) != 1 || rep.Quarantined[0].KeyID != c.Key.ID {
			t.Fatalf("dry run: quarantined %+v, want the key", rep.Quarantined)
		}
		if k := e.get(c.Key.ID); k.Status != store.Active || !k.Quarantine.InForce() {
			t.Fatalf("a dry run changed the key: %s %+v", k.Status, k.Quarantine)
		}
		rep := e.run(e.sweeper(), false)
		if len(rep.Quarantined) != 1 || rep.Quarantined[0].KeyID != c.Key.ID || rep.Quarantined[0].Reason != keys.ReasonLeaked ||
			!rep.Quarantined[0].Until.Equal(t0.Add(2*time.Hour)) {
			t.Fatalf("quarantined %+v, want the key", rep.Quarantined)
		}
		k := e.get(c.Key.ID)
		if k.Status != store.Disabled || k.StatusReason != keys.ReasonLeaked || k.Quarantine.InForce() {
			t.Fatalf("key %s %q %+v, want disabled for the leak with its quarantine ended", k.Status, k.StatusReason, k.Quarantine)
		}
		if a := e.audit(c.Key.ID)[0]; a.Actor != "sweep" || a.Action != keys.ActionDisable || a.Details["reason"] != keys.ReasonLeaked ||
			a.Details["url"] != leak.URL || a.Details["source"] != "content" {
			t.Errorf("audit = %+v", a)
		}
		if _, err := e.vault.KeySecret(ctx, c.Key.ID); !errs.Is(err, errs.FailedPrecondition) {
			t.Errorf("secret of the disabled key: %v, want its version disabled", err)
		}
		disabled := e.notifications("key.disabled")[c.Key.ID]
		if len(disabled) != 1 || disabled[0]["reason"] != keys.ReasonLeaked {
			t.Fatalf("key.disabled notifications %v, want one with reason leaked", disabled)
		}
		if ev, _ := disabled[0]["evidence"].(map[string]any); ev["policy"] != "quarantine" || ev["url"] != leak.URL {
			t.Errorf("evidence %v", disabled[0]["evidence"])
		}
		if leaked := e.notifications("key.leaked")[c.Key.ID]; len(leaked) != 1 {
			t.Errorf("key.leaked notifications %v, want the report's one", leaked)
		}
		if rep := e.run(e.sweeper(), false); len(rep.Quarantined) != 0 || len(e.notifications("key.disabled")[c.Key.ID]) != 1 {
			t.Errorf("a second run: quarantined %+v, notifications %v", rep.Quarantined, e.notifications("key.disabled")[c.Key.ID])
		}
	})
}
