package httpapi

import (
	"net/http"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store"
)

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, actor string) error {
	var req keys.CreateRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	if caller := callerOf(r); caller.Owner != "" {
		if req.Owner == "" {
			req.Owner = caller.Owner
		}
		if req.Owner != caller.Owner {
			return errs.E(errs.PermissionDenied, "this token is scoped to owner %s: it can create keys for that owner only", caller.Owner)
		}
	}
	c, err := s.Keys.Create(r.Context(), actor, req, r.Header.Get("Idempotency-Key"))
	if err != nil {
		return err
	}
	s.writeCreated(w, c)
	return nil
}

func (s *Server) writeCreated(w http.ResponseWriter, c *keys.Created) {
	res := resource(c.Key, s.Plans)
	res.Secret = c.Secret
	if c.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, res)
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, _ string) error {
	k, err := s.Keys.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resource(k, s.Plans))
	return nil
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ string) error {
	size, token, err := page(r)
	if err != nil {
		return err
	}
	owner, err := callerOf(r).OwnerFilter(r.URL.Query().Get("owner"))
	if err != nil {
		return err
	}
	q := store.ListKeysQuery{Owner: owner, PageSize: size, PageToken: token}
	if v := r.URL.Query().Get("unused_since"); v != "" {
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return errs.E(errs.Invalid, "unused_since must be an RFC 3339 time, like 2030-01-15T00:00:00Z")
		}
		q.UnusedSince = t
	}
	ks, next, err := s.Keys.List(r.Context(), q)
	if err != nil {
		return err
	}
	out := make([]keyResource, len(ks))
	for i, k := range ks {
		out[i] = resource(k, s.Plans)
	}
	writeJSON(w, http.StatusOK, keyList{Keys: out, NextPageToken: next})
	return nil
}

func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, actor string) error {
	var req keys.UpdateRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	k, err := s.Keys.Update(r.Context(), actor, r.PathValue("id"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resource(k, s.Plans))
	return nil
}

type reasonRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) disableKey(w http.ResponseWriter, r *http.Request, actor string) error {
	var req reasonRequest
	if err := decode(w, r, ManagementBodyLimit, &req, true); err != nil {
		return err
	}
	k, err := s.Keys.Disable(r.Context(), actor, r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resource(k, s.Plans))
	return nil
}

func (s *Server) enableKey(w http.ResponseWriter, r *http.Request, actor string) error {
	var req struct{}
	if err := decode(w, r, ManagementBodyLimit, &req, true); err != nil {
		return err
	}
	k, err := s.Keys.Enable(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resource(k, s.Plans))
	return nil
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, actor string) error {
	var req reasonRequest
	if err := decode(w, r, ManagementBodyLimit, &req, true); err != nil {
		return err
	}
	k, err := s.Keys.Revoke(r.Context(), actor, r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resource(k, s.Plans))
	return nil
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request, actor string) error {
	var req keys.RotateRequest
	if err := decode(w, r, ManagementBodyLimit, &req, true); err != nil {
		return err
	}
	c, err := s.Keys.Rotate(r.Context(), actor, r.PathValue("id"), req, r.Header.Get("Idempotency-Key"))
	if err != nil {
		return err
	}
	s.writeCreated(w, c)
	return nil
}

func (s *Server) revealKey(w http.ResponseWriter, r *http.Request, actor string) error {
	secret, err := s.Keys.Reveal(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, secretResource{Secret: secret})
	return nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, _ string) error {
	size, token, err := page(r)
	if err != nil {
		return err
	}
	keyID := r.URL.Query().Get("key_id")
	if caller := callerOf(r); caller.Owner != "" {
		// Audit entries name keys, not owners: a scoped token reads one
		// key's entries at a time.
		if keyID == "" {
			return errs.E(errs.Invalid, "a token scoped to owner %s must name key_id, one of that owner's keys", caller.Owner)
		}
		k, err := s.Keys.Get(r.Context(), keyID)
		if err != nil {
			return err
		}
		if k.Owner != caller.Owner {
			return errs.E(errs.NotFound, "key %q not found", keyID)
		}
	}
	es, next, err := s.Keys.Audit(r.Context(), store.AuditQuery{KeyID: keyID, PageSize: size, PageToken: token})
	if err != nil {
		return err
	}
	out := make([]auditResource, len(es))
	for i, e := range es {
		d := e.Details
		if d == nil {
			d = map[string]string{}
		}
		out[i] = auditResource{ID: e.ID, Time: e.Time, Actor: e.Actor, Action: e.Action, KeyID: e.KeyID, Details: d}
	}
	writeJSON(w, http.StatusOK, auditList{Entries: out, NextPageToken: next})
	return nil
}
