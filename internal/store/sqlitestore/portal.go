package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
)

var _ store.PortalLinks = (*Store)(nil)

// portalLinkRetention is how long after its expiry a portal link is kept
// before CreatePortalLink deletes it: used or not, it is useless then.
const portalLinkRetention = 24 * time.Hour

// CreatePortalLink stores l, and deletes links expired for a day.
func (s *Store) CreatePortalLink(ctx context.Context, l store.PortalLink) error {
	perms, err := jsonText(l.Permissions)
	if err != nil {
		return err
	}
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM portal_links WHERE expires_at < ?`,
			micros(l.CreatedAt.Add(-portalLinkRetention))); err != nil {
			return translate(err, "sqlite: delete old portal links")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO portal_links (hash, owner, permissions, return_url, created_by, created_at, expires_at, used_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, NULL)`, l.Hash[:], l.Owner, perms, l.ReturnURL, l.CreatedBy,
			micros(l.CreatedAt), micros(l.ExpiresAt))
		return translate(err, "sqlite: create portal link")
	})
}

// RedeemPortalLink marks the link used inside one write transaction,
// which SQLite serialises with every other writer.
func (s *Store) RedeemPortalLink(ctx context.Context, h apikey.Hash, at time.Time) (store.PortalLink, error) {
	var out store.PortalLink
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		var (
			perms            string
			created, expires int64
			used             sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, `SELECT owner, permissions, return_url, created_by, created_at, expires_at, used_at
			FROM portal_links WHERE hash = ?`, h[:]).Scan(&out.Owner, &perms, &out.ReturnURL, &out.CreatedBy, &created, &expires, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return errs.Wrap(errs.NotFound, err, "portal link not found")
		}
		if err != nil {
			return translate(err, "sqlite: read portal link")
		}
		if err := json.Unmarshal([]byte(perms), &out.Permissions); err != nil {
			return errs.Wrap(errs.Internal, err, "sqlite: decode portal link")
		}
		out.Hash, out.CreatedAt, out.ExpiresAt = h, fromMicros(created), fromMicros(expires)
		if used.Valid {
			return errs.E(errs.FailedPrecondition, "this portal link was used already")
		}
		if !at.Before(out.ExpiresAt) {
			return errs.E(errs.FailedPrecondition, "this portal link expired")
		}
		at = fromMicros(micros(at))
		if _, err := tx.ExecContext(ctx, `UPDATE portal_links SET used_at = ? WHERE hash = ?`, micros(at), h[:]); err != nil {
			return translate(err, "sqlite: redeem portal link")
		}
		out.UsedAt = &at
		return nil
	})
	if err != nil {
		return store.PortalLink{}, err
	}
	return out, nil
}
