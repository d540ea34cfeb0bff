package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// SourcedLimit is a limit's value and where it comes from ("plan <name>"
// or "owner override").
type SourcedLimit struct {
	Limit  int64  `json:"limit"`
	Source string `json:"source"`
}

// Owner is an owner (a project): its tier, its overrides, and the limits
// all its keys share.
type Owner struct {
	Owner string `json:"owner"`
	Plan  string `json:"plan"`
	// Suspension is the sweep's suspension of the owner over a day or
	// month quota; nil when the owner is not suspended.
	Suspension *OwnerSuspension  `json:"suspension,omitempty"`
	Limits     Limits            `json:"limits"`   // overrides of the plan's owner_limits
	Features   map[string]Limits `json:"features"` // overrides of the plan's per-feature limits
	Effective  struct {
		OwnerLimits   map[string]SourcedLimit            `json:"owner_limits"`
		Features      map[string]map[string]SourcedLimit `json:"features"`
		OtherFeatures bool                               `json:"other_features"` // features not listed are offered too
	} `json:"effective"`
	// SpendCap is the owner's own monthly spend cap; nil when its plan's
	// (if any) applies.
	SpendCap  *SpendCap `json:"spend_cap"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// OwnerSuspension is the sweep's suspension of an owner over its own quota
// (every request of its keys is refused) or a feature's (Feature set: that
// feature's requests are), until the window ends or the owner's limits no
// longer refuse its usage.
type OwnerSuspension struct {
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Used    int64     `json:"used"`
	Max     int64     `json:"max"`
	Until   time.Time `json:"until"`
	Since   time.Time `json:"since"`
}

// OwnerList is a page of owners, by id.
type OwnerList struct {
	Owners        []Owner `json:"owners"`
	NextPageToken string  `json:"next_page_token,omitempty"`
}

// UpdateOwnerRequest changes an owner; nil fields are kept, Limits and
// Features replace the owner's overrides.
type UpdateOwnerRequest struct {
	Plan     *string            `json:"plan,omitempty"`
	Limits   *Limits            `json:"limits,omitempty"`
	Features *map[string]Limits `json:"features,omitempty"`
	// SpendCap sets the owner's monthly spend cap; ClearSpendCap removes
	// it (the plan's applies again).
	SpendCap      *SpendCap `json:"-"`
	ClearSpendCap bool      `json:"-"`
}

// MarshalJSON sends spend_cap as an object to set it or null to clear it.
func (r UpdateOwnerRequest) MarshalJSON() ([]byte, error) {
	type plain UpdateOwnerRequest
	var body struct {
		plain
		SpendCap *json.RawMessage `json:"spend_cap,omitempty"`
	}
	body.plain = plain(r)
	switch {
	case r.SpendCap != nil:
		b, err := json.Marshal(r.SpendCap)
		if err != nil {
			return nil, err
		}
		raw := json.RawMessage(b)
		body.SpendCap = &raw
	case r.ClearSpendCap:
		raw := json.RawMessage("null")
		body.SpendCap = &raw
	}
	return json.Marshal(body)
}

func ownerPath(owner string) (string, error) {
	if owner == "" {
		return "", errors.New("keyplane: owner is required")
	}
	return "/v1/owners/" + url.PathEscape(owner), nil
}

// GetOwner reads an owner. An owner exists once it has a key.
func (c *Client) GetOwner(ctx context.Context, owner string) (*Owner, error) {
	p, err := ownerPath(owner)
	if err != nil {
		return nil, err
	}
	var out Owner
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateOwner changes an owner's tier or overrides.
func (c *Client) UpdateOwner(ctx context.Context, owner string, req UpdateOwnerRequest) (*Owner, error) {
	p, err := ownerPath(owner)
	if err != nil {
		return nil, err
	}
	var out Owner
	if _, err := c.do(ctx, http.MethodPatch, p, nil, req, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListOwners returns a page of owners, by id.
func (c *Client) ListOwners(ctx context.Context, pageSize int, pageToken string) (*OwnerList, error) {
	var out OwnerList
	if _, err := c.do(ctx, http.MethodGet, "/v1/owners", pageQuery(pageSize, pageToken), nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
