package client

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// PortalSessionRequest asks for a link to the self-service portal for one
// owner. Permissions ("keys:create", "keys:read", …) bound what the
// portal's visitor may do with that owner's keys; empty means the server's
// default set. ReturnURL, if set, is where the portal's "back" link leads.
type PortalSessionRequest struct {
	Owner       string   `json:"owner"`
	ReturnURL   string   `json:"return_url,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
}

// PortalSession is a portal link: open URL before ExpiresAt. The URL
// carries the session's credential; hand it only to the owner it is for.
type PortalSession struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreatePortalSession creates a portal session for an owner (POST
// /v1/portal/sessions, permission portal:sessions) and returns its link.
func (c *Client) CreatePortalSession(ctx context.Context, req PortalSessionRequest) (*PortalSession, error) {
	if req.Owner == "" {
		return nil, errors.New("keyplane: owner is required")
	}
	var out PortalSession
	if _, err := c.do(ctx, http.MethodPost, "/v1/portal/sessions", nil, req, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
