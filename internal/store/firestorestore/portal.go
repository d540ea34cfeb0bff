package firestorestore

import (
	"context"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/firestoredb"
	"github.com/keyplane/keyplane/internal/store"
)

var _ store.PortalLinks = (*Store)(nil)

// portalLinksColl holds the owner portal's single-use links, by the hex of
// their token's hash; see the package comment for its TTL policy.
const portalLinksColl = "portal_links"

type portalLinkDoc struct {
	Owner       string     `firestore:"owner"`
	Permissions []string   `firestore:"permissions"`
	ReturnURL   string     `firestore:"return_url"`
	CreatedBy   string     `firestore:"created_by"`
	CreatedAt   time.Time  `firestore:"created_at"`
	ExpiresAt   time.Time  `firestore:"expires_at"`
	UsedAt      *time.Time `firestore:"used_at"`
}

func (s *Store) portalLink(h apikey.Hash) *firestore.DocumentRef {
	return s.c.Collection(portalLinksColl).Doc(h.String())
}

// CreatePortalLink creates the link's document; Create fails with
// AlreadyExists if it is there.
func (s *Store) CreatePortalLink(ctx context.Context, l store.PortalLink) error {
	_, err := s.portalLink(l.Hash).Create(ctx, &portalLinkDoc{Owner: l.Owner, Permissions: l.Permissions,
		ReturnURL: l.ReturnURL, CreatedBy: l.CreatedBy, CreatedAt: firestoredb.Time(l.CreatedAt),
		ExpiresAt: firestoredb.Time(l.ExpiresAt)})
	return translate(err, "firestore: create portal link")
}

// RedeemPortalLink reads the link and sets used_at in one transaction:
// Firestore serialises transactions on the document, so of concurrent
// redeemers (in any process) one commits and the others, retried, read
// it used.
func (s *Store) RedeemPortalLink(ctx context.Context, h apikey.Hash, at time.Time) (store.PortalLink, error) {
	at = firestoredb.Time(at)
	var out store.PortalLink
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(s.portalLink(h))
		if status.Code(err) == codes.NotFound {
			return errs.E(errs.NotFound, "portal link not found")
		}
		if err != nil {
			return err
		}
		var d portalLinkDoc
		if err := snap.DataTo(&d); err != nil {
			return errs.Wrap(errs.Internal, err, "firestore: decode portal link")
		}
		out = store.PortalLink{Hash: h, Owner: d.Owner, Permissions: d.Permissions, ReturnURL: d.ReturnURL,
			CreatedBy: d.CreatedBy, CreatedAt: d.CreatedAt.UTC(), ExpiresAt: d.ExpiresAt.UTC()}
		if d.UsedAt != nil {
			return errs.E(errs.FailedPrecondition, "this portal link was used already")
		}
		if !at.Before(out.ExpiresAt) {
			return errs.E(errs.FailedPrecondition, "this portal link expired")
		}
		out.UsedAt = &at
		return tx.Update(snap.Ref, []firestore.Update{{Path: "used_at", Value: at}})
	}, firestore.MaxAttempts(txAttempts))
	if err != nil {
		return store.PortalLink{}, translate(err, "firestore: redeem portal link")
	}
	return out, nil
}
