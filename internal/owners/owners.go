package owners

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// ActionUpdate is the audit action of an owner change.
const ActionUpdate = "owner.update"

// Service manages owners. Store and Plans are required.
type Service struct {
	Store  store.Store
	Plans  *plan.Catalog
	Clock  clock.Clock  // default clock.Real
	Logger *slog.Logger // default slog.Default()
	// Notifier, if not nil, tells the owner of a change (owner.plan_changed).
	Notifier Notifier
	// Observer, if not nil, is told of every committed change before
	// Update returns (the verifier of this process).
	Observer Observer
	// Spend reads owners' spend, for their credits and the spend route;
	// required by AddCredit and Money.
	Spend ledger.OwnerUsageReader
}

// Notifier tells an owner that its plan or overrides changed (previous
// is the plan before the change), and that it was suspended or
// reinstated (reinstated is "" for a suspension, else the reason it was
// lifted). An error is logged: the change stands.
type Notifier interface {
	OwnerChanged(ctx context.Context, o *store.Owner, previousPlan string) error
	OwnerSuspension(ctx context.Context, o *store.Owner, sp store.OwnerSuspension, reinstated string) error
}

// Observer learns of an owner's committed change in the process that made
// it. It must not block on I/O or modify o.
type Observer interface {
	OwnerChanged(o *store.Owner)
}

// UpdateRequest is a PATCH of an owner. A field that is absent is kept;
// limits and features replace the owner's overrides ({} clears them).
type UpdateRequest struct {
	Plan     *string                 `json:"plan,omitempty"`
	Limits   *plan.Limits            `json:"limits,omitempty"`
	Features *map[string]plan.Limits `json:"features,omitempty"`
	// SpendCap sets ({"monthly": "25.00"}) or clears (null) the owner's
	// monthly spend cap; a cap below the month's spend refuses at once.
	SpendCap CapPatch `json:"spend_cap,omitzero"`
}

func (s *Service) now() time.Time {
	if s.Clock == nil {
		return time.Now().UTC().Truncate(time.Microsecond)
	}
	return s.Clock.Now().Truncate(time.Microsecond)
}

func (s *Service) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func invalid(format string, args ...any) error { return errs.E(errs.Invalid, format, args...) }

func validateID(id string) error {
	if !ids.ValidOwner(id) {
		return invalid("owner must be %s", ids.OwnerSyntax)
	}
	return nil
}

// Get returns owner id. An owner with keys but no record (its keys predate
// owner records) gets one now, on the plan of its newest key. NotFound if
// the owner has no key.
func (s *Service) Get(ctx context.Context, id string) (*store.Owner, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	o, err := s.Store.GetOwner(ctx, id)
	if !errs.Is(err, errs.NotFound) {
		return o, err
	}
	ks, _, err := s.Store.ListKeys(ctx, store.ListKeysQuery{Owner: id, PageSize: 1})
	if err != nil {
		return nil, err
	}
	if len(ks) == 0 {
		return nil, errs.E(errs.NotFound, "owner %s has no keys", id)
	}
	now := s.now()
	o, _, err = s.Store.EnsureOwner(ctx, &store.Owner{ID: id, Plan: ks[0].Plan, CreatedAt: now, UpdatedAt: now})
	return o, err
}

// List returns one page of owners, by id.
func (s *Service) List(ctx context.Context, q store.ListOwnersQuery) ([]*store.Owner, string, error) {
	return s.Store.ListOwners(ctx, q)
}

// Update applies a PATCH: everything is validated before anything is
// written, and a PATCH that changes nothing writes nothing.
func (s *Service) Update(ctx context.Context, actor, id string, req UpdateRequest) (*store.Owner, error) {
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.Plan != nil {
		if _, ok := s.Plans.Get(*req.Plan); !ok {
			return nil, invalid("plan %q does not exist; plans: %v", *req.Plan, s.Plans.Names())
		}
	}
	if req.Limits != nil {
		if err := req.Limits.Validate(); err != nil {
			return nil, invalid("limits: %v", err)
		}
	}
	if req.Features != nil {
		if len(*req.Features) > plan.MaxFeatures {
			return nil, invalid("features: at most %d, got %d", plan.MaxFeatures, len(*req.Features))
		}
		for _, f := range slices.Sorted(maps.Keys(*req.Features)) {
			if !ids.ValidFeature(f) {
				return nil, invalid("features: %q is not a feature name (%s)", f, ids.FeatureSyntax)
			}
			if err := (*req.Features)[f].Validate(); err != nil {
				return nil, invalid("features.%s: %v", f, err)
			}
		}
	}
	spendCap, err := parseCap(req.SpendCap)
	if err != nil {
		return nil, err
	}
	var previous string
	updated, err := s.Store.UpdateOwner(ctx, id, func(o *store.Owner) (*store.AuditEntry, error) {
		previous = o.Plan
		next := *o
		if req.Plan != nil {
			next.Plan = *req.Plan
		}
		if req.Limits != nil {
			next.Limits = maps.Clone(*req.Limits)
		}
		if req.Features != nil {
			next.Features = map[string]plan.Limits{}
			for f, l := range *req.Features {
				next.Features[f] = maps.Clone(l)
			}
		}
		// Overrides of features the plan does not offer would never
		// apply: refuse them rather than keep them silently.
		if p, _ := s.Plans.Get(next.Plan); p != nil {
			for _, f := range slices.Sorted(maps.Keys(next.Features)) {
				if !p.OffersFeature(f) {
					return nil, invalid("features: plan %q does not offer %q; its features: %s", next.Plan, f, strings.Join(slices.Sorted(maps.Keys(p.Features)), ", "))
				}
			}
		}
		capChanged := false
		if req.SpendCap.Set {
			var old *int64
			if o.Billing != nil {
				old = o.Billing.SpendCap
			}
			if capChanged = (old == nil) != (spendCap == nil) || (old != nil && *old != *spendCap); capChanged {
				b := store.OwnerBilling{}
				if o.Billing != nil {
					b = *o.Billing
				}
				b.SpendCap = spendCap
				next.Billing = &b
			}
		}
		if next.Plan == o.Plan && equalLimits(next.Limits, o.Limits) && equalFeatures(next.Features, o.Features) && !capChanged {
			return nil, errNoChange
		}
		details := map[string]string{"owner": id, "plan": next.Plan, "previous_plan": o.Plan}
		if req.Limits != nil {
			details["limits"] = jsonText(next.Limits)
		}
		if req.Features != nil {
			details["features"] = jsonText(next.Features)
		}
		if capChanged {
			details["spend_cap"] = "none"
			if spendCap != nil {
				details["spend_cap"] = plan.FormatMicros(*spendCap)
			}
		}
		now := s.now()
		next.UpdatedAt = now
		*o = next
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionUpdate, Details: details}, nil
	})
	if errors.Is(err, errNoChange) {
		return cur, nil
	}
	if err != nil {
		return nil, err
	}
	s.committed(ctx, updated, func(ctx context.Context) error { return s.Notifier.OwnerChanged(ctx, updated, previous) })
	return updated, nil
}

// jsonText is v as JSON, for an audit detail (maps of names to numbers
// always encode).
func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var errNoChange = errors.New("owners: no change")

func equalLimits(a, b plan.Limits) bool { return maps.Equal(a, b) }

func equalFeatures(a, b map[string]plan.Limits) bool {
	return maps.EqualFunc(a, b, func(x, y plan.Limits) bool { return maps.Equal(x, y) })
}
