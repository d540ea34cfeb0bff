package httpapi

import (
	"time"

	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// keyResource is the API's view of a key (docs/openapi.yaml, Key). It
// never holds the plaintext; Secret is set only on creation and rotation.
type keyResource struct {
	ID            string             `json:"id"`
	Owner         string             `json:"owner"`
	Name          string             `json:"name"`
	Plan          string             `json:"plan"`
	Scopes        []string           `json:"scopes"`
	Status        store.Status       `json:"status"`
	StatusReason  string             `json:"status_reason"`
	DisabledUntil *time.Time         `json:"disabled_until"`
	Prefix        string             `json:"prefix"`
	Last4         string             `json:"last4"`
	CreatedAt     time.Time          `json:"created_at"`
	UpdatedAt     time.Time          `json:"updated_at"`
	ExpiresAt     *time.Time         `json:"expires_at"`
	Metadata      map[string]string  `json:"metadata"`
	Limits        plan.Limits        `json:"limits"`
	Restrictions  store.Restrictions `json:"restrictions"`
	RotatedFrom   *string            `json:"rotated_from"`
	RotatedTo     *string            `json:"rotated_to"`
	LastUsedAt    *time.Time         `json:"last_used_at"`
	Secret        string             `json:"secret,omitempty"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// resource renders k with its effective limits: the plan's limits with the
// key's overrides applied.
func resource(k *store.Key, plans *plan.Catalog) keyResource {
	var limits plan.Limits
	if p, ok := plans.Get(k.Plan); ok {
		limits = p.Limits.With(k.Limits)
	} else {
		limits = plan.Limits{}.With(k.Limits)
	}
	md := k.Metadata
	if md == nil {
		md = map[string]string{}
	}
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return keyResource{
		ID: k.ID, Owner: k.Owner, Name: k.Name, Plan: k.Plan, Scopes: scopes,
		Status: k.Status, StatusReason: k.StatusReason, DisabledUntil: k.DisabledUntil,
		Prefix: k.Prefix, Last4: k.Last4, CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt,
		ExpiresAt: k.ExpiresAt, Metadata: md, Limits: limits, Restrictions: k.Restrictions,
		RotatedFrom: nullable(k.RotatedFrom), RotatedTo: nullable(k.RotatedTo), LastUsedAt: k.LastUsedAt,
	}
}

type auditResource struct {
	ID      string            `json:"id"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	KeyID   string            `json:"key_id"`
	Details map[string]string `json:"details"`
}
