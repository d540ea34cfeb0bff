package verify_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/race"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/verify"
)

// refusal returns the limit that refused d.
func refusal(t *testing.T, d verify.Decision) verify.LimitState {
	t.Helper()
	i := d.Refused()
	if i < 0 {
		t.Fatalf("%s decision names no limit that refused it: %+v", d.Code, d.Limits())
	}
	return d.Limits()[i]
}

func TestOwnerLimitIsSharedByItsKeys(t *testing.T) {
	e := newEnv(t, nil)
	a := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	b := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	other := e.create(t, keys.CreateRequest{Owner: "proj_2", Plan: "tier1"})
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: a.Secret}, verify.Valid)
	check(t, v, verify.Request{Key: b.Secret}, verify.Valid)
	check(t, v, verify.Request{Key: a.Secret}, verify.Valid)
	d := check(t, v, verify.Request{Key: b.Secret}, verify.RateLimited)
	l := refusal(t, d)
	if l.Scope != verify.ScopeOwner || l.Feature != "" || l.Name != "requests_per_minute" || l.Limit != 3 || l.Remaining != 0 ||
		l.Source != "plan tier1" || !l.ResetAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("refused by %+v, want the owner's requests_per_minute 3 from plan tier1, resetting at the next minute", l)
	}
	if d.RetryAfter != time.Minute {
		t.Errorf("RetryAfter = %v, want 1m", d.RetryAfter)
	}
	// The refusal consumed nothing: the key's own budget is as before.
	for _, s := range d.Limits() {
		if s.Scope == verify.ScopeKey && s.Name == "requests_per_minute" && s.Remaining != 99 {
			t.Errorf("key b's remaining = %d after its refused request, want 99 (one admitted)", s.Remaining)
		}
	}
	check(t, v, verify.Request{Key: other.Secret}, verify.Valid) // another owner's budget is its own
	e.clock.Advance(time.Minute)
	check(t, v, verify.Request{Key: b.Secret}, verify.Valid)
}

func TestFeatureLimitsAndRestrictions(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	only := e.create(t, keys.CreateRequest{Owner: "proj_3", Plan: "tier1", Restrictions: &store.Restrictions{AllowedFeatures: []string{"flash"}}})
	open := e.create(t, keys.CreateRequest{Owner: "proj_4", Plan: "free"})
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: k.Secret, Feature: "pro-model", Units: 10}, verify.Valid)
	d := check(t, v, verify.Request{Key: k.Secret, Feature: "pro-model"}, verify.RateLimited)
	if l := refusal(t, d); l.Scope != verify.ScopeOwner || l.Feature != "pro-model" || l.Name != "requests_per_minute" || l.Limit != 1 || l.Source != "plan tier1" {
		t.Errorf("refused by %+v, want the owner's pro-model requests_per_minute 1 from plan tier1", l)
	}
	check(t, v, verify.Request{Key: k.Secret, Feature: "flash"}, verify.Valid) // another feature has its own limits
	// The plan names its features: any other is refused, as a model API
	// refuses an unknown model.
	if d := check(t, v, verify.Request{Key: k.Secret, Feature: "ultra"}, verify.Forbidden); d.Reason != verify.ReasonFeatureNotOffered {
		t.Errorf("unknown feature: reason %q", d.Reason)
	}
	// A plan without features offers every feature.
	check(t, v, verify.Request{Key: open.Secret, Feature: "anything"}, verify.Valid)
	// A key restricted to features.
	check(t, v, verify.Request{Key: only.Secret, Feature: "flash"}, verify.Valid)
	if d := check(t, v, verify.Request{Key: only.Secret, Feature: "pro-model"}, verify.Forbidden); d.Reason != verify.ReasonFeatureNotAllowed {
		t.Errorf("feature outside allowed_features: reason %q", d.Reason)
	}
	if d := check(t, v, verify.Request{Key: only.Secret}, verify.Forbidden); d.Reason != verify.ReasonFeatureMissing {
		t.Errorf("no feature on a feature-restricted key: reason %q", d.Reason)
	}
}

// A key-level refusal names the key and where its value came from.
func TestKeyLimitRefusalNamesItsSource(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Plan: "tiny", Limits: plan.Limits{"requests_per_minute": 1}})
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
	l := refusal(t, check(t, v, verify.Request{Key: k.Secret}, verify.RateLimited))
	if l.Scope != verify.ScopeKey || l.Source != verify.SourceKeyOverride || l.Limit != 1 {
		t.Errorf("refused by %+v, want the key's own override", l)
	}
	// A limit the key does not override comes from its plan.
	plain := e.create(t, keys.CreateRequest{Plan: "tiny"})
	l = refusal(t, check(t, v, verify.Request{Key: plain.Secret, Units: 500}, verify.RateLimited))
	if l.Scope != verify.ScopeKey || l.Name != "units_per_minute" || l.Source != "plan tiny" || l.Limit != 100 {
		t.Errorf("refused by %+v, want the key's units_per_minute 100 from plan tiny", l)
	}
}

// An owner's change reaches the verifier of the process that made it at
// once, and others through the owners' change feed.
func TestOwnerChangesReachVerify(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	local := e.verifier(&verify.Options{SyncInterval: time.Hour})
	remote := e.verifier(nil)
	svc := &owners.Service{Store: e.store, Plans: e.plans, Clock: e.clock, Observer: local}
	for _, v := range []*verify.Verifier{local, remote} {
		check(t, v, verify.Request{Key: k.Secret, Feature: "pro-model"}, verify.Valid)
		check(t, v, verify.Request{Key: k.Secret, Feature: "pro-model"}, verify.RateLimited)
	}
	if _, err := svc.Update(context.Background(), "test", "proj_1", owners.UpdateRequest{
		Features: &map[string]plan.Limits{"pro-model": {"requests_per_minute": 2}}}); err != nil {
		t.Fatal(err)
	}
	d := check(t, local, verify.Request{Key: k.Secret, Feature: "pro-model"}, verify.Valid)
	for _, s := range d.Limits() {
		if s.Feature == "pro-model" && s.Name == "requests_per_minute" && (s.Limit != 2 || s.Source != verify.SourceOwnerOverride) {
			t.Errorf("after the override: %+v", s)
		}
	}
	e.clock.Advance(2 * time.Second) // past the remote's sync interval: it polls the feed
	check(t, remote, verify.Request{Key: k.Secret, Feature: "pro-model"}, verify.Valid)
	// A tier change: tier2's owner limit is 10, its pro-model limit 5.
	tier2 := "tier2"
	if _, err := svc.Update(context.Background(), "test", "proj_1", owners.UpdateRequest{Plan: &tier2, Features: &map[string]plan.Limits{}}); err != nil {
		t.Fatal(err)
	}
	d = check(t, local, verify.Request{Key: k.Secret, Feature: "pro-model"}, verify.Valid)
	for _, s := range d.Limits() {
		if s.Scope == verify.ScopeOwner && s.Name == "requests_per_minute" && s.Feature == "" && (s.Limit != 10 || s.Source != "plan tier2") {
			t.Errorf("after the tier change: %+v", s)
		}
	}
}

// A cached verify counted against the key's, the owner's and the
// feature's limits allocates nothing more than one against the key's.
func TestCachedVerifyWithOwnerAndFeatureAllocations(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier2"})
	v := e.verifier(nil)
	req := verify.Request{Key: k.Secret, Feature: "pro-model"}
	check(t, v, req, verify.Valid)
	if race.Enabled {
		return // the race detector makes sync.Pool drop items
	}
	e.clock.Advance(time.Minute) // a fresh window: tier2's limits admit the runs below
	if n := testing.AllocsPerRun(3, func() { v.Verify(context.Background(), req) }); n > 0 {
		t.Errorf("a cached verify with owner and feature limits allocates %v times, want 0", n)
	}
}

// N+k concurrent verifies of two keys of one owner admit exactly the
// owner's limit.
func TestOwnerLimitIsExactUnderConcurrency(t *testing.T) {
	e := newEnv(t, nil)
	a := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	b := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	v := e.verifier(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := range 40 {
		secret := a.Secret
		if i%2 == 1 {
			secret = b.Secret
		}
		wg.Go(func() {
			d, err := v.Verify(context.Background(), verify.Request{Key: secret})
			if err == nil && d.Code == verify.Valid {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if admitted != 3 {
		t.Errorf("%d of 40 concurrent verifies admitted, want exactly the owner's 3", admitted)
	}
}

// An owner's day and month quotas, and those of its features, are
// enforced at verify from the ledger's owner counters: every key of the
// owner is refused once the owner's usage reaches them, and the refusal
// names the owner scope, the feature and the source.
func TestOwnerAndFeatureQuotas(t *testing.T) {
	e := newEnv(t, nil)
	a := e.create(t, keys.CreateRequest{Owner: "proj_q", Plan: "daily"})
	b := e.create(t, keys.CreateRequest{Owner: "proj_q", Plan: "daily"})
	other := e.create(t, keys.CreateRequest{Owner: "proj_r", Plan: "daily"})
	l, err := sqliteledger.Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	quotas := verify.NewQuotas(l, time.Nanosecond, slog.New(slog.DiscardHandler))
	t.Cleanup(quotas.Stop)
	v := e.verifier(&verify.Options{Quota: quotas})
	seq := 0
	meter := func(keyID, feature string, requests, units int64) {
		t.Helper()
		seq++
		ev := ledger.Counted{Event: usage.Event{ID: fmt.Sprint("evt-", seq), KeyID: keyID, Time: e.clock.Now(),
			Requests: requests, Units: units, Feature: feature}, Owner: "proj_q"}
		if n, err := l.Count(context.Background(), []ledger.Counted{ev}, usage.Retention); n != 1 || err != nil {
			t.Fatalf("Count: %d, %v", n, err)
		}
	}
	// settle lets the quotas' background refresh land: each try moves
	// the clock past the staleness.
	settle := func(key string, feature string, want verify.Code) verify.Decision {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			e.clock.Advance(time.Millisecond)
			d, err := v.Verify(context.Background(), verify.Request{Key: key, Feature: feature})
			if err != nil {
				t.Fatal(err)
			}
			if d.Code == want || time.Now().After(deadline) {
				if d.Code != want {
					t.Fatalf("Verify(feature %q) = %s, want %s (limits %+v)", feature, d.Code, want, d.Limits())
				}
				return d
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	meter(a.Key.ID, "pro-model", 1, 60)
	settle(b.Secret, "pro-model", verify.Valid)
	meter(b.Key.ID, "pro-model", 1, 40) // the owner's pro-model units reach 100 this month
	d := settle(a.Secret, "pro-model", verify.UsageExceeded)
	if l := refusal(t, d); l.Scope != verify.ScopeOwner || l.Feature != "pro-model" || l.Name != "units_per_month" ||
		l.Limit != 100 || l.Used != 100 || l.Remaining != 0 || l.Source != "plan daily" || !l.ResetAt.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("refused by %+v, want the owner's pro-model units_per_month 100 from plan daily, reset on December 1", l)
	}
	settle(b.Secret, "flash", verify.Valid)         // another feature
	settle(other.Secret, "pro-model", verify.Valid) // another owner

	meter(a.Key.ID, "flash", 3, 0) // 5 requests today: the owner's requests_per_day
	d = settle(b.Secret, "flash", verify.UsageExceeded)
	if l := refusal(t, d); l.Scope != verify.ScopeOwner || l.Feature != "" || l.Name != "requests_per_day" || l.Limit != 5 || l.Used != 5 {
		t.Errorf("refused by %+v, want the owner's requests_per_day 5", l)
	}
	settle(b.Secret, "", verify.UsageExceeded) // every key, with or without a feature
	// An override raises the owner's quota; the refusal is lifted.
	svc := &owners.Service{Store: e.store, Plans: e.plans, Clock: e.clock, Observer: v}
	if _, err := svc.Update(context.Background(), "test", "proj_q", owners.UpdateRequest{Limits: &plan.Limits{"requests_per_day": 6}}); err != nil {
		t.Fatal(err)
	}
	d = settle(b.Secret, "flash", verify.Valid)
	for _, s := range d.Limits() {
		if s.Scope == verify.ScopeOwner && s.Name == "requests_per_day" && (s.Limit != 6 || s.Source != verify.SourceOwnerOverride || s.Remaining != 1) {
			t.Errorf("after the override: %+v", s)
		}
	}
	// A new day starts the owner's day quota at zero.
	meter(a.Key.ID, "", 1, 0)
	settle(a.Secret, "", verify.UsageExceeded)
	e.clock.Advance(24 * time.Hour)
	settle(a.Secret, "", verify.Valid)
}
