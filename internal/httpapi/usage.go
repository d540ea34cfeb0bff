package httpapi

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/webhook"
)

// UsageBodyLimit bounds the usage webhook's body.
const UsageBodyLimit = usage.MaxBody

// postUsage is the usage webhook: Standard Webhooks signature, whole-batch
// validation, and 202 only once the queue has acknowledged the events.
func (s *Server) postUsage(w http.ResponseWriter, r *http.Request, _ string) error {
	body, err := readBody(w, r, UsageBodyLimit)
	if err != nil {
		return err
	}
	now := s.now()
	if _, err := webhook.Verify(s.WebhookSecrets, r.Header, body, now, webhook.DefaultTolerance); err != nil {
		return errs.Wrap(errs.Unauthenticated, err, err.Error()+" (sign with the usage webhook secret, Standard Webhooks)")
	}
	n, err := meter.Publish(r.Context(), s.UsageTopic, body, now)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, acceptedResource{Accepted: n})
	return nil
}

// The range of at: the Unix epoch up to the last year whose windows still
// end in a four-digit year (RFC 3339 has no others).
var (
	minAt = time.Unix(0, 0).UTC()
	maxAt = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// windowQuery parses window (default day) and at (default now).
func (s *Server) windowQuery(r *http.Request, def plan.Window) (plan.Window, time.Time, time.Time, error) {
	q := r.URL.Query()
	w := def
	if v := q.Get("window"); v != "" {
		var err error
		if w, err = plan.ParseWindow(v); err != nil {
			return "", time.Time{}, time.Time{}, errs.E(errs.Invalid, "%v", err)
		}
	}
	at := s.now()
	if v := q.Get("at"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return "", time.Time{}, time.Time{}, errs.E(errs.Invalid, "at must be an RFC 3339 time, like 2030-01-02T15:04:05Z")
		}
		if t.Before(minAt) || !t.Before(maxAt) {
			return "", time.Time{}, time.Time{}, errs.E(errs.Invalid, "at must be from %s up to, not including, %s", minAt.Format(time.RFC3339), maxAt.Format(time.RFC3339))
		}
		at = t
	}
	start, end := w.Bounds(at)
	return w, start, end, nil
}

func (s *Server) keyUsage(w http.ResponseWriter, r *http.Request, _ string) error {
	k, err := s.Keys.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	win, start, end, err := s.windowQuery(r, plan.Day)
	if err != nil {
		return err
	}
	t, err := s.Ledger.Totals(r.Context(), k.ID, win, start)
	if err != nil {
		return err
	}
	limits := map[string]limitState{}
	eff := k.Limits
	if p, ok := s.Plans.Get(k.Plan); ok {
		eff = p.Limits.With(k.Limits)
	}
	for _, m := range plan.Metrics {
		name := plan.LimitName(m, win)
		if max, ok := eff[name]; ok {
			used := t.Get(m)
			limits[name] = limitState{Limit: max, Used: &used, Remaining: max - min(used, max), ResetAt: end}
		}
	}
	writeJSON(w, http.StatusOK, keyUsageResource{
		KeyID: k.ID, Window: win, Start: start, End: end,
		Requests: t.Requests, Units: t.Units, Bytes: t.Bytes, Limits: limits,
	})
	return nil
}

// listUsage is the billing export: per-key totals of one window, as a JSON
// page or, with format=csv, every page streamed as CSV.
func (s *Server) listUsage(w http.ResponseWriter, r *http.Request, _ string) error {
	q := r.URL.Query()
	owner := q.Get("owner")
	if owner != "" && !ids.ValidOwner(owner) {
		return errs.E(errs.Invalid, "owner must be "+ids.OwnerSyntax)
	}
	owner, err := callerOf(r).OwnerFilter(owner)
	if err != nil {
		return err
	}
	win, start, end, err := s.windowQuery(r, plan.Month)
	if err != nil {
		return err
	}
	size, token, err := page(r)
	if err != nil {
		return err
	}
	switch q.Get("format") {
	case "", "json":
		rows, next, err := s.Ledger.OwnerTotals(r.Context(), owner, win, start, size, token)
		if err != nil {
			return err
		}
		out := make([]usageRow, len(rows))
		for i, t := range rows {
			out[i] = usageRow{KeyID: t.KeyID, Owner: t.Owner, Requests: t.Requests, Units: t.Units, Bytes: t.Bytes}
		}
		writeJSON(w, http.StatusOK, usageList{Window: win, Start: start, End: end, Usage: out, NextPageToken: next})
		return nil
	case "csv":
		return s.usageCSV(w, r, owner, win, start, end)
	}
	return errs.E(errs.Invalid, "format must be json or csv")
}

func (s *Server) usageCSV(w http.ResponseWriter, r *http.Request, owner string, win plan.Window, start, end time.Time) error {
	// Read the first page before answering, so an error is still a clean
	// error response; later failures can only cut the stream short.
	rows, next, err := s.Ledger.OwnerTotals(r.Context(), owner, win, start, 1000, "")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="usage-`+string(win)+`-`+start.Format("2006-01-02")+`.csv"`)
	cw := csv.NewWriter(w)
	cw.Write([]string{"key_id", "owner", "window", "start", "end", "requests", "units", "bytes"})
	for {
		for _, t := range rows {
			cw.Write([]string{t.KeyID, t.Owner, string(win), start.Format(time.RFC3339), end.Format(time.RFC3339),
				strconv.FormatInt(t.Requests, 10), strconv.FormatInt(t.Units, 10), strconv.FormatInt(t.Bytes, 10)})
		}
		if next == "" {
			break
		}
		if rows, next, err = s.Ledger.OwnerTotals(r.Context(), owner, win, start, 1000, next); err != nil {
			s.logger().ErrorContext(r.Context(), "usage export cut short", "error", err)
			break
		}
	}
	cw.Flush()
	return nil
}

// listDeadLetters shows usage that will not be counted, and why, newest
// first.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request, _ string) error {
	size, token, err := page(r)
	if err != nil {
		return err
	}
	ds, next, err := s.Ledger.ListDeadLetters(r.Context(), size, token)
	if err != nil {
		return err
	}
	out := make([]deadLetterResource, len(ds))
	for i, d := range ds {
		out[i] = deadLetterResource{ID: d.ID, Time: d.Time, Reason: d.Reason, Detail: d.Detail, Payload: string(d.Payload)}
	}
	writeJSON(w, http.StatusOK, deadLetterList{DeadLetters: out, NextPageToken: next})
	return nil
}
