package httpapi

import (
	"net/http"
	"time"

	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/sweep"
)

// sweepRequest is the body of POST /v1/sweep; an empty body is a real
// run.
type sweepRequest struct {
	DryRun bool `json:"dry_run"`
}

// sweepReport is the answer to POST /v1/sweep: what the run did (or, in a
// dry run, would do). It is the API's copy of sweep.Report, so that a
// change to what the sweep records internally is not a change to the API.
type sweepReport struct {
	DryRun     bool             `json:"dry_run"`
	Scanned    int              `json:"scanned"`
	Complete   bool             `json:"complete"` // false when the run stopped at its budget
	Disabled   []sweepDisable   `json:"disabled"`
	Reenabled  []sweepReenable  `json:"reenabled"`
	Thresholds []sweepThreshold `json:"thresholds"`
	Unchanged  int              `json:"unchanged"`
	// Quarantined are leak quarantines whose grace ended: each key
	// disabled with reason leaked.
	Quarantined []sweepReenable `json:"quarantined"`
	// Owners judged against their own and per-feature quotas.
	OwnersScanned   int                  `json:"owners_scanned"`
	OwnersSuspended []sweep.OwnerSuspend `json:"owners_suspended"`
	OwnersLifted    []sweep.OwnerLift    `json:"owners_lifted"`
	SpendAlerts     []owners.SpendAlert  `json:"spend_alerts"`
	Recovered       int                  `json:"recovered"`
	Reaped          int                  `json:"reaped"`
	StartedAt       time.Time            `json:"started_at"`
	FinishedAt      time.Time            `json:"finished_at"`
}

// sweepDisable is a key the sweep disabled, with the evidence.
type sweepDisable struct {
	KeyID           string     `json:"key_id"`
	Reason          string     `json:"reason"`
	Limit           string     `json:"limit"`
	Window          string     `json:"window"`
	Used            int64      `json:"used"`
	Max             int64      `json:"max"`
	Until           *time.Time `json:"until,omitempty"`             // quota suspensions only
	BaselinePerHour *float64   `json:"baseline_per_hour,omitempty"` // abuse_spike only
	IPs             []string   `json:"ips,omitempty"`               // abuse_distinct_ips only
}

// sweepReenable is a quota suspension the sweep lifted (reason
// window_reset), or a leak quarantine it ended (reason leaked), and when
// the window or the grace ended.
type sweepReenable struct {
	KeyID  string    `json:"key_id"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
}

// sweepThreshold is a quota threshold a key reached.
type sweepThreshold struct {
	KeyID       string    `json:"key_id"`
	Limit       string    `json:"limit"`
	Threshold   int       `json:"threshold"` // percent
	Used        int64     `json:"used"`
	Max         int64     `json:"max"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
}

func reportResource(r *sweep.Report) sweepReport {
	out := sweepReport{
		DryRun: r.DryRun, Scanned: r.Scanned, Complete: r.Complete,
		Disabled:   make([]sweepDisable, len(r.Disabled)),
		Reenabled:  make([]sweepReenable, len(r.Reenabled)),
		Thresholds: make([]sweepThreshold, len(r.Thresholds)),
		Unchanged:  r.Unchanged, Recovered: r.Recovered, Reaped: r.Reaped,
		OwnersScanned: r.OwnersScanned, OwnersSuspended: r.OwnersSuspended, OwnersLifted: r.OwnersLifted, SpendAlerts: r.SpendAlerts,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		Quarantined: make([]sweepReenable, len(r.Quarantined)),
	}
	for i, d := range r.Disabled {
		out.Disabled[i] = sweepDisable{KeyID: d.KeyID, Reason: d.Reason, Limit: d.Limit, Window: d.Window,
			Used: d.Used, Max: d.Max, Until: d.Until, BaselinePerHour: d.BaselinePerHour, IPs: d.IPs}
	}
	for i, e := range r.Reenabled {
		out.Reenabled[i] = sweepReenable{KeyID: e.KeyID, Reason: e.Reason, Until: e.Until}
	}
	for i, q := range r.Quarantined {
		out.Quarantined[i] = sweepReenable{KeyID: q.KeyID, Reason: q.Reason, Until: q.Until}
	}
	for i, t := range r.Thresholds {
		out.Thresholds[i] = sweepThreshold{KeyID: t.KeyID, Limit: t.Limit, Threshold: t.Threshold,
			Used: t.Used, Max: t.Max, WindowStart: t.WindowStart, WindowEnd: t.WindowEnd}
	}
	return out
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
	writeJSON(w, http.StatusOK, reportResource(&rep))
	return nil
}
