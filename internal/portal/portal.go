package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// Bounds of links and sessions.
const (
	// MaxLinkTTL is the longest a link stays valid, and its default.
	MaxLinkTTL = 10 * time.Minute
	// DefaultSessionTTL is how long a session lasts after the exchange.
	DefaultSessionTTL = time.Hour
	// maxReturnURL bounds return_url.
	maxReturnURL = 2048
)

// Portal serves the owner portal and opens its sessions. All fields but
// Clock, Logger, SessionTTL and BaseURL are required.
type Portal struct {
	Links  store.PortalLinks
	Keys   *keys.Service
	Owners *owners.Service
	Ledger ledger.Ledger
	Plans  *plan.Catalog
	// Hasher's pepper signs the session cookies and CSRF tokens.
	Hasher     *apikey.Hasher
	Clock      clock.Clock   // default clock.Real
	Logger     *slog.Logger  // default slog.Default()
	SessionTTL time.Duration // default DefaultSessionTTL, at most that
	// BaseURL, if set, is the portal links' origin (like
	// "https://keys.example.com"); otherwise a link names the host the
	// session request came to.
	BaseURL string
}

func (p *Portal) now() time.Time {
	if p.Clock == nil {
		return time.Now().UTC()
	}
	return p.Clock.Now()
}

func (p *Portal) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.Default()
	}
	return p.Logger
}

func (p *Portal) sessionTTL() time.Duration {
	if p.SessionTTL <= 0 || p.SessionTTL > DefaultSessionTTL {
		return DefaultSessionTTL
	}
	return p.SessionTTL
}

// SessionRequest is the body of POST /v1/portal/sessions.
type SessionRequest struct {
	Owner       string   `json:"owner"`
	ReturnURL   string   `json:"return_url,omitempty"`  // the back link's and sign-out's target; none if empty
	Permissions []string `json:"permissions,omitempty"` // default DefaultPermissions
	TTL         string   `json:"ttl,omitempty"`         // the link's, a Go duration; default and at most MaxLinkTTL
}

// Link is an opened session's single-use link.
type Link struct {
	URL       string
	ExpiresAt time.Time
}

// Open validates req and stores a single-use link for it. origin is the
// scheme and host the request came to ("https://host"), used unless
// BaseURL is set. actor is recorded as the link's creator. Errors:
// Invalid (says what to fix), NotFound (no such owner).
func (p *Portal) Open(ctx context.Context, actor, origin string, req SessionRequest) (Link, error) {
	ret, err := url.Parse(req.ReturnURL)
	switch {
	case req.ReturnURL == "": // no back link
	case len(req.ReturnURL) > maxReturnURL:
		return Link{}, errs.E(errs.Invalid, "return_url is longer than %d characters", maxReturnURL)
	case err != nil || (ret.Scheme != "https" && ret.Scheme != "http") || ret.Host == "" || ret.User != nil:
		return Link{}, errs.E(errs.Invalid, "return_url must be an absolute http or https URL without credentials")
	}
	perms := req.Permissions
	if perms == nil {
		perms = DefaultPermissions()
	}
	if len(perms) == 0 {
		return Link{}, errs.E(errs.Invalid, "permissions must name at least one of %s", strings.Join(permissions, ", "))
	}
	for _, pm := range perms {
		if !slices.Contains(permissions, pm) {
			return Link{}, errs.E(errs.Invalid, "permission %.64q is not a portal permission; the portal's are %s", pm, strings.Join(permissions, ", "))
		}
	}
	perms = slices.Compact(slices.Sorted(slices.Values(perms)))
	ttl := MaxLinkTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxLinkTTL {
			return Link{}, errs.E(errs.Invalid, "ttl must be a duration above 0s and at most %s, like \"5m\"", MaxLinkTTL)
		}
		ttl = d
	}
	o, err := p.Owners.Get(ctx, req.Owner)
	if err != nil {
		return Link{}, err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	token := base64.RawURLEncoding.EncodeToString(raw)
	now := p.now().Truncate(time.Microsecond) // as the stores keep it
	l := store.PortalLink{Hash: linkHash(token), Owner: o.ID, Permissions: perms, ReturnURL: ret.String(),
		CreatedBy: actor, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := p.Links.CreatePortalLink(ctx, l); err != nil {
		return Link{}, err
	}
	base := origin
	if p.BaseURL != "" {
		base = strings.TrimRight(p.BaseURL, "/")
	}
	return Link{URL: base + "/portal/exchange?token=" + token, ExpiresAt: l.ExpiresAt}, nil
}

// linkHash is what the store keeps of a link's token: its SHA-256 (the
// token holds 256 random bits, so no pepper is needed).
func linkHash(token string) apikey.Hash { return sha256.Sum256([]byte(token)) }
