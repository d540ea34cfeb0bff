package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/tokens"
)

// scope is how a route keeps an owner-scoped caller to its owner.
type scope uint8

const (
	// scopeNone: the route acts across owners; a scoped caller gets 403.
	scopeNone scope = iota
	// scopeKey: {id} names a key; another owner's key is a 404.
	scopeKey
	// scopeOwner: {owner} names an owner; another owner is a 404.
	scopeOwner
	// scopeHandler: the handler filters by callerOf(r).
	scopeHandler
)

// ownerScoped says how the route "METHOD path" keeps an owner-scoped
// token to its owner. A route not named here refuses scoped tokens
// (scopeNone), so a new route is safe until someone decides how it is
// scoped. POST /v1/owners/{owner}/credits is scopeNone on purpose: an
// owner does not top up its own credits.
func ownerScoped(route string) scope {
	switch route {
	case "GET /v1/keys/{id}",
		"PATCH /v1/keys/{id}",
		"POST /v1/keys/{id}/disable",
		"POST /v1/keys/{id}/enable",
		"POST /v1/keys/{id}/revoke",
		"POST /v1/keys/{id}/rotate",
		"GET /v1/keys/{id}/secret",
		"GET /v1/keys/{id}/usage":
		return scopeKey
	case "GET /v1/owners/{owner}",
		"PATCH /v1/owners/{owner}",
		"PUT /v1/owners/{owner}/webhook",
		"GET /v1/owners/{owner}/webhook",
		"GET /v1/owners/{owner}/spend",
		"GET /v1/owners/{owner}/credits":
		return scopeOwner
	case "POST /v1/keys",
		"GET /v1/keys",
		"GET /v1/audit",
		"GET /v1/usage",
		"GET /v1/owners",
		"POST /v1/verify",
		"POST /v1/tokens",
		"GET /v1/tokens",
		"POST /v1/tokens/{id}/revoke",
		"POST /v1/portal/sessions":
		return scopeHandler
	}
	return scopeNone
}

type callerKey struct{}

// callerOf returns the caller wrap authorized. On the verify route only
// owner-scoped callers are recorded (an unscoped one costs no context
// allocation there): the zero Caller, unscoped, stands for the others.
func callerOf(r *http.Request) tokens.Caller {
	c, _ := r.Context().Value(callerKey{}).(tokens.Caller)
	return c
}

// authorize authenticates the caller, checks it holds rt.Perm and, for an
// owner-scoped caller, that the route and what it names are its owner's.
// It writes the error response itself when it returns ok = false.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, rt Route) (_ *http.Request, actor string, ok bool) {
	c, err := s.caller(r, rt)
	if err != nil {
		if errs.Is(err, errs.Unauthenticated) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyplane"`)
		}
		writeError(w, r, s.logger(), err)
		return r, "", false
	}
	if !c.Can(rt.Perm) {
		writeError(w, r, s.logger(), errs.E(errs.PermissionDenied,
			"this token lacks the %s permission, which %s %s needs", rt.Perm, rt.Method, rt.Path))
		return r, "", false
	}
	if c.Owner != "" {
		if err := s.checkScope(r, rt, c); err != nil {
			writeError(w, r, s.logger(), err)
			return r, "", false
		}
	}
	if c.Owner != "" || rt.Function != FuncVerify {
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
	}
	return r, c.Actor, true
}

// caller authenticates r: a bearer with a caller token's form (prefix and
// checksum, checked without I/O) as a caller token first, so that its
// cached path builds no error from the static checks; then the gateways'
// verify tokens (verify only), the admin tokens and allow-listed ID tokens
// (every permission). A static token that happens to have a caller
// token's form still authenticates as itself.
func (s *Server) caller(r *http.Request, rt Route) (tokens.Caller, error) {
	var tokenErr error
	if secret, ok := bearer(r); ok && s.Tokens != nil && tokens.LooksLike(secret) {
		c, err := s.Tokens.Authenticate(r.Context(), secret)
		if err == nil || !errs.Is(err, errs.Unauthenticated) {
			return c, err
		}
		tokenErr = err
	}
	if rt.Function == FuncVerify && s.VerifyAuth != nil {
		if actor, err := s.VerifyAuth.Authenticate(r); err == nil {
			return tokens.Caller{Actor: actor, Permissions: tokens.Verify.Set()}, nil
		}
	}
	actor, err := s.Auth.Authenticate(r)
	if err == nil {
		return tokens.Caller{Actor: actor, Permissions: tokens.All}, nil
	}
	if rt.Function != FuncVerify && s.VerifyAuth != nil {
		if actor, verr := s.VerifyAuth.Authenticate(r); verr == nil {
			return tokens.Caller{Actor: actor, Permissions: tokens.Verify.Set()}, nil
		}
	}
	if tokenErr != nil {
		return tokens.Caller{}, tokenErr // says revoked or expired, where it is
	}
	return tokens.Caller{}, err
}

// AuthenticateCredential says who holds credential (a bearer token's
// value) as the Keys function's routes would: a caller token, an admin
// token or an allow-listed ID token. The console signs operators in with
// it.
func (s *Server) AuthenticateCredential(ctx context.Context, credential string) (tokens.Caller, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return tokens.Caller{}, err
	}
	r.Header.Set("Authorization", "Bearer "+credential)
	return s.caller(r, Route{Function: FuncKeys})
}

// checkScope keeps an owner-scoped caller c to its owner on route rt.
func (s *Server) checkScope(r *http.Request, rt Route, c tokens.Caller) error {
	switch ownerScoped(rt.Method + " " + rt.Path) {
	case scopeKey:
		id := r.PathValue("id")
		k, err := s.Keys.Get(r.Context(), id)
		if err != nil {
			return err
		}
		if k.Owner != c.Owner {
			return errs.E(errs.NotFound, "key %q not found", id) // as for a key that does not exist
		}
	case scopeOwner:
		if owner := r.PathValue("owner"); owner != c.Owner {
			return errs.E(errs.NotFound, "owner %s has no keys", owner)
		}
	case scopeHandler:
	default:
		return errs.E(errs.PermissionDenied, "%s %s acts across owners: it needs a token not scoped to an owner", rt.Method, rt.Path)
	}
	return nil
}

// tokenResource is a caller token as the API shows it: never its secret
// but once, at creation.
type tokenResource struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions"`
	Owner       string     `json:"owner,omitempty"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	Token       string     `json:"token,omitempty"`
}

type tokenList struct {
	Tokens        []tokenResource `json:"tokens"`
	NextPageToken string          `json:"next_page_token,omitempty"`
}

func tokenResourceOf(t *store.Token) tokenResource {
	perms := t.Permissions
	if perms == nil {
		perms = []string{}
	}
	return tokenResource{ID: t.ID, Name: t.Name, Permissions: perms, Owner: t.Owner, CreatedBy: t.CreatedBy,
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt}
}

func (s *Server) tokenService() (*tokens.Service, error) {
	if s.Tokens == nil {
		return nil, errs.E(errs.Unavailable, "caller tokens are not configured on this server")
	}
	return s.Tokens, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, _ string) error {
	ts, err := s.tokenService()
	if err != nil {
		return err
	}
	var req tokens.CreateRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	c, err := ts.Create(r.Context(), callerOf(r), req)
	if err != nil {
		return err
	}
	res := tokenResourceOf(c.Token)
	res.Token = c.Secret
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, res)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ string) error {
	ts, err := s.tokenService()
	if err != nil {
		return err
	}
	size, token, err := page(r)
	if err != nil {
		return err
	}
	toks, next, err := ts.List(r.Context(), callerOf(r), store.ListTokensQuery{Owner: r.URL.Query().Get("owner"), PageSize: size, PageToken: token})
	if err != nil {
		return err
	}
	out := make([]tokenResource, len(toks))
	for i, t := range toks {
		out[i] = tokenResourceOf(t)
	}
	writeJSON(w, http.StatusOK, tokenList{Tokens: out, NextPageToken: next})
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, _ string) error {
	ts, err := s.tokenService()
	if err != nil {
		return err
	}
	var req struct{}
	if err := decode(w, r, ManagementBodyLimit, &req, true); err != nil {
		return err
	}
	t, err := ts.Revoke(r.Context(), callerOf(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tokenResourceOf(t))
	return nil
}
