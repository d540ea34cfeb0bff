package httpapi

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"

	"github.com/keyplane/keyplane/internal/errs"
)

// certFetchTimeout bounds the one network call of IDTokenAuth: fetching
// Google's signing certificates when its cache is cold or stale.
const certFetchTimeout = 10 * time.Second

// IDTokenAuth accepts Google-signed ID tokens of allow-listed service
// accounts, e.g. the OIDC token Cloud Scheduler sends with each call. The
// actor it returns is "sa:" + the token's email.
//
// It rejects with errs.Unauthenticated a missing bearer token, one that is
// not a JWT, one not signed by Google (alg other than RS256, bad signature,
// unknown key, issuer other than accounts.google.com), an expired one, one
// whose audience is not accepted, and one whose email is not allow-listed
// or not verified. It returns errs.Unavailable when Google's certificates
// cannot be fetched, so that the caller retries.
//
// All claims are checked before the signature, so a token that would be
// rejected anyway costs no certificate fetch; a bearer token that is not a
// JWT (an admin token) costs no I/O at all. Error messages say what is
// wrong without any of the token's content.
type IDTokenAuth struct {
	validator *idtoken.Validator
	accounts  map[string]bool // lower-case emails
	audiences map[string]bool // nil: the URL the request was addressed to
}

// NewIDTokenAuth returns an IDTokenAuth accepting ID tokens whose email is
// one of serviceAccounts (compared case-insensitively; an empty list
// accepts nobody) and whose audience is one of audiences. With no
// audiences, the accepted audience is the URL the request was addressed to,
// https://<Host>, with or without the request path: a Cloud Function cannot
// be told its own URL at deploy time. opts configure the HTTP client that
// fetches Google's certificates (tests pass option.WithHTTPClient); the
// default needs no credentials.
func NewIDTokenAuth(ctx context.Context, serviceAccounts, audiences []string, opts ...option.ClientOption) (*IDTokenAuth, error) {
	a := &IDTokenAuth{accounts: make(map[string]bool, len(serviceAccounts))}
	for _, sa := range serviceAccounts {
		sa = strings.ToLower(strings.TrimSpace(sa))
		if local, domain, ok := strings.Cut(sa, "@"); !ok || local == "" || domain == "" {
			return nil, fmt.Errorf("httpapi: ID token service account %q is not an email address", sa)
		}
		a.accounts[sa] = true
	}
	for _, aud := range audiences {
		if aud == "" {
			return nil, errors.New("httpapi: empty ID token audience")
		}
		if a.audiences == nil {
			a.audiences = make(map[string]bool, len(audiences))
		}
		a.audiences[aud] = true
	}
	v, err := idtoken.NewValidator(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("httpapi: ID token validator: %w", err)
	}
	a.validator = v
	return a, nil
}

// Authenticate checks the bearer token as a Google-signed ID token.
func (a *IDTokenAuth) Authenticate(r *http.Request) (string, error) {
	token, ok := bearer(r)
	if !ok {
		return "", errs.E(errs.Unauthenticated, "missing credentials: send Authorization: Bearer <admin token or Google ID token>")
	}
	if !isRS256JWT(token) {
		return "", errs.E(errs.Unauthenticated, "invalid credentials")
	}
	// Decoding without verifying is safe here: these claims only decide
	// whether the signature is worth checking, and are checked again below
	// on the verified payload.
	p, err := idtoken.ParsePayload(token)
	if err != nil {
		return "", errs.E(errs.Unauthenticated, "invalid credentials")
	}
	if _, err := a.checkClaims(p, r); err != nil {
		return "", err
	}

	ctx, cancel := context.WithTimeout(r.Context(), certFetchTimeout)
	defer cancel()
	// The audience passed is the token's own, already accepted above; it
	// must not be empty, which would make Validate skip the check.
	verified, err := a.validator.Validate(ctx, token, p.Audience)
	if err != nil {
		return "", classifyValidateError(err)
	}
	email, err := a.checkClaims(verified, r)
	if err != nil {
		return "", err
	}
	return "sa:" + email, nil
}

// checkClaims checks issuer, expiry, audience and email, in that order, and
// returns the lower-cased email.
func (a *IDTokenAuth) checkClaims(p *idtoken.Payload, r *http.Request) (string, error) {
	if p.Issuer != "https://accounts.google.com" && p.Issuer != "accounts.google.com" {
		return "", errs.E(errs.Unauthenticated, "invalid credentials: the ID token is not issued by Google")
	}
	if time.Now().Unix() > p.Expires {
		return "", errs.E(errs.Unauthenticated, "invalid credentials: the ID token has expired")
	}
	if p.Audience == "" || !a.audienceAccepted(p.Audience, r) {
		return "", errs.E(errs.Unauthenticated, "invalid credentials: the ID token's audience is not this service")
	}
	email, _ := p.Claims["email"].(string)
	email = strings.ToLower(email)
	if email == "" || !a.accounts[email] {
		return "", errs.E(errs.Unauthenticated, "invalid credentials: the ID token's service account is not allow-listed")
	}
	if verified, _ := p.Claims["email_verified"].(bool); !verified {
		return "", errs.E(errs.Unauthenticated, "invalid credentials: the ID token's email is not verified")
	}
	return email, nil
}

func (a *IDTokenAuth) audienceAccepted(aud string, r *http.Request) bool {
	if a.audiences != nil {
		return a.audiences[aud]
	}
	if r.Host == "" {
		return false
	}
	base := "https://" + r.Host
	return aud == base || r.URL != nil && r.URL.Path != "" && aud == base+r.URL.Path
}

// isRS256JWT reports whether token is three dot-separated segments whose
// header announces RS256, the algorithm of Google's service account ID
// tokens. It does no I/O.
func isRS256JWT(token string) bool {
	header, rest, ok := strings.Cut(token, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	return json.Unmarshal(raw, &h) == nil && h.Alg == "RS256"
}

// classifyValidateError tells a token that fails verification (401) from
// a failure to fetch Google's certificates (503). The validator's errors
// are mostly unexported strings; anything not recognisably the token's
// fault is treated as unavailability, which still rejects the request.
func classifyValidateError(err error) error {
	switch {
	case errors.Is(err, rsa.ErrVerification):
		return errs.Wrap(errs.Unauthenticated, err, "invalid credentials: the ID token's signature is not valid")
	case strings.Contains(err.Error(), "could not find matching cert"):
		return errs.Wrap(errs.Unauthenticated, err, "invalid credentials: the ID token is signed by an unknown key")
	default:
		return errs.Wrap(errs.Unavailable, err, "cannot fetch Google's ID token certificates")
	}
}

// WithIDTokens returns an Authenticator accepting what admin accepts or,
// failing that, a Google ID token that id accepts; with a nil id it is
// admin. The admin check comes first, so an admin token never causes a
// certificate fetch; a rejected caller gets id's more specific error.
func WithIDTokens(admin Authenticator, id *IDTokenAuth) Authenticator {
	if id == nil {
		return admin
	}
	return anyOf{admin, id}
}
