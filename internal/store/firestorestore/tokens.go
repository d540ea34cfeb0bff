package firestorestore

import (
	"context"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/firestoredb"
	"github.com/keyplane/keyplane/internal/pagetoken"
	"github.com/keyplane/keyplane/internal/store"
)

// Collections of caller tokens; see the package comment.
const (
	tokensColl      = "tokens"
	tokenHashesColl = "token_hashes"
)

type tokenDoc struct {
	Name        string     `firestore:"name"`
	Permissions []string   `firestore:"permissions"`
	Owner       string     `firestore:"owner"`
	Hash        string     `firestore:"hash"`
	CreatedBy   string     `firestore:"created_by"`
	CreatedAt   time.Time  `firestore:"created_at"`
	ExpiresAt   *time.Time `firestore:"expires_at"`
	RevokedAt   *time.Time `firestore:"revoked_at"`
}

type tokenHashDoc struct {
	TokenID string `firestore:"token_id"`
}

func (s *Store) token(id string) *firestore.DocumentRef { return s.c.Collection(tokensColl).Doc(id) }

func (s *Store) tokenHash(h apikey.Hash) *firestore.DocumentRef {
	return s.c.Collection(tokenHashesColl).Doc(h.String())
}

func toTokenDoc(t *store.Token) *tokenDoc {
	return &tokenDoc{Name: t.Name, Permissions: t.Permissions, Owner: t.Owner, Hash: t.Hash.String(),
		CreatedBy: t.CreatedBy, CreatedAt: firestoredb.Time(t.CreatedAt), ExpiresAt: tsPtr(t.ExpiresAt),
		RevokedAt: tsPtr(t.RevokedAt)}
}

func fromTokenDoc(snap *firestore.DocumentSnapshot) (*store.Token, error) {
	var d tokenDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: decode token "+snap.Ref.ID)
	}
	h, err := apikey.ParseHash(d.Hash)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: token "+snap.Ref.ID+" has a malformed hash")
	}
	t := &store.Token{ID: snap.Ref.ID, Name: d.Name, Permissions: d.Permissions, Owner: d.Owner, Hash: h,
		CreatedBy: d.CreatedBy, CreatedAt: d.CreatedAt.UTC()}
	if d.ExpiresAt != nil {
		v := d.ExpiresAt.UTC()
		t.ExpiresAt = &v
	}
	if d.RevokedAt != nil {
		v := d.RevokedAt.UTC()
		t.RevokedAt = &v
	}
	return t, nil
}

// CreateToken creates the token, its hash lookup and the audit entry in
// one transaction of Creates.
func (s *Store) CreateToken(ctx context.Context, t *store.Token, audit store.AuditEntry) error {
	if err := checkID("token id", t.ID); err != nil {
		return err
	}
	audit, err := withAuditID(audit)
	if err != nil {
		return err
	}
	err = s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		if err := tx.Create(s.token(t.ID), toTokenDoc(t)); err != nil {
			return err
		}
		if err := tx.Create(s.tokenHash(t.Hash), &tokenHashDoc{TokenID: t.ID}); err != nil {
			return err
		}
		return tx.Create(s.audit(audit.ID), toAuditDoc(audit))
	}, firestore.MaxAttempts(txAttempts))
	return translate(err, "firestore: create token")
}

// GetToken returns the token with id.
func (s *Store) GetToken(ctx context.Context, id string) (*store.Token, error) {
	if !firestoredb.ValidID(id) {
		return nil, errs.E(errs.NotFound, "token not found")
	}
	snap, err := s.token(id).Get(ctx)
	if err != nil {
		return nil, translate(err, "firestore: read token")
	}
	return fromTokenDoc(snap)
}

// LookupTokenHash returns the token whose hash is h: the lookup, then the
// token (tokens are never deleted).
func (s *Store) LookupTokenHash(ctx context.Context, h apikey.Hash) (*store.Token, error) {
	snap, err := s.tokenHash(h).Get(ctx)
	if err != nil {
		return nil, translate(err, "firestore: look up token hash")
	}
	var d tokenHashDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: decode token hash lookup")
	}
	return s.GetToken(ctx, d.TokenID)
}

// ListTokens returns one page of tokens, newest first.
func (s *Store) ListTokens(ctx context.Context, q store.ListTokensQuery) ([]*store.Token, string, error) {
	snaps, more, err := s.page(ctx, tokensColl, "created_at", "owner", q.Owner, q.PageToken, q.PageSize)
	if err != nil {
		return nil, "", err
	}
	out := make([]*store.Token, 0, len(snaps))
	for _, snap := range snaps {
		t, err := fromTokenDoc(snap)
		if err != nil {
			return nil, "", err
		}
		out = append(out, t)
	}
	var next string
	if more {
		last := out[len(out)-1]
		next = pagetoken.Encode(last.CreatedAt, last.ID)
	}
	return out, next, nil
}

// RevokeToken sets revoked_at and creates the audit entry in one
// transaction, unless the token is revoked already.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time, audit store.AuditEntry) (*store.Token, error) {
	if !firestoredb.ValidID(id) {
		return nil, errs.E(errs.NotFound, "token not found")
	}
	audit, err := withAuditID(audit)
	if err != nil {
		return nil, err
	}
	at = firestoredb.Time(at)
	var out *store.Token
	err = s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(s.token(id))
		if err != nil {
			return err
		}
		t, err := fromTokenDoc(snap)
		if err != nil {
			return err
		}
		out = t
		if t.RevokedAt != nil {
			return nil
		}
		t.RevokedAt = &at
		if err := tx.Update(s.token(id), []firestore.Update{{Path: "revoked_at", Value: at}}); err != nil {
			return err
		}
		return tx.Create(s.audit(audit.ID), toAuditDoc(audit))
	}, firestore.MaxAttempts(txAttempts))
	if err != nil {
		return nil, translate(err, "firestore: revoke token")
	}
	return out, nil
}
