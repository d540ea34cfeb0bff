package httpapi

import (
	"context"
	"encoding/csv"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/ledger"
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
// page or, with format=csv, every page streamed as CSV, followed there by
// each owner's totals and their split by feature. With any of bucket,
// group_by, start or end it answers with usage series (usageSeries).
func (s *Server) listUsage(w http.ResponseWriter, r *http.Request, _ string) error {
	if isSeries(r) {
		return s.usageSeries(w, r)
	}
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
		adj := s.adjustments(r.Context(), owner, win, start, token)
		out := make([]usageRow, len(rows))
		for i, t := range rows {
			as, err := adj.take(t.KeyID)
			if err != nil {
				return err
			}
			row := usageRow{KeyID: t.KeyID, Owner: t.Owner}
			for _, a := range as {
				t.Sub(a.Totals)
				row.Adjustments = append(row.Adjustments, usageAdjustment{CountedIn: a.CountedIn,
					Requests: a.Requests, Units: a.Units, Bytes: a.Bytes, Amount: plan.FormatMicros(a.Cost)})
			}
			row.Requests, row.Units, row.Bytes, row.Amount = t.Requests, t.Units, t.Bytes, plan.FormatMicros(t.Cost)
			out[i] = row
		}
		writeJSON(w, http.StatusOK, usageList{Window: win, Start: start, End: end, Usage: out, NextPageToken: next})
		return nil
	case "csv":
		return s.usageCSV(w, r, owner, win, start, end)
	}
	return errs.E(errs.Invalid, "format must be json or csv")
}

// usageCSV streams the billing export as CSV: a row per key (level key),
// then per owner a row of its totals (level owner) and one per feature it
// reported (level feature; usage without a feature is the owner row minus
// them). The level, feature and amount columns come last, so readers of
// the per-key columns are unaffected; amount is the usage's cost in the
// plan's currency, 6 decimals.
//
// Of a closed month these rows are what had been counted when it closed,
// so an export of it reads the same however often it is made; what late
// events (up to usage.MaxAge old) added since follows each key's row as a
// row per month counted in (level adjustment, counted_in set to that
// month's start) and a row per feature of it (level feature_adjustment).
// A month's usage is its key rows plus its adjustment rows.
func (s *Server) usageCSV(w http.ResponseWriter, r *http.Request, owner string, win plan.Window, start, end time.Time) error {
	// Read the first page before answering, so an error is still a clean
	// error response; later failures can only cut the stream short.
	rows, next, err := s.Ledger.OwnerTotals(r.Context(), owner, win, start, 1000, "")
	if err != nil {
		return err
	}
	adj := s.adjustments(r.Context(), owner, win, start, "")
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="usage-`+string(win)+`-`+start.Format("2006-01-02")+`.csv"`)
	cw := csv.NewWriter(w)
	cw.Write([]string{"key_id", "owner", "window", "start", "end", "requests", "units", "bytes", "level", "feature", "amount", "counted_in"})
	row := func(keyID, owner, level, feature string, t ledger.Totals, countedIn time.Time) {
		in := ""
		if !countedIn.IsZero() {
			in = countedIn.Format(time.RFC3339)
		}
		cw.Write([]string{keyID, owner, string(win), start.Format(time.RFC3339), end.Format(time.RFC3339),
			strconv.FormatInt(t.Requests, 10), strconv.FormatInt(t.Units, 10), strconv.FormatInt(t.Bytes, 10), level, feature,
			plan.FormatMicros(t.Cost), in})
	}
	cut := func(err error) {
		s.logger().ErrorContext(r.Context(), "usage export cut short", "error", err)
		cw.Flush()
	}
	late := map[string]*ledger.Usage{} // per owner, the sum of its adjustments
	for {
		for _, t := range rows {
			as, err := adj.take(t.KeyID)
			if err != nil {
				cut(err)
				return nil
			}
			for _, a := range as {
				t.Sub(a.Totals)
			}
			if len(as) == 0 || t.Totals != (ledger.Totals{}) { // a key of late events only had no row at the close
				row(t.KeyID, t.Owner, "key", "", t.Totals, time.Time{})
			}
			for _, a := range as {
				row(a.KeyID, a.Owner, "adjustment", "", a.Totals, a.CountedIn)
				sum := late[a.Owner]
				if sum == nil {
					sum = &ledger.Usage{}
					late[a.Owner] = sum
				}
				sum.Add(a.Totals)
				for _, f := range slices.Sorted(maps.Keys(a.Features)) {
					row(a.KeyID, a.Owner, "feature_adjustment", f, a.Features[f], a.CountedIn)
					sum.AddFeature(f, a.Features[f])
				}
			}
		}
		if next == "" {
			break
		}
		if rows, next, err = s.Ledger.OwnerTotals(r.Context(), owner, win, start, 1000, next); err != nil {
			cut(err)
			return nil
		}
	}
	owners, token := []string{owner}, ""
	for {
		if owner == "" {
			if owners, token, err = s.Ledger.ActiveOwners(r.Context(), win, start, 1000, token); err != nil {
				cut(err)
				return nil
			}
		}
		for _, o := range owners {
			u, err := s.Ledger.OwnerUsage(r.Context(), o, win, start)
			if err != nil {
				cut(err)
				return nil
			}
			if u.Totals == (ledger.Totals{}) && len(u.Features) == 0 {
				continue
			}
			// Of a closed month, what was counted by the close: rows
			// that only late events made are left out.
			l := late[o]
			if l != nil {
				u.Sub(l.Totals)
				for f, t := range l.Features {
					ft := u.Features[f]
					if ft.Sub(t); ft == (ledger.Totals{}) {
						delete(u.Features, f)
					} else {
						u.Features[f] = ft
					}
				}
				if u.Totals == (ledger.Totals{}) && len(u.Features) == 0 {
					continue
				}
			}
			row("", o, "owner", "", u.Totals, time.Time{})
			for _, f := range slices.Sorted(maps.Keys(u.Features)) {
				row("", o, "feature", f, u.Features[f], time.Time{})
			}
		}
		if token == "" {
			break
		}
	}
	cw.Flush()
	return nil
}

// adjustmentCursor reads the adjustments of a month in key order, a page
// at a time, for the billing export to merge with the month's key totals,
// which come in the same order. A cursor of another window has none.
type adjustmentCursor struct {
	ctx   context.Context
	l     ledger.Ledger
	owner string
	month time.Time // zero: not a month, no adjustments
	buf   []ledger.Adjustment
	token string
	read  bool // a page was read; token "" after that is the end
}

// adjustments returns a cursor on the adjustments of the window (win,
// start) of owner's keys after the key of an OwnerTotals page token ("":
// from the first).
func (s *Server) adjustments(ctx context.Context, owner string, win plan.Window, start time.Time, token string) *adjustmentCursor {
	c := &adjustmentCursor{ctx: ctx, l: s.Ledger, owner: owner, token: token}
	if win == plan.Month {
		c.month = start
	}
	return c
}

// take returns the adjustments of key id. Keys are asked for in
// increasing order; the adjustments of keys skipped over are dropped.
func (c *adjustmentCursor) take(id string) ([]ledger.Adjustment, error) {
	if c.month.IsZero() {
		return nil, nil
	}
	var out []ledger.Adjustment
	for {
		for len(c.buf) > 0 && c.buf[0].KeyID <= id {
			if c.buf[0].KeyID == id {
				out = append(out, c.buf[0])
			}
			c.buf = c.buf[1:]
		}
		if len(c.buf) > 0 || (c.read && c.token == "") {
			return out, nil
		}
		page, next, err := c.l.Adjustments(c.ctx, c.owner, c.month, 1000, c.token)
		if err != nil {
			return nil, err
		}
		c.buf, c.token, c.read = page, next, true
	}
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
