package httpapi

import (
	"net/http"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/owners"
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
	Cap       *string        `json:"cap"`     // the monthly spend cap; null for none
	Credits   *string        `json:"credits"` // a prepaid owner's credit balance now; null if not prepaid
	// CapSource says where the cap comes from: "plan <name>" or "owner
	// override".
	CapSource string `json:"cap_source,omitempty"`
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
	bal, u, err := s.Owners.Money(r.Context(), o, start)
	if err != nil {
		return err
	}
	out := spendResource{Owner: o.ID, Month: start.Format("2006-01"), Currency: bal.Currency, Amount: plan.FormatMicros(u.Cost),
		ByFeature: []featureSpend{}}
	if bal.Cap != nil {
		c := plan.FormatMicros(*bal.Cap)
		out.Cap, out.CapSource = &c, bal.CapFrom
	}
	if bal.Prepaid {
		c := plan.FormatMicros(bal.Credits)
		out.Credits = &c
	}
	for _, f := range ledger.ByFeature(u) {
		out.ByFeature = append(out.ByFeature, featureSpend{Feature: f.Feature, Amount: plan.FormatMicros(f.Cost), Requests: f.Requests, Units: f.Units})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// creditResource is one prepaid top-up with the owner's balance after it.
type creditResource struct {
	Owner    string    `json:"owner"`
	ID       string    `json:"id"`
	Amount   string    `json:"amount"`
	At       time.Time `json:"at"`
	Currency string    `json:"currency"`
	Balance  string    `json:"balance,omitempty"` // the owner's credits left now (POST only)
}

// creditList is an owner's top-ups, oldest first, and its balance.
type creditList struct {
	Owner    string           `json:"owner"`
	Currency string           `json:"currency"`
	Granted  string           `json:"granted"`
	Balance  string           `json:"balance"`
	Credits  []creditResource `json:"credits"`
}

// addCredit answers POST /v1/owners/{owner}/credits: 201 with the
// top-up, new or replayed (same id and amount: nothing changes); 409 for
// a replay with another amount.
func (s *Server) addCredit(w http.ResponseWriter, r *http.Request, actor string) error {
	var req owners.CreditRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	o, g, _, err := s.Owners.AddCredit(r.Context(), actor, r.PathValue("owner"), req)
	if err != nil {
		return err
	}
	bal, _, err := s.Owners.Money(r.Context(), o, g.At)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, creditResource{Owner: o.ID, ID: g.ID, Amount: plan.FormatMicros(g.Amount), At: g.At,
		Currency: bal.Currency, Balance: plan.FormatMicros(bal.Credits)})
	return nil
}

// listCredits answers GET /v1/owners/{owner}/credits.
func (s *Server) listCredits(w http.ResponseWriter, r *http.Request, _ string) error {
	o, err := s.Owners.Get(r.Context(), r.PathValue("owner"))
	if err != nil {
		return err
	}
	start, _ := plan.Month.Bounds(s.now())
	bal, _, err := s.Owners.Money(r.Context(), o, start)
	if err != nil {
		return err
	}
	out := creditList{Owner: o.ID, Currency: bal.Currency, Granted: plan.FormatMicros(bal.Granted), Balance: plan.FormatMicros(bal.Credits),
		Credits: []creditResource{}}
	if b := o.Billing; b != nil && b.Credits != nil {
		for _, g := range b.Credits.Grants {
			out.Credits = append(out.Credits, creditResource{Owner: o.ID, ID: g.ID, Amount: plan.FormatMicros(g.Amount), At: g.At, Currency: bal.Currency})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
