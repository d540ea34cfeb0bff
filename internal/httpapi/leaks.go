package httpapi

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/leaks"
)

// LeaksBodyLimit bounds the body of the leak report routes.
const LeaksBodyLimit = leaks.MaxBodyBytes

// postGitHubLeaks takes a report from GitHub's secret scanning partner
// program. It is authenticated by GitHub's signature over the raw body,
// not by a bearer token, and checked before the body is decoded. Fields
// GitHub may add are ignored.
func (s *Server) postGitHubLeaks(w http.ResponseWriter, r *http.Request, _ string) error {
	body, err := readBody(w, r, LeaksBodyLimit)
	if err != nil {
		return err
	}
	if err := s.GitHubKeys.Verify(r.Context(), r.Header.Get(leaks.HeaderKeyID), r.Header.Get(leaks.HeaderSignature), body); err != nil {
		return err
	}
	entries, err := leaks.Parse(body, leaks.Lenient)
	if err != nil {
		return err
	}
	return s.handleLeaks(w, r, "github", entries)
}

// postLeaks takes a report in the same format from another scanner or a
// person, authenticated as every management route is; unknown fields are
// rejected.
func (s *Server) postLeaks(w http.ResponseWriter, r *http.Request, actor string) error {
	body, err := readBody(w, r, LeaksBodyLimit)
	if err != nil {
		return err
	}
	entries, err := leaks.Parse(body, leaks.Strict)
	if err != nil {
		return err
	}
	return s.handleLeaks(w, r, actor, entries)
}

func (s *Server) handleLeaks(w http.ResponseWriter, r *http.Request, reporter string, entries []leaks.Entry) error {
	results, err := s.Leaks.Handle(r.Context(), reporter, entries)
	if err != nil {
		return err
	}
	// The answer echoes the reported tokens: nothing may keep it.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, results)
	return nil
}
