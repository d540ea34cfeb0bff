package httpapi

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/sweep"
)

// sweepRequest is the body of POST /v1/sweep; an empty body is a real
// run.
type sweepRequest struct {
	DryRun bool `json:"dry_run"`
}

// runSweep runs the sweep now and answers its report. A run that stops at
// its budget answers 200 with complete false; the next run continues it.
func (s *Server) runSweep(w http.ResponseWriter, r *http.Request, actor string) error {
	var req sweepRequest
	if err := decode(w, r, ManagementBodyLimit, &req, true); err != nil {
		return err
	}
	s.logger().InfoContext(r.Context(), "sweep requested", "actor", actor, "dry_run", req.DryRun)
	rep, err := s.Sweeper.Run(r.Context(), sweep.Options{DryRun: req.DryRun})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
