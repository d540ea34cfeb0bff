package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Permission names, as POST /v1/tokens takes them. Each route needs one.
const (
	PermKeysCreate     = "keys:create"
	PermKeysRead       = "keys:read"
	PermKeysUpdate     = "keys:update"
	PermKeysDisable    = "keys:disable" // disable and enable
	PermKeysRevoke     = "keys:revoke"
	PermKeysRotate     = "keys:rotate"
	PermKeysReveal     = "keys:reveal"
	PermVerify         = "verify"
	PermUsageRead      = "usage:read"
	PermAuditRead      = "audit:read"
	PermOwnersRead     = "owners:read"
	PermOwnersWrite    = "owners:write"
	PermSweepRun       = "sweep:run"
	PermTokensManage   = "tokens:manage"
	PermPortalSessions = "portal:sessions"
)

// CreateTokenRequest mints a caller token. Owner, if set, limits the token
// to that owner's keys and owner record.
type CreateTokenRequest struct {
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions"`
	Owner       string     `json:"owner,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// Token is a caller token's record; it never holds the secret.
type Token struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions"`
	Owner       string     `json:"owner,omitempty"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
}

// TokenWithSecret is a new token with its secret, which is shown only in
// CreateToken's answer: pass it to New as the caller's token.
type TokenWithSecret struct {
	Token
	Secret string `json:"token"`
}

// TokenList is a page of caller tokens, newest first.
type TokenList struct {
	Tokens        []Token `json:"tokens"`
	NextPageToken string  `json:"next_page_token,omitempty"`
}

// ListTokensOptions selects tokens; Owner "" lists every token.
type ListTokensOptions struct {
	Owner     string
	PageSize  int
	PageToken string
}

// CreateToken mints a caller token (permission tokens:manage). It cannot
// grant a permission the caller lacks.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (*TokenWithSecret, error) {
	var out TokenWithSecret
	if _, err := c.do(ctx, http.MethodPost, "/v1/tokens", nil, req, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListTokens returns a page of caller tokens.
func (c *Client) ListTokens(ctx context.Context, opts ListTokensOptions) (*TokenList, error) {
	q := pageQuery(opts.PageSize, opts.PageToken)
	if opts.Owner != "" {
		q.Set("owner", opts.Owner)
	}
	var out TokenList
	if _, err := c.do(ctx, http.MethodGet, "/v1/tokens", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeToken revokes a caller token; every instance refuses it within
// 10 seconds.
func (c *Client) RevokeToken(ctx context.Context, id string) (*Token, error) {
	if id == "" {
		return nil, errors.New("keyplane: token id is required")
	}
	var out Token
	if _, err := c.do(ctx, http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/revoke", nil, struct{}{}, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
