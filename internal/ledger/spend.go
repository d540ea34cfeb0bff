package ledger

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/plan"
)

// Spend is what an owner's usage of one UTC month cost, priced once per
// event at ingest by the owner's plan, in total and by feature (what the
// owner portal shows).
type Spend struct {
	Month     time.Time // the month's start
	Currency  string
	Total     Totals
	ByFeature []FeatureTotals // sorted by feature; usage without a feature first, as ""
}

// FeatureTotals is one feature's part of an owner's usage; Feature "" is
// usage reported without a feature.
type FeatureTotals struct {
	Feature string
	Totals
}

// OwnerUsageReader reads an owner's usage of one window; a Ledger is one.
type OwnerUsageReader interface {
	OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (Usage, error)
}

// CostOfMonths returns the sum of owner's spend in the UTC months from the
// one starting at from up to, not including, the one starting at to: one
// read a month. A prepaid owner's credits are drawn by the spend since its
// first top-up.
func CostOfMonths(ctx context.Context, r OwnerUsageReader, owner string, from, to time.Time) (int64, error) {
	var sum int64
	for m := from; m.Before(to); m = m.AddDate(0, 1, 0) {
		u, err := r.OwnerUsage(ctx, owner, plan.Month, m)
		if err != nil {
			return 0, err
		}
		sum += u.Cost
	}
	return sum, nil
}

// ByFeature splits u by feature, sorted by feature, with feature "" (the
// usage reported without one) first when there is any.
func ByFeature(u Usage) []FeatureTotals {
	out := []FeatureTotals{}
	rest := u.Totals
	for _, f := range slices.Sorted(maps.Keys(u.Features)) {
		t := u.Features[f]
		out = append(out, FeatureTotals{Feature: f, Totals: t})
		rest = Totals{Requests: rest.Requests - t.Requests, Units: rest.Units - t.Units, Bytes: rest.Bytes - t.Bytes, Cost: rest.Cost - t.Cost}
	}
	if rest != (Totals{}) { // first: "" sorts before every feature
		out = slices.Insert(out, 0, FeatureTotals{Totals: rest})
	}
	return out
}
