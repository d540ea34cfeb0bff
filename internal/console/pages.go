package console

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/tokens"
)

// PageSize is how many rows a table shows per page.
const PageSize = 50

// maxScan bounds how many store pages one filtered keys page reads.
const maxScan = 20

// pager links to the next page of a table, keeping its filters.
type pager struct {
	Next  string // URL of the next page, "" on the last
	First string // URL of the first page, "" on it
}

func pagerOf(path string, filters url.Values, token, next string) pager {
	var p pager
	if next != "" {
		v := cloneValues(filters)
		v.Set("page_token", next)
		p.Next = path + "?" + v.Encode()
	}
	if token != "" {
		p.First = path
		if len(filters) > 0 {
			p.First += "?" + filters.Encode()
		}
	}
	return p
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		if len(vs) > 0 && vs[0] != "" {
			out.Set(k, vs[0])
		}
	}
	return out
}

// --- owners ---

type ownerRow struct {
	ID, Plan, Status, Spend string
}

func (c *Console) ownersPage(w http.ResponseWriter, r *http.Request, q *request) error {
	token := r.URL.Query().Get("page_token")
	var (
		os   []*store.Owner
		next string
		err  error
	)
	if q.caller.Owner != "" {
		o, err := c.cfg.Owners.Get(r.Context(), q.caller.Owner)
		if err != nil && !errs.Is(err, errs.NotFound) {
			return err
		}
		if o != nil && token == "" {
			os = []*store.Owner{o}
		}
	} else if os, next, err = c.cfg.Owners.List(r.Context(), store.ListOwnersQuery{PageSize: PageSize, PageToken: token}); err != nil {
		return err
	}
	spend := q.caller.Can(tokens.UsageRead)
	rows := make([]ownerRow, len(os))
	for i, o := range os {
		rows[i] = ownerRow{ID: o.ID, Plan: o.Plan, Status: ownerStatus(o)}
		if spend {
			if rows[i].Spend, _, err = c.spend(r, o); err != nil {
				return err
			}
		}
	}
	c.render(w, r, q, http.StatusOK, "owners", "Owners", struct {
		Rows      []ownerRow
		ShowSpend bool
		Month     string
		Pager     pager
	}{rows, spend, c.now().Format("2006-01"), pagerOf("/console/owners", nil, token, next)})
	return nil
}

func ownerStatus(o *store.Owner) string {
	if sp := o.Suspension; sp != nil {
		s := "suspended over " + sp.Limit
		if sp.Feature != "" {
			s += " of " + sp.Feature
		}
		return s + " until " + sp.Until.UTC().Format("2006-01-02 15:04Z")
	}
	return "active"
}

// spend is the owner's spend of the current UTC month ("1.230000 USD")
// and the month's usage it comes from.
func (c *Console) spend(r *http.Request, o *store.Owner) (string, ledger.Usage, error) {
	start, _ := plan.Month.Bounds(c.now())
	bal, u, err := c.cfg.Owners.Money(r.Context(), o, start)
	if err != nil {
		return "", u, err
	}
	return plan.FormatMicros(u.Cost) + " " + bal.Currency, u, nil
}

type featureSpendRow struct {
	Feature, Amount string
	Requests, Units int64
}

func (c *Console) ownerPage(w http.ResponseWriter, r *http.Request, q *request) error {
	id := r.PathValue("owner")
	if !q.caller.Sees(id) {
		return errs.E(errs.NotFound, "owner %s has no keys", id)
	}
	o, err := c.cfg.Owners.Get(r.Context(), id)
	if err != nil {
		return err
	}
	bucket, err := bucketOf(r)
	if err != nil {
		return err
	}
	data := struct {
		Owner    *store.Owner
		Status   string
		Usage    bool
		Spend    string
		Features []featureSpendRow
		Bucket   plan.Window
		Buckets  []plan.Window
		Charts   []chartView
		Limits   []limitRow
	}{Owner: o, Status: ownerStatus(o), Usage: q.caller.Can(tokens.UsageRead), Bucket: bucket, Buckets: chartBuckets}
	own, features := c.cfg.Owners.Effective(o)
	for _, name := range slices.Sorted(maps.Keys(own)) {
		data.Limits = append(data.Limits, limitRow{Name: name, Value: own[name]})
	}
	for _, f := range slices.Sorted(maps.Keys(features)) {
		for _, name := range slices.Sorted(maps.Keys(features[f])) {
			data.Limits = append(data.Limits, limitRow{Feature: f, Name: name, Value: features[f][name]})
		}
	}
	if data.Usage {
		var u ledger.Usage
		if data.Spend, u, err = c.spend(r, o); err != nil {
			return err
		}
		for _, f := range ledger.ByFeature(u) {
			if f.Feature != "" { // the table names features; usage without one is in the total
				data.Features = append(data.Features, featureSpendRow{Feature: f.Feature, Amount: plan.FormatMicros(f.Cost), Requests: f.Requests, Units: f.Units})
			}
		}
		if data.Charts, err = c.ownerCharts(r, o, own, features, bucket); err != nil {
			return err
		}
	}
	c.render(w, r, q, http.StatusOK, "owner", "Owner "+o.ID, data)
	return nil
}

type limitRow struct {
	Feature, Name string
	Value         int64
}

// --- keys ---

var statuses = []store.Status{store.Active, store.Disabled, store.Revoked}

type keyFilters struct {
	Owner, Name, Status string
}

func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, q *request) error {
	f := keyFilters{Owner: strings.TrimSpace(r.URL.Query().Get("owner")), Name: strings.TrimSpace(r.URL.Query().Get("name")),
		Status: r.URL.Query().Get("status")}
	token := r.URL.Query().Get("page_token")
	if f.Owner != "" && !ids.ValidOwner(f.Owner) {
		return errs.E(errs.Invalid, "owner must be "+ids.OwnerSyntax)
	}
	if f.Status != "" && !slices.Contains(statuses, store.Status(f.Status)) {
		return errs.E(errs.Invalid, "status must be active, disabled or revoked")
	}
	owner, err := q.caller.OwnerFilter(f.Owner)
	if err != nil {
		return err
	}
	ks, next, err := c.findKeys(r, owner, f, token)
	if err != nil {
		return err
	}
	filters := url.Values{"owner": {f.Owner}, "name": {f.Name}, "status": {f.Status}}
	c.render(w, r, q, http.StatusOK, "keys", "Keys", struct {
		Keys      []*store.Key
		Filters   keyFilters
		Statuses  []store.Status
		Pager     pager
		CanCreate bool
		Plans     []string
		Default   string
		Owner     string // a scoped caller's owner: the only one it may create keys for
	}{ks, f, statuses, pagerOf("/console/keys", cloneValues(filters), token, next), q.caller.Can(tokens.KeysCreate),
		c.cfg.Plans.Names(), c.cfg.Plans.Default(), q.caller.Owner})
	return nil
}

// findKeys reads a page of keys of owner ("" for all) matching f's name
// (a case-insensitive substring) and status. The store filters by owner
// only, so with a name or status it reads store pages until it has a
// page's worth or maxScan pages, and answers the store's token to go on
// from: a filtered page may be shorter than PageSize and still have a
// next page.
func (c *Console) findKeys(r *http.Request, owner string, f keyFilters, token string) ([]*store.Key, string, error) {
	name := strings.ToLower(f.Name)
	var out []*store.Key
	q := store.ListKeysQuery{Owner: owner, PageSize: PageSize, PageToken: token}
	for range maxScan {
		ks, next, err := c.cfg.Keys.List(r.Context(), q)
		if err != nil {
			return nil, "", err
		}
		for _, k := range ks {
			if (name == "" || strings.Contains(strings.ToLower(k.Name), name)) && (f.Status == "" || string(k.Status) == f.Status) {
				out = append(out, k)
			}
		}
		if next == "" || len(out) >= PageSize {
			return out, next, nil
		}
		q.PageToken = next
	}
	return out, q.PageToken, nil
}

// key returns the key the path names, if the caller may see it.
func (c *Console) key(r *http.Request, q *request) (*store.Key, error) {
	id := r.PathValue("id")
	k, err := c.cfg.Keys.Get(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if !q.caller.Sees(k.Owner) {
		return nil, errs.E(errs.NotFound, "key %q not found", id) // as for a key that does not exist
	}
	return k, nil
}

func (c *Console) keyPage(w http.ResponseWriter, r *http.Request, q *request) error {
	k, err := c.key(r, q)
	if err != nil {
		return err
	}
	bucket, err := bucketOf(r)
	if err != nil {
		return err
	}
	eff := k.Limits
	if p, ok := c.cfg.Plans.Get(k.Plan); ok {
		eff = p.Limits.With(k.Limits)
	}
	data := struct {
		Key      *store.Key
		Secret   string // the new key's plaintext, this once
		Metadata []metaRow
		Limits   []limitRow
		Usage    bool
		Bucket   plan.Window
		Buckets  []plan.Window
		Charts   []chartView
		Can      map[string]bool
	}{Key: k, Secret: c.sessions.takeOnce(q.session, k.ID), Usage: q.caller.Can(tokens.UsageRead), Bucket: bucket, Buckets: chartBuckets,
		Can: map[string]bool{
			"disable": q.caller.Can(tokens.KeysDisable) && k.Status == store.Active,
			"enable":  q.caller.Can(tokens.KeysDisable) && k.Status == store.Disabled,
			"rotate":  q.caller.Can(tokens.KeysRotate) && k.Status != store.Revoked,
			"revoke":  q.caller.Can(tokens.KeysRevoke) && k.Status != store.Revoked,
			"audit":   q.caller.Can(tokens.AuditRead),
			"owner":   q.caller.Can(tokens.OwnersRead),
		}}
	for _, name := range slices.Sorted(maps.Keys(k.Metadata)) {
		data.Metadata = append(data.Metadata, metaRow{name, k.Metadata[name]})
	}
	for _, name := range slices.Sorted(maps.Keys(eff)) {
		data.Limits = append(data.Limits, limitRow{Name: name, Value: eff[name]})
	}
	if data.Usage {
		if data.Charts, err = c.keyCharts(r, k, eff, bucket); err != nil {
			return err
		}
	}
	if data.Secret != "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	c.render(w, r, q, http.StatusOK, "key", "Key "+k.ID, data)
	return nil
}

type metaRow struct{ Name, Value string }

// parseMetadata reads "name=value" lines.
func parseMetadata(s string) (map[string]string, error) {
	md := map[string]string{}
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, errs.E(errs.Invalid, "metadata: write one name=value per line")
		}
		md[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	if len(md) == 0 {
		return nil, nil
	}
	return md, nil
}

func (c *Console) createKey(w http.ResponseWriter, r *http.Request, q *request) error {
	req := keys.CreateRequest{Owner: strings.TrimSpace(r.PostForm.Get("owner")), Name: strings.TrimSpace(r.PostForm.Get("name")),
		Plan: r.PostForm.Get("plan")}
	if q.caller.Owner != "" {
		if req.Owner == "" {
			req.Owner = q.caller.Owner
		}
		if req.Owner != q.caller.Owner {
			return errs.E(errs.PermissionDenied, "this credential is scoped to owner %s: it can create keys for that owner only", q.caller.Owner)
		}
	}
	md, err := parseMetadata(r.PostForm.Get("metadata"))
	if err != nil {
		return err
	}
	req.Metadata = md
	created, err := c.cfg.Keys.Create(r.Context(), q.caller.Actor, req, "")
	if err != nil {
		return err
	}
	c.sessions.putOnce(q.session, created.Key.ID, created.Secret)
	http.Redirect(w, r, "/console/keys/"+url.PathEscape(created.Key.ID), http.StatusSeeOther)
	return nil
}

func (c *Console) disableKey(w http.ResponseWriter, r *http.Request, q *request) error {
	k, err := c.key(r, q)
	if err != nil {
		return err
	}
	if _, err := c.cfg.Keys.Disable(r.Context(), q.caller.Actor, k.ID, strings.TrimSpace(r.PostForm.Get("reason"))); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/keys/"+url.PathEscape(k.ID), http.StatusSeeOther)
	return nil
}

func (c *Console) enableKey(w http.ResponseWriter, r *http.Request, q *request) error {
	k, err := c.key(r, q)
	if err != nil {
		return err
	}
	if _, err := c.cfg.Keys.Enable(r.Context(), q.caller.Actor, k.ID); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/keys/"+url.PathEscape(k.ID), http.StatusSeeOther)
	return nil
}

func (c *Console) rotateKey(w http.ResponseWriter, r *http.Request, q *request) error {
	k, err := c.key(r, q)
	if err != nil {
		return err
	}
	created, err := c.cfg.Keys.Rotate(r.Context(), q.caller.Actor, k.ID, keys.RotateRequest{GracePeriod: strings.TrimSpace(r.PostForm.Get("grace_period"))}, "")
	if err != nil {
		return err
	}
	c.sessions.putOnce(q.session, created.Key.ID, created.Secret)
	http.Redirect(w, r, "/console/keys/"+url.PathEscape(created.Key.ID), http.StatusSeeOther)
	return nil
}

func (c *Console) revokeForm(w http.ResponseWriter, r *http.Request, q *request) error {
	k, err := c.key(r, q)
	if err != nil {
		return err
	}
	if k.Status == store.Revoked {
		return errs.E(errs.FailedPrecondition, "key %s is already revoked", k.ID)
	}
	c.render(w, r, q, http.StatusOK, "revoke", "Revoke key "+k.ID, k)
	return nil
}

// revokeKey revokes once the confirmation page's form says so: a POST
// without confirm=revoke (say, a button elsewhere) is refused.
func (c *Console) revokeKey(w http.ResponseWriter, r *http.Request, q *request) error {
	k, err := c.key(r, q)
	if err != nil {
		return err
	}
	if r.PostForm.Get("confirm") != "revoke" {
		return errs.E(errs.Invalid, "revoking needs confirmation: use the Revoke button of the confirmation page")
	}
	if _, err := c.cfg.Keys.Revoke(r.Context(), q.caller.Actor, k.ID, strings.TrimSpace(r.PostForm.Get("reason"))); err != nil {
		return err
	}
	http.Redirect(w, r, "/console/keys/"+url.PathEscape(k.ID), http.StatusSeeOther)
	return nil
}

// --- audit, dead letters, sweep ---

type auditRow struct {
	Entry   store.AuditEntry
	Details []metaRow
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, q *request) error {
	keyID := strings.TrimSpace(r.URL.Query().Get("key_id"))
	token := r.URL.Query().Get("page_token")
	if q.caller.Owner != "" {
		// Audit entries name keys, not owners: a scoped credential reads
		// one of its owner's keys' entries at a time, as in the API.
		if keyID == "" {
			c.render(w, r, q, http.StatusOK, "audit", "Audit trail", struct {
				KeyID       string
				Rows        []auditRow
				Pager       pager
				NeedsKeyFor string
			}{NeedsKeyFor: q.caller.Owner})
			return nil
		}
		k, err := c.cfg.Keys.Get(r.Context(), keyID)
		if err != nil {
			return err
		}
		if !q.caller.Sees(k.Owner) {
			return errs.E(errs.NotFound, "key %q not found", keyID)
		}
	}
	es, next, err := c.cfg.Keys.Audit(r.Context(), store.AuditQuery{KeyID: keyID, PageSize: PageSize, PageToken: token})
	if err != nil {
		return err
	}
	rows := make([]auditRow, len(es))
	for i, e := range es {
		rows[i].Entry = e
		for _, name := range slices.Sorted(maps.Keys(e.Details)) {
			rows[i].Details = append(rows[i].Details, metaRow{name, e.Details[name]})
		}
	}
	c.render(w, r, q, http.StatusOK, "audit", "Audit trail", struct {
		KeyID       string
		Rows        []auditRow
		Pager       pager
		NeedsKeyFor string
	}{keyID, rows, pagerOf("/console/audit", cloneValues(url.Values{"key_id": {keyID}}), token, next), ""})
	return nil
}

// acrossOwners refuses a credential scoped to one owner: the page shows
// every owner's data.
func acrossOwners(q *request) error {
	if q.caller.Owner != "" {
		return errs.E(errs.PermissionDenied, "this page shows every owner's data: it needs a credential not scoped to an owner")
	}
	return nil
}

type deadLetterRow struct {
	Letter  ledger.DeadLetter
	Payload string
}

// payloadShown bounds how much of a dead letter's payload the table shows.
const payloadShown = 300

func (c *Console) deadLettersPage(w http.ResponseWriter, r *http.Request, q *request) error {
	if err := acrossOwners(q); err != nil {
		return err
	}
	token := r.URL.Query().Get("page_token")
	ds, next, err := c.cfg.Ledger.ListDeadLetters(r.Context(), PageSize, token)
	if err != nil {
		return err
	}
	rows := make([]deadLetterRow, len(ds))
	for i, d := range ds {
		p := strings.ToValidUTF8(string(d.Payload), "\uFFFD")
		if r := []rune(p); len(r) > payloadShown {
			p = string(r[:payloadShown]) + "…"
		}
		rows[i] = deadLetterRow{Letter: d, Payload: p}
	}
	c.render(w, r, q, http.StatusOK, "deadletters", "Dead letters", struct {
		Rows  []deadLetterRow
		Pager pager
	}{rows, pagerOf("/console/dead-letters", nil, token, next)})
	return nil
}

type sweepView struct {
	Available bool
	Report    *sweep.Report
}

func (c *Console) sweepPage(w http.ResponseWriter, r *http.Request, q *request) error {
	if err := acrossOwners(q); err != nil {
		return err
	}
	c.render(w, r, q, http.StatusOK, "sweep", "Sweep", sweepView{Available: c.cfg.Sweeper != nil})
	return nil
}

// runSweep runs the sweep (a dry run unless the form says otherwise) and
// shows its report. Reports are not stored: the scheduled sweep's are in
// its logs, and what it changed is in the audit trail.
func (c *Console) runSweep(w http.ResponseWriter, r *http.Request, q *request) error {
	if err := acrossOwners(q); err != nil {
		return err
	}
	if c.cfg.Sweeper == nil {
		return errs.E(errs.FailedPrecondition, "this function does not run the sweep: run it from the Sweep function (POST /v1/sweep there) or `keyplane serve`")
	}
	dry := r.PostForm.Get("mode") != "run"
	c.cfg.Logger.InfoContext(r.Context(), "sweep requested from the console", "actor", q.caller.Actor, "dry_run", dry)
	rep, err := c.cfg.Sweeper.Run(r.Context(), sweep.Options{DryRun: dry})
	if err != nil {
		return err
	}
	c.render(w, r, q, http.StatusOK, "sweep", "Sweep", sweepView{Available: true, Report: &rep})
	return nil
}

// --- charts ---

// chartBuckets are the bucket sizes the usage pages offer.
var chartBuckets = []plan.Window{plan.Minute, plan.Hour, plan.Day}

// chartSpan is how many buckets a chart covers, up to and including the
// current one.
var chartSpan = map[plan.Window]int{plan.Minute: 60, plan.Hour: 48, plan.Day: 30}

func bucketOf(r *http.Request) (plan.Window, error) {
	v := r.URL.Query().Get("bucket")
	if v == "" {
		return plan.Day, nil // the window most limits are counted in
	}
	w, err := plan.ParseWindow(v)
	if err != nil || !slices.Contains(chartBuckets, w) {
		return "", errs.E(errs.Invalid, "bucket must be minute, hour or day")
	}
	return w, nil
}

// chartView is a chart with its data table, for the templates.
type chartView struct {
	Chart
	Header []string
	Rows   [][]string
}

func viewOf(ch Chart) chartView {
	h, rows := ch.Table()
	return chartView{Chart: ch, Header: h, Rows: rows}
}

// chartRange is the bucket starts a chart covers.
func (c *Console) chartRange(bucket plan.Window) (starts []time.Time, from, to time.Time, err error) {
	_, to = bucket.Bounds(c.now())
	from = to
	for range chartSpan[bucket] {
		from, _ = bucket.Bounds(from.Add(-time.Nanosecond))
	}
	if err := ledger.CheckSeries(bucket, from, to); err != nil {
		return nil, from, to, err
	}
	for t := from; t.Before(to); _, t = bucket.Bounds(t) {
		starts = append(starts, t)
	}
	return starts, from, to, nil
}

func labelsOf(starts []time.Time, bucket plan.Window) []string {
	layout := "15:04"
	switch bucket {
	case plan.Hour:
		layout = "Jan 2 15:04"
	case plan.Day:
		layout = "2006-01-02"
	}
	out := make([]string, len(starts))
	for i, t := range starts {
		out[i] = t.UTC().Format(layout)
	}
	return out
}

// metricCharts are the metrics the usage pages chart.
var metricCharts = []struct{ metric, title string }{{"requests", "Requests"}, {"units", "Units"}}

func (c *Console) keyCharts(r *http.Request, k *store.Key, eff plan.Limits, bucket plan.Window) ([]chartView, error) {
	starts, from, to, err := c.chartRange(bucket)
	if err != nil {
		return nil, err
	}
	index := indexOf(starts)
	totals := make([]ledger.Totals, len(starts))
	pts, _, err := c.cfg.Ledger.KeySeries(r.Context(), k.Owner, bucket, from, to, ledger.MaxSeriesPoints)
	if err != nil {
		return nil, err
	}
	for _, p := range pts {
		if i, ok := index[p.Start]; ok && p.KeyID == k.ID {
			totals[i].Add(p.Totals)
		}
	}
	var out []chartView
	for _, m := range metricCharts {
		ch := Chart{ID: "key-" + m.metric, Title: m.title + " per " + string(bucket) + " (UTC)", Labels: labelsOf(starts, bucket),
			Series: []Series{{Name: m.metric, Values: metric(totals, m.metric)}}}
		if v, ok := eff[plan.LimitName(m.metric, bucket)]; ok {
			ch.Limits = append(ch.Limits, Limit{Name: plan.LimitName(m.metric, bucket), Value: v})
		}
		out = append(out, viewOf(ch))
	}
	return out, nil
}

func (c *Console) ownerCharts(r *http.Request, o *store.Owner, own plan.Limits, features map[string]plan.Limits, bucket plan.Window) ([]chartView, error) {
	starts, from, to, err := c.chartRange(bucket)
	if err != nil {
		return nil, err
	}
	index := indexOf(starts)
	all := make([]ledger.Totals, len(starts))
	byFeature := map[string][]ledger.Totals{}
	pts, err := c.cfg.Ledger.OwnerSeries(r.Context(), o.ID, bucket, from, to)
	if err != nil {
		return nil, err
	}
	for _, p := range pts {
		i, ok := index[p.Start]
		if !ok {
			continue
		}
		all[i].Add(p.Totals)
		for f, t := range p.Features {
			if byFeature[f] == nil {
				byFeature[f] = make([]ledger.Totals, len(starts))
			}
			byFeature[f][i].Add(t)
		}
	}
	var out []chartView
	for _, m := range metricCharts {
		name := plan.LimitName(m.metric, bucket)
		ch := Chart{ID: "owner-" + m.metric, Title: m.title + " per " + string(bucket) + " (UTC), all features and each", Labels: labelsOf(starts, bucket),
			Series: []Series{{Name: "all features", Values: metric(all, m.metric)}}}
		if v, ok := own[name]; ok {
			ch.Limits = append(ch.Limits, Limit{Name: "owner " + name, Value: v})
		}
		for _, f := range slices.Sorted(maps.Keys(byFeature)) {
			ch.Series = append(ch.Series, Series{Name: f, Values: metric(byFeature[f], m.metric)})
			if v, ok := features[f][name]; ok {
				ch.Limits = append(ch.Limits, Limit{Name: f + " " + name, Value: v})
			}
		}
		out = append(out, viewOf(ch))
	}
	return out, nil
}

func indexOf(starts []time.Time) map[time.Time]int {
	m := make(map[time.Time]int, len(starts))
	for i, t := range starts {
		m[t] = i
	}
	return m
}

func metric(ts []ledger.Totals, m string) []int64 {
	out := make([]int64, len(ts))
	for i, t := range ts {
		out[i] = t.Get(m)
	}
	return out
}
