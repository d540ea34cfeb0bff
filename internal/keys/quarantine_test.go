package keys_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

// leakTold is told keeping key.leaked too, with its evidence.
type leakTold struct {
	told
	lmu    sync.Mutex
	leaked []map[string]any
}

func (n *leakTold) KeyLeaked(_ context.Context, k *store.Key, evidence map[string]any) error {
	if err := n.record("key.leaked", k); err != nil {
		return err
	}
	n.lmu.Lock()
	defer n.lmu.Unlock()
	n.leaked = append(n.leaked, evidence)
	return nil
}

// quarantineEnv is env with the SQLite ledger as the client IP reader.
func quarantineEnv(t *testing.T) (*env, *sqliteledger.Ledger, *leakTold) {
	t.Helper()
	return quarantineEnvOn(t, nil)
}

// quarantineEnvOn is quarantineEnv on st (nil: SQLite).
func quarantineEnvOn(t *testing.T, st store.Store) (*env, *sqliteledger.Ledger, *leakTold) {
	t.Helper()
	e := newEnv(t, st)
	l, err := sqliteledger.OpenWith(filepath.Join(t.TempDir(), "l.db"), sqliteledger.Options{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	n := &leakTold{}
	e.svc.Notifier = n
	e.svc.Quarantine = keys.QuarantinePolicy{IPs: l, Days: 3, Grace: 48 * time.Hour}
	return e, l, n
}

func sawIPs(t *testing.T, l *sqliteledger.Ledger, id string, day time.Time, ips ...string) {
	t.Helper()
	if err := l.AddClientIPs(context.Background(), day, map[string][]string{id: ips}); err != nil {
		t.Fatal(err)
	}
}

var leak = keys.Leak{Reporter: "github", URL: "https://github.com/o/r/blob/abc/.env", Source: "content", Type: "keyplane_api_key"}

func TestQuarantineCapturesRecentIPsRotatesAuditsAndTellsOnce(t *testing.T) {
	testQuarantineCapturesRecentIPsRotatesAuditsAndTellsOnce(t, nil)
}

func TestQuarantineCapturesRecentIPsRotatesAuditsAndTellsOnceFirestore(t *testing.T) {
	testenv.Firestore(t)
	testQuarantineCapturesRecentIPsRotatesAuditsAndTellsOnce(t, firestorestore.NewFromClient(testenv.FirestoreClient(t)))
}

func testQuarantineCapturesRecentIPsRotatesAuditsAndTellsOnce(t *testing.T, st store.Store) {
	e, l, n := quarantineEnvOn(t, st)
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Key.ID
	today := t0.Truncate(24 * time.Hour)
	sawIPs(t, l, id, today, "203.0.113.7")
	sawIPs(t, l, id, today.AddDate(0, 0, -3), "198.51.100.1", "203.0.113.7") // the oldest day of the lookback
	sawIPs(t, l, id, today.AddDate(0, 0, -4), "192.0.2.99")                  // before it: not kept

	k, changed, err := e.svc.Leaked(ctx, id, keys.LeakQuarantine, leak)
	if err != nil || !changed {
		t.Fatalf("Leaked(quarantine): changed %v, %v", changed, err)
	}
	q := k.Quarantine
	if q == nil || !q.InForce() || k.Status != store.Active {
		t.Fatalf("key after quarantine: status %s, quarantine %+v", k.Status, q)
	}
	if want := []string{"198.51.100.1", "203.0.113.7"}; !slices.Equal(q.AllowedIPs, want) {
		t.Errorf("allowed IPs %v, want %v", q.AllowedIPs, want)
	}
	if !q.Since.Equal(t0) || !q.Until.Equal(t0.Add(48*time.Hour)) || q.URL != leak.URL || q.Source != leak.Source || q.Reporter != "github" {
		t.Errorf("quarantine %+v", q)
	}
	old, err := e.svc.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if old.RotatedTo == "" || old.ExpiresAt == nil || !old.ExpiresAt.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("old key: rotated_to %q, expires_at %v; want a rotation with the quarantine's grace", old.RotatedTo, old.ExpiresAt)
	}
	nk, err := e.svc.Get(ctx, old.RotatedTo)
	if err != nil {
		t.Fatal(err)
	}
	if nk.Quarantine != nil || nk.Status != store.Active || nk.RotatedFrom != id {
		t.Errorf("new key: quarantine %+v, status %s, rotated_from %q; want an active key without the quarantine", nk.Quarantine, nk.Status, nk.RotatedFrom)
	}
	audit, _, err := e.svc.Audit(ctx, store.AuditQuery{KeyID: id, PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	var qa *store.AuditEntry
	for i := range audit {
		if audit[i].Action == keys.ActionQuarantine {
			qa = &audit[i]
		}
	}
	if qa == nil {
		t.Fatalf("no %s audit entry in %+v", keys.ActionQuarantine, audit)
	}
	for k, want := range map[string]string{"url": leak.URL, "source": "content", "reporter": "github", "policy": "quarantine",
		"allowed_ips": "2", "reason": keys.ReasonLeaked, "until": t0.Add(48 * time.Hour).Format(time.RFC3339)} {
		if qa.Details[k] != want {
			t.Errorf("audit detail %s = %q, want %q", k, qa.Details[k], want)
		}
	}
	if qa.Actor != "leak:github" {
		t.Errorf("audit actor %q", qa.Actor)
	}
	if got := n.got(); len(got) != 1 || got[0] != fmt.Sprintf("key.leaked %s active %s", id, t0.Format(time.RFC3339)) {
		t.Fatalf("told %v, want one key.leaked", got)
	}
	ev := n.leaked[0]
	if ev["policy"] != "quarantine" || ev["url"] != leak.URL || ev["source"] != "content" || ev["rotated_to"] != old.RotatedTo || ev["allowed_ips"] != 2 {
		t.Errorf("key.leaked evidence %v", ev)
	}

	// A replay, even later, changes nothing twice.
	e.clock.Advance(time.Hour)
	k2, changed, err := e.svc.Leaked(ctx, id, keys.LeakQuarantine, leak)
	if err != nil || changed {
		t.Fatalf("replayed report: changed %v, %v", changed, err)
	}
	if k2.RotatedTo != old.RotatedTo || !k2.UpdatedAt.Equal(old.UpdatedAt) {
		t.Errorf("replay changed the key: %+v", k2)
	}
	if got := n.got(); len(got) != 1 {
		t.Errorf("replay told the owner again: %v", got)
	}
	ks, _, err := e.svc.List(ctx, store.ListKeysQuery{Owner: "acme", PageSize: 10})
	if err != nil || len(ks) != 2 {
		t.Errorf("keys of the owner after a replay: %d, %v; want the old and one new", len(ks), err)
	}
}

func TestQuarantineWithoutSeenIPsDisablesAtOnce(t *testing.T) {
	e, _, n := quarantineEnv(t)
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	k, changed, err := e.svc.Leaked(ctx, c.Key.ID, keys.LeakQuarantine, leak)
	if err != nil || !changed {
		t.Fatalf("Leaked: %v %v", changed, err)
	}
	if k.Status != store.Disabled || k.StatusReason != keys.ReasonLeaked || k.RotatedTo != "" || k.Quarantine == nil || k.Quarantine.InForce() {
		t.Fatalf("key %+v quarantine %+v; want disabled for the leak, no rotation, its quarantine ended", k, k.Quarantine)
	}
	if _, err := e.vault.KeySecret(ctx, k.ID); err == nil {
		t.Errorf("the disabled key's secret can still be read")
	}
	if _, changed, err := e.svc.Leaked(ctx, c.Key.ID, keys.LeakQuarantine, leak); err != nil || changed {
		t.Errorf("replay: %v %v", changed, err)
	}
	if got := n.got(); len(got) != 1 || n.leaked[0]["allowed_ips"] != 0 {
		t.Errorf("told %v %v, want one key.leaked with no IPs", got, n.leaked)
	}
}

func TestQuarantineOfIPRestrictedKeyKeepsItsAllowedIPs(t *testing.T) {
	e, _, _ := quarantineEnv(t)
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", keys.CreateRequest{Owner: "acme", Restrictions: &store.Restrictions{AllowedIPs: []string{"10.0.0.0/8"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := e.svc.Leaked(ctx, c.Key.ID, keys.LeakQuarantine, leak)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Quarantine.InForce() || !slices.Equal(k.Quarantine.AllowedIPs, []string{"10.0.0.0/8"}) {
		t.Errorf("quarantine %+v, want the key's own allowed_ips", k.Quarantine)
	}
}

func TestQuarantineRotationFailureIsResumedByAReplay(t *testing.T) {
	testQuarantineRotationFailureIsResumedByAReplay(t, nil)
}

func TestQuarantineRotationFailureIsResumedByAReplayFirestore(t *testing.T) {
	testenv.Firestore(t)
	testQuarantineRotationFailureIsResumedByAReplay(t, firestorestore.NewFromClient(testenv.FirestoreClient(t)))
}

func testQuarantineRotationFailureIsResumedByAReplay(t *testing.T, st store.Store) {
	e, l, n := quarantineEnvOn(t, st)
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Key.ID
	sawIPs(t, l, id, t0, "203.0.113.7")
	e.crash.failOnce("CreateKeySecret") // the rotation's new secret
	if _, _, err := e.svc.Leaked(ctx, id, keys.LeakQuarantine, leak); err == nil {
		t.Fatal("Leaked with a failing rotation: no error")
	}
	k, err := e.svc.Get(ctx, id)
	if err != nil || !k.Quarantine.InForce() || k.RotatedTo != "" {
		t.Fatalf("after the failure: %+v %v; want quarantined, not rotated", k, err)
	}
	if got := n.got(); len(got) != 1 {
		t.Errorf("told %v, want key.leaked once even though the rotation failed", got)
	}
	if _, changed, err := e.svc.Leaked(ctx, id, keys.LeakQuarantine, leak); err != nil || changed {
		t.Fatalf("replay: changed %v, %v", changed, err)
	}
	k, _ = e.svc.Get(ctx, id)
	if k.RotatedTo == "" {
		t.Fatal("the replay did not finish the rotation")
	}
	ks, _, _ := e.svc.List(ctx, store.ListKeysQuery{Owner: "acme", PageSize: 10})
	if len(ks) != 2 {
		t.Errorf("%d keys, want the old and one new", len(ks))
	}
	if got := n.got(); len(got) != 1 {
		t.Errorf("told %v after the replay, want still once", got)
	}
}

func TestEndQuarantineDisablesOnlyWhenDueAndOnce(t *testing.T) {
	e, l, n := quarantineEnv(t)
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Key.ID
	sawIPs(t, l, id, t0, "203.0.113.7")
	k, _, err := e.svc.Leaked(ctx, id, keys.LeakQuarantine, leak)
	if err != nil {
		t.Fatal(err)
	}
	if _, ended, err := e.svc.EndQuarantine(ctx, "sweep", k); err != nil || ended {
		t.Fatalf("EndQuarantine before the grace ends: %v %v", ended, err)
	}
	e.clock.Advance(48 * time.Hour)
	k, _ = e.svc.Get(ctx, id)
	if !keys.QuarantineDue(k, e.clock.Now()) {
		t.Fatal("not due at the end of the grace")
	}
	got, ended, err := e.svc.EndQuarantine(ctx, "sweep", k)
	if err != nil || !ended {
		t.Fatalf("EndQuarantine: %v %v", ended, err)
	}
	if got.Status != store.Disabled || got.StatusReason != keys.ReasonLeaked || got.Quarantine.InForce() || got.Quarantine.EndedAt == nil {
		t.Errorf("after the end: %+v %+v", got, got.Quarantine)
	}
	if _, again, err := e.svc.EndQuarantine(ctx, "sweep", k); err != nil || again {
		t.Errorf("second EndQuarantine: %v %v", again, err)
	}
	if _, err := e.vault.KeySecret(ctx, id); err == nil {
		t.Errorf("the disabled key's secret can still be read")
	}
	if ev := n.got(); len(ev) != 2 || ev[1] != fmt.Sprintf("swept %s disabled %s", id, e.clock.Now().Format(time.RFC3339)) {
		t.Errorf("told %v, want key.leaked then the sweep's disable", ev)
	}
	if n.evidence[0]["policy"] != "quarantine" || n.evidence[0]["url"] != leak.URL {
		t.Errorf("sweep evidence %v", n.evidence[0])
	}
	audit, _, _ := e.svc.Audit(ctx, store.AuditQuery{KeyID: id, PageSize: 1})
	if a := audit[0]; a.Action != keys.ActionDisable || a.Details["reason"] != keys.ReasonLeaked || a.Details["policy"] != "quarantine" || a.Details["url"] != leak.URL {
		t.Errorf("last audit entry %+v", a)
	}
	// The sweep's recovery recognises the change as its own.
	if swept, err := e.svc.FinishSweepChange(ctx, got); err != nil || !swept {
		t.Errorf("FinishSweepChange: %v %v", swept, err)
	}
	// An operator may enable it again (a false report): the ended
	// quarantine no longer restricts it.
	en, err := e.svc.Enable(ctx, "admin", id)
	if err != nil || en.Status != store.Active || en.Quarantine.InForce() {
		t.Errorf("Enable: %+v %v", en, err)
	}
}

// A quarantined key disabled for the leak before its grace ends (the
// policy changed, say) only has its quarantine closed by the sweep: no
// second disable, audit entry or notification, and the sweep's recovery
// does not take it for its own change.
func TestEndQuarantineOfAKeyAlreadyStoppedOnlyClosesTheRecord(t *testing.T) {
	e, l, n := quarantineEnv(t)
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Key.ID
	sawIPs(t, l, id, t0, "203.0.113.7")
	if _, _, err := e.svc.Leaked(ctx, id, keys.LeakQuarantine, leak); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	stopped, changed, err := e.svc.Leaked(ctx, id, keys.LeakDisable, leak)
	if err != nil || !changed || stopped.Status != store.Disabled {
		t.Fatalf("LeakDisable of the quarantined key: %v %v", changed, err)
	}
	told := len(n.got())
	audits, _, _ := e.svc.Audit(ctx, store.AuditQuery{KeyID: id, PageSize: 100})
	e.clock.Advance(48 * time.Hour)
	k, _ := e.svc.Get(ctx, id)
	got, ended, err := e.svc.EndQuarantine(ctx, "sweep", k)
	if err != nil || ended || got != nil {
		t.Fatalf("EndQuarantine: %v %v %v; want no disable", got, ended, err)
	}
	k, _ = e.svc.Get(ctx, id)
	if k.Quarantine.InForce() || !k.UpdatedAt.Equal(stopped.UpdatedAt) {
		t.Errorf("after: quarantine %+v, updated_at %v (was %v); want it closed, the key as it was", k.Quarantine, k.UpdatedAt, stopped.UpdatedAt)
	}
	if after, _, _ := e.svc.Audit(ctx, store.AuditQuery{KeyID: id, PageSize: 100}); len(after) != len(audits) {
		t.Errorf("%d audit entries, want still %d", len(after), len(audits))
	}
	if swept, err := e.svc.FinishSweepChange(ctx, k); err != nil || swept {
		t.Errorf("FinishSweepChange: %v %v; want not the sweep's", swept, err)
	}
	if len(n.got()) != told {
		t.Errorf("told %v, want nothing more", n.got())
	}
}
