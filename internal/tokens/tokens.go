package tokens

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/store"
)

// SecretPrefix starts every caller token's secret: "kpt_", then a body and
// a checksum in the key format (apikey), so a malformed or mistyped token
// is refused without a datastore read, and a scanner can recognise one.
const SecretPrefix = "kpt"

// DefaultCacheTTL is how long an instance trusts what it read about a
// token, revoked or not: the bound within which a revocation made on one
// instance reaches every other.
const DefaultCacheTTL = 10 * time.Second

// maxCached bounds the cache; when full it is emptied, so a flood of
// well-formed unknown tokens costs memory once and reads, not an outage.
const maxCached = 10000

// Audit actions.
const (
	ActionCreate = "token.create"
	ActionRevoke = "token.revoke"
)

// Caller is who is calling and what it may do.
type Caller struct {
	Actor       string // recorded in audit entries: a token's id, "admin", "gateway", "sa:…"
	Permissions Set
	Owner       string // "" for every owner; else only this owner's resources
}

// Can reports whether c holds p.
func (c Caller) Can(p Permission) bool { return c.Permissions.Has(p) }

// Sees reports whether c may see resources of owner.
func (c Caller) Sees(owner string) bool { return c.Owner == "" || c.Owner == owner }

// OwnerFilter is the owner a list c asks for is filtered to: requested
// for an unscoped caller; c's owner for a scoped one when requested is ""
// or that owner. A scoped caller naming another owner gets NotFound, as
// if that owner had nothing.
func (c Caller) OwnerFilter(requested string) (string, error) {
	if c.Owner == "" {
		return requested, nil
	}
	if requested != "" && requested != c.Owner {
		return "", errs.E(errs.NotFound, "owner %s has no keys", requested)
	}
	return c.Owner, nil
}

// Service mints, lists, revokes and authenticates caller tokens.
type Service struct {
	Store    store.Store
	Hasher   *apikey.Hasher
	Clock    clock.Clock   // default clock.Real
	CacheTTL time.Duration // default DefaultCacheTTL

	mu    sync.RWMutex
	cache map[apikey.Hash]cached
}

// cached is what Authenticate last read about a secret's hash.
type cached struct {
	read    time.Time
	found   bool
	caller  Caller
	expires *time.Time
	revoked bool
}

func (s *Service) now() time.Time {
	if s.Clock == nil {
		return time.Now().UTC()
	}
	return s.Clock.Now()
}

func (s *Service) ttl() time.Duration {
	if s.CacheTTL <= 0 {
		return DefaultCacheTTL
	}
	return s.CacheTTL
}

// LooksLike reports whether secret has a caller token's form (prefix and
// checksum); it does no I/O.
func LooksLike(secret string) bool {
	p, err := apikey.Parse(secret)
	return err == nil && p.Prefix == SecretPrefix
}

// Authenticate returns the caller secret belongs to. Unauthenticated for a
// malformed, unknown, expired or revoked token; Unavailable if the store
// cannot be read and nothing fresh is cached.
func (s *Service) Authenticate(ctx context.Context, secret string) (Caller, error) {
	if !LooksLike(secret) {
		return Caller{}, errs.E(errs.Unauthenticated, "invalid credentials")
	}
	h := s.Hasher.Sum(secret)
	now := s.now()
	s.mu.RLock()
	c, ok := s.cache[h]
	s.mu.RUnlock()
	if !ok || now.Sub(c.read) >= s.ttl() || now.Before(c.read) {
		var err error
		if c, err = s.read(ctx, h, now); err != nil {
			return Caller{}, err
		}
	}
	switch {
	case !c.found:
		return Caller{}, errs.E(errs.Unauthenticated, "invalid credentials")
	case c.revoked:
		return Caller{}, errs.E(errs.Unauthenticated, "token %s is revoked", c.caller.Actor)
	case c.expires != nil && !now.Before(*c.expires):
		return Caller{}, errs.E(errs.Unauthenticated, "token %s expired at %s", c.caller.Actor, c.expires.Format(time.RFC3339))
	}
	return c.caller, nil
}

func (s *Service) read(ctx context.Context, h apikey.Hash, now time.Time) (cached, error) {
	t, err := s.Store.LookupTokenHash(ctx, h)
	c := cached{read: now}
	switch {
	case errs.Is(err, errs.NotFound):
	case err != nil:
		return cached{}, err
	default:
		perms, _ := parseSet(t.Permissions) // names a newer version added grant nothing here
		c.found, c.expires, c.revoked = true, t.ExpiresAt, t.RevokedAt != nil
		c.caller = Caller{Actor: t.ID, Permissions: perms, Owner: t.Owner}
	}
	s.mu.Lock()
	if s.cache == nil || len(s.cache) >= maxCached {
		s.cache = make(map[apikey.Hash]cached)
	}
	s.cache[h] = c
	s.mu.Unlock()
	return c, nil
}

// forget drops what the cache holds about h, so that this instance sees a
// revocation at once.
func (s *Service) forget(h apikey.Hash) {
	s.mu.Lock()
	delete(s.cache, h)
	s.mu.Unlock()
}

// CreateRequest is the body of POST /v1/tokens.
type CreateRequest struct {
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions"`
	Owner       string     `json:"owner,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// Created is a minted token with its secret, shown once.
type Created struct {
	Token  *store.Token
	Secret string
}

const maxNameLen = 128

// Create mints a token for by. It grants no permission by does not hold,
// and a caller scoped to an owner mints only tokens scoped to that owner
// (req.Owner "" means by's owner then): PermissionDenied otherwise.
// Invalid for a bad request.
func (s *Service) Create(ctx context.Context, by Caller, req CreateRequest) (*Created, error) {
	now := s.now()
	if req.Name == "" || utf8.RuneCountInString(req.Name) > maxNameLen || !utf8.ValidString(req.Name) {
		return nil, errs.E(errs.Invalid, "name is required: 1-%d characters saying who holds the token", maxNameLen)
	}
	if len(req.Permissions) == 0 {
		return nil, errs.E(errs.Invalid, "permissions must name at least one of: %s", strings.Join(Names(), ", "))
	}
	perms, unknown := parseSet(req.Permissions)
	if len(unknown) > 0 {
		return nil, errs.E(errs.Invalid, "unknown permissions %q: each must be one of %s", unknown, strings.Join(Names(), ", "))
	}
	if req.Owner != "" && !ids.ValidOwner(req.Owner) {
		return nil, errs.E(errs.Invalid, "owner must be %s", ids.OwnerSyntax)
	}
	if req.ExpiresAt != nil && !req.ExpiresAt.After(now) {
		return nil, errs.E(errs.Invalid, "expires_at must be in the future")
	}
	if by.Owner != "" {
		if req.Owner == "" {
			req.Owner = by.Owner
		}
		if req.Owner != by.Owner {
			return nil, errs.E(errs.PermissionDenied, "this token is scoped to owner %s: it can mint tokens for that owner only", by.Owner)
		}
	}
	if extra := perms &^ by.Permissions; extra != 0 {
		return nil, errs.E(errs.PermissionDenied, "a token cannot grant permissions its minter lacks: %s", extra)
	}
	secret, err := apikey.Generate(SecretPrefix)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "generate token secret")
	}
	t := &store.Token{ID: "tok_" + apikey.RandomString(16), Name: req.Name, Permissions: perms.Names(), Owner: req.Owner,
		Hash: s.Hasher.Sum(secret), CreatedBy: by.Actor, CreatedAt: now.Truncate(time.Microsecond)}
	if req.ExpiresAt != nil {
		e := req.ExpiresAt.UTC().Truncate(time.Microsecond)
		t.ExpiresAt = &e
	}
	audit := store.AuditEntry{Time: now, Actor: by.Actor, Action: ActionCreate, Details: map[string]string{
		"token_id": t.ID, "name": t.Name, "permissions": perms.String(), "owner": t.Owner}}
	if err := s.Store.CreateToken(ctx, t, audit); err != nil {
		return nil, err
	}
	return &Created{Token: t, Secret: secret}, nil
}

// List returns a page of the tokens by may see, newest first: a scoped
// caller sees its owner's tokens only (NotFound naming another owner).
func (s *Service) List(ctx context.Context, by Caller, q store.ListTokensQuery) ([]*store.Token, string, error) {
	if q.Owner != "" && !ids.ValidOwner(q.Owner) {
		return nil, "", errs.E(errs.Invalid, "owner must be %s", ids.OwnerSyntax)
	}
	owner, err := by.OwnerFilter(q.Owner)
	if err != nil {
		return nil, "", err
	}
	q.Owner = owner
	return s.Store.ListTokens(ctx, q)
}

// Revoke revokes token id for by and returns it; revoking a revoked token
// changes nothing. This instance refuses the token at once, every other
// within CacheTTL. NotFound if there is no such token, or by is scoped to
// another owner than the token's.
func (s *Service) Revoke(ctx context.Context, by Caller, id string) (*store.Token, error) {
	t, err := s.Store.GetToken(ctx, id)
	if err == nil && !by.Sees(t.Owner) {
		err = errs.E(errs.NotFound, "token %q not found", id)
	}
	if errs.Is(err, errs.NotFound) {
		return nil, errs.E(errs.NotFound, "token %q not found", id)
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	t, err = s.Store.RevokeToken(ctx, id, now, store.AuditEntry{Time: now, Actor: by.Actor, Action: ActionRevoke,
		Details: map[string]string{"token_id": id}})
	if err != nil {
		return nil, err
	}
	s.forget(t.Hash)
	return t, nil
}
