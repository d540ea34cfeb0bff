package portal

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// keysPageSize is how many keys a page of the list shows.
const keysPageSize = 20

// chartDays is how many days the usage charts cover.
const chartDays = 30

// exchange redeems a link and starts its session: the cookie is set and
// the browser is sent to /portal/, so the token leaves the address bar.
func (p *Portal) exchange(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	now := p.now()
	if token == "" || len(token) > 128 {
		p.fail(w, r, nil, errs.E(errs.PermissionDenied, "this portal link is not valid: ask for a new one from your account"))
		return
	}
	l, err := p.Links.RedeemPortalLink(r.Context(), linkHash(token), now)
	if err != nil {
		if errs.Is(err, errs.NotFound) || errs.Is(err, errs.FailedPrecondition) {
			err = errs.E(errs.PermissionDenied, "this portal link is not valid: it expired, was used already or never existed. Ask for a new one from your account")
		}
		p.fail(w, r, nil, err)
		return
	}
	exp := now.Add(p.sessionTTL())
	s := &session{ID: newSessionID(), Owner: l.Owner, Perms: l.Permissions, Return: l.ReturnURL, Exp: exp.Unix()}
	v, err := p.encode(s)
	if err != nil {
		p.fail(w, r, nil, errs.Wrap(errs.Internal, err, "portal: encode session"))
		return
	}
	p.setCookie(w, r, v, s.expires())
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
}

func (p *Portal) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	p.setCookie(w, r, "", time.Time{})
	if s.Return == "" {
		p.render(w, r, http.StatusOK, "signedout", nil, "Signed out", nil)
		return nil
	}
	http.Redirect(w, r, s.Return, http.StatusSeeOther)
	return nil
}

// keyView is a key as the portal shows it.
type keyView struct {
	*store.Key
	Limits []limitView
	Chart  []chartPoint
}

// featureLimits are the owner's limits on one feature (a model).
type featureLimits struct {
	Feature string
	Limits  []limitView
}

// limitView is one limit and what remains of it in its current window.
type limitView struct {
	Name      string
	Max       int64
	Used      int64
	Remaining int64
	Metered   bool // a day or month quota; per-minute limits are rate limits, not metered here
	ResetsAt  time.Time
}

type homeData struct {
	Keys     []*store.Key
	Next     string
	First    bool
	Owner    *store.Owner
	Limits   []limitView
	Features []featureLimits
	Chart    []chartPoint
	Spend    ledger.Spend
	Amounts  map[string]string // feature → formatted amount
	Total    string
	Currency string
	// Cap is the monthly spend cap and what remains of it, Credits the
	// prepaid balance; "" for none.
	Cap, CapLeft, Credits string
}

func (p *Portal) home(w http.ResponseWriter, r *http.Request, s *session) error {
	d := homeData{First: r.URL.Query().Get("page_token") == ""}
	if s.Perms.has(PermKeysRead) {
		ks, next, err := p.Keys.List(r.Context(), store.ListKeysQuery{Owner: s.Owner, PageSize: keysPageSize,
			PageToken: r.URL.Query().Get("page_token")})
		if err != nil {
			return err
		}
		d.Keys, d.Next = ks, next
	}
	if s.Perms.has(PermUsageRead) {
		o, err := p.Owners.Get(r.Context(), s.Owner)
		if err != nil {
			return err
		}
		d.Owner = o
		own, features := p.Owners.Effective(o)
		usage := map[plan.Window]ledger.Usage{} // each window read once
		used := func(feature string) func(plan.Window, time.Time) (ledger.Totals, error) {
			return func(w plan.Window, start time.Time) (ledger.Totals, error) {
				u, ok := usage[w]
				if !ok {
					var err error
					if u, err = p.Ledger.OwnerUsage(r.Context(), s.Owner, w, start); err != nil {
						return ledger.Totals{}, err
					}
					usage[w] = u
				}
				if feature == "" {
					return u.Totals, nil
				}
				return u.Features[feature], nil
			}
		}
		if d.Limits, err = p.limits(own, used("")); err != nil {
			return err
		}
		for _, f := range slices.Sorted(maps.Keys(features)) {
			lv, err := p.limits(features[f], used(f))
			if err != nil {
				return err
			}
			if len(lv) > 0 {
				d.Features = append(d.Features, featureLimits{Feature: f, Limits: lv})
			}
		}
		from, to := p.chartRange()
		points, err := p.Ledger.OwnerSeries(r.Context(), s.Owner, plan.Day, from, to)
		if err != nil {
			return err
		}
		byDay := map[time.Time]int64{}
		for _, pt := range points {
			byDay[pt.Start] = pt.Requests
		}
		d.Chart = chartOf(from, to, byDay)
		month, _ := plan.Month.Bounds(p.now())
		bal, u, err := p.Owners.Money(r.Context(), o, month)
		if err != nil {
			return err
		}
		d.Spend = ledger.Spend{Month: month, Currency: bal.Currency, Total: u.Totals, ByFeature: ledger.ByFeature(u)}
		d.Total = plan.FormatMicros(u.Cost)
		if bal.Cap != nil {
			d.Cap, d.CapLeft = plan.FormatMicros(*bal.Cap), plan.FormatMicros(max(*bal.Cap-bal.Spend, 0))
		}
		if bal.Prepaid {
			d.Credits = plan.FormatMicros(bal.Credits)
		}
		d.Amounts = map[string]string{}
		for _, f := range d.Spend.ByFeature {
			d.Amounts[f.Feature] = plan.FormatMicros(f.Cost)
		}
	}
	p.render(w, r, http.StatusOK, "home", s, "Your API keys", d)
	return nil
}

// chartRange is the days the charts cover, up to and including today.
func (p *Portal) chartRange() (from, to time.Time) {
	today, end := plan.Day.Bounds(p.now())
	return today.AddDate(0, 0, -(chartDays - 1)), end
}

func chartOf(from, to time.Time, byDay map[time.Time]int64) []chartPoint {
	var out []chartPoint
	for t := from; t.Before(to); t = t.AddDate(0, 0, 1) {
		out = append(out, chartPoint{Label: t.Format("Jan 2"), Value: byDay[t]})
	}
	return out
}

// limits lists the limits of l with what remains of each in its current
// window; used reads the usage of a window.
func (p *Portal) limits(l plan.Limits, used func(plan.Window, time.Time) (ledger.Totals, error)) ([]limitView, error) {
	now := p.now()
	var out []limitView
	for _, name := range slices.Sorted(maps.Keys(l)) {
		metric, win, err := plan.SplitLimitName(name)
		if err != nil {
			continue
		}
		lv := limitView{Name: name, Max: l[name]}
		start, end := win.Bounds(now)
		lv.ResetsAt = end
		if win == plan.Day || win == plan.Month {
			t, err := used(win, start)
			if err != nil {
				return nil, err
			}
			lv.Metered, lv.Used = true, t.Get(metric)
			lv.Remaining = max(lv.Max-lv.Used, 0)
		}
		out = append(out, lv)
	}
	return out, nil
}

// ownKey returns key id if it is the session owner's; any other key, and
// a key that does not exist, is NotFound. It reads the key afresh on every
// request, so the check holds at the moment of the action.
func (p *Portal) ownKey(r *http.Request, s *session) (*store.Key, error) {
	id := r.PathValue("id")
	k, err := p.Keys.Get(r.Context(), id)
	if err != nil && !errs.Is(err, errs.NotFound) {
		return nil, err
	}
	if err != nil || k.Owner != s.Owner {
		return nil, errs.E(errs.NotFound, "key %.64q not found", id)
	}
	return k, nil
}

func (p *Portal) keyPage(w http.ResponseWriter, r *http.Request, s *session) error {
	k, err := p.ownKey(r, s)
	if err != nil {
		return err
	}
	kv := keyView{Key: k}
	if s.Perms.has(PermUsageRead) {
		eff := plan.Limits{}.With(k.Limits)
		if pl, ok := p.Plans.Get(k.Plan); ok {
			eff = pl.Limits.With(k.Limits)
		}
		if kv.Limits, err = p.limits(eff, func(w plan.Window, start time.Time) (ledger.Totals, error) {
			return p.Ledger.Totals(r.Context(), k.ID, w, start)
		}); err != nil {
			return err
		}
		from, to := p.chartRange()
		byDay, err := p.keyDays(r, s.Owner, k.ID, from, to)
		if err != nil {
			return err
		}
		kv.Chart = chartOf(from, to, byDay)
	}
	p.render(w, r, http.StatusOK, "key", s, "Key "+k.Name, kv)
	return nil
}

func (p *Portal) newKeyForm(w http.ResponseWriter, r *http.Request, s *session) error {
	p.render(w, r, http.StatusOK, "new", s, "Create a key", nil)
	return nil
}

// actor is how the audit log names a portal session's actions.
func actor(s *session) string { return "portal:" + s.Owner }

// secretData is the page that shows a secret, once.
type secretData struct {
	Key    *store.Key
	Secret string
	Rolled string // the rolled key's id, for a roll
}

func (p *Portal) createKey(w http.ResponseWriter, r *http.Request, s *session) error {
	c, err := p.Keys.Create(r.Context(), actor(s), keys.CreateRequest{Owner: s.Owner, Name: r.PostFormValue("name")}, "")
	if err != nil {
		return err
	}
	p.render(w, r, http.StatusCreated, "secret", s, "Key created", secretData{Key: c.Key, Secret: c.Secret})
	return nil
}

func (p *Portal) rollKey(w http.ResponseWriter, r *http.Request, s *session) error {
	k, err := p.ownKey(r, s)
	if err != nil {
		return err
	}
	c, err := p.Keys.Rotate(r.Context(), actor(s), k.ID, keys.RotateRequest{GracePeriod: r.PostFormValue("grace_period")}, "")
	if err != nil {
		return err
	}
	p.render(w, r, http.StatusCreated, "secret", s, "Key rolled", secretData{Key: c.Key, Secret: c.Secret, Rolled: k.ID})
	return nil
}

func (p *Portal) confirmRevoke(w http.ResponseWriter, r *http.Request, s *session) error {
	k, err := p.ownKey(r, s)
	if err != nil {
		return err
	}
	p.render(w, r, http.StatusOK, "revoke", s, "Revoke "+k.Name, k)
	return nil
}

func (p *Portal) revokeKey(w http.ResponseWriter, r *http.Request, s *session) error {
	k, err := p.ownKey(r, s)
	if err != nil {
		return err
	}
	if r.PostFormValue("confirm") != "yes" {
		return errs.E(errs.Invalid, "tick the box to confirm the revocation")
	}
	if _, err := p.Keys.Revoke(r.Context(), actor(s), k.ID, "revoked in the owner portal"); err != nil {
		return err
	}
	http.Redirect(w, r, "/portal/keys/"+k.ID, http.StatusSeeOther)
	return nil
}

// keyDays returns key id's requests per day in [from, to): from the
// owner's key series, one read, unless the owner has so many keys with
// usage that the series is cut short; then from the key's own daily
// totals.
func (p *Portal) keyDays(r *http.Request, owner, id string, from, to time.Time) (map[time.Time]int64, error) {
	byDay := map[time.Time]int64{}
	points, more, err := p.Ledger.KeySeries(r.Context(), owner, plan.Day, from, to, ledger.MaxSeriesPoints)
	if err != nil {
		return nil, err
	}
	if !more {
		for _, pt := range points {
			if pt.KeyID == id {
				byDay[pt.Start] = pt.Requests
			}
		}
		return byDay, nil
	}
	for t := from; t.Before(to); t = t.AddDate(0, 0, 1) {
		tot, err := p.Ledger.Totals(r.Context(), id, plan.Day, t)
		if err != nil {
			return nil, err
		}
		byDay[t] = tot.Requests
	}
	return byDay, nil
}
