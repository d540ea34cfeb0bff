package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
)

// seriesParams are the query parameters that make GET /v1/usage answer
// with time series instead of the billing export.
var seriesParams = []string{"bucket", "group_by", "start", "end"}

// defaultSpan is how many buckets a series covers when start is not given.
var defaultSpan = map[plan.Window]int{plan.Minute: 60, plan.Hour: 24, plan.Day: 30, plan.Month: 12}

// seriesQuery is a parsed usage series request.
type seriesQuery struct {
	owner      string
	bucket     plan.Window
	groupBy    string // "", "key" or "feature"
	start, end time.Time
}

// isSeries reports whether a GET /v1/usage asks for series.
func isSeries(r *http.Request) bool {
	q := r.URL.Query()
	for _, p := range seriesParams {
		if q.Has(p) {
			return true
		}
	}
	return false
}

// parseSeries reads a series query: owner (required), bucket (default
// day), group_by, and start and end (RFC 3339; start rounded down and end
// rounded up to bucket bounds; default: the defaultSpan buckets up to and
// including the current one).
func (s *Server) parseSeries(r *http.Request) (seriesQuery, error) {
	q := r.URL.Query()
	for _, p := range []string{"window", "at", "format", "page_size", "page_token"} {
		if q.Has(p) {
			return seriesQuery{}, errs.E(errs.Invalid, "%s belongs to the billing export; a usage series takes owner, bucket, group_by, start and end", p)
		}
	}
	sq := seriesQuery{owner: q.Get("owner"), bucket: plan.Day, groupBy: q.Get("group_by")}
	if sq.owner == "" {
		return seriesQuery{}, errs.E(errs.Invalid, "a usage series needs owner")
	}
	if !ids.ValidOwner(sq.owner) {
		return seriesQuery{}, errs.E(errs.Invalid, "owner must be "+ids.OwnerSyntax)
	}
	if v := q.Get("bucket"); v != "" {
		w, err := plan.ParseWindow(v)
		if err != nil {
			return seriesQuery{}, errs.E(errs.Invalid, "bucket must be one of minute, hour, day, month; got %.32q", v)
		}
		sq.bucket = w
	}
	switch sq.groupBy {
	case "", "key", "feature":
	default:
		return seriesQuery{}, errs.E(errs.Invalid, "group_by must be key or feature; got %.32q", sq.groupBy)
	}
	parse := func(name string) (time.Time, bool, error) {
		v := q.Get(name)
		if v == "" {
			return time.Time{}, false, nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, false, errs.E(errs.Invalid, "%s must be an RFC 3339 time, like 2030-01-02T15:04:05Z", name)
		}
		if t.Before(minAt) || !t.Before(maxAt) {
			return time.Time{}, false, errs.E(errs.Invalid, "%s must be from %s up to, not including, %s", name, minAt.Format(time.RFC3339), maxAt.Format(time.RFC3339))
		}
		return t, true, nil
	}
	end, ok, err := parse("end")
	if err != nil {
		return seriesQuery{}, err
	}
	if !ok {
		end = s.now()
	}
	if start, end2 := sq.bucket.Bounds(end); !start.Equal(end) {
		end = end2 // round up: the bucket holding end is in the range
	}
	sq.end = end
	start, ok, err := parse("start")
	if err != nil {
		return seriesQuery{}, err
	}
	if !ok {
		start = end
		for range defaultSpan[sq.bucket] {
			start, _ = sq.bucket.Bounds(start.Add(-time.Nanosecond))
		}
	}
	sq.start, _ = sq.bucket.Bounds(start)
	if err := ledger.CheckSeries(sq.bucket, sq.start, sq.end); err != nil {
		return seriesQuery{}, err
	}
	return sq, nil
}

// usageSeries answers GET /v1/usage?owner=…&bucket=…&group_by=…: the
// owner's usage per bucket, as one series (no group_by), one per key or
// one per feature ("" is usage reported without a feature). Every series
// has a point for every bucket of the range, zero where nothing was
// counted.
func (s *Server) usageSeries(w http.ResponseWriter, r *http.Request) error {
	sq, err := s.parseSeries(r)
	if err != nil {
		return err
	}
	if _, err := callerOf(r).OwnerFilter(sq.owner); err != nil {
		return err // another owner's series, asked with a token scoped to one owner
	}
	var starts []time.Time
	for t := sq.start; t.Before(sq.end); _, t = sq.bucket.Bounds(t) {
		starts = append(starts, t)
	}
	index := make(map[time.Time]int, len(starts))
	for i, t := range starts {
		index[t] = i
	}
	groups := map[string][]ledger.Totals{}
	add := func(group string, start time.Time, t ledger.Totals) {
		pts := groups[group]
		if pts == nil {
			pts = make([]ledger.Totals, len(starts))
			groups[group] = pts
		}
		pts[index[start]].Add(t)
	}
	if sq.groupBy == "key" {
		kps, more, err := s.Ledger.KeySeries(r.Context(), sq.owner, sq.bucket, sq.start, sq.end, ledger.MaxSeriesPoints)
		if err != nil {
			return err
		}
		if more {
			return errs.E(errs.Invalid, "the range holds more than %d key points; narrow start and end or use a coarser bucket", ledger.MaxSeriesPoints)
		}
		for _, p := range kps {
			add(p.KeyID, p.Start, p.Totals)
		}
	} else {
		points, err := s.Ledger.OwnerSeries(r.Context(), sq.owner, sq.bucket, sq.start, sq.end)
		if err != nil {
			return err
		}
		for _, p := range points {
			if sq.groupBy == "" {
				add("", p.Start, p.Totals)
				continue
			}
			rest := p.Totals
			for f, t := range p.Features {
				add(f, p.Start, t)
				rest.Requests, rest.Units, rest.Bytes = rest.Requests-t.Requests, rest.Units-t.Units, rest.Bytes-t.Bytes
			}
			if rest != (ledger.Totals{}) {
				add("", p.Start, rest)
			}
		}
		if sq.groupBy == "" && len(groups) == 0 {
			add("", sq.start, ledger.Totals{}) // one series, of zeros
		}
	}
	if n := len(groups) * len(starts); n > ledger.MaxSeriesPoints {
		return errs.E(errs.Invalid, "the answer would hold %d points, more than %d; narrow start and end or use a coarser bucket", n, ledger.MaxSeriesPoints)
	}
	out := usageSeriesResource{Owner: sq.owner, Bucket: sq.bucket, GroupBy: sq.groupBy, Start: sq.start, End: sq.end,
		Series: make([]seriesResource, 0, len(groups))}
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		sr := seriesResource{Group: map[string]string{}, Points: make([]pointResource, len(starts))}
		switch sq.groupBy {
		case "key":
			sr.Group["key_id"] = name
		case "feature":
			sr.Group["feature"] = name
		}
		for i, t := range groups[name] {
			sr.Points[i] = pointResource{Start: starts[i], Requests: t.Requests, Units: t.Units, Bytes: t.Bytes}
		}
		out.Series = append(out.Series, sr)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
