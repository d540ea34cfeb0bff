package httpapi

import (
	"net/http"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/portal"
)

// portalSessionResource is the answer to POST /v1/portal/sessions.
type portalSessionResource struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// createPortalSession answers POST /v1/portal/sessions: a single-use link
// into the owner portal for one owner (portal.Portal.Open). A token
// scoped to an owner opens sessions for that owner only.
func (s *Server) createPortalSession(w http.ResponseWriter, r *http.Request, actor string) error {
	if s.Portal == nil {
		return errs.E(errs.Unavailable, "the owner portal is not configured on this server")
	}
	var req portal.SessionRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	if _, err := callerOf(r).OwnerFilter(req.Owner); err != nil {
		return err
	}
	scheme := "https"
	if r.TLS == nil && r.Header.Get("X-Forwarded-Proto") != "https" && isLoopback(r.Host) {
		scheme = "http"
	}
	l, err := s.Portal.Open(r.Context(), actor, scheme+"://"+r.Host, req)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, portalSessionResource{URL: l.URL, ExpiresAt: l.ExpiresAt})
	return nil
}

// isLoopback reports whether host (with or without a port) is a loopback
// name or address: the only hosts a portal link names over plain http.
func isLoopback(host string) bool {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	host = strings.Trim(host, "[]")
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

// isPortalPath reports whether path is the owner portal's, which the
// portal's own handler serves (its pages end in "/", which cleanPath
// refuses for the API).
func isPortalPath(path string) bool { return path == "/portal" || strings.HasPrefix(path, "/portal/") }
