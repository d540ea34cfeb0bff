package keys

import (
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/restrict"
	"github.com/keyplane/keyplane/internal/store"
)

// Limits on request fields.
const (
	MaxNameLen        = 200
	MaxMetadataPairs  = 32
	MaxMetadataBytes  = 4 << 10
	MaxReasonLen      = 500
	MaxIdempotencyLen = 255
	MaxGracePeriod    = 30 * 24 * time.Hour
)

func invalid(format string, args ...any) error { return errs.E(errs.Invalid, format, args...) }

func validateOwner(owner string) error {
	if !ids.ValidOwner(owner) {
		return invalid("owner is required: " + ids.OwnerSyntax)
	}
	return nil
}

func validateText(field, s string, max int) error {
	if len(s) > max {
		return invalid("%s must be at most %d bytes", field, max)
	}
	if !utf8.ValidString(s) {
		return invalid("%s must be valid UTF-8", field)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid("%s must not contain control characters", field)
		}
	}
	return nil
}

func validateMetadata(m map[string]string) error {
	if len(m) > MaxMetadataPairs {
		return invalid("metadata has %d pairs; at most %d are allowed", len(m), MaxMetadataPairs)
	}
	size := 0
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k == "" {
			return invalid("metadata keys must not be empty")
		}
		if err := validateText("metadata key "+fmt.Sprintf("%q", k), k, 128); err != nil {
			return err
		}
		if err := validateText(fmt.Sprintf("metadata[%q]", k), m[k], MaxMetadataBytes); err != nil {
			return err
		}
		size += len(k) + len(m[k])
	}
	if size > MaxMetadataBytes {
		return invalid("metadata is %d bytes; at most %d are allowed", size, MaxMetadataBytes)
	}
	return nil
}

func validateLimits(l plan.Limits) error {
	if err := l.Validate(); err != nil {
		return invalid("limits: %v", err)
	}
	return nil
}

// resolveScopes checks that scopes are a subset of p's and returns them
// sorted and deduplicated; nil means all of p's.
func resolveScopes(p *plan.Plan, scopes []string) ([]string, error) {
	if scopes == nil {
		return slices.Clone(p.Scopes), nil
	}
	if len(scopes) == 0 {
		return nil, invalid("scopes must not be empty; omit it to grant all of plan %q's scopes", p.Name)
	}
	out := slices.Clone(scopes)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, s := range out {
		if !slices.Contains(p.Scopes, s) {
			return nil, invalid("scope %q is not in plan %q; allowed: %v", s, p.Name, p.Scopes)
		}
	}
	return out, nil
}

func normalizeRestrictions(r store.Restrictions) (store.Restrictions, error) {
	_, ips, refs, err := restrict.Parse(r.AllowedIPs, r.AllowedReferrers)
	if err != nil {
		return r, invalid("restrictions: %v", err)
	}
	if len(r.AllowedFeatures) > plan.MaxFeatures {
		return r, invalid("restrictions: at most %d allowed_features, got %d", plan.MaxFeatures, len(r.AllowedFeatures))
	}
	var features []string
	for _, f := range r.AllowedFeatures {
		if !ids.ValidFeature(f) {
			return r, invalid("restrictions: allowed_features: %q is not a feature name (%s)", f, ids.FeatureSyntax)
		}
		features = append(features, f)
	}
	slices.Sort(features)
	return store.Restrictions{AllowedIPs: ips, AllowedReferrers: refs, AllowedFeatures: slices.Compact(features)}, nil
}

func validateExpiry(t *time.Time, now time.Time) (*time.Time, error) {
	if t == nil {
		return nil, nil
	}
	if !t.After(now) {
		return nil, invalid("expires_at must be in the future")
	}
	u := t.UTC()
	return &u, nil
}

func validateIdempotencyKey(k string) error {
	if len(k) == 0 || len(k) > MaxIdempotencyLen {
		return invalid("Idempotency-Key must be 1-%d characters", MaxIdempotencyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return invalid("Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}
