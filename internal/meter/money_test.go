package meter_test

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/verify"
)

// moneyPlans prices plan free (the keys' and so their owners' plan) per
// request, per 1k units and per MB, per feature.
func moneyPlans(t testing.TB) *plan.Catalog {
	t.Helper()
	c, err := plan.Parse([]byte(`{"plans": {"free": {"scopes": ["generate"], "limits": {},
		"prices": {"generate": {"per_request": "0.0005", "per_1k_units": "0.00125", "per_mb": "0.000001"},
		           "*": {"per_request": "0.0001"}}}}}`), false)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMoneyAgreesAcrossViews meters 10,000 events of 100 keys of 50
// owners, a tenth of them delivered twice, through the consumer that
// prices them, and checks that every owner's month spend is the same
// exact amount in each view that shows it: the sum of each event's cost
// at its plan's prices computed here, the ledger's owner usage (what
// GET /v1/owners/{owner}/spend shows, in total and by feature), the
// per-key rows of the billing export (OwnerTotals, the CSV's amounts),
// and verify's spend (Quotas.Reserve, what a spend cap is checked
// against).
func TestMoneyAgreesAcrossViews(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st, l := b.open(t, nil)
			ks := createKeysOf(t, st, 100, 50)
			plans := moneyPlans(t)
			rng := newRand(t)
			events := randomEvents(rng, "evt", 10_000, ks)
			for i := range events {
				if i%3 == 0 {
					events[i].Feature = "" // priced by "*"
				}
			}
			msgs := wrap(t, rng, "msg", events, 500)
			msgs = append(msgs, wrap(t, rng, "again", events[:1000], 500)...)
			rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
			c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
			c.Plans = plans
			deliver(t, c, msgs, 4)
			wantNoDeadLetters(t, l)

			free, _ := plans.Get("free")
			owner := map[string]string{}
			for _, k := range ks {
				owner[k.ID] = k.Owner
			}
			want, featured := map[string]int64{}, map[string]int64{}
			for _, e := range events {
				cost, ok := free.Cost(e.Feature, e.Requests, e.Units, e.Bytes)
				if !ok {
					t.Fatalf("event %s: cost overflows", e.ID)
				}
				want[owner[e.KeyID]] += cost
				if e.Feature != "" {
					featured[owner[e.KeyID]] += cost
				}
			}
			if len(want) != 50 {
				t.Fatalf("events of %d owners, want 50", len(want))
			}
			ctx := context.Background()
			month, _ := plan.Month.Bounds(t0)
			quotas := verify.NewQuotas(l, time.Hour, slog.New(slog.DiscardHandler))
			t.Cleanup(quotas.Stop)
			var total int64
			for _, o := range slices.Sorted(maps.Keys(want)) {
				u, err := l.OwnerUsage(ctx, o, plan.Month, month)
				if err != nil {
					t.Fatal(err)
				}
				var byFeature int64
				for _, f := range u.Features {
					byFeature += f.Cost
				}
				var csv int64
				for token := ""; ; {
					rows, next, err := l.OwnerTotals(ctx, o, plan.Month, month, 7, token)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range rows {
						csv += r.Cost
					}
					if token = next; token == "" {
						break
					}
				}
				v := quotas.Reserve(ctx, o, verify.SpendRequest{Cap: -1, Granted: -1}, t0)
				if u.Cost != want[o] || csv != want[o] || !v.Known || v.Month != want[o] || byFeature != featured[o] {
					t.Errorf("owner %s: events cost %d µ (%d with a feature); spend route %d (%d by feature), billing rows %d, verify %d (known %v)",
						o, want[o], featured[o], u.Cost, byFeature, csv, v.Month, v.Known)
				}
				total += want[o]
			}
			t.Logf("%d events, 50 owners, %s USD in all, equal in every view", len(events), plan.FormatMicros(total))
		})
	}
}
