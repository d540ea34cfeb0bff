package sweep_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/verify"
)

// ownersService is the owners.Service of the env, told to v.
func (e *env) ownersService(v *verify.Verifier) *owners.Service {
	svc := &owners.Service{Store: e.store, Plans: e.plans, Clock: e.clock, Logger: slog.New(slog.DiscardHandler),
		Notifier: notify.OwnerEvents{Service: e.notify}, Spend: e.ledger}
	if v != nil {
		svc.Observer = v
	}
	return svc
}

// useFeature counts requests of key k on feature at time at.
func (e *env) useFeature(k *store.Key, feature string, requests int64, at time.Time) {
	e.t.Helper()
	e.nEvents++
	ev := ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("evt-%d", e.nEvents), KeyID: k.ID, Time: at, Requests: requests, Feature: feature}, Owner: k.Owner}
	if _, err := e.ledger.Count(context.Background(), []ledger.Counted{ev}, usage.Retention); err != nil {
		e.t.Fatal(err)
	}
}

func TestOwnerOverQuotaIsSuspendedThenLiftedAtWindowReset(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a, b := e.key("proj_1", "team"), e.key("proj_1", "team")
		calm := e.key("proj_2", "team")
		e.use(a.Key, 6, t0.Add(-time.Hour))
		e.use(b.Key, 5, t0.Add(-time.Hour)) // 11 > 10: the owner's requests_per_day
		e.use(calm.Key, 10, t0.Add(-time.Hour))
		e.clock.Advance(time.Second)
		v := verify.New(e.store, e.keys.Hasher, e.plans, e.clock, &verify.Options{Logger: slog.New(slog.DiscardHandler)})
		sw := e.sweeper()
		sw.Owners = e.ownersService(v)

		if rep := e.run(sw, true); len(rep.OwnersSuspended) != 1 || e.payloads(notify.OwnerSuspended) != nil {
			t.Fatalf("dry run: suspended %+v, notifications %v; want one reported, nothing sent", rep.OwnersSuspended, e.payloads(notify.OwnerSuspended))
		}
		rep := e.run(sw, false)
		tomorrow := time.Date(2030, 1, 16, 0, 0, 0, 0, time.UTC)
		want := sweep.OwnerSuspend{Owner: "proj_1", Limit: "requests_per_day", Window: "day", Used: 11, Max: 10, Until: tomorrow}
		if len(rep.OwnersSuspended) != 1 || rep.OwnersSuspended[0] != want || rep.OwnersScanned != 2 {
			t.Fatalf("suspended %+v (of %d scanned), want %+v of 2", rep.OwnersSuspended, rep.OwnersScanned, want)
		}
		// Every key of the owner is refused, naming the owner's quota.
		for _, k := range []string{a.Secret, b.Secret} {
			d, err := v.Verify(context.Background(), verify.Request{Key: k, Feature: "flash"})
			if err != nil || d.Code != verify.UsageExceeded {
				t.Fatalf("verify = %v, %v; want USAGE_EXCEEDED", d.Code, err)
			}
			l := d.Limits()[d.Refused()]
			if l.Scope != verify.ScopeOwner || l.Name != "requests_per_day" || l.Limit != 10 || l.Used != 11 || !l.ResetAt.Equal(tomorrow) || l.Source != "plan team" {
				t.Errorf("refused by %+v", l)
			}
		}
		if d, _ := v.Verify(context.Background(), verify.Request{Key: calm.Secret}); d.Code != verify.Valid {
			t.Errorf("another owner: %s, want VALID", d.Code)
		}
		// Told once, however often the sweep runs; audited once.
		e.clock.Advance(time.Minute)
		if rep := e.run(sw, false); len(rep.OwnersSuspended) != 0 || len(rep.OwnersLifted) != 0 {
			t.Errorf("second run: %+v %+v, want nothing", rep.OwnersSuspended, rep.OwnersLifted)
		}
		if n := e.payloads(notify.OwnerSuspended); len(n) != 1 || n[0]["limit"] != "requests_per_day" || n[0]["used"] != 11.0 {
			t.Errorf("owner.suspended notifications: %v, want one", n)
		}
		es, _, err := e.store.ListAudit(context.Background(), store.AuditQuery{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		suspends := 0
		for _, a := range es {
			if a.Action == owners.ActionSuspend {
				suspends++
				if a.Actor != sweep.Actor || a.Details["owner"] != "proj_1" || a.Details["until"] != tomorrow.Format(time.RFC3339) {
					t.Errorf("audit entry: %+v", a)
				}
			}
		}
		if suspends != 1 {
			t.Errorf("owner.suspend audit entries: %d, want 1", suspends)
		}

		// The window resets: the next run lifts it and tells the owner.
		e.clock.Set(tomorrow.Add(time.Minute))
		rep = e.run(sw, false)
		if len(rep.OwnersLifted) != 1 || rep.OwnersLifted[0].Reason != owners.ReasonWindowReset {
			t.Fatalf("lifted %+v, want proj_1 at window_reset", rep.OwnersLifted)
		}
		if d, _ := v.Verify(context.Background(), verify.Request{Key: a.Secret}); d.Code != verify.Valid {
			t.Errorf("after the lift: %s, want VALID", d.Code)
		}
		if n := e.payloads(notify.OwnerReinstated); len(n) != 1 || n[0]["reason"] != "window_reset" {
			t.Errorf("owner.reinstated notifications: %v, want one", n)
		}
	})
}

func TestOwnerFeatureQuotaSuspendsThatFeatureAndARaisedLimitLiftsIt(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		k := e.key("proj_f", "team")
		e.useFeature(k.Key, "pro-model", 6, t0.Add(-time.Hour)) // 6 > 5 this month
		e.clock.Advance(time.Second)
		v := verify.New(e.store, e.keys.Hasher, e.plans, e.clock, &verify.Options{Logger: slog.New(slog.DiscardHandler)})
		svc := e.ownersService(v)
		sw := e.sweeper()
		sw.Owners = svc
		rep := e.run(sw, false)
		monthEnd := time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)
		want := sweep.OwnerSuspend{Owner: "proj_f", Limit: "requests_per_month", Feature: "pro-model", Window: "month", Used: 6, Max: 5, Until: monthEnd}
		if len(rep.OwnersSuspended) != 1 || rep.OwnersSuspended[0] != want {
			t.Fatalf("suspended %+v, want %+v", rep.OwnersSuspended, want)
		}
		d, _ := v.Verify(context.Background(), verify.Request{Key: k.Secret, Feature: "pro-model"})
		if d.Code != verify.UsageExceeded || d.Limits()[d.Refused()].Feature != "pro-model" {
			t.Errorf("pro-model: %s %+v, want USAGE_EXCEEDED on the feature", d.Code, d.Limits())
		}
		if d, _ := v.Verify(context.Background(), verify.Request{Key: k.Secret, Feature: "flash"}); d.Code != verify.Valid {
			t.Errorf("flash: %s, want VALID: a feature's suspension is that feature's", d.Code)
		}
		// An operator raises the owner's pro-model quota: the next run
		// lifts the suspension although its window has not ended.
		e.clock.Advance(time.Minute)
		if _, err := svc.Update(context.Background(), "admin", "proj_f", owners.UpdateRequest{
			Features: &map[string]plan.Limits{"pro-model": {"requests_per_month": 100}}}); err != nil {
			t.Fatal(err)
		}
		rep = e.run(sw, false)
		if len(rep.OwnersLifted) != 1 || rep.OwnersLifted[0].Reason != owners.ReasonLimitRaised {
			t.Fatalf("lifted %+v, want proj_f for limit_raised", rep.OwnersLifted)
		}
		if d, _ := v.Verify(context.Background(), verify.Request{Key: k.Secret, Feature: "pro-model"}); d.Code != verify.Valid {
			t.Errorf("after the raise: %s, want VALID", d.Code)
		}
	})
}

// spend counts one request of key k costing micros at time at.
func (e *env) spend(k *store.Key, micros int64, at time.Time) {
	e.t.Helper()
	e.nEvents++
	ev := ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("evt-%d", e.nEvents), KeyID: k.ID, Time: at, Requests: 1}, Owner: k.Owner, Cost: micros}
	if _, err := e.ledger.Count(context.Background(), []ledger.Counted{ev}, usage.Retention); err != nil {
		e.t.Fatal(err)
	}
}

// The sweep tells an owner when its month's spend reaches 50, 80 and 100
// % of its cap, each once a month (a threshold jumped over is told too),
// never in a dry run, and again in a new month.
func TestSpendAlertsOncePerThresholdPerMonth(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		k := e.key("acct_s", "capped")
		sw := e.sweeper()
		sw.Owners = e.ownersService(nil)
		thresholds := func(rep sweep.Report) (out []int) {
			for _, a := range rep.SpendAlerts {
				if a.Owner != "acct_s" || a.Cap != "1.000000" || a.Currency != "USD" {
					t.Errorf("alert %+v", a)
				}
				out = append(out, a.Threshold)
			}
			return out
		}
		sent := func() int { return len(e.payloads(notify.SpendThreshold)) }
		e.spend(k.Key, 400_000, t0.Add(-time.Hour))
		if got := thresholds(e.run(sw, false)); len(got) != 0 {
			t.Fatalf("at 40 %%: alerts %v", got)
		}
		e.spend(k.Key, 450_000, t0.Add(-time.Hour)) // 85 %: 50 and 80 at once
		if got := thresholds(e.run(sw, true)); fmt.Sprint(got) != "[50 80]" || sent() != 0 {
			t.Fatalf("dry run at 85 %%: alerts %v, %d sent; want [50 80] reported, none sent", got, sent())
		}
		if got := thresholds(e.run(sw, false)); fmt.Sprint(got) != "[50 80]" || sent() != 2 {
			t.Fatalf("at 85 %%: alerts %v, %d sent; want [50 80], 2", got, sent())
		}
		if got := thresholds(e.run(sw, false)); len(got) != 0 || sent() != 2 {
			t.Fatalf("again at 85 %%: alerts %v, %d sent; want none new", got, sent())
		}
		e.spend(k.Key, 150_000, t0.Add(-time.Hour))
		rep := e.run(sw, false)
		if got := thresholds(rep); fmt.Sprint(got) != "[100]" || sent() != 3 || rep.SpendAlerts[0].Spend != "1.000000" {
			t.Fatalf("at 100 %%: alerts %+v, %d sent", rep.SpendAlerts, sent())
		}
		var full map[string]any
		for _, p := range e.payloads(notify.SpendThreshold) {
			if p["threshold"] == 100.0 {
				full = p
			}
		}
		if full["owner"] != "acct_s" || full["spend"] != "1.000000" || full["cap"] != "1.000000" || full["month"] != "2030-01-01T00:00:00Z" {
			t.Errorf("spend.threshold data of 100 %%: %v", full)
		}
		// A new month starts over.
		next := time.Date(2030, 2, 1, 1, 0, 0, 0, time.UTC)
		e.clock.Set(next)
		e.spend(k.Key, 500_000, next.Add(-time.Minute))
		if got := thresholds(e.run(sw, false)); fmt.Sprint(got) != "[50]" || sent() != 4 {
			t.Fatalf("next month at 50 %%: alerts %v, %d sent", got, sent())
		}
	})
}
