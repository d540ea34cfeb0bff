package httpapi

import (
	"time"

	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// keyResource is the API's view of a key (docs/openapi.yaml, Key). It
// never holds the plaintext; Secret is set only on creation and rotation.
type keyResource struct {
	ID            string               `json:"id"`
	Owner         string               `json:"owner"`
	Name          string               `json:"name"`
	Plan          string               `json:"plan"`
	Scopes        []string             `json:"scopes"`
	Status        store.Status         `json:"status"`
	StatusReason  string               `json:"status_reason"`
	DisabledUntil *time.Time           `json:"disabled_until"`
	Prefix        string               `json:"prefix"`
	Last4         string               `json:"last4"`
	CreatedAt     time.Time            `json:"created_at"`
	UpdatedAt     time.Time            `json:"updated_at"`
	ExpiresAt     *time.Time           `json:"expires_at"`
	Metadata      map[string]string    `json:"metadata"`
	Limits        plan.Limits          `json:"limits"`
	Restrictions  restrictionsResource `json:"restrictions"`
	RotatedFrom   *string              `json:"rotated_from"`
	RotatedTo     *string              `json:"rotated_to"`
	LastUsedAt    *time.Time           `json:"last_used_at"`
	Secret        string               `json:"secret,omitempty"`
	// Quarantine is set only on a key put in a leak quarantine
	// (KEYPLANE_LEAK_POLICY=quarantine).
	Quarantine *quarantineResource `json:"quarantine,omitempty"`
}

// quarantineResource is a key's leak quarantine: until Until it verifies
// only from AllowedIPs, then the sweep disables it (EndedAt).
type quarantineResource struct {
	Since      time.Time  `json:"since"`
	Until      time.Time  `json:"until"`
	AllowedIPs []string   `json:"allowed_ips"`
	Reporter   string     `json:"reporter"`
	URL        string     `json:"url,omitempty"`
	Source     string     `json:"source,omitempty"`
	EndedAt    *time.Time `json:"ended_at"`
}

func quarantine(q *store.Quarantine) *quarantineResource {
	if q == nil {
		return nil
	}
	ips := q.AllowedIPs
	if ips == nil {
		ips = []string{}
	}
	return &quarantineResource{Since: q.Since, Until: q.Until, AllowedIPs: ips, Reporter: q.Reporter, URL: q.URL, Source: q.Source, EndedAt: q.EndedAt}
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
		ExpiresAt: k.ExpiresAt, Metadata: md, Limits: limits,
		Restrictions: restrictionsResource{AllowedIPs: k.Restrictions.AllowedIPs, AllowedReferrers: k.Restrictions.AllowedReferrers, AllowedFeatures: k.Restrictions.AllowedFeatures},
		RotatedFrom:  nullable(k.RotatedFrom), RotatedTo: nullable(k.RotatedTo), LastUsedAt: k.LastUsedAt,
		Quarantine: quarantine(k.Quarantine),
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

// restrictionsResource is where a key may be used from.
type restrictionsResource struct {
	AllowedIPs       []string `json:"allowed_ips,omitempty"`
	AllowedReferrers []string `json:"allowed_referrers,omitempty"`
	AllowedFeatures  []string `json:"allowed_features,omitempty"`
}

// keyList is the answer to GET /v1/keys: a page of keys, newest first.
type keyList struct {
	Keys          []keyResource `json:"keys"`
	NextPageToken string        `json:"next_page_token"` // "" on the last page
}

// auditList is the answer to GET /v1/audit: a page of entries, newest
// first.
type auditList struct {
	Entries       []auditResource `json:"entries"`
	NextPageToken string          `json:"next_page_token"` // "" on the last page
}

// secretResource is the answer to GET /v1/keys/{id}/secret.
type secretResource struct {
	Secret string `json:"secret"`
}

// limitState is one limit's state: in a verify decision (where used is
// set for the metered day and month quotas) and in a key's usage.
type limitState struct {
	Limit     int64     `json:"limit"`
	Used      *int64    `json:"used,omitempty"`
	Remaining int64     `json:"remaining"`
	ResetAt   time.Time `json:"reset_at,omitzero"`  // zero for credits, which do not reset
	Currency  string    `json:"currency,omitempty"` // money limits: figures in micro-units of it
}

// acceptedResource is the usage webhook's answer: how many events were
// queued for counting.
type acceptedResource struct {
	Accepted int `json:"accepted"`
}

// keyUsageResource is the answer to GET /v1/keys/{id}/usage: a key's
// metered usage in one window, and the key's limits of that window.
type keyUsageResource struct {
	KeyID    string                `json:"key_id"`
	Window   plan.Window           `json:"window"`
	Start    time.Time             `json:"start"`
	End      time.Time             `json:"end"`
	Requests int64                 `json:"requests"`
	Units    int64                 `json:"units"`
	Bytes    int64                 `json:"bytes"`
	Limits   map[string]limitState `json:"limits"`
}

// usageRow is one key's totals in the billing export: of a closed month,
// what had been counted when it closed, and its adjustments apart.
type usageRow struct {
	KeyID       string            `json:"key_id"`
	Owner       string            `json:"owner"`
	Requests    int64             `json:"requests"`
	Units       int64             `json:"units"`
	Bytes       int64             `json:"bytes"`
	Amount      string            `json:"amount"`
	Adjustments []usageAdjustment `json:"adjustments,omitempty"`
}

// usageAdjustment is the part of a key's usage in a closed month that was
// counted after it closed, in the month starting at CountedIn.
type usageAdjustment struct {
	CountedIn time.Time `json:"counted_in"`
	Requests  int64     `json:"requests"`
	Units     int64     `json:"units"`
	Bytes     int64     `json:"bytes"`
	Amount    string    `json:"amount"`
}

// usageList is the JSON answer to GET /v1/usage: a page of per-key totals
// of one window.
type usageList struct {
	Window        plan.Window `json:"window"`
	Start         time.Time   `json:"start"`
	End           time.Time   `json:"end"`
	Usage         []usageRow  `json:"usage"`
	NextPageToken string      `json:"next_page_token"` // "" on the last page
}

// usageSeriesResource is the answer to a usage series query: an owner's
// usage per bucket, as series grouped by key, by feature or not at all.
type usageSeriesResource struct {
	Owner   string           `json:"owner"`
	Bucket  plan.Window      `json:"bucket"`
	GroupBy string           `json:"group_by,omitempty"`
	Start   time.Time        `json:"start"`
	End     time.Time        `json:"end"`
	Series  []seriesResource `json:"series"`
}

// seriesResource is one series: what it groups ({"feature": "pro-model"},
// {"key_id": "key_…"} or {}) and a point per bucket of the range.
type seriesResource struct {
	Group  map[string]string `json:"group"`
	Points []pointResource   `json:"points"`
}

// pointResource is the usage of one bucket.
type pointResource struct {
	Start    time.Time `json:"start"`
	Requests int64     `json:"requests"`
	Units    int64     `json:"units"`
	Bytes    int64     `json:"bytes"`
}

// deadLetterResource is usage that will not be counted, and why.
type deadLetterResource struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail"`
	Payload string    `json:"payload"` // the raw event or message
}

// deadLetterList is the answer to GET /v1/usage/dead-letters.
type deadLetterList struct {
	DeadLetters   []deadLetterResource `json:"dead_letters"`
	NextPageToken string               `json:"next_page_token"` // "" on the last page
}

// webhookResource is an owner's notification webhook, without its secret.
type webhookResource struct {
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	UpdatedAt time.Time `json:"updated_at"`
}

// webhookSecretResource is the answer to PUT /v1/owners/{owner}/webhook:
// the only answer that carries the signing secret.
type webhookSecretResource struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
	Secret string   `json:"secret"` // whsec_…
}

// healthResource is the answer to GET /healthz.
type healthResource struct {
	Status string `json:"status"` // "ok"
}
