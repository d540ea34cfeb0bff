package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
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
	actor   string
	digests [][sha256.Size]byte
}

// NewTokenAuth returns a TokenAuth accepting admin tokens (actor "admin").
// Empty tokens are ignored.
func NewTokenAuth(tokens ...string) *TokenAuth { return NewTokenAuthAs("admin", tokens...) }

// NewTokenAuthAs returns a TokenAuth whose callers are recorded as actor.
func NewTokenAuthAs(actor string, tokens ...string) *TokenAuth {
	a := &TokenAuth{actor: actor}
	for _, t := range tokens {
		if t != "" {
			a.digests = append(a.digests, sha256.Sum256([]byte(t)))
		}
	}
	return a
}

// Authenticate checks the bearer token. Comparing fixed-size digests in
// constant time reveals neither the token nor its length; every stored
// token is compared, whichever matches.
func (a *TokenAuth) Authenticate(r *http.Request) (string, error) {
	token, ok := bearer(r)
	if !ok {
		return "", errs.E(errs.Unauthenticated, "missing credentials: send Authorization: Bearer <admin token>")
	}
	d := sha256.Sum256([]byte(token))
	match := 0
	for i := range a.digests {
		match |= subtle.ConstantTimeCompare(d[:], a.digests[i][:])
	}
	if match != 1 {
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
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
