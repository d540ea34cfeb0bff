package store

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
)

// PortalLink is a single-use link into the owner portal: the platform's
// back end asks for one (POST /v1/portal/sessions) and hands its URL to
// the owner, whose browser exchanges it once for a short session. The
// store keeps only the hash of the link's token.
type PortalLink struct {
	Hash        apikey.Hash // SHA-256 of the link's token
	Owner       string
	Permissions []string // portal permission names, sorted
	ReturnURL   string   // where the portal's "back" link leads
	CreatedBy   string   // the actor that asked for the link
	CreatedAt   time.Time
	ExpiresAt   time.Time
	UsedAt      *time.Time // set once, by RedeemPortalLink
}

// PortalLinks stores portal links. Methods return errs kinds: Exists,
// NotFound, FailedPrecondition (as documented), Unavailable and Internal.
type PortalLinks interface {
	// CreatePortalLink stores l (UsedAt must be nil). Exists if a link
	// with l.Hash is stored.
	CreatePortalLink(ctx context.Context, l PortalLink) error
	// RedeemPortalLink marks the link whose hash is h used at `at` and
	// returns it, atomically: of any number of concurrent calls, across
	// processes, at most one succeeds. NotFound if there is no such link;
	// FailedPrecondition if it was used already or expired (at is not
	// before ExpiresAt), and nothing is written then.
	RedeemPortalLink(ctx context.Context, h apikey.Hash, at time.Time) (PortalLink, error)
}
