package httpapi

import (
	"net/http"
	"strings"

	"github.com/keyplane/keyplane/internal/errs"
)

// Authenticator decides who is calling. It returns the actor recorded in
// audit entries, or an errs.Unauthenticated error.
type Authenticator interface {
	Authenticate(r *http.Request) (actor string, err error)
}

// TokenAuth accepts any of a set of static bearer tokens. Several tokens
// are accepted so that the admin token can be rotated without downtime:
// add the new one, move clients, remove the old one.
type TokenAuth struct {
	actor  string
	tokens tokenSet
}

// NewTokenAuth returns a TokenAuth accepting admin tokens (actor "admin").
// Empty tokens are ignored.
func NewTokenAuth(tokens ...string) *TokenAuth { return NewTokenAuthAs("admin", tokens...) }

// NewTokenAuthAs returns a TokenAuth whose callers are recorded as actor.
func NewTokenAuthAs(actor string, tokens ...string) *TokenAuth {
	return &TokenAuth{actor: actor, tokens: newTokenSet(tokens)}
}

// Authenticate checks the bearer token. The comparison (tokenSet) takes
// the same time whatever the token sent, revealing neither the stored
// tokens nor their lengths; every stored token is compared, whichever
// matches.
func (a *TokenAuth) Authenticate(r *http.Request) (string, error) {
	token, ok := bearer(r)
	if !ok {
		return "", errs.E(errs.Unauthenticated, "missing credentials: send Authorization: Bearer <admin token>")
	}
	if !a.tokens.match(token) {
		return "", errs.E(errs.Unauthenticated, "invalid credentials")
	}
	return a.actor, nil
}

// anyOf accepts a caller that any of its authenticators accepts.
type anyOf []Authenticator

func (as anyOf) Authenticate(r *http.Request) (string, error) {
	var err error
	for _, a := range as {
		var actor string
		if actor, err = a.Authenticate(r); err == nil {
			return actor, nil
		}
	}
	return "", err
}

func bearer(r *http.Request) (string, bool) {
	h := headerValue(r.Header, "Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
