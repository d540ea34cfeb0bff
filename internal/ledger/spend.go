package ledger

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/plan"
)

// Spend is what an owner's usage of one UTC month cost, priced once per
// event at ingest by the owner's plan, in total and by feature.
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

// OwnerSpend reads owner's spend in the UTC month starting at month
// (a month start), in the currency of the owner's plan (planName; the
// default currency when the catalog lacks it or names none). Both the
// API's GET /v1/owners/{owner}/spend and the owner portal show it.
func OwnerSpend(ctx context.Context, l Ledger, plans *plan.Catalog, owner, planName string, month time.Time) (Spend, error) {
	u, err := l.OwnerUsage(ctx, owner, plan.Month, month)
	if err != nil {
		return Spend{}, err
	}
	out := Spend{Month: month, Currency: plan.DefaultCurrency, Total: u.Totals}
	if p, ok := plans.Get(planName); ok && p.Currency != "" {
		out.Currency = p.Currency
	}
	out.ByFeature = ByFeature(u)
	return out, nil
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
