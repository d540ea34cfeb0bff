package httpapi

import (
	"net/http"
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
	sp, err := ledger.OwnerSpend(r.Context(), s.Ledger, s.Plans, o.ID, o.Plan, start)
	if err != nil {
		return err
	}
	out := spendResource{Owner: o.ID, Month: start.Format("2006-01"), Currency: sp.Currency, Amount: plan.FormatMicros(sp.Total.Cost),
		ByFeature: make([]featureSpend, len(sp.ByFeature))}
	for i, f := range sp.ByFeature {
		out.ByFeature[i] = featureSpend{Feature: f.Feature, Amount: plan.FormatMicros(f.Cost), Requests: f.Requests, Units: f.Units}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
