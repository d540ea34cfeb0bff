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

const selectToken = "SELECT id, name, permissions, owner, hash, created_by, created_at, expires_at, revoked_at FROM tokens"

func scanToken(r rowScanner) (*store.Token, error) {
	var (
		t                store.Token
		perms            string
		hash             []byte
		created          int64
		expires, revoked sql.NullInt64
	)
	if err := r.Scan(&t.ID, &t.Name, &perms, &t.Owner, &hash, &t.CreatedBy, &created, &expires, &revoked); err != nil {
		return nil, err
	}
	if len(hash) != len(t.Hash) {
		return nil, errs.E(errs.Internal, "sqlite: token %s has a %d-byte hash", t.ID, len(hash))
	}
	copy(t.Hash[:], hash)
	if err := json.Unmarshal([]byte(perms), &t.Permissions); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "sqlite: decode token "+t.ID)
	}
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt, t.RevokedAt = fromNullMicros(expires), fromNullMicros(revoked)
	return &t, nil
}

func getToken(ctx context.Context, q querier, where string, arg any) (*store.Token, error) {
	t, err := scanToken(q.QueryRowContext(ctx, selectToken+" WHERE "+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.Wrap(errs.NotFound, err, "token not found")
	}
	if err != nil {
		return nil, translate(err, "sqlite: read token")
	}
	return t, nil
}

// CreateToken stores t and the audit entry in one transaction.
func (s *Store) CreateToken(ctx context.Context, t *store.Token, audit store.AuditEntry) error {
	perms, err := jsonText(t.Permissions)
	if err != nil {
		return err
	}
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (id, name, permissions, owner, hash, created_by, created_at, expires_at, revoked_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, t.ID, t.Name, perms, t.Owner, t.Hash[:], t.CreatedBy, micros(t.CreatedAt),
			nullMicros(t.ExpiresAt), nullMicros(t.RevokedAt))
		if err != nil {
			return translate(err, "sqlite: create token")
		}
		return insertAudit(ctx, tx, audit)
	})
}

// GetToken returns the token with id.
func (s *Store) GetToken(ctx context.Context, id string) (*store.Token, error) {
	return getToken(ctx, s.r, "id = ?", id)
}

// LookupTokenHash returns the token whose hash is h.
func (s *Store) LookupTokenHash(ctx context.Context, h apikey.Hash) (*store.Token, error) {
	return getToken(ctx, s.r, "hash = ?", h[:])
}

// ListTokens returns one page of tokens, newest first.
func (s *Store) ListTokens(ctx context.Context, q store.ListTokensQuery) ([]*store.Token, string, error) {
	var out []*store.Token
	next, err := s.page(ctx, selectToken, "created_at", "owner", q.Owner, q.PageToken, q.PageSize,
		func(r rowScanner) (time.Time, string, error) {
			t, err := scanToken(r)
			if err != nil {
				return time.Time{}, "", err
			}
			out = append(out, t)
			return t.CreatedAt, t.ID, nil
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// RevokeToken sets the token's revoked_at, with its audit entry, in one
// transaction.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time, audit store.AuditEntry) (*store.Token, error) {
	var out *store.Token
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		t, err := getToken(ctx, tx, "id = ?", id)
		if err != nil {
			return err
		}
		out = t
		if t.RevokedAt != nil {
			return nil
		}
		at = time.UnixMicro(at.UnixMicro()).UTC()
		if _, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = ? WHERE id = ?`, micros(at), id); err != nil {
			return translate(err, "sqlite: revoke token")
		}
		t.RevokedAt = &at
		return insertAudit(ctx, tx, audit)
	})
	return out, err
}
