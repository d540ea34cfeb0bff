package verify_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/verify"
)

// readCountingLedger is a real ledger that counts the totals read from it
// and can be made unreachable or slow.
type readCountingLedger struct {
	ledger.Ledger
	reads atomic.Int64
	down  atomic.Bool
	// gate, if set, holds every read until it is closed or the read's
	// context ends; started receives a value as each held read begins.
	gate    chan struct{}
	started chan struct{}
}

func (l *readCountingLedger) Totals(ctx context.Context, keyID string, w plan.Window, start time.Time) (ledger.Totals, error) {
	if err := l.read(ctx); err != nil {
		return ledger.Totals{}, err
	}
	return l.Ledger.Totals(ctx, keyID, w, start)
}

func (l *readCountingLedger) OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (ledger.Usage, error) {
	if err := l.read(ctx); err != nil {
		return ledger.Usage{}, err
	}
	return l.Ledger.OwnerUsage(ctx, owner, w, start)
}

// read counts a read, holds it while the gate is set, and fails it while
// the ledger is down.
func (l *readCountingLedger) read(ctx context.Context) error {
	l.reads.Add(1)
	if l.gate != nil {
		l.started <- struct{}{}
		select {
		case <-l.gate:
		case <-ctx.Done():
			return errs.Wrap(errs.Unavailable, ctx.Err(), "the ledger read was cut short")
		}
	}
	if l.down.Load() {
		return errs.E(errs.Unavailable, "the ledger is unreachable")
	}
	return nil
}

// hold makes later reads wait until the returned func is called.
func (l *readCountingLedger) hold() (release func()) {
	l.gate, l.started = make(chan struct{}), make(chan struct{}, 100)
	return func() { close(l.gate) }
}

// quotaEnv is a Quotas over a SQLite ledger and a fake clock.
type quotaEnv struct {
	ledger *readCountingLedger
	quotas *verify.Quotas
	clock  *clock.Fake
	seq    int
}

func newQuotaEnv(t *testing.T, start time.Time, staleness time.Duration) *quotaEnv {
	t.Helper()
	l, err := sqliteledger.Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatalf("open the ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	e := &quotaEnv{ledger: &readCountingLedger{Ledger: l}, clock: clock.NewFake(start)}
	e.quotas = verify.NewQuotas(e.ledger, staleness, slog.New(slog.DiscardHandler))
	return e
}

// count counts n new events of key at the clock's time, each of 1
// request, units units and 1 byte.
func (e *quotaEnv) count(t *testing.T, key string, n int, units int64) {
	t.Helper()
	events := make([]ledger.Counted, n)
	for i := range events {
		e.seq++
		events[i] = ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("evt-%d", e.seq), KeyID: key, Time: e.clock.Now(),
			Requests: 1, Units: units, Bytes: 1}, Owner: "acct"}
	}
	if got, err := e.ledger.Count(context.Background(), events, usage.Retention); got != n || err != nil {
		t.Fatalf("Count: got %d, %v; want %d, nil", got, err, n)
	}
}

// check calls Check at the clock's time and returns its verdict and the
// limit states it reported, by name.
func (e *quotaEnv) check(key string, limits plan.Limits) (bool, map[string]verify.LimitState) {
	states := map[string]verify.LimitState{}
	qs, exceeded := e.quotas.Check(context.Background(), key, limits, e.clock.Now())
	for _, s := range qs.States[:qs.N] {
		states[s.Name] = s
	}
	return exceeded, states
}

// used returns the usage Check reports for limit name.
func (e *quotaEnv) used(t *testing.T, key string, limits plan.Limits, name string) int64 {
	t.Helper()
	_, states := e.check(key, limits)
	s, ok := states[name]
	if !ok || !s.HasUsed {
		t.Fatalf("Check(%s) reported no usage for %s: %+v", key, name, states)
	}
	return s.Used
}

// eventually polls Check until the usage it reports for name is want, for
// at most 5 s of real time: the refresh runs in the background. Any value
// it sees on the way must be in allowed.
func (e *quotaEnv) eventually(t *testing.T, key string, limits plan.Limits, name string, want int64, allowed ...int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.used(t, key, limits, name)
		if got == want {
			return
		}
		ok := false
		for _, a := range allowed {
			ok = ok || got == a
		}
		if !ok {
			t.Fatalf("%s used: got %d, want %d (or, until the refresh lands, one of %v)", name, got, want, allowed)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s used: still %d 5 s after the refresh was due, want %d", name, got, want)
		}
		runtime.Gosched() // let the refresh run; the fake clock does not move
	}
}

const quotaKey = "key_0123456789abcdef"

// TestQuotaStalenessIsBounded: Check reports the counted usage; usage
// counted later may go unseen until Staleness has passed since the last
// read, without any ledger read in between, and is reported within
// Staleness plus one background refresh.
func TestQuotaStalenessIsBounded(t *testing.T) {
	const staleness = 10 * time.Second
	e := newQuotaEnv(t, t0, staleness)
	limits := plan.Limits{"requests_per_day": 1000, "units_per_month": 1_000_000, "requests_per_minute": 10}
	e.count(t, quotaKey, 5, 10)
	if got := e.used(t, quotaKey, limits, "requests_per_day"); got != 5 {
		t.Fatalf("requests_per_day used on the first Check: got %d, want 5 (read through)", got)
	}
	reads := e.ledger.reads.Load()

	e.clock.Advance(time.Second)
	e.count(t, quotaKey, 7, 10)
	for _, d := range []time.Duration{0, staleness / 2, staleness - 1001*time.Millisecond} {
		e.clock.Set(t0.Add(time.Second + d))
		if got := e.used(t, quotaKey, limits, "requests_per_day"); got != 5 && got != 12 {
			t.Errorf("requests_per_day used %v after the first read: got %d, want 5 (cached) or 12", time.Second+d, got)
		}
	}
	if got := e.ledger.reads.Load(); got != reads {
		t.Errorf("ledger reads by Checks within Staleness of the last read: got %d, want 0 (served from the cache)", got-reads)
	}

	e.clock.Set(t0.Add(staleness))
	e.eventually(t, quotaKey, limits, "requests_per_day", 12, 5)
	if got := e.used(t, quotaKey, limits, "units_per_month"); got != 120 {
		t.Errorf("units_per_month used after the refresh: got %d, want 120", got)
	}
}

// TestQuotaExceededAtLimit: a quota is exceeded as soon as the usage
// reaches its limit; a limit of 0 is always exceeded. The limit states
// report the usage, what remains and when the window resets.
func TestQuotaExceededAtLimit(t *testing.T) {
	dayEnd := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	monthEnd := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		limits    plan.Limits
		requests  int // counted before the Check, of 10 units each
		exceeded  bool
		limit     string
		remaining int64
		resetAt   time.Time
	}{
		{"below the limit", plan.Limits{"requests_per_day": 10}, 9, false, "requests_per_day", 1, dayEnd},
		{"at the limit", plan.Limits{"requests_per_day": 10}, 10, true, "requests_per_day", 0, dayEnd},
		{"over the limit", plan.Limits{"requests_per_day": 10}, 11, true, "requests_per_day", 0, dayEnd},
		{"month limit reached", plan.Limits{"units_per_month": 50}, 5, true, "units_per_month", 0, monthEnd},
		{"one of two limits reached", plan.Limits{"requests_per_day": 100, "units_per_month": 50}, 5, true, "units_per_month", 0, monthEnd},
		{"limit 0 without usage", plan.Limits{"bytes_per_day": 0}, 0, true, "bytes_per_day", 0, dayEnd},
		{"limit 0 of another metric", plan.Limits{"requests_per_month": 1000, "bytes_per_day": 0}, 3, true, "bytes_per_day", 0, dayEnd},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newQuotaEnv(t, t0, 0)
			key := fmt.Sprintf("key_%016d", i)
			if tc.requests > 0 {
				e.count(t, key, tc.requests, 10)
			}
			exceeded, states := e.check(key, tc.limits)
			if exceeded != tc.exceeded {
				t.Errorf("Check: got exceeded %v, want %v (states %+v)", exceeded, tc.exceeded, states)
			}
			if len(states) != len(tc.limits) {
				t.Errorf("Check reported %d limit states, want one per limit (%d): %+v", len(states), len(tc.limits), states)
			}
			s := states[tc.limit]
			metric, _, _ := plan.SplitLimitName(tc.limit)
			want := map[string]int64{"requests": int64(tc.requests), "units": 10 * int64(tc.requests), "bytes": int64(tc.requests)}[metric]
			if s.Name != tc.limit || s.Limit != tc.limits[tc.limit] || s.Used != want || !s.HasUsed ||
				s.Remaining != tc.remaining || !s.ResetAt.Equal(tc.resetAt) {
				t.Errorf("limit state: got %+v, want %s limit %d used %d remaining %d reset at %v",
					s, tc.limit, tc.limits[tc.limit], want, tc.remaining, tc.resetAt)
			}
		})
	}
}

// TestNewDayStartsAtZero: right after a UTC midnight Check reports zero
// day usage from its cache, before any refresh (yesterday's total is not
// today's), and keeps the month's unless the month changed too; the next
// refresh brings the new window's usage.
func TestNewDayStartsAtZero(t *testing.T) {
	tests := []struct {
		name          string
		before, after time.Time
		monthKept     bool // month usage is kept across the boundary
	}{
		{"new day", time.Date(2026, 11, 25, 23, 59, 50, 0, time.UTC), time.Date(2026, 11, 26, 0, 0, 1, 0, time.UTC), true},
		{"new month", time.Date(2026, 11, 30, 23, 59, 50, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const staleness = time.Minute
			e := newQuotaEnv(t, tc.before, staleness)
			limits := plan.Limits{"requests_per_day": 100, "requests_per_month": 1000}
			e.count(t, quotaKey, 4, 1)
			if d, m := e.used(t, quotaKey, limits, "requests_per_day"), e.used(t, quotaKey, limits, "requests_per_month"); d != 4 || m != 4 {
				t.Fatalf("before midnight: got day %d, month %d; want 4, 4", d, m)
			}
			reads := e.ledger.reads.Load()

			e.clock.Set(tc.after) // within Staleness: no refresh yet
			wantMonth := int64(4)
			if !tc.monthKept {
				wantMonth = 0
			}
			if d, m := e.used(t, quotaKey, limits, "requests_per_day"), e.used(t, quotaKey, limits, "requests_per_month"); d != 0 || m != wantMonth {
				t.Errorf("after midnight, before a refresh: got day %d, month %d; want 0, %d", d, m, wantMonth)
			}
			if got := e.ledger.reads.Load(); got != reads {
				t.Errorf("ledger reads right after midnight: got %d, want 0 (the cache answers)", got-reads)
			}

			e.count(t, quotaKey, 2, 1)
			e.clock.Set(tc.before.Add(staleness))
			e.eventually(t, quotaKey, limits, "requests_per_day", 2, 0)
			if got := e.used(t, quotaKey, limits, "requests_per_month"); got != wantMonth+2 {
				t.Errorf("month used after the refresh: got %d, want %d", got, wantMonth+2)
			}
		})
	}
}

// TestKeyWithoutQuotasReadsNothing: a key whose limits are all per minute
// (admission control, not metered quotas) costs Check no ledger read and
// reports no usage.
func TestKeyWithoutQuotasReadsNothing(t *testing.T) {
	e := newQuotaEnv(t, t0, 0)
	e.count(t, quotaKey, 3, 1)
	for _, limits := range []plan.Limits{nil, {}, {"requests_per_minute": 10, "units_per_minute": 100, "bytes_per_minute": 0}} {
		exceeded, states := e.check(quotaKey, limits)
		if exceeded || len(states) > 0 {
			t.Errorf("Check(%v): got exceeded %v, states %+v; want false and none", limits, exceeded, states)
		}
	}
	if got := e.ledger.reads.Load(); got != 0 {
		t.Errorf("ledger reads for a key without day or month quotas: got %d, want 0", got)
	}
	// The same key with a day quota does read: the wrapper sees reads.
	if got := e.used(t, quotaKey, plan.Limits{"requests_per_minute": 10, "requests_per_day": 10}, "requests_per_day"); got != 3 {
		t.Errorf("requests_per_day used: got %d, want 3", got)
	}
	if e.ledger.reads.Load() == 0 {
		t.Errorf("a key with a day quota read nothing from the ledger: the read counter is broken")
	}
}

// TestQuotaPassesWhenLedgerIsUnreachable: a key with quotas whose usage
// cannot be read is not refused for them (the sweep enforces quotas
// persistently), and Check reports no usage it does not know.
func TestQuotaPassesWhenLedgerIsUnreachable(t *testing.T) {
	e := newQuotaEnv(t, t0, 0)
	e.count(t, quotaKey, 3, 1)
	e.ledger.down.Store(true)
	exceeded, states := e.check(quotaKey, plan.Limits{"requests_per_day": 1})
	if exceeded || len(states) > 0 {
		t.Errorf("Check with the ledger down: got exceeded %v, states %+v; want false and none", exceeded, states)
	}
	e.ledger.down.Store(false)
	if exceeded, _ := e.check(quotaKey, plan.Limits{"requests_per_day": 1}); !exceeded {
		t.Errorf("Check with the ledger back: got not exceeded, want exceeded (3 requests, limit 1)")
	}
}

// TestReadThroughEndsWithTheRequest: the first request of a key waits
// for its usage only as long as its own context lasts (the check then
// passes), and a request that gave up does not cut short the read that
// another request of the key is waiting for.
func TestReadThroughEndsWithTheRequest(t *testing.T) {
	e := newQuotaEnv(t, t0, 0)
	e.count(t, quotaKey, 3, 1)
	release := e.ledger.hold()
	limits := plan.Limits{"requests_per_day": 1}

	gone, cancel := context.WithCancel(context.Background())
	first := make(chan bool)
	go func() {
		_, exceeded := e.quotas.Check(gone, quotaKey, limits, e.clock.Now())
		first <- exceeded
	}()
	<-e.ledger.started // the shared read has begun
	second := make(chan bool)
	go func() {
		_, exceeded := e.quotas.Check(context.Background(), quotaKey, limits, e.clock.Now())
		second <- exceeded
	}()
	cancel()
	if exceeded := <-first; exceeded {
		t.Errorf("Check whose request ended during the read: got exceeded, want the check passed")
	}
	release()
	if exceeded := <-second; !exceeded {
		t.Errorf("Check waiting on the same read: got not exceeded, want exceeded (3 requests, limit 1): the first request's end cut the read short")
	}
}

// gatedReader is a QuotaReader whose reads wait for the test: each
// returns the totals sent on its channel, or fails when its context ends.
type gatedReader struct {
	totals chan ledger.Totals
	reads  atomic.Int64
}

func (r *gatedReader) Totals(ctx context.Context, _ string, _ plan.Window, _ time.Time) (ledger.Totals, error) {
	r.reads.Add(1)
	select {
	case t := <-r.totals:
		return t, nil
	case <-ctx.Done():
		return ledger.Totals{}, ctx.Err()
	}
}

func (r *gatedReader) OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (ledger.Usage, error) {
	t, err := r.Totals(ctx, owner, w, start)
	return ledger.Usage{Totals: t}, err
}

// TestStopWaitsForRefreshes: Stop returns only once the background
// refresh running has finished, and no refresh starts after it, so none
// reads a ledger that is being closed.
func TestStopWaitsForRefreshes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const staleness = 10 * time.Second
		r := &gatedReader{totals: make(chan ledger.Totals)}
		q := verify.NewQuotas(r, staleness, slog.New(slog.DiscardHandler))
		limits := plan.Limits{"requests_per_day": 100}
		used := func() int64 {
			qs, _ := q.Check(t.Context(), quotaKey, limits, time.Now())
			if qs.N != 1 {
				t.Fatalf("Check reported %d limit states, want 1", qs.N)
			}
			return qs.States[0].Used
		}
		go func() { r.totals <- ledger.Totals{Requests: 1}; r.totals <- ledger.Totals{} }() // day, month
		if got := used(); got != 1 {
			t.Fatalf("requests_per_day used when read through: got %d, want 1", got)
		}
		time.Sleep(staleness)
		used() // stale: a refresh starts and waits for its totals
		synctest.Wait()

		stopped := make(chan struct{})
		go func() {
			q.Stop()
			close(stopped)
		}()
		synctest.Wait()
		select {
		case <-stopped:
			t.Fatal("Stop returned while a refresh was still reading the ledger")
		default:
		}
		r.totals <- ledger.Totals{Requests: 2}
		r.totals <- ledger.Totals{}
		<-stopped
		if got := used(); got != 2 {
			t.Errorf("requests_per_day used after the refresh Stop waited for: got %d, want 2", got)
		}

		reads := r.reads.Load()
		time.Sleep(staleness)
		if got := used(); got != 2 {
			t.Errorf("requests_per_day used after Stop: got %d, want 2 (the cached totals)", got)
		}
		synctest.Wait()
		if got := r.reads.Load() - reads; got != 0 {
			t.Errorf("ledger reads after Stop: got %d, want 0 (no refresh starts)", got)
		}
	})
}
