package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
)

// spendResource is the answer to GET /v1/owners/{owner}/spend: what the
// owner's usage of one UTC month cost, priced once per event at ingest by
// the owner's plan, in total and by feature.
type spendResource struct {
	Owner     string         `json:"owner"`
	Month     string         `json:"month"` // 2026-12
	Currency  string         `json:"currency"`
	Amount    string         `json:"amount"` // decimal, 6 places
	ByFeature []featureSpend `json:"by_feature"`
	Cap       *string        `json:"cap"`     // spend caps are not built yet: always null
	Credits   *string        `json:"credits"` // prepaid credits are not built yet: always null
}

// featureSpend is one feature's part of a month's spend; feature "" is
// usage reported without a feature.
type featureSpend struct {
	Feature  string `json:"feature"`
	Amount   string `json:"amount"`
	Requests int64  `json:"requests"`
	Units    int64  `json:"units"`
}

// ownerSpend answers GET /v1/owners/{owner}/spend?month=YYYY-MM (default:
// the current UTC month).
func (s *Server) ownerSpend(w http.ResponseWriter, r *http.Request, _ string) error {
	o, err := s.Owners.Get(r.Context(), r.PathValue("owner"))
	if err != nil {
		return err
	}
	start, _ := plan.Month.Bounds(s.now())
	if v := r.URL.Query().Get("month"); v != "" {
		t, err := time.Parse("2006-01", v)
		if err != nil || t.Before(minAt) || !t.Before(maxAt) {
			return errs.E(errs.Invalid, "month must be a UTC month like 2026-12, got %.32q", v)
		}
		start = t
	}
	u, err := s.Ledger.OwnerUsage(r.Context(), o.ID, plan.Month, start)
	if err != nil {
		return err
	}
	currency := plan.DefaultCurrency
	if p, ok := s.Plans.Get(o.Plan); ok && p.Currency != "" {
		currency = p.Currency
	}
	out := spendResource{Owner: o.ID, Month: start.Format("2006-01"), Currency: currency, Amount: plan.FormatMicros(u.Cost),
		ByFeature: []featureSpend{}}
	rest := u.Totals
	for _, f := range slices.Sorted(maps.Keys(u.Features)) {
		t := u.Features[f]
		out.ByFeature = append(out.ByFeature, featureSpend{Feature: f, Amount: plan.FormatMicros(t.Cost), Requests: t.Requests, Units: t.Units})
		rest = ledger.Totals{Requests: rest.Requests - t.Requests, Units: rest.Units - t.Units, Bytes: rest.Bytes - t.Bytes, Cost: rest.Cost - t.Cost}
	}
	if rest != (ledger.Totals{}) { // first: "" sorts before every feature
		out.ByFeature = slices.Insert(out.ByFeature, 0, featureSpend{Feature: "", Amount: plan.FormatMicros(rest.Cost), Requests: rest.Requests, Units: rest.Units})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
