package sweep_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/verify"
)

// t0 is 10:30 UTC on a Wednesday: mid-day, mid-month.
var t0 = time.Date(2030, 1, 15, 10, 30, 0, 0, time.UTC)

const plansJSON = `{"plans": {
  "tiny":    {"scopes": ["generate"], "limits": {"requests_per_day": 10, "units_per_month": 1000}},
  "roomy":   {"scopes": ["generate"], "limits": {"requests_per_day": 1000000}},
  "spiky":   {"scopes": ["generate"], "limits": {}, "abuse": {"spike": {"floor": 100, "factor": 10}}},
  "watched": {"scopes": ["generate"], "limits": {}, "abuse": {"distinct_ips": {"max_per_day": 2}}},
  "team":    {"scopes": ["generate"], "limits": {}, "owner_limits": {"requests_per_day": 10},
              "features": {"pro-model": {"requests_per_month": 5}, "flash": {}}},
  "capped":  {"scopes": ["generate"], "limits": {}, "prices": {"*": {"per_request": "0.01"}}, "spend_cap": {"monthly": "1.00"}}}}`

type env struct {
	t       *testing.T
	clock   *clock.Fake
	store   *countingStore
	ledger  ledger.Ledger
	vault   *filevault.Vault
	keys    *keys.Service
	notify  *notify.Service
	nstore  notify.Store
	topic   *recordingTopic
	plans   *plan.Catalog
	nEvents int
}

// newEnv returns a sweep's world on b: eachBackend calls it.
func newEnv(t *testing.T, b backend) *env {
	t.Helper()
	dir := t.TempDir()
	st, l, ns := b.open(t)
	v, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	plans, err := plan.Parse([]byte(plansJSON), false)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("pepper"), 6))
	e := &env{t: t, clock: clock.NewFake(t0), store: &countingStore{Store: st}, ledger: l, vault: v, nstore: ns,
		topic: &recordingTopic{}, plans: plans}
	log := slog.New(slog.DiscardHandler)
	e.notify = &notify.Service{Registry: ns, Deliveries: ns, Vault: v, Topic: e.topic, Clock: e.clock, Logger: log}
	e.keys = &keys.Service{Store: e.store, Vault: v, Hasher: h, Plans: plans, Prefix: "kp_test", Clock: e.clock, Logger: log,
		Notifier: notify.KeyEvents{Service: e.notify}}
	return e
}

// sweeper returns a new Sweeper: a new process, remembering nothing.
func (e *env) sweeper() *sweep.Sweeper {
	return &sweep.Sweeper{Store: e.store, Ledger: e.ledger, Plans: e.plans, Notify: e.notify, Keys: e.keys,
		Clock: e.clock, Logger: slog.New(slog.DiscardHandler)}
}

func (e *env) run(s *sweep.Sweeper, dry bool) sweep.Report {
	e.t.Helper()
	rep, err := s.Run(context.Background(), sweep.Options{DryRun: dry})
	if err != nil {
		e.t.Fatalf("Run: %v", err)
	}
	return rep
}

// key creates a key of plan p for owner, with a webhook subscribed to
// every event.
func (e *env) key(owner, p string) *keys.Created {
	e.t.Helper()
	ctx := context.Background()
	if err := e.nstore.Put(ctx, notify.OwnerWebhook{Owner: owner, URL: "https://hooks.example.com/" + owner, Events: notify.EventTypes}); err != nil {
		e.t.Fatal(err)
	}
	c, err := e.keys.Create(ctx, "admin", keys.CreateRequest{Owner: owner, Plan: p}, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// use counts requests of key k at time at.
func (e *env) use(k *store.Key, requests int64, at time.Time) {
	e.t.Helper()
	e.nEvents++
	ev := ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("evt-%d", e.nEvents), KeyID: k.ID, Time: at, Requests: requests}, Owner: k.Owner}
	if _, err := e.ledger.Count(context.Background(), []ledger.Counted{ev}, usage.Retention); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(id string) *store.Key {
	e.t.Helper()
	k, err := e.store.GetKey(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// notifications returns the queued notifications of type typ, by key id.
func (e *env) notifications(typ string) map[string][]map[string]any {
	e.t.Helper()
	out := map[string][]map[string]any{}
	for _, d := range e.payloads(typ) {
		k := d["key_id"].(string)
		out[k] = append(out[k], d)
	}
	return out
}

// payloads returns the data of the queued notifications of type typ.
func (e *env) payloads(typ string) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, id := range e.topic.ids() {
		d, err := e.nstore.GetDelivery(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if d.Type != typ {
			continue
		}
		var p struct {
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(d.Payload, &p); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, p.Data)
	}
	return out
}

func (e *env) audit(id string) []store.AuditEntry {
	e.t.Helper()
	es, _, err := e.store.ListAudit(context.Background(), store.AuditQuery{KeyID: id, PageSize: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

type recordingTopic struct {
	mu   sync.Mutex
	seen map[string]bool
	fail atomic.Bool
}

func (r *recordingTopic) Publish(ctx context.Context, msgs ...queue.Message) error {
	if r.fail.Load() {
		return errs.E(errs.Unavailable, "topic down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	for _, m := range msgs {
		r.seen[m.Attributes["notification_id"]] = true
	}
	return nil
}

func (r *recordingTopic) Close() error { return nil }

func (r *recordingTopic) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// countingStore counts the keys the sweep reads and can fail GetKeys.
type countingStore struct {
	store.Store
	keysRead     atomic.Int64
	getKeysCalls atomic.Int64
	failGetKeyAt atomic.Int64 // fail the nth GetKeys call (1-based); 0 never
}

func (s *countingStore) GetKeys(ctx context.Context, ids []string) (map[string]*store.Key, error) {
	n := s.getKeysCalls.Add(1)
	if n == s.failGetKeyAt.Load() {
		return nil, errs.E(errs.Unavailable, "injected outage")
	}
	s.keysRead.Add(int64(len(ids)))
	return s.Store.GetKeys(ctx, ids)
}

func TestQuotaSuspensionUntilTheWindowEndsThenReenabled(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "tiny")
		e.use(c.Key, 11, t0.Add(-time.Hour))
		e.clock.Advance(time.Second) // audit entries order by time
		v := verify.New(e.store, e.keys.Hasher, e.plans, e.clock, &verify.Options{Logger: slog.New(slog.DiscardHandler)})
		verifies := func(want verify.Code) {
			t.Helper()
			if err := v.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d, err := v.Verify(context.Background(), verify.Request{Key: c.Secret}); err != nil || d.Code != want {
				t.Fatalf("verify = %v, %v; want %s", d.Code, err, want)
			}
		}
		verifies(verify.Valid) // cached

		rep := e.run(e.sweeper(), false)
		e.clock.Advance(time.Second)
		verifies(verify.Disabled) // after one poll of the change feed
		tomorrow := time.Date(2030, 1, 16, 0, 0, 0, 0, time.UTC)
		if len(rep.Disabled) != 1 {
			t.Fatalf("disabled = %+v, want the key", rep.Disabled)
		}
		d := rep.Disabled[0]
		if d.KeyID != c.Key.ID || d.Reason != "quota_exceeded" || d.Limit != "requests_per_day" || d.Window != "day" ||
			d.Used != 11 || d.Max != 10 || d.Until == nil || !d.Until.Equal(tomorrow) {
			t.Errorf("decision = %+v", d)
		}
		k := e.get(c.Key.ID)
		if k.Status != store.Disabled || k.StatusReason != "quota_exceeded" || k.DisabledUntil == nil || !k.DisabledUntil.Equal(tomorrow) {
			t.Errorf("key = %s %q until %v", k.Status, k.StatusReason, k.DisabledUntil)
		}
		if a := e.audit(c.Key.ID)[0]; a.Actor != "sweep" || a.Action != keys.ActionDisable || a.Details["used"] != "11" || a.Details["limit"] != "requests_per_day" {
			t.Errorf("audit = %+v", a)
		}
		if _, err := e.vault.KeySecret(context.Background(), c.Key.ID); !errs.Is(err, errs.FailedPrecondition) {
			t.Errorf("secret of a suspended key: %v, want its version disabled", err)
		}
		dis := e.notifications(notify.KeyDisabled)[c.Key.ID]
		if len(dis) != 1 || dis[0]["reason"] != "quota_exceeded" || dis[0]["evidence"].(map[string]any)["used"] != 11.0 {
			t.Errorf("key.disabled notifications = %v", dis)
		}
		th := e.notifications(notify.UsageThreshold)[c.Key.ID]
		if len(th) != 2 {
			t.Errorf("usage.threshold notifications = %v, want 80%% and 100%% of requests_per_day", th)
		}

		// The suspension holds until the window ends: later runs change nothing.
		e.clock.Advance(time.Hour)
		if rep := e.run(e.sweeper(), false); len(rep.Disabled)+len(rep.Reenabled)+len(rep.Thresholds) != 0 {
			t.Errorf("second run = %+v, want nothing to do", rep)
		}
		e.clock.Set(tomorrow.Add(time.Minute))
		rep = e.run(e.sweeper(), false)
		if len(rep.Reenabled) != 1 || rep.Reenabled[0].KeyID != c.Key.ID || rep.Reenabled[0].Reason != "window_reset" {
			t.Fatalf("reenabled = %+v", rep.Reenabled)
		}
		if k := e.get(c.Key.ID); k.Status != store.Active || k.DisabledUntil != nil {
			t.Errorf("key after the window reset = %s until %v", k.Status, k.DisabledUntil)
		}
		verifies(verify.Valid)
		if _, err := e.vault.KeySecret(context.Background(), c.Key.ID); err != nil {
			t.Errorf("secret after re-enable: %v", err)
		}
		if en := e.notifications(notify.KeyEnabled)[c.Key.ID]; len(en) != 1 || en[0]["reason"] != "window_reset" {
			t.Errorf("key.enabled notifications = %v", en)
		}
		if a := e.audit(c.Key.ID)[0]; a.Actor != "sweep" || a.Action != keys.ActionEnable || a.Details["reason"] != "window_reset" {
			t.Errorf("audit = %+v", a)
		}
	})
}

func TestThresholdsAreNotifiedOncePerKeyLimitAndWindow(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "tiny")
		e.use(c.Key, 8, t0)
		rep := e.run(e.sweeper(), false)
		if len(rep.Thresholds) != 1 || rep.Thresholds[0].Threshold != 80 || len(rep.Disabled) != 0 {
			t.Fatalf("report = %+v, want the 80%% threshold only", rep)
		}
		e.run(e.sweeper(), false) // a new process: no memory of the first
		e.use(c.Key, 2, t0)       // exactly the limit: 100%, not over it
		rep = e.run(e.sweeper(), false)
		if len(rep.Thresholds) != 1 || rep.Thresholds[0].Threshold != 100 || len(rep.Disabled) != 0 {
			t.Errorf("report = %+v, want the 100%% threshold and no disable at used == max", rep)
		}
		if th := e.notifications(notify.UsageThreshold)[c.Key.ID]; len(th) != 2 {
			t.Errorf("notifications = %v, want one per threshold", th)
		}
		// The next day is a new window: 80% notifies again.
		e.clock.Advance(24 * time.Hour)
		e.use(c.Key, 9, e.clock.Now())
		if rep := e.run(e.sweeper(), false); len(rep.Thresholds) != 1 {
			t.Errorf("next day = %+v, want a new 80%% threshold", rep.Thresholds)
		}
	})
}

func TestManualDisablesAndRevokedKeysAreLeftAlone(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		manual := e.key("acct_1", "tiny")
		revoked := e.key("acct_1", "tiny")
		e.use(manual.Key, 50, t0)
		e.use(revoked.Key, 50, t0)
		if _, err := e.keys.Disable(ctx, "ops", manual.Key.ID, "investigating"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.keys.Revoke(ctx, "ops", revoked.Key.ID, "leaked"); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			rep := e.run(e.sweeper(), false)
			if len(rep.Disabled)+len(rep.Reenabled) != 0 {
				t.Errorf("report = %+v, want nothing done", rep)
			}
			e.clock.Advance(25 * time.Hour) // past every day window
		}
		if k := e.get(manual.Key.ID); k.Status != store.Disabled || k.StatusReason != "investigating" {
			t.Errorf("manually disabled key = %s %q", k.Status, k.StatusReason)
		}
		if k := e.get(revoked.Key.ID); k.Status != store.Revoked {
			t.Errorf("revoked key = %s", k.Status)
		}
	})
}

func TestDryRunChangesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "tiny")
		e.use(c.Key, 11, t0)
		rep := e.run(e.sweeper(), true)
		if !rep.DryRun || len(rep.Disabled) != 1 || len(rep.Thresholds) != 2 || !rep.Complete {
			t.Errorf("dry run report = %+v, want one disable and two thresholds", rep)
		}
		if k := e.get(c.Key.ID); k.Status != store.Active {
			t.Errorf("key = %s after a dry run", k.Status)
		}
		if ids := e.topic.ids(); len(ids) != 0 {
			t.Errorf("dry run queued notifications %v", ids)
		}
		if _, err := e.store.GetCheckpoint(context.Background(), sweep.CheckpointName); !errs.Is(err, errs.NotFound) {
			t.Errorf("dry run wrote a checkpoint: %v", err)
		}
		if len(e.audit(c.Key.ID)) != 1 {
			t.Errorf("audit = %+v, want only the creation", e.audit(c.Key.ID))
		}
	})
}

func TestSpikeDisablesForGood(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "spiky")
		// Created two days ago, used 5 requests an hour since yesterday.
		e.clock.Advance(-48 * time.Hour)
		old := e.key("acct_2", "spiky")
		e.clock.Set(t0)
		yesterday := time.Date(2030, 1, 14, 0, 0, 0, 0, time.UTC)
		for h := range 24 + 10 {
			e.use(old.Key, 5, yesterday.Add(time.Duration(h)*time.Hour))
		}
		e.use(old.Key, 101, t0) // over the floor (100) and over 10 × 5
		e.use(c.Key, 500, t0)   // created this hour: no baseline yet
		rep := e.run(e.sweeper(), false)
		if len(rep.Disabled) != 1 {
			t.Fatalf("disabled = %+v, want the old key only", rep.Disabled)
		}
		d := rep.Disabled[0]
		if d.KeyID != old.Key.ID || d.Reason != "abuse_spike" || d.Window != "hour" || d.Used != 101 || d.Max != 100 ||
			d.BaselinePerHour == nil || *d.BaselinePerHour != 5 || d.Until != nil {
			t.Errorf("decision = %+v (baseline %v)", d, d.BaselinePerHour)
		}
		e.clock.Advance(72 * time.Hour)
		if rep := e.run(e.sweeper(), false); len(rep.Reenabled) != 0 {
			t.Errorf("an abuse disable was lifted: %+v", rep.Reenabled)
		}
		if k := e.get(old.Key.ID); k.Status != store.Disabled || k.StatusReason != "abuse_spike" {
			t.Errorf("key = %s %q", k.Status, k.StatusReason)
		}
	})
}

func TestDistinctClientIPsDisable(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "watched")
		ok := e.key("acct_1", "watched")
		e.use(c.Key, 1, t0)
		e.use(ok.Key, 1, t0)
		day, _ := plan.Day.Bounds(t0)
		err := e.ledger.AddClientIPs(context.Background(), day, map[string][]string{
			c.Key.ID:  {"203.0.113.1", "203.0.113.2", "198.51.100.7"},
			ok.Key.ID: {"203.0.113.1", "203.0.113.2"},
		})
		if err != nil {
			t.Fatal(err)
		}
		rep := e.run(e.sweeper(), false)
		if len(rep.Disabled) != 1 {
			t.Fatalf("disabled = %+v, want one key", rep.Disabled)
		}
		d := rep.Disabled[0]
		if d.KeyID != c.Key.ID || d.Reason != "abuse_distinct_ips" || d.Used != 3 || d.Max != 2 || len(d.IPs) != 3 {
			t.Errorf("decision = %+v", d)
		}
		dis := e.notifications(notify.KeyDisabled)[c.Key.ID]
		if len(dis) != 1 || len(dis[0]["evidence"].(map[string]any)["ips"].([]any)) != 3 {
			t.Errorf("notification = %v, want the IPs as evidence", dis)
		}
	})
}

// Sweeps running at once, in separate processes, over 40 keys over quota:
// every key is disabled once, audited once, notified once.
func TestConcurrentSweepsNeverDoubleDisableOrNotify(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		var ids []string
		for i := range 40 {
			c := e.key(fmt.Sprintf("acct_%d", i%7), "tiny")
			e.use(c.Key, 11, t0)
			ids = append(ids, c.Key.ID)
		}
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			reports []sweep.Report
		)
		for range 3 {
			wg.Go(func() {
				s := e.sweeper()
				s.PageSize = 7
				rep, err := s.Run(context.Background(), sweep.Options{})
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				reports = append(reports, rep)
				mu.Unlock()
			})
		}
		wg.Wait()
		disabled := map[string]int{}
		for _, r := range reports {
			for _, d := range r.Disabled {
				disabled[d.KeyID]++
			}
		}
		notes := e.notifications(notify.KeyDisabled)
		for _, id := range ids {
			if disabled[id] != 1 {
				t.Errorf("%s disabled by %d runs", id, disabled[id])
			}
			n := 0
			for _, a := range e.audit(id) {
				if a.Action == keys.ActionDisable {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s has %d disable audit entries", id, n)
			}
			if len(notes[id]) != 1 {
				t.Errorf("%s: %d key.disabled notifications", id, len(notes[id]))
			}
			if th := e.notifications(notify.UsageThreshold)[id]; len(th) != 2 {
				t.Errorf("%s: %d usage.threshold notifications, want 2", id, len(th))
			}
		}
	})
}

func TestResumesFromTheCheckpointAfterAFailure(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		for range 25 {
			c := e.key("acct_1", "roomy")
			e.use(c.Key, 1, t0)
		}
		s := e.sweeper()
		s.PageSize = 10
		e.store.failGetKeyAt.Store(2)
		if _, err := s.Run(context.Background(), sweep.Options{}); !errs.Is(err, errs.Unavailable) {
			t.Fatalf("Run = %v, want the injected outage", err)
		}
		if got := e.store.keysRead.Load(); got != 10 {
			t.Fatalf("read %d keys before the failure, want one page", got)
		}
		rep := e.run(s, false)
		if rep.Scanned != 15 || !rep.Complete {
			t.Errorf("resumed run scanned %d (complete %v), want the 15 keys after the checkpoint", rep.Scanned, rep.Complete)
		}
		// The pass is complete: the next run starts a new one.
		if rep := e.run(s, false); rep.Scanned != 25 {
			t.Errorf("next pass scanned %d, want 25", rep.Scanned)
		}
	})
}

// slowLedger advances the clock on every page of keys with usage.
type slowLedger struct {
	ledger.Ledger
	clock *clock.Fake
	step  time.Duration
}

func (l slowLedger) OwnerTotals(ctx context.Context, owner string, w plan.Window, start time.Time, size int, token string) ([]ledger.KeyTotals, string, error) {
	l.clock.Advance(l.step)
	return l.Ledger.OwnerTotals(ctx, owner, w, start, size, token)
}

func TestBudgetStopsARunAndTheNextContinues(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		for range 30 {
			c := e.key("acct_1", "roomy")
			e.use(c.Key, 1, t0)
		}
		s := e.sweeper()
		s.Ledger = slowLedger{Ledger: e.ledger, clock: e.clock, step: 40 * time.Second}
		s.PageSize, s.Budget = 10, time.Minute
		rep := e.run(s, false)
		if rep.Complete || rep.Scanned != 20 {
			t.Errorf("first run: scanned %d, complete %v; want 2 pages, incomplete", rep.Scanned, rep.Complete)
		}
		rep = e.run(s, false)
		if !rep.Complete || rep.Scanned != 10 {
			t.Errorf("second run: scanned %d, complete %v; want the last page, complete", rep.Scanned, rep.Complete)
		}
	})
}

// hookLedger calls before ahead of every page of keys with usage.
type hookLedger struct {
	ledger.Ledger
	before func()
}

func (l hookLedger) OwnerTotals(ctx context.Context, owner string, w plan.Window, start time.Time, size int, token string) ([]ledger.KeyTotals, string, error) {
	l.before()
	return l.Ledger.OwnerTotals(ctx, owner, w, start, size, token)
}

// A change made late in a long run is stamped when it is made, not when
// the run began, so the change feed carries it to a verifier that polled
// while the run was going on.
func TestChangesLateInARunReachVerifiers(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "tiny")
		e.use(c.Key, 11, t0)
		ctx := context.Background()
		v := verify.New(e.store, e.keys.Hasher, e.plans, e.clock, &verify.Options{Logger: slog.New(slog.DiscardHandler)})
		if d, err := v.Verify(ctx, verify.Request{Key: c.Secret}); err != nil || d.Code != verify.Valid {
			t.Fatalf("verify before the run = %v, %v; want VALID (and the key cached)", d.Code, err)
		}
		s := e.sweeper()
		s.Ledger = hookLedger{Ledger: e.ledger, before: func() {
			e.clock.Advance(40 * time.Second) // the run has been going on for a while
			if err := v.Sync(ctx); err != nil {
				t.Error(err)
			}
		}}
		if rep := e.run(s, false); len(rep.Disabled) != 1 {
			t.Fatalf("disabled = %+v, want the key", rep.Disabled)
		}
		e.clock.Advance(time.Second)
		if err := v.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if d, err := v.Verify(ctx, verify.Request{Key: c.Secret}); err != nil || d.Code != verify.Disabled {
			t.Errorf("verify after the run = %v, %v; want DISABLED from the change feed", d.Code, err)
		}
	})
}

// A run that stops between disabling a key and telling its owner: the next
// run finishes the notification, and only once.
func TestNextRunFinishesTheEffectsOfAnInterruptedOne(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.key("acct_1", "tiny")
		e.use(c.Key, 11, t0)
		e.topic.fail.Store(true)
		if _, err := e.sweeper().Run(context.Background(), sweep.Options{}); err == nil {
			t.Fatal("Run succeeded with the notifications topic down")
		}
		if k := e.get(c.Key.ID); k.Status != store.Disabled {
			t.Fatalf("key = %s, want disabled before the notification failed", k.Status)
		}
		e.topic.fail.Store(false)
		e.clock.Advance(time.Minute)
		rep := e.run(e.sweeper(), false)
		if rep.Recovered != 1 {
			t.Errorf("recovered = %d, want 1", rep.Recovered)
		}
		if n := e.notifications(notify.KeyDisabled)[c.Key.ID]; len(n) != 1 {
			t.Errorf("key.disabled notifications = %d, want 1", len(n))
		}
		e.clock.Advance(time.Minute)
		e.run(e.sweeper(), false)
		if n := e.notifications(notify.KeyDisabled)[c.Key.ID]; len(n) != 1 {
			t.Errorf("key.disabled notifications after another run = %d, want 1", len(n))
		}
	})
}

// Keys without usage today are never read: the sweep's cost follows the
// keys with usage.
func TestReadsOnlyKeysWithUsageToday(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		for i := range 40 {
			c := e.key("acct_1", "roomy")
			switch {
			case i < 5:
				e.use(c.Key, 1, t0)
			case i < 10:
				e.use(c.Key, 1, t0.Add(-24*time.Hour)) // yesterday only
			}
		}
		rep := e.run(e.sweeper(), false)
		if rep.Scanned != 5 || e.store.keysRead.Load() != 5 {
			t.Errorf("scanned %d, read %d keys; want the 5 with usage today", rep.Scanned, e.store.keysRead.Load())
		}
	})
}

// countingLedger counts the per-key reads of the rules.
type countingLedger struct {
	ledger.Ledger
	totals atomic.Int64
}

func (l *countingLedger) Totals(ctx context.Context, id string, w plan.Window, at time.Time) (ledger.Totals, error) {
	l.totals.Add(1)
	return l.Ledger.Totals(ctx, id, w, at)
}

// A process does not re-read or re-judge a key nothing has changed for,
// and reads yesterday's totals once a day.
func TestUnchangedKeysAreNotJudgedAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.clock.Advance(-48 * time.Hour)
		a := e.key("acct_1", "spiky")
		b := e.key("acct_1", "spiky")
		e.clock.Set(t0)
		e.use(a.Key, 5, t0)
		e.use(b.Key, 5, t0)
		l := &countingLedger{Ledger: e.ledger}
		s := e.sweeper()
		s.Ledger = l
		run := func() (sweep.Report, int64) {
			before := l.totals.Load()
			rep := e.run(s, false)
			return rep, l.totals.Load() - before
		}
		if rep, reads := run(); rep.Unchanged != 0 || reads != 4 {
			t.Errorf("first run: unchanged %d, %d reads; want 0 and hour+yesterday for each key", rep.Unchanged, reads)
		}
		if rep, reads := run(); rep.Unchanged != 2 || reads != 0 {
			t.Errorf("nothing changed: unchanged %d, %d reads; want 2 and none", rep.Unchanged, reads)
		}
		e.use(a.Key, 1, t0)
		if rep, reads := run(); rep.Unchanged != 1 || reads != 1 {
			t.Errorf("a used again: unchanged %d, %d reads; want 1 and a's hour only (yesterday is remembered)", rep.Unchanged, reads)
		}
		e.clock.Advance(time.Hour)
		if rep, reads := run(); rep.Unchanged != 0 || reads != 2 {
			t.Errorf("next hour: unchanged %d, %d reads; want both judged again (hour only)", rep.Unchanged, reads)
		}
		if rep := e.run(s, true); rep.Unchanged != 0 || rep.Scanned != 2 {
			t.Errorf("dry run: %+v; want every key judged", rep)
		}
	})
}
