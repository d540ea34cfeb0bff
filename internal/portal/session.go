package portal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"
)

// CookieName is the session cookie's name. (A __Host- prefix would need
// Path=/; the cookie is kept to /portal.)
const CookieName = "kp_portal"

// session is what the signed cookie holds.
type session struct {
	ID     string  `json:"sid"`
	Owner  string  `json:"own"`
	Perms  permSet `json:"prm"`
	Return string  `json:"ret"`
	Exp    int64   `json:"exp"` // unix seconds
}

func (s *session) expires() time.Time { return time.Unix(s.Exp, 0).UTC() }

// Domain separators of the MACs made with the pepper, so that no MAC of
// one kind is valid as another, nor equal to a key's lookup hash.
const (
	sessionMAC = "keyplane portal session v1\x00"
	csrfMAC    = "keyplane portal csrf v1\x00"
)

func newSessionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// encode returns the cookie value: payload "." MAC, both base64url.
func (p *Portal) encode(s *session) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	mac := p.Hasher.Sum(sessionMAC + payload)
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac[:]), nil
}

// decode checks a cookie value's MAC and expiry; ok is false for a
// forged, malformed or expired one.
func (p *Portal) decode(v string, now time.Time) (*session, bool) {
	payload, sig, found := strings.Cut(v, ".")
	if !found || len(v) > 4096 {
		return nil, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return nil, false
	}
	want := p.Hasher.Sum(sessionMAC + payload)
	if !hmac.Equal(got, want[:]) {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, false
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil || s.ID == "" || s.Owner == "" {
		return nil, false
	}
	if !now.Before(s.expires()) {
		return nil, false
	}
	return &s, true
}

// csrfToken is the session's CSRF token.
func (p *Portal) csrfToken(s *session) string {
	mac := p.Hasher.Sum(csrfMAC + s.ID)
	return base64.RawURLEncoding.EncodeToString(mac[:])
}

// checkCSRF reports whether r, a state-changing request, comes from a
// portal page of this session: its form's csrf field is the session's
// token (constant-time compare), and the browser's Sec-Fetch-Site and
// Origin, when it sends them, name this site.
func (p *Portal) checkCSRF(r *http.Request, s *session) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != scheme(r)+"://"+r.Host {
		return false
	}
	got := r.PostFormValue("csrf")
	want := p.csrfToken(s)
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// scheme is the scheme the browser used to reach r: https behind a TLS
// terminator that says so (Cloud Run, Cloud Functions), or on TLS.
func scheme(r *http.Request) string {
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		return "https"
	}
	return "http"
}

// loopbackHTTP reports whether r came over plain HTTP to a loopback host:
// the one case a cookie may go without Secure (a browser would not send a
// Secure cookie back over http://localhost in every engine).
func loopbackHTTP(r *http.Request) bool {
	if scheme(r) != "http" {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (p *Portal) setCookie(w http.ResponseWriter, r *http.Request, value string, expires time.Time) {
	c := &http.Cookie{Name: CookieName, Value: value, Path: "/portal", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: !loopbackHTTP(r)}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires
	}
	http.SetCookie(w, c)
}
