package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/verify"
)

// ownerResource is an owner as the API shows it: its plan, its overrides,
// and the limits that apply to its keys together, each with its source.
type ownerResource struct {
	Owner     string                 `json:"owner"`
	Plan      string                 `json:"plan"`
	Limits    plan.Limits            `json:"limits"`   // overrides of the plan's owner_limits
	Features  map[string]plan.Limits `json:"features"` // overrides of the plan's features
	Effective effectiveLimits        `json:"effective"`
	// Suspension is the sweep's suspension of the owner over a quota,
	// while it lasts.
	Suspension *suspensionResource `json:"suspension,omitempty"`
	// SpendCap is the owner's own monthly spend cap (null: the plan's,
	// if it sets one, applies).
	SpendCap  *plan.SpendCapSpec `json:"spend_cap"`
	CreatedAt time.Time          `json:"created_at"`
	UpdatedAt time.Time          `json:"updated_at"`
}

type suspensionResource struct {
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Used    int64     `json:"used"`
	Max     int64     `json:"max"`
	Until   time.Time `json:"until"`
	Since   time.Time `json:"since"`
}

type effectiveLimits struct {
	OwnerLimits map[string]sourcedLimit            `json:"owner_limits"`
	Features    map[string]map[string]sourcedLimit `json:"features"`
	// OtherFeatures says whether features not named are offered
	// (a plan that names none offers every feature).
	OtherFeatures bool `json:"other_features"`
}

type sourcedLimit struct {
	Limit  int64  `json:"limit"`
	Source string `json:"source"`
}

func sourced(base, overrides plan.Limits, planSrc string) map[string]sourcedLimit {
	out := map[string]sourcedLimit{}
	for name, n := range base {
		out[name] = sourcedLimit{n, planSrc}
	}
	for name, n := range overrides {
		out[name] = sourcedLimit{n, verify.SourceOwnerOverride}
	}
	return out
}

func ownerResourceOf(o *store.Owner, plans *plan.Catalog) ownerResource {
	p, ok := plans.Get(o.Plan)
	if !ok {
		p = &plan.Plan{}
	}
	planSrc := "plan " + o.Plan
	eff := effectiveLimits{OwnerLimits: sourced(p.OwnerLimits, o.Limits, planSrc), Features: map[string]map[string]sourcedLimit{},
		OtherFeatures: len(p.Features) == 0}
	for _, f := range slices.Sorted(maps.Keys(p.Features)) {
		eff.Features[f] = sourced(p.Features[f], o.Features[f], planSrc)
	}
	for f, l := range o.Features {
		if _, done := eff.Features[f]; !done && eff.OtherFeatures {
			eff.Features[f] = sourced(nil, l, planSrc)
		}
	}
	r := ownerResource{Owner: o.ID, Plan: o.Plan, Limits: o.Limits, Features: o.Features, Effective: eff,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
	if sp := o.Suspension; sp != nil {
		r.Suspension = &suspensionResource{Limit: sp.Limit, Feature: sp.Feature, Used: sp.Used, Max: sp.Max, Until: sp.Until, Since: sp.At}
	}
	if b := o.Billing; b != nil && b.SpendCap != nil {
		r.SpendCap = &plan.SpendCapSpec{Monthly: plan.FormatMicros(*b.SpendCap)}
	}
	if r.Limits == nil {
		r.Limits = plan.Limits{}
	}
	if r.Features == nil {
		r.Features = map[string]plan.Limits{}
	}
	return r
}

type ownerList struct {
	Owners        []ownerResource `json:"owners"`
	NextPageToken string          `json:"next_page_token,omitempty"`
}

func (s *Server) getOwner(w http.ResponseWriter, r *http.Request, _ string) error {
	o, err := s.Owners.Get(r.Context(), r.PathValue("owner"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ownerResourceOf(o, s.Plans))
	return nil
}

func (s *Server) listOwners(w http.ResponseWriter, r *http.Request, _ string) error {
	size, token, err := page(r)
	if err != nil {
		return err
	}
	var (
		os   []*store.Owner
		next string
	)
	if caller := callerOf(r); caller.Owner != "" {
		// A scoped token's list is its owner, if it has keys.
		o, err := s.Owners.Get(r.Context(), caller.Owner)
		if err != nil && !errs.Is(err, errs.NotFound) {
			return err
		}
		if o != nil && token == "" {
			os = []*store.Owner{o}
		}
	} else if os, next, err = s.Owners.List(r.Context(), store.ListOwnersQuery{PageSize: size, PageToken: token}); err != nil {
		return err
	}
	out := make([]ownerResource, len(os))
	for i, o := range os {
		out[i] = ownerResourceOf(o, s.Plans)
	}
	writeJSON(w, http.StatusOK, ownerList{Owners: out, NextPageToken: next})
	return nil
}

func (s *Server) updateOwner(w http.ResponseWriter, r *http.Request, actor string) error {
	var req owners.UpdateRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	o, err := s.Owners.Update(r.Context(), actor, r.PathValue("owner"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ownerResourceOf(o, s.Plans))
	return nil
}
