package sweep

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/pagetoken"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// CheckpointName is the store checkpoint the sweep keeps its progress in.
const CheckpointName = "sweep"

// Defaults.
const (
	DefaultPageSize = 500
	DefaultBudget   = 4 * time.Minute
	DefaultWorkers  = 8
	// recoveryWindow is how far back a run with no record of an earlier
	// run looks for sweep changes whose effects may be unfinished.
	recoveryWindow = 10 * time.Minute
	// recoveryMargin is how much before the last finished run's start a
	// run looks, for clock skew between instances.
	recoveryMargin = 2 * time.Minute
)

// Sweeper runs sweeps. Store, Ledger, Plans and Keys are required.
type Sweeper struct {
	// Store is read for the keys to judge and keeps the checkpoint; it is
	// the store Keys writes to.
	Store  store.Store
	Ledger ledger.Ledger
	Plans  *plan.Catalog
	// Keys makes every key state change the sweep decides on (Suspend,
	// Lift, FinishSweepChange: what each writes, audits and tells the
	// owner is its to decide) and reaps abandoned provisioning intents in
	// each run.
	Keys *keys.Service
	// Owners, if set, has owners over their day and month quotas
	// suspended and their suspensions lifted (sweepOwners); nil judges
	// keys only.
	Owners *owners.Service
	// Notify tells owners about quota thresholds; nil tells no one.
	Notify *notify.Service
	Clock  clock.Clock  // default clock.Real
	Logger *slog.Logger // default slog.Default()

	PageSize int           // keys with usage read per page (DefaultPageSize)
	Budget   time.Duration // how long a run sweeps before it checkpoints and stops (DefaultBudget)
	Workers  int           // keys whose usage is read at once (DefaultWorkers)

	once sync.Once
	// done remembers notifications and effects this process completed,
	// so that a key over 80% of its quota costs no notification lookups
	// in every run. Losing it (a new instance) costs duplicate lookups,
	// never duplicate notifications: those are deduplicated by id.
	done *lru.Cache[string, struct{}]
	// judged remembers what this process last judged each key on (see
	// judgement), so that a key nothing has changed for is not read and
	// judged again in every run.
	judged *lru.Cache[string, judgement]

	// Tracer, if set, traces each run; nil traces nothing.
	Tracer trace.Tracer
	// actions counts what runs did, by kind (Actions).
	actions [numActions]atomic.Uint64
}

// The kinds of sweep action, for Actions.
const (
	ActionDisabled  = iota // a key disabled by a rule
	ActionReenabled        // a key re-enabled when its suspension ended
	ActionThreshold        // a quota threshold notified
	ActionReaped           // an abandoned provisioning intent reaped
	numActions
)

// ActionKinds names the kinds of action, by index.
var ActionKinds = [numActions]string{"disabled", "reenabled", "threshold", "reaped"}

// Actions returns how many actions of each kind (by index, as
// ActionKinds) the runs of s took, dry runs excepted.
func (s *Sweeper) Actions() [numActions]uint64 {
	var a [numActions]uint64
	for i := range s.actions {
		a[i] = s.actions[i].Load()
	}
	return a
}

// count adds what rep did to the action counters.
func (s *Sweeper) count(rep Report) {
	if rep.DryRun {
		return
	}
	s.actions[ActionDisabled].Add(uint64(len(rep.Disabled) + len(rep.Quarantined)))
	s.actions[ActionReenabled].Add(uint64(len(rep.Reenabled)))
	s.actions[ActionThreshold].Add(uint64(len(rep.Thresholds)))
	s.actions[ActionReaped].Add(uint64(rep.Reaped))
}

// judgement is what a key was judged on. If its usage today, its record
// and the hour are the same in the next run, so is every rule's outcome
// (the spike baseline changes only with the hour; a key's usage and its
// client IPs grow together, both being its traffic), and the key is
// skipped. yesterday's totals do not change during a day, so they are read
// once.
type judgement struct {
	day, hour time.Time
	today     ledger.Totals
	updatedAt time.Time
	yesterday *ledger.Totals
}

// judgedSize bounds the memory of judgements: about 150 bytes each.
const judgedSize = 200_000

// Options select how a run behaves.
type Options struct {
	// DryRun reports what the sweep would do and changes nothing: no key,
	// secret, checkpoint or notification is written.
	DryRun bool
}

// Report says what a run did (or, in a dry run, would do).
type Report struct {
	DryRun  bool `json:"dry_run"`
	Scanned int  `json:"scanned"` // keys with usage today read by this run
	// Complete is false when the run stopped at its budget: the next run
	// continues the pass where this one stopped.
	Complete   bool        `json:"complete"`
	Disabled   []Disable   `json:"disabled"`
	Reenabled  []Reenable  `json:"reenabled"`
	Thresholds []Threshold `json:"thresholds"` // notified now (in a dry run: reached)
	// Quarantined are the leak quarantines whose grace ended: each key
	// disabled for the leak (in a dry run: would be).
	Quarantined []QuarantineEnd `json:"quarantined"`
	// Unchanged counts the scanned keys this process judged before and
	// found nothing changed for (their usage today, record and hour), so
	// did not read or judge again.
	Unchanged int `json:"unchanged"`
	// OwnersScanned counts the owners with usage today judged against
	// their quotas; OwnersSuspended and OwnersLifted are what came of it.
	OwnersScanned   int            `json:"owners_scanned"`
	OwnersSuspended []OwnerSuspend `json:"owners_suspended"`
	OwnersLifted    []OwnerLift    `json:"owners_lifted"`
	// SpendAlerts are the spend thresholds (50, 80, 100 % of a monthly
	// cap) owners were told of (spend.threshold), each once a month.
	SpendAlerts []owners.SpendAlert `json:"spend_alerts"`
	Recovered   int                 `json:"recovered"` // earlier sweep changes whose effects this run made sure of
	Reaped      int                 `json:"reaped"`    // abandoned provisioning intents removed
	StartedAt   time.Time           `json:"started_at"`
	FinishedAt  time.Time           `json:"finished_at"`
}

// QuarantineEnd is a leak quarantine ended because its grace did: the
// key is disabled with reason leaked.
type QuarantineEnd struct {
	KeyID  string    `json:"key_id"`
	Reason string    `json:"reason"` // leaked
	Until  time.Time `json:"until"`  // when the grace ended
}

// Reenable is a quota suspension lifted because its window ended.
type Reenable struct {
	KeyID  string    `json:"key_id"`
	Reason string    `json:"reason"` // window_reset
	Until  time.Time `json:"until"`  // when the suspension ended
}

// progress is the checkpoint's data.
type progress struct {
	Day   time.Time `json:"day"`   // the day whose keys with usage the pass walks
	After string    `json:"after"` // the last key id swept; "" at the start
	Done  bool      `json:"done"`  // the pass is complete
	// RecoverFrom is the start of the last run that finished: a run makes
	// sure of the effects of sweep changes made since then.
	RecoverFrom time.Time `json:"recover_from"`
}

func (s *Sweeper) now() time.Time {
	if s.Clock == nil {
		return time.Now().UTC().Truncate(time.Microsecond)
	}
	return s.Clock.Now().UTC().Truncate(time.Microsecond)
}

func (s *Sweeper) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func orDefault[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// seen reports whether id was marked done in this process.
func (s *Sweeper) seen(id string) bool {
	s.init()
	return s.done.Contains(id)
}

func (s *Sweeper) init() {
	s.once.Do(func() {
		s.done, _ = lru.New[string, struct{}](100_000)
		s.judged, _ = lru.New[string, judgement](judgedSize)
	})
}

func (s *Sweeper) markDone(id string) { s.seen(id); s.done.Add(id, struct{}{}) }

// Run sweeps once: it re-enables quota suspensions whose window ended,
// makes sure of the effects of recent sweep changes an earlier run may not
// have finished, then walks the keys with usage today from where the last
// run stopped, disabling keys that break a rule and notifying quota
// thresholds, until the pass is complete or the budget is spent. Every
// change is conditional on the key being in the state it was judged in,
// so runs may overlap (see the package comment). An error stops the run;
// what it finished stands, and the next run continues from its checkpoint.
func (s *Sweeper) Run(ctx context.Context, opts Options) (rep Report, err error) {
	now := s.now()
	rep = Report{DryRun: opts.DryRun, StartedAt: now, Disabled: []Disable{}, Reenabled: []Reenable{}, Quarantined: []QuarantineEnd{}, Thresholds: []Threshold{},
		OwnersSuspended: []OwnerSuspend{}, OwnersLifted: []OwnerLift{}, SpendAlerts: []owners.SpendAlert{}}
	if s.Keys == nil {
		return rep, errs.E(errs.Internal, "sweep: Sweeper.Keys is required: it makes the changes the sweep decides on")
	}
	deadline := now.Add(orDefault(s.Budget, DefaultBudget))
	if s.Tracer != nil {
		var span trace.Span
		ctx, span = s.Tracer.Start(ctx, "sweep.run", trace.WithAttributes(attribute.Bool("keyplane.sweep.dry_run", opts.DryRun)))
		defer func() {
			span.SetAttributes(attribute.Int("keyplane.sweep.scanned", rep.Scanned),
				attribute.Int("keyplane.sweep.disabled", len(rep.Disabled)),
				attribute.Bool("keyplane.sweep.complete", rep.Complete))
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, "sweep failed")
			}
			span.End()
		}()
	}
	defer func() { rep.FinishedAt = s.now(); s.count(rep) }()

	cp, prog, err := s.checkpoint(ctx)
	if err != nil {
		return rep, err
	}
	if err := s.reenableDue(ctx, now, deadline, opts.DryRun, &rep); err != nil {
		return rep, err
	}
	if err := s.endQuarantines(ctx, now, deadline, opts.DryRun, &rep); err != nil {
		return rep, err
	}
	if !opts.DryRun {
		if err := s.recover(ctx, prog.RecoverFrom, now, &rep); err != nil {
			return rep, err
		}
	}
	dayStart, _ := plan.Day.Bounds(now)
	if opts.DryRun || !prog.Day.Equal(dayStart) || prog.Done {
		prog.Day, prog.After, prog.Done = dayStart, "", false
	}
	for !rep.Complete && s.now().Before(deadline) {
		token := ""
		if prog.After != "" {
			token = pagetoken.Encode(time.Time{}, prog.After)
		}
		page, next, err := s.Ledger.OwnerTotals(ctx, "", plan.Day, dayStart, orDefault(s.PageSize, DefaultPageSize), token)
		if err != nil {
			return rep, fmt.Errorf("sweep: list keys with usage: %w", err)
		}
		if err := s.sweepPage(ctx, page, now, opts.DryRun, &rep); err != nil {
			return rep, err
		}
		rep.Scanned += len(page)
		if len(page) > 0 {
			prog.After = page[len(page)-1].KeyID
		}
		prog.Done, rep.Complete = next == "", next == ""
		if !opts.DryRun {
			if cp, err = s.saveProgress(ctx, cp, prog); err != nil {
				return rep, err
			}
		}
	}
	if s.Owners != nil {
		if err := s.sweepOwners(ctx, now, deadline, opts.DryRun, &rep); err != nil {
			return rep, err
		}
	}
	if opts.DryRun {
		return rep, nil
	}
	if rep.Reaped, err = s.Keys.ReapAbandoned(ctx); err != nil {
		return rep, fmt.Errorf("sweep: reap abandoned provisioning: %w", err)
	}
	prog.RecoverFrom = now
	_, err = s.saveProgress(ctx, cp, prog)
	return rep, err
}

// checkpoint reads the sweep's checkpoint; a missing one is a fresh start.
func (s *Sweeper) checkpoint(ctx context.Context) (store.Checkpoint, progress, error) {
	cp, err := s.Store.GetCheckpoint(ctx, CheckpointName)
	switch {
	case errs.Is(err, errs.NotFound):
		return store.Checkpoint{Name: CheckpointName}, progress{}, nil
	case err != nil:
		return cp, progress{}, fmt.Errorf("sweep: read checkpoint: %w", err)
	}
	var p progress
	if err := json.Unmarshal(cp.Data, &p); err != nil {
		// A checkpoint only this package writes does not decode: start a
		// new pass rather than never sweep again.
		s.logger().Error("sweep checkpoint does not decode; starting a new pass", "error", err)
		return cp, progress{}, nil
	}
	return cp, p, nil
}

// saveProgress stores p unless a concurrent run stored progress at least
// as far along, and returns the checkpoint as stored.
func (s *Sweeper) saveProgress(ctx context.Context, cp store.Checkpoint, p progress) (store.Checkpoint, error) {
	for range 5 {
		data, _ := json.Marshal(p) // cannot fail
		cp.Data = data
		saved, err := s.Store.SaveCheckpoint(ctx, cp, s.now())
		if err == nil {
			return saved, nil
		}
		if !errs.Is(err, errs.Conflict) {
			return cp, fmt.Errorf("sweep: save checkpoint: %w", err)
		}
		stored, sp, err := s.checkpoint(ctx)
		if err != nil {
			return cp, err
		}
		cp = stored
		if sp.RecoverFrom.After(p.RecoverFrom) {
			p.RecoverFrom = sp.RecoverFrom
		}
		if sp.Day.Equal(p.Day) && (sp.Done || sp.After >= p.After) && !sp.RecoverFrom.Before(p.RecoverFrom) {
			return cp, nil // another run is as far along
		}
	}
	return cp, errs.E(errs.Unavailable, "sweep: the checkpoint is contended; try again")
}

// reenableDue lifts the quota suspensions whose window has ended, page by
// page until the deadline (the next run lifts the rest: after midnight UTC
// there may be many, each a Secret Manager write).
func (s *Sweeper) reenableDue(ctx context.Context, now, deadline time.Time, dry bool, rep *Report) error {
	size := orDefault(s.PageSize, DefaultPageSize)
	var afterUntil time.Time
	afterID := ""
	for s.now().Before(deadline) {
		ks, err := s.Store.DueSuspensions(ctx, now, afterUntil, afterID, min(size, 1000))
		if err != nil {
			return fmt.Errorf("sweep: list due suspensions: %w", err)
		}
		for _, k := range ks {
			if !keys.Liftable(k, now) {
				continue // only the sweep's own quota suspensions end by themselves
			}
			until := *k.DisabledUntil
			if !dry {
				lifted, err := s.reenable(ctx, k)
				if err != nil {
					return err
				}
				if !lifted {
					continue
				}
			}
			rep.Reenabled = append(rep.Reenabled, Reenable{KeyID: k.ID, Reason: keys.ReasonWindowReset, Until: until})
		}
		if len(ks) < min(size, 1000) {
			return nil
		}
		last := ks[len(ks)-1]
		afterUntil, afterID = *last.DisabledUntil, last.ID
	}
	return nil
}

// endQuarantines ends the leak quarantines whose grace has ended (each
// key disabled for the leak: Keys.EndQuarantine), page by page until the
// deadline; the next run ends the rest.
func (s *Sweeper) endQuarantines(ctx context.Context, now, deadline time.Time, dry bool, rep *Report) error {
	size := min(orDefault(s.PageSize, DefaultPageSize), 1000)
	var afterUntil time.Time
	afterID := ""
	for s.now().Before(deadline) {
		ks, err := s.Store.DueQuarantines(ctx, now, afterUntil, afterID, size)
		if err != nil {
			return fmt.Errorf("sweep: list due quarantines: %w", err)
		}
		for _, k := range ks {
			until := k.Quarantine.Until
			if !dry {
				nk, ended, err := s.Keys.EndQuarantine(ctx, Actor, k)
				if ended {
					s.logger().InfoContext(ctx, "sweep disabled a quarantined leaked key at the end of its grace",
						"key_id", k.ID, "owner", k.Owner, "until", until)
				}
				if err != nil {
					return fmt.Errorf("sweep: end the quarantine of %s: %w", k.ID, err)
				}
				if !ended {
					continue // revoked, or changed since it was listed
				}
				s.markDone(effectID(nk))
			} else if k.Status == store.Revoked || k.Status == store.Disabled && k.StatusReason == keys.ReasonLeaked && k.DisabledUntil == nil {
				continue // EndQuarantine would only close the record
			}
			rep.Quarantined = append(rep.Quarantined, QuarantineEnd{KeyID: k.ID, Reason: keys.ReasonLeaked, Until: until})
		}
		if len(ks) < size {
			return nil
		}
		last := ks[len(ks)-1]
		afterUntil, afterID = last.Quarantine.Until, last.ID
	}
	return nil
}

// reenable asks Keys to lift k's suspension and reports whether it did:
// a key changed since it was listed (by an operator or another run) is not
// ours to lift, and Keys leaves it alone.
func (s *Sweeper) reenable(ctx context.Context, k *store.Key) (bool, error) {
	nk, lifted, err := s.Keys.Lift(ctx, Actor, k)
	if err != nil {
		return false, fmt.Errorf("sweep: re-enable %s: %w", k.ID, err)
	}
	if lifted {
		s.markDone(effectID(nk))
	}
	return lifted, nil
}

// sweepPage judges one page of keys with usage today.
func (s *Sweeper) sweepPage(ctx context.Context, page []ledger.KeyTotals, now time.Time, dry bool, rep *Report) error {
	if len(page) == 0 {
		return nil
	}
	ids := make([]string, len(page))
	for i, t := range page {
		ids[i] = t.KeyID
	}
	ks, err := s.Store.GetKeys(ctx, ids)
	if err != nil {
		return fmt.Errorf("sweep: read keys: %w", err)
	}
	type item struct {
		k *store.Key
		p *plan.Plan
		o observed
		j judgement
	}
	s.init()
	day, _ := plan.Day.Bounds(now)
	hour, _ := plan.Hour.Bounds(now)
	items := make([]item, 0, len(page))
	for _, t := range page {
		k := ks[t.KeyID]
		if k == nil || k.Status != store.Active {
			continue // nothing to judge: gone, revoked, or already disabled
		}
		j, _ := s.judged.Get(k.ID)
		if j.day != day {
			j = judgement{}
		}
		if !dry && j.hour == hour && j.today == t.Totals && j.updatedAt.Equal(k.UpdatedAt) {
			rep.Unchanged++
			continue
		}
		j.day, j.hour, j.today, j.updatedAt = day, hour, t.Totals, k.UpdatedAt
		p, _ := s.Plans.Get(k.Plan)
		items = append(items, item{k: k, p: p, o: observed{Day: t.Totals}, j: j})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(orDefault(s.Workers, DefaultWorkers))
	for i := range items {
		g.Go(func() error { return s.observe(gctx, items[i].k, items[i].p, &items[i].o, &items[i].j, now) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, it := range items {
		d, thresholds := evaluate(it.k, it.p, it.o, now)
		switch {
		case d != nil && dry:
			rep.Disabled = append(rep.Disabled, *d)
		case d != nil:
			if err := s.disable(ctx, it.k, *d, rep); err != nil {
				return err
			}
		}
		for _, t := range thresholds {
			if err := s.threshold(ctx, it.k, t, dry, rep); err != nil {
				return err
			}
		}
		if !dry {
			s.judged.Add(it.k.ID, it.j)
		}
	}
	return nil
}

// observe reads what the rules that apply to k need beyond its day totals.
func (s *Sweeper) observe(ctx context.Context, k *store.Key, p *plan.Plan, o *observed, j *judgement, now time.Time) error {
	n := needsOf(k, p)
	var err error
	read := func(w plan.Window, at time.Time, into *ledger.Totals) {
		if err == nil {
			*into, err = s.Ledger.Totals(ctx, k.ID, w, at)
		}
	}
	if n.month {
		read(plan.Month, now, &o.Month)
	}
	if n.spike {
		read(plan.Hour, now, &o.Hour)
		if j.yesterday == nil {
			read(plan.Day, now.AddDate(0, 0, -1), &o.Yesterday)
			y := o.Yesterday
			j.yesterday = &y
		}
		o.Yesterday = *j.yesterday
	}
	if n.ips && err == nil {
		day, _ := plan.Day.Bounds(now)
		o.IPs, o.IPSample, err = s.Ledger.ClientIPs(ctx, k.ID, day, maxIPSample)
	}
	if err != nil {
		return fmt.Errorf("sweep: read usage of %s: %w", k.ID, err)
	}
	return nil
}

// disable asks Keys to suspend k for d, if k is still the version that
// was judged; a key changed since is left alone, and the next pass judges
// it again.
func (s *Sweeper) disable(ctx context.Context, k *store.Key, d Disable, rep *Report) error {
	nk, suspended, err := s.Keys.Suspend(ctx, Actor, k, keys.Suspension{Reason: d.Reason, Until: d.Until, Evidence: d.evidence()})
	if suspended {
		rep.Disabled = append(rep.Disabled, d)
		s.logger().InfoContext(ctx, "sweep disabled a key", "key_id", k.ID, "owner", k.Owner, "reason", d.Reason,
			"limit", d.Limit, "used", d.Used, "max", d.Max)
	}
	if err != nil {
		return fmt.Errorf("sweep: disable %s: %w", k.ID, err)
	}
	if suspended {
		s.markDone(effectID(nk))
	}
	return nil
}

// recover makes sure of the effects (secret state, owner notification) of
// the sweep changes made since the last finished run began: a run that
// stopped between changing a key and telling its owner is finished here
// (Keys.FinishSweepChange, which knows the sweep's changes by their
// reasons). Both effects are idempotent.
func (s *Sweeper) recover(ctx context.Context, from, now time.Time, rep *Report) error {
	since := now.Add(-recoveryWindow)
	if !from.IsZero() {
		since = from.Add(-recoveryMargin)
	}
	afterID := ""
	for {
		ks, err := s.Store.ChangedKeys(ctx, since, afterID, 1000)
		if err != nil {
			return fmt.Errorf("sweep: read recent key changes: %w", err)
		}
		for _, k := range ks {
			id := effectID(k)
			if s.seen(id) {
				continue
			}
			swept, err := s.Keys.FinishSweepChange(ctx, k)
			if err != nil {
				return fmt.Errorf("sweep: finish the change of %s: %w", k.ID, err)
			}
			if swept {
				s.markDone(id)
				rep.Recovered++
			}
		}
		if len(ks) < 1000 {
			return nil
		}
		since, afterID = ks[len(ks)-1].UpdatedAt, ks[len(ks)-1].ID
	}
}

// effectID identifies one sweep change of a key (its id, status and the
// change's time) in the memory of the changes whose effects this process
// made.
func effectID(k *store.Key) string {
	return "sweep|" + k.ID + "|" + string(k.Status) + "|" + k.UpdatedAt.UTC().Format(time.RFC3339Nano)
}

// threshold notifies the owner that k reached t, once per key, limit,
// window and threshold.
func (s *Sweeper) threshold(ctx context.Context, k *store.Key, t Threshold, dry bool, rep *Report) error {
	ev := notify.UsageThresholdEvent(notify.UsageThresholdData{KeyID: k.ID, Owner: k.Owner, Limit: t.Limit, Threshold: t.Threshold,
		Used: t.Used, Max: t.Max, WindowStart: t.WindowStart, WindowEnd: t.WindowEnd}, s.now())
	if dry {
		rep.Thresholds = append(rep.Thresholds, t)
		return nil
	}
	if s.Notify == nil || s.seen(ev.ID) {
		return nil
	}
	_, outcome, err := s.Notify.Notify(ctx, k.Owner, ev)
	if err != nil {
		return fmt.Errorf("sweep: notify the owner of %s: %w", k.ID, err)
	}
	if outcome == notify.Queued {
		rep.Thresholds = append(rep.Thresholds, t)
	}
	s.markDone(ev.ID)
	return nil
}
