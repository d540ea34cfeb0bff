package sweep

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// OwnerSuspend is an owner the sweep suspended over a quota (its own, or
// its quota on one feature), with the evidence.
type OwnerSuspend struct {
	Owner   string    `json:"owner"`
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Window  string    `json:"window"`
	Used    int64     `json:"used"`
	Max     int64     `json:"max"`
	Until   time.Time `json:"until"`
}

// OwnerLift is an owner suspension the sweep lifted.
type OwnerLift struct {
	Owner   string    `json:"owner"`
	Reason  string    `json:"reason"` // window_reset or limit_raised
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Until   time.Time `json:"until"`
}

// sweepOwners judges owners against their day and month quotas (their
// own and per feature): it lifts the suspensions whose window ended, or
// whose owner's limits no longer refuse its usage (an operator raised
// them), tells a still-suspended owner again (a no-op unless the first
// notification was lost), and suspends each owner with usage today that is
// over a quota (used > max, as for keys) until the end of the window
// (of several broken, the one that ends last). Every change is
// conditional (owners.Service): an owner changed since it was judged is
// left alone. Suspended owners and owners with usage today are few next
// to keys, so the phase is not checkpointed; it stops at the deadline and
// the next run starts it again.
func (s *Sweeper) sweepOwners(ctx context.Context, now, deadline time.Time, dry bool, rep *Report) error {
	size := min(orDefault(s.PageSize, DefaultPageSize), 1000)
	for token := ""; s.now().Before(deadline); {
		os, next, err := s.Store.ListOwners(ctx, store.ListOwnersQuery{PageSize: size, PageToken: token, Suspended: true})
		if err != nil {
			return fmt.Errorf("sweep: list suspended owners: %w", err)
		}
		for _, o := range os {
			if err := s.judgeSuspended(ctx, o, now, dry, rep); err != nil {
				return err
			}
		}
		if token = next; token == "" {
			break
		}
	}
	dayStart, _ := plan.Day.Bounds(now)
	for token := ""; s.now().Before(deadline); {
		ids, next, err := s.Ledger.ActiveOwners(ctx, plan.Day, dayStart, size, token)
		if err != nil {
			return fmt.Errorf("sweep: list owners with usage: %w", err)
		}
		for _, id := range ids {
			rep.OwnersScanned++
			o, err := s.Owners.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("sweep: read owner %s: %w", id, err)
			}
			var tell owners.SpendNotifier
			if s.Notify != nil {
				tell = notify.OwnerEvents{Service: s.Notify}
			}
			alerts, err := s.Owners.AlertSpend(ctx, o, tell, dry)
			rep.SpendAlerts = append(rep.SpendAlerts, alerts...)
			if err != nil {
				return fmt.Errorf("sweep: spend alerts of owner %s: %w", id, err)
			}
			if o.Suspension != nil && now.Before(o.Suspension.Until) {
				continue
			}
			over, err := s.overQuota(ctx, o, now)
			if err != nil {
				return err
			}
			if over == nil {
				continue
			}
			if !dry {
				if _, done, err := s.Owners.Suspend(ctx, Actor, o, over.OwnerSuspension); err != nil {
					return fmt.Errorf("sweep: suspend owner %s: %w", id, err)
				} else if !done {
					continue
				}
			}
			rep.OwnersSuspended = append(rep.OwnersSuspended, OwnerSuspend{Owner: id, Limit: over.Limit, Feature: over.Feature,
				Window: string(over.window), Used: over.Used, Max: over.Max, Until: over.Until})
		}
		if token = next; token == "" {
			break
		}
	}
	return nil
}

// judgeSuspended lifts o's suspension if its window ended or no quota of
// the owner refuses its usage any more, and otherwise tells the owner of
// it again (deduplicated: nothing new is sent).
func (s *Sweeper) judgeSuspended(ctx context.Context, o *store.Owner, now time.Time, dry bool, rep *Report) error {
	sp := *o.Suspension
	reason := owners.ReasonWindowReset
	if now.Before(sp.Until) {
		over, err := s.overQuota(ctx, o, now)
		if err != nil {
			return err
		}
		if over != nil {
			if dry {
				return nil
			}
			return s.Owners.Renotify(ctx, o)
		}
		reason = owners.ReasonLimitRaised
	}
	if !dry {
		_, lifted, err := s.Owners.Lift(ctx, Actor, o, reason)
		if err != nil {
			return fmt.Errorf("sweep: lift owner %s: %w", o.ID, err)
		}
		if !lifted {
			return nil
		}
	}
	rep.OwnersLifted = append(rep.OwnersLifted, OwnerLift{Owner: o.ID, Reason: reason, Limit: sp.Limit, Feature: sp.Feature, Until: sp.Until})
	return nil
}

// overQuotaResult is a quota an owner's usage is over.
type overQuotaResult struct {
	store.OwnerSuspension
	window plan.Window
}

// overQuota returns the day or month quota (the owner's own or on a
// feature) that o's usage is over, of several the one whose window ends
// last, or nil. It reads the owner's usage of a window only if a quota
// of that window is set.
func (s *Sweeper) overQuota(ctx context.Context, o *store.Owner, now time.Time) (*overQuotaResult, error) {
	own, features := s.Owners.Effective(o)
	scopes := []struct {
		feature string
		limits  plan.Limits
	}{{"", own}}
	for _, f := range slices.Sorted(maps.Keys(features)) {
		scopes = append(scopes, struct {
			feature string
			limits  plan.Limits
		}{f, features[f]})
	}
	usage := map[plan.Window]*ledger.Usage{}
	var best *overQuotaResult
	for _, sc := range scopes {
		for _, name := range slices.Sorted(maps.Keys(sc.limits)) {
			metric, w, err := plan.SplitLimitName(name)
			if err != nil || w == plan.Minute {
				continue
			}
			start, end := w.Bounds(now)
			u := usage[w]
			if u == nil {
				got, err := s.Ledger.OwnerUsage(ctx, o.ID, w, start)
				if err != nil {
					return nil, fmt.Errorf("sweep: read usage of owner %s: %w", o.ID, err)
				}
				u = &got
				usage[w] = u
			}
			t := u.Totals
			if sc.feature != "" {
				t = u.Features[sc.feature]
			}
			used, max := t.Get(metric), sc.limits[name]
			if used > max && (best == nil || end.After(best.Until)) {
				best = &overQuotaResult{OwnerSuspension: store.OwnerSuspension{Limit: name, Feature: sc.feature, Used: used, Max: max, Until: end}, window: w}
			}
		}
	}
	return best, nil
}
