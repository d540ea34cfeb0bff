package verify_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/firestoreledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/verify"
)

// spendEnv is a verify env with a ledger that prices what it counts.
type spendEnv struct {
	*env
	ledger ledger.Ledger
	seq    int
}

func newSpendEnv(t *testing.T, st store.Store, l ledger.Ledger) *spendEnv {
	t.Helper()
	if l == nil {
		sl, err := sqliteledger.Open(filepath.Join(t.TempDir(), "usage.db"))
		if err != nil {
			t.Fatal(err)
		}
		l = sl
	}
	t.Cleanup(func() { l.Close() })
	return &spendEnv{env: newEnv(t, st), ledger: l}
}

// quotas returns a Quotas on the env's ledger refreshing entries older
// than staleness.
func (e *spendEnv) quotas(t *testing.T, staleness time.Duration) *verify.Quotas {
	q := verify.NewQuotas(e.ledger, staleness, slog.New(slog.DiscardHandler))
	t.Cleanup(q.Stop)
	return q
}

// meter counts n requests of units each for key k of owner, priced at
// the plan's prices as the meter prices them.
func (e *spendEnv) meter(t *testing.T, k *keys.Created, n, units int64) {
	t.Helper()
	p, _ := e.plans.Get(k.Key.Plan)
	var evs []ledger.Counted
	for range n {
		e.seq++
		cost, _ := p.Cost("", 1, units, 0)
		evs = append(evs, ledger.Counted{Event: usage.Event{ID: fmt.Sprint("evt-", e.seq), KeyID: k.Key.ID, Time: e.clock.Now(),
			Requests: 1, Units: units}, Owner: k.Key.Owner, Cost: cost})
	}
	if got, err := e.ledger.Count(context.Background(), evs, usage.Retention); got != len(evs) || err != nil {
		t.Fatalf("Count: %d of %d, %v", got, len(evs), err)
	}
}

func (e *spendEnv) owners() *owners.Service {
	return &owners.Service{Store: e.store, Plans: e.plans, Clock: e.clock, Spend: e.ledger, Logger: slog.New(slog.DiscardHandler)}
}

// settle verifies until the decision is want, moving the clock past
// staleness so that the quotas' background reads land.
func settle(t *testing.T, e *env, v *verify.Verifier, req verify.Request, step time.Duration, want verify.Code) verify.Decision {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.clock.Advance(step)
		d, err := v.Verify(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if d.Code == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("Verify = %s, want %s (limits %+v)", d.Code, want, d.Limits())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A plan's spend cap refuses every key of the owner once its spend,
// metered and reserved, reaches the cap; the refusal names the limit in
// micro-units of the currency; an owner's own cap overrides the plan's.
func TestSpendCapRefusesWithTheLimitNamed(t *testing.T) {
	e := newSpendEnv(t, nil, nil)
	a := e.create(t, keys.CreateRequest{Owner: "acct_m", Plan: "metered"})
	b := e.create(t, keys.CreateRequest{Owner: "acct_m", Plan: "metered"})
	v := e.verifier(&verify.Options{Quota: e.quotas(t, time.Hour)})
	e.meter(t, a, 7, 0) // 0.07 of the 0.10 cap
	// 0.07 + a 0.01 reservation, then 0.08 + a 0.01 + 0.5 × 1.00 one
	// (units count at their price), which passes the cap: next, refused.
	check(t, v, verify.Request{Key: b.Secret}, verify.Valid)
	check(t, v, verify.Request{Key: a.Secret, Units: 500}, verify.Valid)
	d := check(t, v, verify.Request{Key: b.Secret}, verify.UsageExceeded)
	l := refusal(t, d)
	if l.Scope != verify.ScopeOwner || l.Name != verify.LimitSpendPerMonth || l.Limit != 100_000 || l.Used != 590_000 || l.Remaining != 0 ||
		l.Currency != "USD" || l.Source != "plan metered" || !l.ResetAt.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("refused by %+v, want the owner's spend_per_month 100000 µUSD from plan metered, used 590000, reset December 1", l)
	}
	// The owner's own cap overrides the plan's: a raise lets it in again.
	if _, err := e.owners().Update(context.Background(), "ops", "acct_m", owners.UpdateRequest{SpendCap: owners.CapPatch{Set: true, Spec: &plan.SpendCapSpec{Monthly: "5"}}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute) // the owner cache's TTL
	d = check(t, v, verify.Request{Key: b.Secret}, verify.Valid)
	for _, s := range d.Limits() {
		if s.Name == verify.LimitSpendPerMonth && (s.Limit != 5_000_000 || s.Source != verify.SourceOwnerOverride) {
			t.Errorf("after the raise: %+v", s)
		}
	}
	// A cap below the month's spend is accepted and refuses at once.
	if _, err := e.owners().Update(context.Background(), "ops", "acct_m", owners.UpdateRequest{SpendCap: owners.CapPatch{Set: true, Spec: &plan.SpendCapSpec{Monthly: "0.01"}}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	check(t, v, verify.Request{Key: a.Secret}, verify.UsageExceeded)
	// A new month starts from zero spend.
	e.clock.Set(time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC))
	settle(t, e.env, v, verify.Request{Key: a.Secret}, time.Hour, verify.Valid)
}

// A prepaid owner is refused (limit credits) until a top-up, draws the
// balance down by its spend (metered and reserved), and is refused again
// at zero; spend before the first top-up is not drawn from it.
func TestPrepaidCreditsDrawDownAndRefuseAtZero(t *testing.T) {
	e := newSpendEnv(t, nil, nil)
	k := e.create(t, keys.CreateRequest{Owner: "acct_p", Plan: "prepaid"})
	v := e.verifier(&verify.Options{Quota: e.quotas(t, time.Nanosecond)})
	e.meter(t, k, 5, 0) // spend before any top-up
	d := check(t, v, verify.Request{Key: k.Secret}, verify.UsageExceeded)
	if l := refusal(t, d); l.Name != verify.LimitCredits || l.Limit != 0 || l.Remaining != 0 || l.Currency != "USD" || !l.ResetAt.IsZero() {
		t.Errorf("before a top-up: refused by %+v, want credits 0 without a reset", l)
	}
	svc := e.owners()
	if _, _, created, err := svc.AddCredit(context.Background(), "billing", "acct_p", owners.CreditRequest{ID: "topup_1", Amount: "0.03"}); err != nil || !created {
		t.Fatalf("AddCredit: created %v, %v", created, err)
	}
	e.clock.Advance(2 * time.Minute) // the owner cache's TTL
	for i := range 3 {
		d := check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
		for _, s := range d.Limits() {
			if s.Name == verify.LimitCredits && (s.Limit != 30_000 || s.Remaining != int64(30_000-10_000*i) || s.Source != verify.SourceCredits) {
				t.Errorf("admitted request %d: %+v", i, s)
			}
		}
		e.meter(t, k, 1, 0)
	}
	d = settle(t, e.env, v, verify.Request{Key: k.Secret}, time.Millisecond, verify.UsageExceeded)
	if l := refusal(t, d); l.Name != verify.LimitCredits || l.Limit != 30_000 || l.Used != 30_000 || l.Remaining != 0 {
		t.Errorf("at zero: refused by %+v", l)
	}
	// A replay changes nothing; a new top-up lets the owner in again.
	if _, _, created, err := svc.AddCredit(context.Background(), "billing", "acct_p", owners.CreditRequest{ID: "topup_1", Amount: "0.03"}); err != nil || created {
		t.Fatalf("replayed AddCredit: created %v, %v", created, err)
	}
	if _, _, _, err := svc.AddCredit(context.Background(), "billing", "acct_p", owners.CreditRequest{ID: "topup_2", Amount: "1"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	settle(t, e.env, v, verify.Request{Key: k.Secret}, time.Millisecond, verify.Valid)
}

// TestSpendCapOvershootIsBounded checks the overshoot bound of
// docs/operations.md on SQLite: see spendOvershoot.
func TestSpendCapOvershootIsBounded(t *testing.T) { spendOvershoot(t, newSpendEnv(t, nil, nil)) }

// TestSpendCapOvershootIsBoundedOnFirestore is the same on the Firestore
// emulator's store and ledger.
func TestSpendCapOvershootIsBoundedOnFirestore(t *testing.T) {
	testenv.Firestore(t)
	project := testenv.ProjectID()
	st := firestorestore.NewFromClient(testenv.FirestoreClientFor(t, project))
	l := firestoreledger.NewFromClient(testenv.FirestoreClientFor(t, project), firestoreledger.Options{})
	spendOvershoot(t, newSpendEnv(t, st, l))
}

// spendOvershoot runs 2 instances (verifiers with their own caches) of
// one owner whose spend is 0.04 of a 0.10 cap at 0.01 a request, with
// 60 concurrent requests each. The bound: an instance admits at most
// what remains at its last read (6 requests: its reservations are
// checked and taken atomically), so N instances overshoot by at most
// (N-1) × that; once the admitted requests are metered, each refuses
// after its next read.
func spendOvershoot(t *testing.T, e *spendEnv) {
	a := e.create(t, keys.CreateRequest{Owner: "acct_o", Plan: "metered"})
	e.meter(t, a, 4, 0)
	const instances, perInstance = 2, 60
	vs := make([]*verify.Verifier, instances)
	for i := range vs {
		vs[i] = e.verifier(&verify.Options{Quota: e.quotas(t, time.Minute)})
	}
	admitted := make([]int64, instances)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, v := range vs {
		for range perInstance {
			wg.Go(func() {
				d, err := v.Verify(context.Background(), verify.Request{Key: a.Secret})
				if err != nil {
					t.Error(err)
					return
				}
				if d.Code == verify.Valid {
					mu.Lock()
					admitted[i]++
					mu.Unlock()
				} else if d.Code != verify.UsageExceeded {
					t.Errorf("decision %s, want VALID or USAGE_EXCEEDED", d.Code)
				}
			})
		}
	}
	wg.Wait()
	for i, n := range admitted {
		if n != 6 {
			t.Errorf("instance %d admitted %d of %d concurrent requests, want exactly the 6 the cap leaves", i, n, perInstance)
		}
	}
	e.meter(t, a, admitted[0]+admitted[1], 0)
	spent, err := e.ledger.OwnerUsage(context.Background(), "acct_o", plan.Month, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if bound := int64(100_000 + (instances-1)*60_000); spent.Cost > bound {
		t.Errorf("spend %d µUSD, over the bound of %d (the cap plus (N-1) × what remained)", spent.Cost, bound)
	}
	// Each instance's next read sees the metered spend: refused, with
	// the spend the ledger holds.
	for i, v := range vs {
		deadline := time.Now().Add(5 * time.Second)
		for {
			e.clock.Advance(time.Minute)
			d := check(t, v, verify.Request{Key: a.Secret}, verify.UsageExceeded)
			l := refusal(t, d)
			if l.Name != verify.LimitSpendPerMonth {
				t.Fatalf("instance %d refused by %+v, want spend_per_month", i, l)
			}
			if l.Used >= spent.Cost {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %d never saw the metered spend %d: %+v", i, spent.Cost, l)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}
