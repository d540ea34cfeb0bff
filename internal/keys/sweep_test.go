package keys_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

// eachStore runs test on a Service over each store adapter: the embedded
// SQLite store always, the Firestore emulator's when there is one (skipped
// without FIRESTORE_EMULATOR_HOST, failed with KEYPLANE_REQUIRE_EMULATORS;
// see testenv). The sweep's transitions are compare-and-sets inside
// UpdateKey, which each backend runs its own way.
func eachStore(t *testing.T, test func(t *testing.T, e *env)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { test(t, newEnv(t, nil)) })
	t.Run("firestore", func(t *testing.T) {
		testenv.Firestore(t)
		st := firestorestore.NewFromClient(testenv.FirestoreClient(t))
		test(t, newEnv(t, st))
	})
}

// created provisions a key and returns it as stored: the version a sweep
// would judge.
func (e *env) created(t *testing.T) *store.Key {
	t.Helper()
	c, err := e.svc.Create(context.Background(), "admin", req, "")
	if err != nil {
		t.Fatal(err)
	}
	return c.Key
}

func (e *env) stored(t *testing.T, id string) *store.Key {
	t.Helper()
	k, err := e.store.Store.GetKey(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// auditOf returns id's audit entries, newest first.
func (e *env) auditOf(t *testing.T, id string) []store.AuditEntry {
	t.Helper()
	es, _, err := e.svc.Audit(context.Background(), store.AuditQuery{KeyID: id, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// secretEnabled reports whether id's secret can be read: false once its
// version is disabled (or destroyed).
func (e *env) secretEnabled(t *testing.T, id string) bool {
	t.Helper()
	_, err := e.vault.Vault.KeySecret(context.Background(), id)
	switch {
	case err == nil:
		return true
	case errs.Is(err, errs.FailedPrecondition), errs.Is(err, errs.NotFound):
		return false
	}
	t.Fatalf("reading the secret of %s: %v", id, err)
	return false
}

func stamp(t time.Time) string { return t.Format(time.RFC3339) }

func TestSuspendWritesAuditsAndTellsTheOwner(t *testing.T) {
	until := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		sp      keys.Suspension
		details map[string]string
	}{
		{"quota", keys.Suspension{Reason: keys.ReasonQuotaExceeded, Until: &until,
			Evidence: map[string]any{"limit": "requests_per_day", "window": "day", "used": int64(11), "max": int64(10)}},
			map[string]string{"reason": "quota_exceeded", "limit": "requests_per_day", "window": "day", "used": "11", "max": "10",
				"until": "2026-11-26T00:00:00Z"}},
		{"spike", keys.Suspension{Reason: keys.ReasonSpike,
			Evidence: map[string]any{"limit": "requests_per_hour", "window": "hour", "used": int64(101), "max": int64(100), "baseline_per_hour": 5.0}},
			map[string]string{"reason": "abuse_spike", "limit": "requests_per_hour", "window": "hour", "used": "101", "max": "100",
				"baseline_per_hour": "5.00"}},
		{"distinct IPs", keys.Suspension{Reason: keys.ReasonDistinctIPs,
			Evidence: map[string]any{"limit": "distinct_ips_per_day", "window": "day", "used": int64(3), "max": int64(2),
				"ips": []string{"203.0.113.1", "203.0.113.2", "198.51.100.7"}}},
			map[string]string{"reason": "abuse_distinct_ips", "limit": "distinct_ips_per_day", "window": "day", "used": "3", "max": "2",
				"ips": "203.0.113.1,203.0.113.2,198.51.100.7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachStore(t, func(t *testing.T, e *env) {
				n := &told{}
				e.svc.Notifier = n
				judged := e.created(t)
				e.clock.Advance(time.Second)
				now := e.clock.Now()
				k, ok, err := e.svc.Suspend(context.Background(), "sweep", judged, tc.sp)
				if err != nil || !ok {
					t.Fatalf("Suspend = %v, %v; want the key suspended", ok, err)
				}
				got := e.stored(t, judged.ID)
				if got.Status != store.Disabled || got.StatusReason != tc.sp.Reason || !got.UpdatedAt.Equal(now) ||
					(got.DisabledUntil == nil) != (tc.sp.Until == nil) || got.DisabledUntil != nil && !got.DisabledUntil.Equal(until) {
					t.Errorf("stored key = %s %q until %v at %v; want disabled %q until %v at %v",
						got.Status, got.StatusReason, got.DisabledUntil, got.UpdatedAt, tc.sp.Reason, tc.sp.Until, now)
				}
				if !k.UpdatedAt.Equal(got.UpdatedAt) || k.Status != got.Status {
					t.Errorf("returned key %s at %v, stored %s at %v", k.Status, k.UpdatedAt, got.Status, got.UpdatedAt)
				}
				a := e.auditOf(t, judged.ID)[0]
				if a.Actor != "sweep" || a.Action != keys.ActionDisable || !a.Time.Equal(now) {
					t.Errorf("audit entry = %s %s at %v; want sweep %s at %v", a.Actor, a.Action, a.Time, keys.ActionDisable, now)
				}
				if diff := cmp.Diff(tc.details, a.Details); diff != "" {
					t.Errorf("audit details (-want +got):\n%s", diff)
				}
				if e.secretEnabled(t, judged.ID) {
					t.Error("the secret of a suspended key can be read; want its version disabled")
				}
				if diff := cmp.Diff([]string{"swept " + judged.ID + " disabled " + stamp(now)}, n.got()); diff != "" {
					t.Errorf("what the owner was told (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]map[string]any{tc.sp.Evidence}, n.evidence); diff != "" {
					t.Errorf("evidence told (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// A key an operator (or another sweep) changed after the sweep read it is
// left as they left it: the sweep's judgement was of another version.
func TestSuspendLeavesAKeyChangedSinceItWasJudged(t *testing.T) {
	until := t0.Add(12 * time.Hour)
	quota := keys.Suspension{Reason: keys.ReasonQuotaExceeded, Until: &until, Evidence: map[string]any{"used": int64(11)}}
	for _, tc := range []struct {
		name       string
		meanwhile  func(ctx context.Context, e *env, judged *store.Key) error
		wantStatus store.Status
		wantReason string
	}{
		{"disabled by an operator", func(ctx context.Context, e *env, k *store.Key) error {
			_, err := e.svc.Disable(ctx, "ops", k.ID, "investigating")
			return err
		}, store.Disabled, "investigating"},
		{"renamed by an operator: still active, another version", func(ctx context.Context, e *env, k *store.Key) error {
			name := "renamed"
			_, err := e.svc.Update(ctx, "ops", k.ID, keys.UpdateRequest{Name: &name})
			return err
		}, store.Active, ""},
		{"revoked by an operator", func(ctx context.Context, e *env, k *store.Key) error {
			_, err := e.svc.Revoke(ctx, "ops", k.ID, "leaked")
			return err
		}, store.Revoked, "leaked"},
		{"suspended by another sweep", func(ctx context.Context, e *env, k *store.Key) error {
			_, _, err := e.svc.Suspend(ctx, "sweep", k, keys.Suspension{Reason: keys.ReasonSpike})
			return err
		}, store.Disabled, keys.ReasonSpike},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachStore(t, func(t *testing.T, e *env) {
				ctx := context.Background()
				n := &told{}
				e.svc.Notifier = n
				judged := e.created(t)
				e.clock.Advance(time.Second)
				if err := tc.meanwhile(ctx, e, judged); err != nil {
					t.Fatal(err)
				}
				before, audits, events, secret := e.stored(t, judged.ID), len(e.auditOf(t, judged.ID)), len(n.got()), e.secretEnabled(t, judged.ID)
				e.clock.Advance(time.Second)
				k, ok, err := e.svc.Suspend(ctx, "sweep", judged, quota)
				if err != nil || ok || k != nil {
					t.Fatalf("Suspend of a key changed since it was judged = %v, %v, %v; want nil, false, nil", k, ok, err)
				}
				got := e.stored(t, judged.ID)
				if got.Status != tc.wantStatus || got.StatusReason != tc.wantReason || !got.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("key = %s %q at %v; want %s %q at %v, as left", got.Status, got.StatusReason, got.UpdatedAt,
						tc.wantStatus, tc.wantReason, before.UpdatedAt)
				}
				if got := len(e.auditOf(t, judged.ID)); got != audits {
					t.Errorf("%d audit entries, want %d: nothing written", got, audits)
				}
				if got := len(n.got()); got != events {
					t.Errorf("owner told %d times, want %d: nothing told", got, events)
				}
				if got := e.secretEnabled(t, judged.ID); got != secret {
					t.Errorf("secret readable = %v, want %v: the secret left as it was", got, secret)
				}
			})
		})
	}
	t.Run("a key that is not stored", func(t *testing.T) {
		e := newEnv(t, nil)
		k, ok, err := e.svc.Suspend(context.Background(), "sweep", &store.Key{ID: "key_0000000000000000", Status: store.Active}, quota)
		if err != nil || ok || k != nil {
			t.Errorf("Suspend = %v, %v, %v; want nil, false, nil", k, ok, err)
		}
	})
}

// Overlapping sweeps acting on one judgement change the key once: one
// audit entry, one notification.
func TestOverlappingSuspendsChangeTheKeyOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		n := &told{}
		e.svc.Notifier = n
		judged := e.created(t)
		e.clock.Advance(time.Second)
		var (
			wg        sync.WaitGroup
			suspended atomic.Int32
		)
		for range 8 {
			wg.Go(func() {
				_, ok, err := e.svc.Suspend(context.Background(), "sweep", judged, keys.Suspension{Reason: keys.ReasonSpike})
				if err != nil {
					t.Error(err)
				}
				if ok {
					suspended.Add(1)
				}
			})
		}
		wg.Wait()
		if got := suspended.Load(); got != 1 {
			t.Errorf("%d of 8 overlapping Suspends suspended the key, want 1", got)
		}
		disables := 0
		for _, a := range e.auditOf(t, judged.ID) {
			if a.Action == keys.ActionDisable {
				disables++
			}
		}
		if disables != 1 || len(n.got()) != 1 {
			t.Errorf("%d disable audit entries, owner told %v; want one of each", disables, n.got())
		}
	})
}

// Lift ends the sweep's own quota suspension once its window has ended,
// and nothing else: not an abuse suspension, not an operator's disable,
// whatever the key looked like when the sweep listed it.
func TestLiftEndsOnlyTheSweepsOwnEndedSuspension(t *testing.T) {
	// suspend returns a key suspended by the sweep for reason, for an hour
	// if it is a quota suspension, as the sweep lists it.
	suspend := func(t *testing.T, e *env, reason string) *store.Key {
		t.Helper()
		sp := keys.Suspension{Reason: reason}
		if reason == keys.ReasonQuotaExceeded {
			until := e.clock.Now().Add(time.Hour)
			sp.Until = &until
		}
		judged := e.created(t)
		e.clock.Advance(time.Second)
		k, ok, err := e.svc.Suspend(context.Background(), "sweep", judged, sp)
		if err != nil || !ok {
			t.Fatalf("Suspend = %v, %v", ok, err)
		}
		return k
	}

	t.Run("quota suspension whose window ended", func(t *testing.T) {
		eachStore(t, func(t *testing.T, e *env) {
			n := &told{}
			e.svc.Notifier = n
			listed := suspend(t, e, keys.ReasonQuotaExceeded)
			e.clock.Set(listed.DisabledUntil.Add(time.Minute))
			now := e.clock.Now()
			k, ok, err := e.svc.Lift(context.Background(), "sweep", listed)
			if err != nil || !ok {
				t.Fatalf("Lift = %v, %v; want the suspension lifted", ok, err)
			}
			got := e.stored(t, listed.ID)
			if got.Status != store.Active || got.StatusReason != keys.ReasonWindowReset || got.DisabledUntil != nil || !got.UpdatedAt.Equal(now) {
				t.Errorf("stored key = %s %q until %v at %v; want active %q at %v", got.Status, got.StatusReason, got.DisabledUntil,
					got.UpdatedAt, keys.ReasonWindowReset, now)
			}
			if !k.UpdatedAt.Equal(now) {
				t.Errorf("returned key at %v, want %v", k.UpdatedAt, now)
			}
			a := e.auditOf(t, listed.ID)[0]
			want := map[string]string{"reason": "window_reset", "previous_reason": "quota_exceeded", "until": stamp(*listed.DisabledUntil)}
			if a.Actor != "sweep" || a.Action != keys.ActionEnable || !a.Time.Equal(now) {
				t.Errorf("audit entry = %s %s at %v; want sweep %s at %v", a.Actor, a.Action, a.Time, keys.ActionEnable, now)
			}
			if diff := cmp.Diff(want, a.Details); diff != "" {
				t.Errorf("audit details (-want +got):\n%s", diff)
			}
			if !e.secretEnabled(t, listed.ID) {
				t.Error("the secret of a lifted key cannot be read")
			}
			wantTold := []string{"swept " + listed.ID + " disabled " + stamp(listed.UpdatedAt), "swept " + listed.ID + " active " + stamp(now)}
			if diff := cmp.Diff(wantTold, n.got()); diff != "" {
				t.Errorf("what the owner was told (-want +got):\n%s", diff)
			}
			if n.evidence[1] != nil {
				t.Errorf("a lift told evidence %v, want none", n.evidence[1])
			}
			// Lifting it again (an overlapping sweep that listed it too)
			// changes nothing.
			e.clock.Advance(time.Second)
			if k, ok, err := e.svc.Lift(context.Background(), "sweep", listed); err != nil || ok || k != nil {
				t.Errorf("second Lift = %v, %v, %v; want nil, false, nil", k, ok, err)
			}
			if got := len(e.auditOf(t, listed.ID)); got != 3 || len(n.got()) != 2 {
				t.Errorf("after a second Lift: %d audit entries, told %v; want create, disable, enable and two notifications", got, n.got())
			}
		})
	})

	for _, tc := range []struct {
		name string
		// setup returns the key as the sweep listed it, and then changes
		// it as an operator or the clock would.
		setup      func(t *testing.T, e *env) *store.Key
		wantStatus store.Status
		wantReason string
		wantSecret bool
	}{
		{"quota suspension before its window ends", func(t *testing.T, e *env) *store.Key {
			k := suspend(t, e, keys.ReasonQuotaExceeded)
			e.clock.Advance(30 * time.Minute)
			return k
		}, store.Disabled, keys.ReasonQuotaExceeded, false},
		{"abuse suspension, whatever the listing said", func(t *testing.T, e *env) *store.Key {
			k := suspend(t, e, keys.ReasonSpike)
			forged := *k
			past := e.clock.Now()
			forged.StatusReason, forged.DisabledUntil = keys.ReasonQuotaExceeded, &past
			e.clock.Advance(time.Hour)
			return &forged
		}, store.Disabled, keys.ReasonSpike, false},
		{"an operator's disable after the sweep listed its suspension", func(t *testing.T, e *env) *store.Key {
			k := suspend(t, e, keys.ReasonQuotaExceeded)
			e.clock.Advance(time.Second)
			if _, err := e.svc.Disable(context.Background(), "ops", k.ID, "investigating"); err != nil {
				t.Fatal(err)
			}
			e.clock.Set(k.DisabledUntil.Add(time.Minute))
			return k
		}, store.Disabled, "investigating", false},
		{"an operator's enable after the sweep listed its suspension", func(t *testing.T, e *env) *store.Key {
			k := suspend(t, e, keys.ReasonQuotaExceeded)
			e.clock.Advance(time.Second)
			if _, err := e.svc.Enable(context.Background(), "ops", k.ID); err != nil {
				t.Fatal(err)
			}
			e.clock.Set(k.DisabledUntil.Add(time.Minute))
			return k
		}, store.Active, "", true},
		{"revoked after the sweep listed its suspension", func(t *testing.T, e *env) *store.Key {
			k := suspend(t, e, keys.ReasonQuotaExceeded)
			e.clock.Advance(time.Second)
			if _, err := e.svc.Revoke(context.Background(), "ops", k.ID, "leaked"); err != nil {
				t.Fatal(err)
			}
			e.clock.Set(k.DisabledUntil.Add(time.Minute))
			return k
		}, store.Revoked, "leaked", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachStore(t, func(t *testing.T, e *env) {
				n := &told{}
				e.svc.Notifier = n
				listed := tc.setup(t, e)
				before, audits, events := e.stored(t, listed.ID), len(e.auditOf(t, listed.ID)), len(n.got())
				k, ok, err := e.svc.Lift(context.Background(), "sweep", listed)
				if err != nil || ok || k != nil {
					t.Fatalf("Lift = %v, %v, %v; want nil, false, nil", k, ok, err)
				}
				got := e.stored(t, listed.ID)
				if got.Status != tc.wantStatus || got.StatusReason != tc.wantReason || !got.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("key = %s %q at %v; want %s %q at %v, as left", got.Status, got.StatusReason, got.UpdatedAt,
						tc.wantStatus, tc.wantReason, before.UpdatedAt)
				}
				if got := len(e.auditOf(t, listed.ID)); got != audits {
					t.Errorf("%d audit entries, want %d: nothing written", got, audits)
				}
				if got := len(n.got()); got != events {
					t.Errorf("owner told %d times, want %d: nothing told", got, events)
				}
				if got := e.secretEnabled(t, listed.ID); got != tc.wantSecret {
					t.Errorf("secret readable = %v, want %v: in line with the key as left", got, tc.wantSecret)
				}
			})
		})
	}
}

func TestSuspendRefusesWhatIsNotTheSweeps(t *testing.T) {
	e := newEnv(t, nil)
	until := t0.Add(time.Hour)
	for _, tc := range []struct {
		name string
		sp   keys.Suspension
	}{
		{"an operator's reason", keys.Suspension{Reason: "manual"}},
		{"no reason", keys.Suspension{}},
		{"the lift's reason", keys.Suspension{Reason: keys.ReasonWindowReset, Until: &until}},
		{"a quota suspension without an end", keys.Suspension{Reason: keys.ReasonQuotaExceeded}},
		{"an abuse suspension with an end", keys.Suspension{Reason: keys.ReasonDistinctIPs, Until: &until}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			judged := e.created(t)
			if _, ok, err := e.svc.Suspend(context.Background(), "sweep", judged, tc.sp); !errs.Is(err, errs.Invalid) || ok {
				t.Errorf("Suspend = %v, %v; want Invalid", ok, err)
			}
			if k := e.stored(t, judged.ID); k.Status != store.Active || len(e.auditOf(t, judged.ID)) != 1 {
				t.Errorf("key = %s with %d audit entries; want it active and untouched", k.Status, len(e.auditOf(t, judged.ID)))
			}
		})
	}
}

// A sweep change whose effects were not all made (the process died after
// the store write, or the owner could not be told) is finished by
// FinishSweepChange from the key as the change feed has it.
func TestFinishSweepChangeMakesTheEffectsLeftUndone(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		n := &told{}
		e.svc.Notifier = n
		until := t0.Add(time.Hour)
		quota := keys.Suspension{Reason: keys.ReasonQuotaExceeded, Until: &until}

		crashed := e.created(t)
		e.clock.Advance(time.Second)
		e.crash.arm("UpdateKey")
		if _, _, err := e.svc.Suspend(ctx, "sweep", crashed, quota); err == nil {
			t.Fatal("Suspend survived the crash")
		}
		e.crash.restart()
		k := e.stored(t, crashed.ID)
		if k.Status != store.Disabled || !e.secretEnabled(t, k.ID) || len(n.got()) != 0 {
			t.Fatalf("after the crash: key %s, secret readable %v, told %v; want suspended, readable, nobody told",
				k.Status, e.secretEnabled(t, k.ID), n.got())
		}
		if ok, err := e.svc.FinishSweepChange(ctx, k); err != nil || !ok {
			t.Fatalf("FinishSweepChange = %v, %v", ok, err)
		}
		if e.secretEnabled(t, k.ID) {
			t.Error("the suspended key's secret is still readable after FinishSweepChange")
		}

		untold := e.created(t)
		e.clock.Advance(time.Second)
		n.fail = errs.E(errs.Unavailable, "notifications down")
		sk, ok, err := e.svc.Suspend(ctx, "sweep", untold, keys.Suspension{Reason: keys.ReasonSpike})
		if !ok || !errs.Is(err, errs.Unavailable) || sk == nil || sk.Status != store.Disabled {
			t.Fatalf("Suspend with the owner untold = %v, %v, %v; want the suspended key, true and the notifier's error", sk, ok, err)
		}
		n.fail = nil
		if ok, err := e.svc.FinishSweepChange(ctx, e.stored(t, untold.ID)); err != nil || !ok {
			t.Fatalf("FinishSweepChange = %v, %v", ok, err)
		}
		want := []string{"swept " + k.ID + " disabled " + stamp(k.UpdatedAt), "swept " + sk.ID + " disabled " + stamp(sk.UpdatedAt)}
		if diff := cmp.Diff(want, n.got()); diff != "" {
			t.Errorf("what the owners were told (-want +got):\n%s", diff)
		}

		// Not the sweep's changes: nothing to finish.
		manual := e.created(t)
		if _, err := e.svc.Disable(ctx, "ops", manual.ID, "investigating"); err != nil {
			t.Fatal(err)
		}
		active := e.created(t)
		told := len(n.got())
		for _, other := range []*store.Key{e.stored(t, manual.ID), e.stored(t, active.ID)} {
			if ok, err := e.svc.FinishSweepChange(ctx, other); err != nil || ok {
				t.Errorf("FinishSweepChange of a %s key with reason %q = %v, %v; want false", other.Status, other.StatusReason, ok, err)
			}
		}
		if got := len(n.got()); got != told || !e.secretEnabled(t, active.ID) {
			t.Errorf("FinishSweepChange of changes not the sweep's told the owner (%d times, want %d) or disabled a secret", got, told)
		}
	})
}
