package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxResponseSize bounds the body of a response the client reads.
const MaxResponseSize = 1 << 20

// DefaultTimeout is the timeout of the default http.Client: it bounds a
// whole exchange, including reading the body.
const DefaultTimeout = 10 * time.Second

// Options configure a Client; nil or zero fields mean the defaults.
type Options struct {
	// HTTPClient sends the requests. Default: an http.Client with
	// DefaultTimeout and a keep-alive transport that keeps up to 100 idle
	// connections to keyplane, enough for a busy gateway.
	//
	// With an empty admin token the client sets no Authorization header,
	// so an HTTPClient that authenticates by itself (for example one from
	// google.golang.org/api/idtoken, for Google-signed ID tokens) can be
	// used instead.
	HTTPClient *http.Client
	// UserAgent is sent with every request. Default "keyplane-go-client".
	UserAgent string
}

// Client calls keyplane's HTTP API. It is safe for concurrent use; create
// it once and reuse it.
type Client struct {
	base  string // scheme://host[/path], no trailing slash
	token string
	hc    *http.Client
	ua    string
}

// New returns a Client for the API at baseURL (for example
// "https://keyplane.example.com" or "http://127.0.0.1:8080"),
// authenticating with the admin token.
func New(baseURL, token string, opts *Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keyplane: base URL %q must be an absolute http or https URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("keyplane: base URL %q must not have a query, fragment or user info", baseURL)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), token: token, ua: "keyplane-go-client"}
	if opts != nil {
		c.hc = opts.HTTPClient
		if opts.UserAgent != "" {
			c.ua = opts.UserAgent
		}
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 100
	t.MaxIdleConnsPerHost = 100
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Timeout: DefaultTimeout, Transport: t}
}

// Limits maps limit names (<metric>_per_<window>: metric requests, units or
// bytes; window minute, day or month) to their maximum. Absent means
// unlimited.
type Limits map[string]int64

// Restrictions limit where a key may be used from.
type Restrictions struct {
	AllowedIPs       []string `json:"allowed_ips,omitempty"`       // addresses or CIDR prefixes
	AllowedReferrers []string `json:"allowed_referrers,omitempty"` // "example.com", "*.example.com", "example.com/path"
	AllowedFeatures  []string `json:"allowed_features,omitempty"`  // the only features (models) the key may be verified for
}

// KeyStatus is a key's lifecycle state.
type KeyStatus string

// The key states.
const (
	StatusActive   KeyStatus = "active"
	StatusDisabled KeyStatus = "disabled"
	StatusRevoked  KeyStatus = "revoked"
)

// Key is the key resource. It never holds the plaintext.
type Key struct {
	ID            string            `json:"id"`
	Owner         string            `json:"owner"`
	Name          string            `json:"name"`
	Plan          string            `json:"plan"`
	Scopes        []string          `json:"scopes"`
	Status        KeyStatus         `json:"status"`
	StatusReason  string            `json:"status_reason"`
	DisabledUntil *time.Time        `json:"disabled_until"`
	Prefix        string            `json:"prefix"`
	Last4         string            `json:"last4"` // the plaintext's last four characters
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	ExpiresAt     *time.Time        `json:"expires_at"`
	Metadata      map[string]string `json:"metadata"`
	Limits        Limits            `json:"limits"` // effective: the plan's with the key's overrides
	Restrictions  Restrictions      `json:"restrictions"`
	RotatedFrom   string            `json:"rotated_from"` // "" unless the key replaced another
	RotatedTo     string            `json:"rotated_to"`   // "" unless another key replaced it
	LastUsedAt    *time.Time        `json:"last_used_at"` // latest verify, nil if never; trails it by up to about 10 s
	// Quarantine is set only on a key put in a leak quarantine
	// (KEYPLANE_LEAK_POLICY=quarantine).
	Quarantine *Quarantine `json:"quarantine,omitempty"`
}

// KeyWithSecret is a new key with its plaintext, as returned by creation
// and rotation.
type KeyWithSecret struct {
	Key
	Secret string `json:"secret"`
	// Replayed is true when the server returned the stored response of an
	// earlier request with the same Idempotency-Key.
	Replayed bool `json:"-"`
}

// CreateKeyRequest is the body of CreateKey. Only Owner is required.
type CreateKeyRequest struct {
	Owner        string            `json:"owner"`
	Plan         string            `json:"plan,omitempty"`   // default "free"
	Name         string            `json:"name,omitempty"`   // at most 200 characters
	Scopes       []string          `json:"scopes,omitempty"` // a subset of the plan's; default all of them
	ExpiresAt    *time.Time        `json:"expires_at,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"` // at most 32 pairs, 4 KiB
	Limits       Limits            `json:"limits,omitempty"`   // overrides of the plan's limits
	Restrictions *Restrictions     `json:"restrictions,omitempty"`
}

// UpdateKeyRequest is the body of UpdateKey: nil fields are left unchanged,
// set fields replace the stored value. [Ptr] makes pointers of literals.
type UpdateKeyRequest struct {
	Name         *string            `json:"name,omitempty"`
	Plan         *string            `json:"plan,omitempty"`
	Scopes       *[]string          `json:"scopes,omitempty"`
	Metadata     *map[string]string `json:"metadata,omitempty"`
	Limits       *Limits            `json:"limits,omitempty"` // replaces all of the key's overrides
	Restrictions *Restrictions      `json:"restrictions,omitempty"`
	ExpiresAt    *time.Time         `json:"expires_at,omitempty"`
	// ClearExpiresAt removes the expiry (sends "expires_at": null). It
	// cannot be combined with ExpiresAt.
	ClearExpiresAt bool `json:"-"`
}

// Ptr returns a pointer to v, for the fields of UpdateKeyRequest.
func Ptr[T any](v T) *T { return &v }

// MarshalJSON encodes the set fields, and "expires_at": null when
// ClearExpiresAt is set.
func (u UpdateKeyRequest) MarshalJSON() ([]byte, error) {
	type plain UpdateKeyRequest
	if !u.ClearExpiresAt {
		return json.Marshal(plain(u))
	}
	if u.ExpiresAt != nil {
		return nil, errors.New("keyplane: UpdateKeyRequest sets both ExpiresAt and ClearExpiresAt")
	}
	return json.Marshal(struct {
		plain
		ExpiresAt *time.Time `json:"expires_at"` // shadows plain's, and is null
	}{plain: plain(u)})
}

// KeyList is a page of keys, newest first.
type KeyList struct {
	Keys          []Key  `json:"keys"`
	NextPageToken string `json:"next_page_token"` // "" on the last page
}

// ListKeysOptions select a page of keys; zero fields mean the defaults.
type ListKeysOptions struct {
	Owner string // only this owner's keys; "" for all
	// UnusedSince, if not zero, selects the stale keys: never used or last
	// used before it. A page may then be short, even empty, with a
	// NextPageToken: follow it until it is "".
	UnusedSince time.Time
	PageSize    int    // 1–1000; 0 means the server's default (50)
	PageToken   string // a previous page's NextPageToken
}

// AuditEntry records one state change or reveal.
type AuditEntry struct {
	ID      string            `json:"id"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"` // key.create, key.update, key.disable, key.enable, key.revoke, key.rotate, key.secret.reveal
	KeyID   string            `json:"key_id"`
	Details map[string]string `json:"details"`
}

// AuditList is a page of audit entries, newest first.
type AuditList struct {
	Entries       []AuditEntry `json:"entries"`
	NextPageToken string       `json:"next_page_token"` // "" on the last page
}

// AuditOptions select a page of audit entries; zero fields mean the
// defaults.
type AuditOptions struct {
	KeyID     string // only this key's entries; "" for all
	PageSize  int    // 1–1000; 0 means the server's default (50)
	PageToken string // a previous page's NextPageToken
}

// VerifyRequest asks whether a key may be used for one API request.
type VerifyRequest struct {
	Key      string `json:"key"`                // the plaintext the caller presented
	Scope    string `json:"scope,omitempty"`    // the scope the request needs; "" skips the check
	IP       string `json:"ip,omitempty"`       // the caller's address; required for IP-restricted keys
	Referrer string `json:"referrer,omitempty"` // the request's Referer; required for referrer-restricted keys
	Units    int64  `json:"units,omitempty"`    // cost against units_per_minute; >= 0
	// Feature is the feature (model) the request uses, for the owner's
	// per-feature limits and the key's allowed_features; "" for none.
	Feature string `json:"feature,omitempty"`
}

// Code is the outcome of a verification.
type Code string

// The verification outcomes.
const (
	CodeValid                   Code = "VALID"
	CodeNotFound                Code = "NOT_FOUND" // unknown, malformed or bad checksum
	CodeDisabled                Code = "DISABLED"
	CodeRevoked                 Code = "REVOKED"
	CodeExpired                 Code = "EXPIRED"
	CodeForbidden               Code = "FORBIDDEN"                // an IP or referrer restriction
	CodeInsufficientPermissions Code = "INSUFFICIENT_PERMISSIONS" // the scope is not granted
	CodeRateLimited             Code = "RATE_LIMITED"             // a *_per_minute limit
	CodeUsageExceeded           Code = "USAGE_EXCEEDED"           // a day or month quota
)

// LimitState is one limit's state after a decision.
type LimitState struct {
	Limit     int64     `json:"limit"`
	Used      *int64    `json:"used,omitempty"` // metered usage, for day and month quotas
	Remaining int64     `json:"remaining"`
	ResetAt   time.Time `json:"reset_at,omitzero"` // zero for credits, which do not reset
	// Currency is set for the money limits (spend_per_month, credits):
	// their figures are micro-units (1e-6) of it.
	Currency string `json:"currency,omitempty"`
}

// The money limits of an owner: its monthly spend cap and its prepaid
// credits. Their figures are micro-units of LimitState.Currency.
const (
	LimitSpendPerMonth = "spend_per_month"
	LimitCredits       = "credits"
)

// RefusedLimit names the limit that refused a request: whose it is
// (Scope "key" or "owner", with Feature for an owner's per-feature
// limit), which (Name, e.g. requests_per_minute), its state, and where its
// value comes from (Source: "plan <name>", "owner override" or "key
// override").
type RefusedLimit struct {
	Scope   string `json:"scope"`
	Feature string `json:"feature,omitempty"`
	Name    string `json:"name"`
	LimitState
	Source string `json:"source,omitempty"`
}

// Describe says which limit it is, in words: "the owner's
// requests_per_minute limit for pro-model (1, plan free)".
func (l *RefusedLimit) Describe() string {
	s := "the " + l.Scope + "'s " + l.Name + " limit"
	if l.Feature != "" {
		s += " for " + l.Feature
	}
	if l.Currency != "" {
		s += " (" + formatMicros(l.Limit) + " " + l.Currency
	} else {
		s += " (" + strconv.FormatInt(l.Limit, 10)
	}
	if l.Source != "" {
		s += ", " + l.Source
	}
	return s + ")"
}

// formatMicros formats micro-units of a currency with 6 decimals.
func formatMicros(m int64) string {
	sign := ""
	if m < 0 {
		sign, m = "-", -m
	}
	return fmt.Sprintf("%s%d.%06d", sign, m/1_000_000, m%1_000_000)
}

// Decision is the outcome of Verify. Valid is true only for CodeValid.
type Decision struct {
	Valid bool `json:"valid"`
	Code  Code `json:"code"`
	// Message says why a CodeForbidden decision refused the key (no
	// client IP or referrer sent, or one the key does not allow).
	Message   string            `json:"message,omitempty"`
	KeyID     string            `json:"key_id,omitempty"`
	Owner     string            `json:"owner,omitempty"`
	Plan      string            `json:"plan,omitempty"`
	Scopes    []string          `json:"scopes,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	// Limits holds the key's limits by name (VALID, RATE_LIMITED and
	// USAGE_EXCEEDED decisions).
	Limits map[string]LimitState `json:"limits,omitempty"`
	// OwnerLimits holds the limits the owner's keys share, and
	// FeatureLimits the owner's limits on Feature, the request's feature.
	OwnerLimits   map[string]LimitState `json:"owner_limits,omitempty"`
	Feature       string                `json:"feature,omitempty"`
	FeatureLimits map[string]LimitState `json:"feature_limits,omitempty"`
	// Limit is the limit that refused a RATE_LIMITED or USAGE_EXCEEDED
	// decision.
	Limit *RefusedLimit `json:"limit,omitempty"`
	// RetryAfterSeconds says when to try again, with RATE_LIMITED.
	RetryAfterSeconds int64 `json:"retry_after,omitempty"`
}

// ErrorDetail is one machine-readable detail of an API error, e.g. which
// field was invalid.
type ErrorDetail struct {
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// APIError is a non-2xx answer from keyplane.
type APIError struct {
	Status     int           // the HTTP status
	Code       string        // the canonical code, e.g. NOT_FOUND; "" if the body had none
	Message    string        // the server's message, safe to show
	Details    []ErrorDetail // per-field details, if any
	RetryAfter time.Duration // from the Retry-After header; 0 if absent
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	if e.Message == "" {
		return fmt.Sprintf("keyplane: %d %s", e.Status, code)
	}
	return fmt.Sprintf("keyplane: %d %s: %s", e.Status, code, e.Message)
}

// IsNotFound reports whether err is an APIError with status 404.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is an APIError with status 409: the key's
// state forbids the operation (FAILED_PRECONDITION), or a request with the
// same Idempotency-Key is still in flight (ABORTED).
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

func hasStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// CreateKey provisions a key and returns it with its plaintext. With a
// non-empty idempotencyKey, retrying after a failure returns the same key
// (Replayed set) instead of creating another; reusing it with a different
// request is a 422.
func (c *Client) CreateKey(ctx context.Context, req CreateKeyRequest, idempotencyKey string) (*KeyWithSecret, error) {
	var out KeyWithSecret
	h, err := c.do(ctx, http.MethodPost, "/v1/keys", nil, req, idempotencyKey, &out)
	if err != nil {
		return nil, err
	}
	out.Replayed = h.Get("Idempotent-Replayed") == "true"
	return &out, nil
}

// GetKey reads a key.
func (c *Client) GetKey(ctx context.Context, id string) (*Key, error) {
	p, err := keyPath(id, "")
	if err != nil {
		return nil, err
	}
	var out Key
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListKeys returns a page of keys, newest first.
func (c *Client) ListKeys(ctx context.Context, opts ListKeysOptions) (*KeyList, error) {
	q := pageQuery(opts.PageSize, opts.PageToken)
	if opts.Owner != "" {
		q.Set("owner", opts.Owner)
	}
	if !opts.UnusedSince.IsZero() {
		q.Set("unused_since", opts.UnusedSince.UTC().Format(time.RFC3339Nano))
	}
	var out KeyList
	if _, err := c.do(ctx, http.MethodGet, "/v1/keys", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateKey changes the fields of req that are set and returns the key.
func (c *Client) UpdateKey(ctx context.Context, id string, req UpdateKeyRequest) (*Key, error) {
	return c.keyAction(ctx, http.MethodPatch, id, "", req)
}

type reasonRequest struct {
	Reason string `json:"reason,omitempty"`
}

// DisableKey disables a key until it is enabled again; reason (at most
// 500 characters) is recorded as its status_reason and in the audit log.
func (c *Client) DisableKey(ctx context.Context, id, reason string) (*Key, error) {
	return c.keyAction(ctx, http.MethodPost, id, "/disable", reasonRequest{reason})
}

// EnableKey re-enables a disabled key. A revoked key cannot be enabled
// (409 FAILED_PRECONDITION).
func (c *Client) EnableKey(ctx context.Context, id string) (*Key, error) {
	return c.keyAction(ctx, http.MethodPost, id, "/enable", nil)
}

// RevokeKey revokes a key permanently and destroys its stored secret.
func (c *Client) RevokeKey(ctx context.Context, id, reason string) (*Key, error) {
	return c.keyAction(ctx, http.MethodPost, id, "/revoke", reasonRequest{reason})
}

// NoGracePeriod, passed to RotateKey, ends the old key's validity at once.
const NoGracePeriod time.Duration = -1

// RotateKey creates a new key with the old key's settings and returns it
// with its plaintext. The old key keeps verifying for gracePeriod (at most
// 720h), then verifies as EXPIRED. A gracePeriod of 0 means the server's
// default (24h), so that a forgotten argument never cuts off the callers
// still holding the old key; pass NoGracePeriod to end it immediately.
// idempotencyKey works as for CreateKey.
func (c *Client) RotateKey(ctx context.Context, id string, gracePeriod time.Duration, idempotencyKey string) (*KeyWithSecret, error) {
	p, err := keyPath(id, "/rotate")
	if err != nil {
		return nil, err
	}
	var body struct {
		GracePeriod string `json:"grace_period,omitempty"`
	}
	switch {
	case gracePeriod == NoGracePeriod:
		body.GracePeriod = "0s"
	case gracePeriod < 0:
		return nil, fmt.Errorf("keyplane: grace period %s is negative", gracePeriod)
	case gracePeriod > 0:
		body.GracePeriod = gracePeriod.String()
	}
	var out KeyWithSecret
	h, err := c.do(ctx, http.MethodPost, p, nil, body, idempotencyKey, &out)
	if err != nil {
		return nil, err
	}
	out.Replayed = h.Get("Idempotent-Replayed") == "true"
	return &out, nil
}

// RevealSecret returns a key's plaintext from the secret vault. Every
// reveal is audited; a revoked key's secret is gone (409).
func (c *Client) RevealSecret(ctx context.Context, id string) (string, error) {
	p, err := keyPath(id, "/secret")
	if err != nil {
		return "", err
	}
	var out struct {
		Secret string `json:"secret"`
	}
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, "", &out); err != nil {
		return "", err
	}
	return out.Secret, nil
}

// Verify asks whether a key may be used for one API request. A refusal is
// a Decision, not an error; an error means no decision was made (keyplane
// unreachable, or a 503 because it could not decide safely), and the
// caller must not treat the key as valid. On a request's hot path, bound
// it with the request's context or a short Options.HTTPClient timeout.
func (c *Client) Verify(ctx context.Context, req VerifyRequest) (*Decision, error) {
	var out Decision
	if _, err := c.do(ctx, http.MethodPost, "/v1/verify", nil, req, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAudit returns a page of audit entries, newest first.
func (c *Client) ListAudit(ctx context.Context, opts AuditOptions) (*AuditList, error) {
	q := pageQuery(opts.PageSize, opts.PageToken)
	if opts.KeyID != "" {
		q.Set("key_id", opts.KeyID)
	}
	var out AuditList
	if _, err := c.do(ctx, http.MethodGet, "/v1/audit", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) keyAction(ctx context.Context, method, id, suffix string, body any) (*Key, error) {
	p, err := keyPath(id, suffix)
	if err != nil {
		return nil, err
	}
	var out Key
	if _, err := c.do(ctx, method, p, nil, body, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func keyPath(id, suffix string) (string, error) {
	if id == "" {
		return "", errors.New("keyplane: a key id is required")
	}
	return "/v1/keys/" + url.PathEscape(id) + suffix, nil
}

func pageQuery(size int, token string) url.Values {
	q := url.Values{}
	if size > 0 {
		q.Set("page_size", strconv.Itoa(size))
	}
	if token != "" {
		q.Set("page_token", token)
	}
	return q
}

// do sends one request and decodes a 2xx body into out. A nil body sends
// none. It returns the response header.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, idempotencyKey string, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("keyplane: %s %s: encoding the request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("keyplane: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("keyplane: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("keyplane: %s %s: reading the response: %w", method, path, err)
	}
	if len(raw) > MaxResponseSize {
		return nil, fmt.Errorf("keyplane: %s %s: the response is larger than %d bytes", method, path, MaxResponseSize)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return nil, apiError(res, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("keyplane: %s %s: decoding the %d response: %w", method, path, res.StatusCode, err)
		}
	}
	return res.Header, nil
}

// apiError decodes an error answer. A body that is not keyplane's error
// JSON (a proxy's HTML page, say) is not quoted: only the status is kept.
func apiError(res *http.Response, raw []byte) *APIError {
	e := &APIError{Status: res.StatusCode, RetryAfter: parseRetryAfter(res.Header.Get("Retry-After"), time.Now())}
	var body struct {
		Error struct {
			Code    string        `json:"code"`
			Message string        `json:"message"`
			Details []ErrorDetail `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil {
		e.Code, e.Message, e.Details = body.Error.Code, body.Error.Message, body.Error.Details
	}
	return e
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 if v is neither.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
