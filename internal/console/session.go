package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Cookie names. The session cookie holds only a random id: the
// credential stays on the server, in the session store.
const (
	sessionCookie = "keyplane_console"
	signinCookie  = "keyplane_console_signin" // the sign-in form's CSRF token, before there is a session
	cookiePath    = "/console"
)

// Session lifetimes and the store's bound.
const (
	DefaultIdle     = 30 * time.Minute // a session unused this long ends
	DefaultLifetime = 12 * time.Hour   // a session ends this long after sign-in, used or not
	maxSessions     = 10_000
)

// session is one signed-in operator. It keeps the credential, not what it
// allowed at sign-in: every request authenticates it again, so that a
// revoked caller token signs its sessions out at once.
type session struct {
	credential string
	csrf       string
	created    time.Time
	lastUsed   time.Time
	// once is a key's new secret, shown by the next view of that key's
	// page and then forgotten.
	once struct{ keyID, secret string }
}

// sessions is the in-memory session store. A restart forgets it, which
// signs every operator out; so does a second instance of the Keys
// function, whose store is its own (operators sign in again there).
type sessions struct {
	mu       sync.Mutex
	byID     map[string]*session
	idle     time.Duration
	lifetime time.Duration
}

func newSessions(idle, lifetime time.Duration) *sessions {
	if idle <= 0 {
		idle = DefaultIdle
	}
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	return &sessions{byID: map[string]*session{}, idle: idle, lifetime: lifetime}
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.lastUsed) >= s.idle || now.Sub(ss.created) >= s.lifetime
}

// create stores a session for credential and returns its id, or false
// when the store is full of live sessions.
func (s *sessions) create(credential string, now time.Time) (string, *session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= maxSessions {
		for id, ss := range s.byID {
			if s.expired(ss, now) {
				delete(s.byID, id)
			}
		}
		if len(s.byID) >= maxSessions {
			return "", nil, false
		}
	}
	id := randomToken()
	ss := &session{credential: credential, csrf: randomToken(), created: now, lastUsed: now}
	s.byID[id] = ss
	return id, ss, true
}

// get returns the live session id names, and marks it used.
func (s *sessions) get(id string, now time.Time) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	if s.expired(ss, now) {
		delete(s.byID, id)
		return nil, false
	}
	ss.lastUsed = now
	return ss, true
}

// putOnce keeps keyID's new secret for the next view of its page.
func (s *sessions) putOnce(ss *session, keyID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.once.keyID, ss.once.secret = keyID, secret
}

// takeOnce returns keyID's new secret, if it is kept, and forgets it.
func (s *sessions) takeOnce(ss *session, keyID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.once.keyID != keyID {
		return ""
	}
	secret := ss.once.secret
	ss.once.keyID, ss.once.secret = "", ""
	return secret
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// randomToken is 32 random bytes, base64url: session ids and CSRF tokens.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// equalToken compares tokens in constant time.
func equalToken(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// secureCookies says whether cookies set in answer to r are Secure: always
// but over plain HTTP to a loopback address (`keyplane serve` on
// 127.0.0.1), where a browser would not send them back.
func secureCookies(r *http.Request) bool {
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip == nil || !ip.IsLoopback()
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: secureCookies(r), SameSite: http.SameSiteStrictMode,
	})
}

func cookieValue(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// sameOrigin checks what the browser says of where a POST comes from:
// Sec-Fetch-Site, when sent, must be same-origin; Origin, when sent, must
// name this host. Browsers send at least one of them on a form POST; a
// request with neither (curl) is judged by its CSRF token alone.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // includes "null", an opaque origin
	}
	return strings.EqualFold(u.Host, r.Host)
}
