package meter_test

import (
	"context"
	"testing"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/usage"
)

const pricedPlans = `{"plans": {
	"free": {"scopes": ["generate"], "prices": {"*": {"per_request": "0.001"}}},
	"pro": {"scopes": ["generate"], "prices": {"pro-model": {"per_request": "0.0005", "per_1k_units": "0.00125"}, "*": {"per_mb": "0.1"}}},
	"huge": {"scopes": ["generate"], "prices": {"*": {"per_request": "1000000"}}}
}}`

// TestEventCostIsComputedOnceAtTheOwnersPlan: each event is priced at the
// plan of its owner's record (the key's plan when the owner has none), by
// feature, and its cost is counted with it exactly once however often it
// is delivered.
func TestEventCostIsComputedOnceAtTheOwnersPlan(t *testing.T) {
	st, l := openSQLite(t, nil)
	ks := createKeys(t, st, 2) // acct-0 and acct-1, keys on plan free
	ctx := context.Background()
	setPlan(t, st, ks[1].Owner, "pro") // acct-0 keeps its record's plan, free
	cat, err := plan.Parse([]byte(pricedPlans), false)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(t0)
	c := meter.NewConsumer(l, st, clk, discard)
	c.Plans = cat
	events := []usage.Event{
		{ID: "e1", KeyID: ks[0].ID, Time: t0, Requests: 3},                                          // free: 3 × 0.001
		{ID: "e2", KeyID: ks[1].ID, Time: t0, Requests: 1, Units: 1200, Feature: "pro-model"},       // 500 + 1200 × 1.25 = 2000
		{ID: "e3", KeyID: ks[1].ID, Time: t0, Requests: 1, Units: 1200, Bytes: 5, Feature: "other"}, // * : 0.5 → 1
		{ID: "e4", KeyID: ks[1].ID, Time: t0, Requests: 2, Units: 400, Feature: "pro-model"},        // 1000 + 500 = 1500
	}
	msg := queue.Message{ID: "m1", Data: batchJSON(t, events), PublishTime: t0}
	for range 3 {
		if err := c.Handle(ctx, msg); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	for _, tc := range []struct {
		owner string
		want  int64
		feat  map[string]int64
	}{
		{ks[0].Owner, 3000, nil},
		{ks[1].Owner, 2000 + 1 + 1500, map[string]int64{"pro-model": 3500, "other": 1}},
	} {
		u, err := l.OwnerUsage(ctx, tc.owner, plan.Month, t0)
		if err != nil {
			t.Fatal(err)
		}
		if u.Cost != tc.want {
			t.Errorf("owner %s: cost %d, want %d", tc.owner, u.Cost, tc.want)
		}
		for f, want := range tc.feat {
			if got := u.Features[f].Cost; got != want {
				t.Errorf("owner %s feature %s: cost %d, want %d", tc.owner, f, got, want)
			}
		}
	}
	kt, err := l.Totals(ctx, ks[1].ID, plan.Day, t0)
	if err != nil || kt.Cost != 3501 {
		t.Errorf("key %s: day totals %+v, %v; want cost 3501", ks[1].ID, kt, err)
	}

	// The owner moves to plan huge: events counted from OwnerPlanTTL later
	// are priced at it, and a cost that overflows the counters is a dead
	// letter, not a wrapped sum.
	setPlan(t, st, ks[1].Owner, "huge")
	clk.Advance(meter.OwnerPlanTTL)
	later := []usage.Event{
		{ID: "e5", KeyID: ks[1].ID, Time: t0, Requests: 1},
		{ID: "e6", KeyID: ks[1].ID, Time: t0, Requests: 1 << 40},
	}
	if err := c.Handle(ctx, queue.Message{ID: "m2", Data: batchJSON(t, later), PublishTime: t0}); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	u, err := l.OwnerUsage(ctx, ks[1].Owner, plan.Month, t0)
	if err != nil || u.Cost != 3501+1_000_000*plan.MicroPerUnit {
		t.Errorf("owner %s after the plan change: cost %d, %v; want %d", ks[1].Owner, u.Cost, err, 3501+1_000_000*plan.MicroPerUnit)
	}
	if dls := deadLetters(t, l); len(dls) != 1 || dls[0].ID != "e6" || dls[0].Reason != meter.ReasonInvalid {
		t.Errorf("dead letters: got %+v, want e6 as invalid", dls)
	}
}

// setPlan moves owner to plan p.
func setPlan(t *testing.T, st store.Store, owner, p string) {
	t.Helper()
	if _, err := st.UpdateOwner(context.Background(), owner, func(o *store.Owner) (*store.AuditEntry, error) {
		o.Plan, o.UpdatedAt = p, t0
		return nil, nil
	}); err != nil {
		t.Fatalf("move %s to plan %s: %v", owner, p, err)
	}
}
