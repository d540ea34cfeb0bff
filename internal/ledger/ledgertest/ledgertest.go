package ledgertest

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/usage"
)

// Harness is a fresh ledger and the hooks some tests need. A nil hook skips
// the tests that need it.
type Harness struct {
	Ledger ledger.Ledger
	// Break makes the ledger's commits fail with errs.Unavailable after
	// the next n succeed, until Repair is called. Adapters implement it
	// with a Breaker.
	Break  func(n int)
	Repair func()
	// Advance moves the ledger's clock forward by d. A ledger with this
	// hook forgets an event id whose retention has passed by the next
	// Count, so that the ids it keeps stay bounded.
	Advance func(d time.Duration)
	// SetClock sets the ledger's clock to t: Count tells by it whether an
	// event's month has ended.
	SetClock func(t time.Time)
}

// Breaker fails commits on demand. Its Hook is what an adapter calls
// before each commit (the adapter's own tests install it); Break and
// Repair are the Harness hooks. The zero value lets every commit through.
type Breaker struct {
	mu     sync.Mutex
	broken bool
	left   int
}

// Hook returns nil while b lets commits through and an errs.Unavailable
// error once it is broken and its allowance is spent.
func (b *Breaker) Hook() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.broken {
		return nil
	}
	if b.left > 0 {
		b.left--
		return nil
	}
	return errs.E(errs.Unavailable, "ledgertest: commits are broken")
}

// Break lets n more commits through, then fails the rest.
func (b *Breaker) Break(n int) {
	b.mu.Lock()
	b.broken, b.left = true, n
	b.mu.Unlock()
}

// Repair lets every commit through again.
func (b *Breaker) Repair() {
	b.mu.Lock()
	b.broken, b.left = false, 0
	b.mu.Unlock()
}

// Run runs the conformance suite. Each subtest calls open once for a fresh,
// empty ledger and closes it when it ends; open releases anything else it
// made through t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"CountAddsToCountersOfEveryWindow", testCountAddsToCountersOfEveryWindow},
		{"CountNothingIsNoop", testCountNothingIsNoop},
		{"LargeAmountsAreExact", testLargeAmountsAreExact},
		{"DuplicateEventCountedOnce", testDuplicateEventCountedOnce},
		{"SameIDForOtherKeyIsStillADuplicate", testSameIDForOtherKeyIsStillADuplicate},
		{"InvalidBatchCountsNothing", testInvalidBatchCountsNothing},
		{"ConcurrentOverlappingCountsAreExact", testConcurrentOverlappingCountsAreExact},
		{"StreamDeliveredThreeTimesInRandomOrderIsExact", testStreamDeliveredThreeTimesInRandomOrderIsExact},
		{"FailedCountDoesNotBurnIDs", testFailedCountDoesNotBurnIDs},
		{"CostCountedOnceWithTheUsage", testCostCountedOnceWithTheUsage},
		{"LateEventsAreAdjustmentsOfTheirMonth", testLateEventsAreAdjustmentsOfTheirMonth},
		{"EventsExpireAfterRetention", testEventsExpireAfterRetention},

		{"OwnerTotalsSumsShardsAndPages", testOwnerTotalsSumsShardsAndPages},
		{"ActiveKeysListsOnlyKeysWithUsageInWindow", testActiveKeysListsOnlyKeysWithUsageInWindow},
		{"OwnerUsageSplitsByFeature", testOwnerUsageSplitsByFeature},
		{"SeriesListWindowsWithUsageInRange", testSeriesListWindowsWithUsageInRange},
		{"KeySeriesStopsAtLimit", testKeySeriesStopsAtLimit},
		{"ActiveOwnersListsOnlyOwnersWithUsageInWindow", testActiveOwnersListsOnlyOwnersWithUsageInWindow},
		{"BadSeriesQueryIsInvalid", testBadSeriesQueryIsInvalid},

		{"DeadLettersRecordedOnceNewestFirst", testDeadLettersRecordedOnceNewestFirst},
		{"DeadLetterPayloadIsCutTo64KiB", testDeadLetterPayloadIsCutTo64KiB},

		{"BadQueryIsInvalid", testBadQueryIsInvalid},

		{"ClientIPsRecordedOnceInCanonicalForm", testClientIPsRecordedOnceInCanonicalForm},
		{"ClientIPsAreKeptPerUTCDay", testClientIPsAreKeptPerUTCDay},
		{"ClientIPsSampleIsSortedAndLimited", testClientIPsSampleIsSortedAndLimited},
		{"ClientIPsOfManyKeysInOneCall", testClientIPsOfManyKeysInOneCall},
		{"ConcurrentAddClientIPsLoseNothing", testConcurrentAddClientIPsLoseNothing},
		{"InvalidClientIPsWriteNothing", testInvalidClientIPsWriteNothing},
		{"FailedAddClientIPsIsRetried", testFailedAddClientIPsIsRetried},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := open(t)
			t.Cleanup(func() {
				if err := h.Ledger.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, h)
		})
	}
}

// retention is what the suite passes to Count: the API accepts events up to
// 35 days old.
const retention = 40 * 24 * time.Hour

// monthEnd is 30 seconds before the end of January 2031, UTC: one event
// there is in the last minute of the last day of the month.
var monthEnd = time.Date(2031, time.January, 31, 23, 59, 30, 0, time.UTC)

var badTokens = []string{"%%%", "Zm9vYmFy", "eyJ0IjoxfQ"} // not base64; base64 of "foobar"; of {"t":1}

func ev(id, key, owner string, t time.Time, requests, units, bytes int64) ledger.Counted {
	return ledger.Counted{Event: usage.Event{ID: id, KeyID: key, Time: t, Requests: requests, Units: units,
		Bytes: bytes, Feature: "generate"}, Owner: owner}
}

func withCost(e ledger.Counted, micros int64) ledger.Counted {
	e.Cost = micros
	return e
}

func amounts(e ledger.Counted) ledger.Totals {
	return ledger.Totals{Requests: e.Requests, Units: e.Units, Bytes: e.Bytes, Cost: e.Cost}
}

func wantKind(t *testing.T, what string, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Errorf("%s: got error %v (kind %v), want kind %v", what, err, errs.KindOf(err), k)
	}
}

// countRetrying calls Count until it succeeds, retrying transient failures
// a bounded number of times as the usage consumer does, and returns the sum
// of what every call reported counted.
func countRetrying(ctx context.Context, l ledger.Ledger, events []ledger.Counted) (int, error) {
	total := 0
	var err error
	for range 50 {
		var n int
		n, err = l.Count(ctx, events, retention)
		total += n
		if !errs.Is(err, errs.Unavailable) {
			break
		}
	}
	return total, err
}

func count(t *testing.T, l ledger.Ledger, events []ledger.Counted) int {
	t.Helper()
	n, err := countRetrying(t.Context(), l, events)
	if err != nil {
		t.Fatalf("Count(%d events): %v", len(events), err)
	}
	return n
}

func countWant(t *testing.T, l ledger.Ledger, events []ledger.Counted, want int) {
	t.Helper()
	if got := count(t, l, events); got != want {
		t.Errorf("Count(%d events): got %d counted, want %d", len(events), got, want)
	}
}

// totals returns key's totals in the window of kind w containing at.
func totals(t *testing.T, l ledger.Ledger, key string, w plan.Window, at time.Time) ledger.Totals {
	t.Helper()
	start, _ := w.Bounds(at)
	got, err := l.Totals(t.Context(), key, w, start)
	if err != nil {
		t.Fatalf("Totals(%s, %s, %v): %v", key, w, start, err)
	}
	return got
}

func wantTotals(t *testing.T, l ledger.Ledger, key string, w plan.Window, at time.Time, want ledger.Totals) {
	t.Helper()
	if got := totals(t, l, key, w, at); got != want {
		start, _ := w.Bounds(at)
		t.Errorf("Totals(%s, %s, %v): got %+v, want %+v", key, w, start.Format(time.RFC3339), got, want)
	}
}

// window names one counter: a key's window of kind w starting at start.
type window struct {
	key   string
	w     plan.Window
	start int64 // Unix seconds
}

// ownerWindow names one owner counter: an owner's window of kind w
// starting at start.
type ownerWindow struct {
	owner string
	w     plan.Window
	start int64 // Unix seconds
}

// model is the totals a correct ledger holds, with each key's owner, and
// each owner's usage.
type model struct {
	totals map[window]ledger.Totals
	owners map[string]string
	usage  map[ownerWindow]ledger.Usage
}

func newModel() *model {
	return &model{totals: map[window]ledger.Totals{}, owners: map[string]string{}, usage: map[ownerWindow]ledger.Usage{}}
}

func (m *model) add(events ...ledger.Counted) {
	for _, e := range events {
		m.owners[e.KeyID] = e.Owner
		for _, w := range plan.Windows {
			start, _ := w.Bounds(e.Time)
			k := window{e.KeyID, w, start.Unix()}
			tot := m.totals[k]
			tot.Add(amounts(e))
			m.totals[k] = tot
			if e.Owner == "" {
				continue
			}
			ow := ownerWindow{e.Owner, w, start.Unix()}
			u := m.usage[ow]
			u.Add(amounts(e))
			if e.Feature != "" {
				u.AddFeature(e.Feature, amounts(e))
			}
			m.usage[ow] = u
		}
	}
}

// check compares every counter of the model with Totals, and the model's
// per-window sums with OwnerTotals for every owner and for all owners. It
// makes up to 8 calls at a time.
func (m *model) check(t *testing.T, l ledger.Ledger) {
	t.Helper()
	type list struct {
		w     plan.Window
		start int64
		owner string
	}
	var (
		lists = map[list][]ledger.KeyTotals{}
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 8)
	)
	run := func(f func()) {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			f()
		})
	}
	for k, want := range m.totals {
		start := time.Unix(k.start, 0).UTC()
		run(func() {
			got, err := l.Totals(t.Context(), k.key, k.w, start)
			if err != nil {
				t.Errorf("Totals(%s, %s, %s): %v", k.key, k.w, start.Format(time.RFC3339), err)
			} else if got != want {
				t.Errorf("Totals(%s, %s, %s): got %+v, want %+v", k.key, k.w, start.Format(time.RFC3339), got, want)
			}
		})
		kt := ledger.KeyTotals{KeyID: k.key, Owner: m.owners[k.key], Totals: want}
		lists[list{k.w, k.start, ""}] = append(lists[list{k.w, k.start, ""}], kt)
		if kt.Owner != "" {
			lists[list{k.w, k.start, kt.Owner}] = append(lists[list{k.w, k.start, kt.Owner}], kt)
		}
	}
	for ow, want := range m.usage {
		start := time.Unix(ow.start, 0).UTC()
		run(func() {
			got, err := l.OwnerUsage(t.Context(), ow.owner, ow.w, start)
			if err != nil {
				t.Errorf("OwnerUsage(%s, %s, %s): %v", ow.owner, ow.w, start.Format(time.RFC3339), err)
			} else if d := gocmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("OwnerUsage(%s, %s, %s) mismatch (-want +got):\n%s", ow.owner, ow.w, start.Format(time.RFC3339), d)
			}
		})
	}
	for q, want := range lists {
		slices.SortFunc(want, func(a, b ledger.KeyTotals) int { return cmp.Compare(a.KeyID, b.KeyID) })
		start := time.Unix(q.start, 0).UTC()
		run(func() {
			what := fmt.Sprintf("OwnerTotals(%q, %s, %s)", q.owner, q.w, start.Format(time.RFC3339))
			got, err := readPages(what, 7, func(token string) ([]ledger.KeyTotals, string, error) {
				return l.OwnerTotals(t.Context(), q.owner, q.w, start, 7, token)
			})
			if err != nil {
				t.Error(err)
			} else if d := gocmp.Diff(want, got); d != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", what, d)
			}
		})
	}
	wg.Wait()
}

// readPages reads every page of a listing. It fails on an error, a page
// larger than size, or more pages than items.
func readPages[T any](what string, size int, list func(token string) ([]T, string, error)) ([]T, error) {
	var (
		all   []T
		token string
	)
	for i := 0; ; i++ {
		page, next, err := list(token)
		if err != nil {
			return nil, fmt.Errorf("%s page %d: %w", what, i+1, err)
		}
		if len(page) > size {
			return nil, fmt.Errorf("%s page %d: got %d items, want at most %d", what, i+1, len(page), size)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		if i > len(all) {
			return nil, fmt.Errorf("%s: %d pages for %d items", what, i+1, len(all))
		}
		token = next
	}
}

// pages is readPages failing t on an error.
func pages[T any](t *testing.T, what string, size int, list func(token string) ([]T, string, error)) []T {
	t.Helper()
	all, err := readPages(what, size, list)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func ownerTotals(t *testing.T, l ledger.Ledger, owner string, w plan.Window, start time.Time, size int) []ledger.KeyTotals {
	t.Helper()
	return pages(t, fmt.Sprintf("OwnerTotals(%q, %s, size %d)", owner, w, size), size,
		func(token string) ([]ledger.KeyTotals, string, error) {
			return l.OwnerTotals(t.Context(), owner, w, start, size, token)
		})
}

func activeKeys(t *testing.T, l ledger.Ledger, w plan.Window, start time.Time, size int) []string {
	t.Helper()
	return pages(t, fmt.Sprintf("ActiveKeys(%s, size %d)", w, size), size,
		func(token string) ([]string, string, error) {
			return l.ActiveKeys(t.Context(), w, start, size, token)
		})
}

func newRand(t *testing.T) (*rand.Rand, uint64) {
	seed := rand.Uint64()
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0)), seed
}

// testCountAddsToCountersOfEveryWindow checks the counters of every window
// in plan.Windows: minute, hour, day and month.
func testCountAddsToCountersOfEveryWindow(t *testing.T, h Harness) {
	l := h.Ledger
	east := time.FixedZone("UTC+5", 5*60*60)
	next := monthEnd.Add(40 * time.Second) // 2031-02-01T00:00:10Z
	events := []ledger.Counted{
		ev("evt-1", "key-1", "owner-1", monthEnd, 1, 350, 2048),
		// 23:59:50 UTC, which is already February 1 in UTC+5: windows are UTC.
		ev("evt-2", "key-1", "owner-1", monthEnd.Add(20*time.Second).In(east), 2, 50, 0),
		ev("evt-3", "key-1", "owner-1", next, 1, 7, 1),
		ev("evt-4", "key-2", "owner-1", monthEnd, 5, 0, 0),
	}
	countWant(t, l, events, 4)

	jan := ledger.Totals{Requests: 3, Units: 400, Bytes: 2048}
	for _, w := range plan.Windows {
		wantTotals(t, l, "key-1", w, monthEnd, jan)
		wantTotals(t, l, "key-1", w, next, ledger.Totals{Requests: 1, Units: 7, Bytes: 1})
		wantTotals(t, l, "key-2", w, monthEnd, ledger.Totals{Requests: 5})
		wantTotals(t, l, "key-3", w, monthEnd, ledger.Totals{})
	}
	wantTotals(t, l, "key-1", plan.Minute, monthEnd.Add(-time.Minute), ledger.Totals{})
	wantTotals(t, l, "key-1", plan.Hour, monthEnd.Add(-time.Hour), ledger.Totals{})
	wantTotals(t, l, "key-1", plan.Day, monthEnd.AddDate(0, 0, -1), ledger.Totals{})
	wantTotals(t, l, "key-1", plan.Month, monthEnd.AddDate(0, -1, 0), ledger.Totals{})

	// A window start is an instant: its time zone does not matter.
	start, _ := plan.Day.Bounds(monthEnd)
	got, err := l.Totals(t.Context(), "key-1", plan.Day, start.In(east))
	if err != nil {
		t.Fatalf("Totals(day start in UTC+5): %v", err)
	}
	if got != jan {
		t.Errorf("Totals(day start in UTC+5): got %+v, want %+v", got, jan)
	}
}

func testCountNothingIsNoop(t *testing.T, h Harness) {
	for _, events := range [][]ledger.Counted{nil, {}} {
		n, err := h.Ledger.Count(t.Context(), events, retention)
		if n != 0 || err != nil {
			t.Errorf("Count(%v): got %d, %v; want 0, nil", events, n, err)
		}
	}
}

func testLargeAmountsAreExact(t *testing.T, h Harness) {
	// 2^53+1 is the first integer a float64 cannot hold: counters must be
	// integers end to end.
	const big = 1<<53 + 1
	m := newModel()
	var events []ledger.Counted
	for i := range 3 {
		events = append(events, ev(fmt.Sprintf("evt-%d", i), "key-1", "owner-1", monthEnd, 1, big, big))
	}
	m.add(events...)
	countWant(t, h.Ledger, events[:1], 1)
	countWant(t, h.Ledger, events[1:], 2)
	m.check(t, h.Ledger)
	if got := totals(t, h.Ledger, "key-1", plan.Month, monthEnd); got.Units != 3*big {
		t.Errorf("units: got %d, want %d", got.Units, int64(3*big))
	}
}

func testDuplicateEventCountedOnce(t *testing.T, h Harness) {
	l := h.Ledger
	e1 := ev("evt-1", "key-1", "owner-1", monthEnd, 1, 10, 100)
	e2 := ev("evt-2", "key-1", "owner-1", monthEnd.Add(time.Second), 1, 20, 200)
	e3 := ev("evt-3", "key-2", "owner-1", monthEnd.Add(time.Hour), 1, 30, 300)
	countWant(t, l, []ledger.Counted{e1, e1, e2, e1}, 2)
	countWant(t, l, []ledger.Counted{e2, e1, e3, e3}, 1)
	countWant(t, l, []ledger.Counted{e3, e2, e1}, 0)
	m := newModel()
	m.add(e1, e2, e3)
	m.check(t, l)
}

func testSameIDForOtherKeyIsStillADuplicate(t *testing.T, h Harness) {
	l := h.Ledger
	countWant(t, l, []ledger.Counted{ev("evt-1", "key-1", "owner-1", monthEnd, 1, 10, 100)}, 1)
	countWant(t, l, []ledger.Counted{ev("evt-1", "key-2", "owner-2", monthEnd, 1, 10, 100)}, 0)
	for _, w := range plan.Windows {
		wantTotals(t, l, "key-1", w, monthEnd, ledger.Totals{Requests: 1, Units: 10, Bytes: 100})
		wantTotals(t, l, "key-2", w, monthEnd, ledger.Totals{})
	}
	start, _ := plan.Day.Bounds(monthEnd)
	if got := activeKeys(t, l, plan.Day, start, 10); !slices.Equal(got, []string{"key-1"}) {
		t.Errorf("ActiveKeys: got %v, want [key-1]", got)
	}
}

func testInvalidBatchCountsNothing(t *testing.T, h Harness) {
	l := h.Ledger
	good := ev("evt-1", "key-1", "owner-1", monthEnd, 1, 10, 100)
	bad := map[string]ledger.Counted{
		"negative requests": ev("evt-2", "key-1", "owner-1", monthEnd, -1, 0, 0),
		"negative units":    ev("evt-2", "key-1", "owner-1", monthEnd, 1, -5, 0),
		"negative bytes":    ev("evt-2", "key-1", "owner-1", monthEnd, 1, 0, -5),
		"negative cost":     withCost(ev("evt-2", "key-1", "owner-1", monthEnd, 1, 0, 0), -1),
		"empty id":          ev("", "key-1", "owner-1", monthEnd, 1, 0, 0),
		"empty key id":      ev("evt-2", "", "owner-1", monthEnd, 1, 0, 0),
		"zero time":         ev("evt-2", "key-1", "owner-1", time.Time{}, 1, 0, 0),
	}
	for name, e := range bad {
		n, err := l.Count(t.Context(), []ledger.Counted{good, e}, retention)
		wantKind(t, "Count with "+name, err, errs.Invalid)
		if n != 0 {
			t.Errorf("Count with %s: got %d counted, want 0", name, n)
		}
	}
	for _, r := range []time.Duration{0, -time.Hour} {
		n, err := l.Count(t.Context(), []ledger.Counted{good}, r)
		wantKind(t, fmt.Sprintf("Count with retention %v", r), err, errs.Invalid)
		if n != 0 {
			t.Errorf("Count with retention %v: got %d counted, want 0", r, n)
		}
	}
	wantTotals(t, l, "key-1", plan.Day, monthEnd, ledger.Totals{})
	countWant(t, l, []ledger.Counted{good}, 1) // the rejected batches burned no id
}

// testCostCountedOnceWithTheUsage checks that an event's cost is summed
// into its key's and its owner's counters, per feature, in the same commit
// as its counts: a redelivery, even one whose cost was computed anew (say,
// after a price change), adds nothing, and a failed commit adds no cost.
func testCostCountedOnceWithTheUsage(t *testing.T, h Harness) {
	l := h.Ledger
	e1 := withCost(ev("evt-1", "key-1", "owner-1", monthEnd, 1, 1000, 0), 1_250)
	e2 := withCost(ev("evt-2", "key-1", "owner-1", monthEnd, 2, 0, 0), 1_000)
	e2.Feature = "pro-model"
	e3 := withCost(ev("evt-3", "key-2", "owner-1", monthEnd, 1, 0, 0), 9_223_372_036_000) // large: integer end to end
	e3.Feature = ""
	if h.Break != nil && h.Repair != nil {
		h.Break(0)
		if _, err := l.Count(t.Context(), []ledger.Counted{e1}, retention); err == nil {
			t.Fatal("Count with a broken commit: got nil error")
		}
		h.Repair()
		wantTotals(t, l, "key-1", plan.Month, monthEnd, ledger.Totals{})
	}
	countWant(t, l, []ledger.Counted{e1, e2, e1}, 2)
	repriced := withCost(e1, 99_999)
	countWant(t, l, []ledger.Counted{repriced, e2, e3}, 1)
	m := newModel()
	m.add(e1, e2, e3)
	m.check(t, l)
	u, err := l.OwnerUsage(t.Context(), "owner-1", plan.Month, monthEnd)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1_250 + 1_000 + 9_223_372_036_000); u.Cost != want {
		t.Errorf("owner cost: got %d, want %d", u.Cost, want)
	}
	if got := u.Features["pro-model"].Cost; got != 1_000 {
		t.Errorf("pro-model cost: got %d, want 1000", got)
	}
}

func testConcurrentOverlappingCountsAreExact(t *testing.T, h Harness) {
	l := h.Ledger
	const n, workers = 200, 8
	var events []ledger.Counted
	for i := range n {
		events = append(events, withCost(ev(fmt.Sprintf("evt-%03d", i), fmt.Sprintf("key-%d", i%4), "owner-1",
			monthEnd.Add(time.Duration(i)*7*time.Second), 1, int64(i), int64(i*i)), int64(500+3*i)))
	}
	_, seed := newRand(t)
	var (
		counted atomic.Int64
		wg      sync.WaitGroup
	)
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		order := slices.Clone(events)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		wg.Go(func() {
			for len(order) > 0 {
				k := min(len(order), 1+rng.IntN(50))
				c, err := countRetrying(t.Context(), l, order[:k])
				counted.Add(int64(c))
				if err != nil {
					t.Errorf("worker %d: Count(%d events): %v", w, k, err)
					return
				}
				order = order[k:]
			}
		})
	}
	wg.Wait()
	if got := counted.Load(); got != n {
		t.Errorf("sum of counted over %d workers: got %d, want %d", workers, got, n)
	}
	m := newModel()
	m.add(events...)
	m.check(t, l)
}

// testStreamDeliveredThreeTimesInRandomOrderIsExact is the exactly-once
// proof: a stream of events, each delivered three times, in random order,
// by concurrent workers taking random batch sizes, counts exactly.
func testStreamDeliveredThreeTimesInRandomOrderIsExact(t *testing.T, h Harness) {
	l := h.Ledger
	const n, keys, copies, workers = 1000, 20, 3, 4
	rng, seed := newRand(t)
	var events []ledger.Counted
	for i := range n {
		k := rng.IntN(keys)
		// 16 minutes 97 minutes apart around the end of January: several
		// minutes, two days, two months.
		at := monthEnd.Add(time.Duration(rng.IntN(16)-8)*97*time.Minute + time.Duration(rng.IntN(30))*time.Second)
		e := ev(fmt.Sprintf("evt-%04d", i), fmt.Sprintf("key-%02d", k), fmt.Sprintf("owner-%d", k%3),
			at, 1+rng.Int64N(3), rng.Int64N(10_000), rng.Int64N(1<<20))
		e.Feature = features[rng.IntN(len(features))]
		e.Cost = rng.Int64N(5_000_000)
		events = append(events, e)
	}
	var deliveries []ledger.Counted
	for range copies {
		deliveries = append(deliveries, events...)
	}
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

	var (
		mu      sync.Mutex
		counted atomic.Int64
		wg      sync.WaitGroup
	)
	take := func(rng *rand.Rand) []ledger.Counted {
		mu.Lock()
		defer mu.Unlock()
		k := min(len(deliveries), 1+rng.IntN(100))
		batch := deliveries[:k]
		deliveries = deliveries[k:]
		return batch
	}
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w+1)))
		wg.Go(func() {
			for batch := take(rng); len(batch) > 0; batch = take(rng) {
				c, err := countRetrying(t.Context(), l, batch)
				counted.Add(int64(c))
				if err != nil {
					t.Errorf("worker %d: Count(%d events): %v", w, len(batch), err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := counted.Load(); got != n {
		t.Errorf("sum of counted: got %d, want %d", got, n)
	}
	m := newModel()
	m.add(events...)
	m.check(t, l)
}

// features are the features events of the suite name: "" is an event that
// names none.
var features = []string{"", "flash", "pro-model", "embed.v2", "tts:hd"}

func testFailedCountDoesNotBurnIDs(t *testing.T, h Harness) {
	if h.Break == nil || h.Repair == nil {
		t.Skip("the harness cannot make commits fail")
	}
	l := h.Ledger
	// 600 events of 3 keys: more than one Firestore commit holds.
	batch := func(prefix string, at time.Time) []ledger.Counted {
		var events []ledger.Counted
		for i := range 600 {
			events = append(events, ev(fmt.Sprintf("%s-%03d", prefix, i), fmt.Sprintf("key-%d", i%3), "owner-1",
				at.Add(time.Duration(i)*time.Second), 1, int64(i), 1))
		}
		return events
	}
	requests := func(at time.Time) int64 {
		var sum int64
		for k := range 3 {
			sum += totals(t, l, fmt.Sprintf("key-%d", k), plan.Month, at).Requests
		}
		return sum
	}
	m := newModel()

	// Every commit fails: nothing is counted, and a retry counts it all.
	first := batch("evt-a", time.Date(2031, time.February, 10, 0, 0, 0, 0, time.UTC))
	h.Break(0)
	n, err := l.Count(t.Context(), first, retention)
	wantKind(t, "Count while broken", err, errs.Unavailable)
	if n != 0 {
		t.Errorf("Count while broken: got %d counted, want 0", n)
	}
	if got := requests(first[0].Time); got != 0 {
		t.Errorf("requests counted by the failed Count: got %d, want 0", got)
	}
	h.Repair()
	countWant(t, l, first, len(first))
	m.add(first...)
	m.check(t, l)

	// The first commit succeeds and later ones fail: what the totals hold
	// is exactly what Count reported, and a retry counts the rest.
	second := batch("evt-b", time.Date(2031, time.March, 10, 0, 0, 0, 0, time.UTC))
	h.Break(1)
	n1, err := l.Count(t.Context(), second, retention)
	if err != nil {
		wantKind(t, "Count failing after one commit", err, errs.Unavailable)
	} else if n1 != len(second) {
		t.Errorf("Count failing after one commit: got %d counted and no error, want %d", n1, len(second))
	}
	if got := requests(second[0].Time); got != int64(n1) {
		t.Errorf("requests after a Count that reported %d counted: got %d (each event is one request)", n1, got)
	}
	h.Repair()
	n2 := count(t, l, second)
	if n1+n2 != len(second) {
		t.Errorf("counted by the failed Count and its retry: got %d + %d, want %d", n1, n2, len(second))
	}
	countWant(t, l, second, 0)
	m.add(second...)
	m.check(t, l)
}

func testEventsExpireAfterRetention(t *testing.T, h Harness) {
	if h.Advance == nil {
		t.Skip("the harness cannot move the ledger's clock")
	}
	l := h.Ledger
	e1 := ev("evt-1", "key-1", "owner-1", monthEnd, 1, 10, 100)
	e2 := ev("evt-2", "key-1", "owner-1", monthEnd, 1, 10, 100)
	c := func(e ledger.Counted) int {
		t.Helper()
		n, err := l.Count(t.Context(), []ledger.Counted{e}, time.Hour)
		if err != nil {
			t.Fatalf("Count(%s): %v", e.ID, err)
		}
		return n
	}
	if got := c(e1); got != 1 {
		t.Fatalf("first Count: got %d counted, want 1", got)
	}
	h.Advance(59 * time.Minute)
	if got := c(e1); got != 0 {
		t.Errorf("Count within retention: got %d counted, want 0 (a duplicate)", got)
	}
	h.Advance(2 * time.Hour)
	if got := c(e2); got != 1 {
		t.Errorf("Count(evt-2): got %d counted, want 1", got)
	}
	if got := c(e1); got != 1 {
		t.Errorf("Count after retention: got %d counted, want 1 (the id forgotten)", got)
	}
}

// testLateEventsAreAdjustmentsOfTheirMonth counts events of January 2031
// in January, February and March: each counts in its own month, and what
// was counted after January ended is listed as January's adjustments, per
// key and month counted in, with the part of each feature.
func testLateEventsAreAdjustmentsOfTheirMonth(t *testing.T, h Harness) {
	if h.SetClock == nil {
		t.Skip("the harness cannot set the ledger's clock")
	}
	l := h.Ledger
	jan := time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC)
	feb, mar := jan.AddDate(0, 1, 0), jan.AddDate(0, 2, 0)
	feature := func(e ledger.Counted, f string) ledger.Counted { e.Feature = f; return e }
	onTime := withCost(ev("evt-1", "key-1", "owner-1", jan.Add(9*24*time.Hour), 1, 10, 100), 500)
	lateA := withCost(ev("evt-2", "key-1", "owner-1", jan.Add(19*24*time.Hour), 1, 20, 200), 700)
	lateB := feature(ev("evt-3", "key-2", "owner-1", feb.Add(-time.Second), 2, 30, 300), "")
	lateC := ev("evt-4", "key-3", "owner-2", jan.Add(4*24*time.Hour), 1, 40, 400)
	inFeb := ev("evt-5", "key-1", "owner-1", feb.Add(24*time.Hour), 1, 50, 500)
	lateD := withCost(feature(ev("evt-6", "key-1", "owner-1", jan.Add(24*24*time.Hour), 3, 60, 600), "lite"), 900)
	lateFeb := ev("evt-7", "key-1", "owner-1", mar.Add(-time.Hour), 1, 70, 700)

	h.SetClock(jan.Add(14 * 24 * time.Hour))
	countWant(t, l, []ledger.Counted{onTime}, 1)
	h.SetClock(feb) // the first instant after January: late from here on
	countWant(t, l, []ledger.Counted{lateA, lateB, lateC, inFeb}, 4)
	countWant(t, l, []ledger.Counted{lateA}, 0) // a redelivery adjusts nothing
	h.SetClock(mar.Add(36 * time.Hour))
	countWant(t, l, []ledger.Counted{lateD, lateFeb}, 2)

	adj := func(e ledger.Counted, in time.Time) ledger.Adjustment {
		a := ledger.Adjustment{KeyID: e.KeyID, Owner: e.Owner, CountedIn: in, Usage: ledger.Usage{Totals: amounts(e)}}
		if e.Feature != "" {
			a.AddFeature(e.Feature, amounts(e))
		}
		return a
	}
	list := func(owner string, month time.Time, size int) []ledger.Adjustment {
		t.Helper()
		return pages(t, fmt.Sprintf("Adjustments(%q, %s, size %d)", owner, month.Format("2006-01"), size), size,
			func(token string) ([]ledger.Adjustment, string, error) {
				return l.Adjustments(t.Context(), owner, month, size, token)
			})
	}
	cases := []struct {
		owner string
		month time.Time
		want  []ledger.Adjustment
	}{
		{"", jan, []ledger.Adjustment{adj(lateA, feb), adj(lateD, mar), adj(lateB, feb), adj(lateC, feb)}},
		{"owner-1", jan.Add(17 * 24 * time.Hour), []ledger.Adjustment{adj(lateA, feb), adj(lateD, mar), adj(lateB, feb)}},
		{"owner-2", jan, []ledger.Adjustment{adj(lateC, feb)}},
		{"", feb, []ledger.Adjustment{adj(lateFeb, mar)}},
		{"", mar, nil},
		{"owner-3", jan, nil},
	}
	for _, c := range cases {
		for _, size := range []int{1, 2, 1000} {
			got := list(c.owner, c.month, size)
			if diff := gocmp.Diff(c.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Adjustments(%q, %s, size %d) (-want +got):\n%s", c.owner, c.month.Format("2006-01"), size, diff)
			}
		}
	}
	// A page token of OwnerTotals starts the adjustments after its key.
	_, tok, err := l.OwnerTotals(t.Context(), "", plan.Month, jan, 1, "")
	if err != nil || tok == "" {
		t.Fatalf("OwnerTotals(January, size 1): token %q, %v; want a next page", tok, err)
	}
	got, _, err := l.Adjustments(t.Context(), "", jan, 10, tok)
	if diff := gocmp.Diff([]ledger.Adjustment{adj(lateB, feb), adj(lateC, feb)}, got); err != nil || diff != "" {
		t.Errorf("Adjustments(January) after OwnerTotals's first page: %v (-want +got):\n%s", err, diff)
	}
	// The month's totals hold every event of it, whenever counted.
	want := amounts(onTime)
	for _, e := range []ledger.Counted{lateA, lateD} {
		want.Add(amounts(e))
	}
	wantTotals(t, l, "key-1", plan.Month, jan, want)
}

func testOwnerTotalsSumsShardsAndPages(t *testing.T, h Harness) {
	l := h.Ledger
	owners := map[string]string{"key-01": "acct-a", "key-02": "acct-b", "key-03": "acct-a", "key-04": "acct-a",
		"key-05": "acct-b", "key-06": "acct-a", "key-07": "acct-b"}
	m := newModel()
	// Twelve separate Counts per key, so sharded counters spread each
	// key's totals over several documents.
	for i := range 12 {
		for _, key := range slices.Sorted(maps.Keys(owners)) {
			e := ev(fmt.Sprintf("evt-%s-%02d", key, i), key, owners[key], monthEnd.Add(-time.Duration(i)*time.Minute),
				1, int64(i+1), int64(len(key)*i))
			countWant(t, l, []ledger.Counted{e}, 1)
			m.add(e)
		}
	}
	// Usage on another day of another owner's key is not listed.
	other := ev("evt-other", "key-00", "acct-a", monthEnd.AddDate(0, 0, -1), 1, 1, 1)
	countWant(t, l, []ledger.Counted{other}, 1)
	m.add(other)

	start, _ := plan.Day.Bounds(monthEnd)
	want := map[string][]ledger.KeyTotals{}
	for key, owner := range owners {
		kt := ledger.KeyTotals{KeyID: key, Owner: owner, Totals: totalsOf(m, key, plan.Day, start)}
		want[owner] = append(want[owner], kt)
		want[""] = append(want[""], kt)
	}
	for _, list := range want {
		slices.SortFunc(list, func(a, b ledger.KeyTotals) int { return cmp.Compare(a.KeyID, b.KeyID) })
	}
	for _, owner := range []string{"acct-a", "acct-b", "", "acct-c"} {
		for _, size := range []int{1, 2, 3, 1000} {
			got := ownerTotals(t, l, owner, plan.Day, start, size)
			if d := gocmp.Diff(want[owner], got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("OwnerTotals(%q, day, size %d) mismatch (-want +got):\n%s", owner, size, d)
			}
		}
	}
	m.check(t, l)
}

func totalsOf(m *model, key string, w plan.Window, start time.Time) ledger.Totals {
	return m.totals[window{key, w, start.Unix()}]
}

func testActiveKeysListsOnlyKeysWithUsageInWindow(t *testing.T, h Harness) {
	l := h.Ledger
	day1 := time.Date(2031, time.March, 4, 10, 0, 0, 0, time.UTC)
	day2 := day1.AddDate(0, 0, 1)
	var events []ledger.Counted
	add := func(key string, at time.Time) {
		events = append(events, ev(fmt.Sprintf("evt-%d", len(events)), key, "owner-1", at, 1, 0, 0))
	}
	for _, key := range []string{"key-f", "key-a", "key-e", "key-c"} {
		add(key, day1.Add(time.Duration(len(key))*time.Minute))
		add(key, day1.Add(3*time.Hour))
	}
	add("key-c", day1.Add(5*time.Hour+30*time.Second))
	add("key-e", day1.Add(5*time.Hour+50*time.Second))
	for _, key := range []string{"key-d", "key-b", "key-c"} {
		add(key, day2)
	}
	countWant(t, l, events, len(events))

	tests := []struct {
		w    plan.Window
		at   time.Time
		want []string
	}{
		{plan.Day, day1, []string{"key-a", "key-c", "key-e", "key-f"}},
		{plan.Day, day2, []string{"key-b", "key-c", "key-d"}},
		{plan.Day, day2.AddDate(0, 0, 1), nil},
		{plan.Month, day1, []string{"key-a", "key-b", "key-c", "key-d", "key-e", "key-f"}},
		{plan.Month, day1.AddDate(0, 1, 0), nil},
		{plan.Minute, day1.Add(5 * time.Hour), []string{"key-c", "key-e"}},
		{plan.Minute, day1.Add(4 * time.Hour), nil},
		{plan.Hour, day1, []string{"key-a", "key-c", "key-e", "key-f"}},
		{plan.Hour, day1.Add(3*time.Hour + 59*time.Minute), []string{"key-a", "key-c", "key-e", "key-f"}},
		{plan.Hour, day1.Add(5 * time.Hour), []string{"key-c", "key-e"}},
		{plan.Hour, day1.Add(4 * time.Hour), nil},
		{plan.Hour, day2, []string{"key-b", "key-c", "key-d"}},
	}
	for _, tc := range tests {
		start, _ := tc.w.Bounds(tc.at)
		for _, size := range []int{1, 2, 3, 1000} {
			got := activeKeys(t, l, tc.w, start, size)
			if !slices.Equal(got, tc.want) {
				t.Errorf("ActiveKeys(%s, %v, size %d): got %v, want %v", tc.w, start.Format(time.RFC3339), size, got, tc.want)
			}
		}
	}
}

func testOwnerUsageSplitsByFeature(t *testing.T, h Harness) {
	l := h.Ledger
	at := time.Date(2031, time.March, 4, 10, 20, 5, 0, time.UTC)
	var events []ledger.Counted
	add := func(key, owner, feature string, requests, units int64) {
		e := ev(fmt.Sprintf("evt-%d", len(events)), key, owner, at, requests, units, 10)
		e.Feature = feature
		events = append(events, e)
	}
	add("key-a", "owner-1", "pro-model", 1, 100)
	add("key-b", "owner-1", "pro-model", 2, 200)
	add("key-a", "owner-1", "flash", 1, 5)
	add("key-b", "owner-1", "", 3, 0)
	add("key-c", "owner-2", "pro-model", 7, 70)
	add("key-z", "", "pro-model", 9, 90) // no owner: key counters only
	countWant(t, l, events, len(events))
	countWant(t, l, events, 0)

	want := ledger.Usage{
		Totals: ledger.Totals{Requests: 7, Units: 305, Bytes: 40},
		Features: map[string]ledger.Totals{
			"pro-model": {Requests: 3, Units: 300, Bytes: 20},
			"flash":     {Requests: 1, Units: 5, Bytes: 10},
		},
	}
	for _, w := range plan.Windows {
		start, _ := w.Bounds(at)
		got, err := l.OwnerUsage(t.Context(), "owner-1", w, start)
		if err != nil {
			t.Fatalf("OwnerUsage(owner-1, %s): %v", w, err)
		}
		if d := gocmp.Diff(want, got); d != "" {
			t.Errorf("OwnerUsage(owner-1, %s) mismatch (-want +got):\n%s", w, d)
		}
		if got, err := l.OwnerUsage(t.Context(), "", w, start); err != nil || got.Requests != 0 || len(got.Features) != 0 {
			t.Errorf("OwnerUsage(\"\", %s): got %+v, %v; want nothing: events without an owner have no owner counters", w, got, err)
		}
	}
	m := newModel()
	m.add(events...)
	m.check(t, l)
	next, _ := plan.Day.Bounds(at.AddDate(0, 0, 1))
	if got, err := l.OwnerUsage(t.Context(), "owner-1", plan.Day, next); err != nil || got.Requests != 0 || got.Features != nil {
		t.Errorf("OwnerUsage(owner-1, the next day): got %+v, %v; want zero", got, err)
	}
}

func testSeriesListWindowsWithUsageInRange(t *testing.T, h Harness) {
	l := h.Ledger
	base := time.Date(2031, time.March, 4, 10, 0, 0, 0, time.UTC)
	var events []ledger.Counted
	add := func(key, owner, feature string, at time.Duration, units int64) {
		e := ev(fmt.Sprintf("evt-%d", len(events)), key, owner, base.Add(at), 1, units, 0)
		e.Feature = feature
		events = append(events, e)
	}
	add("key-a", "owner-1", "pro-model", 0, 10)
	add("key-b", "owner-1", "flash", 30*time.Second, 20)
	add("key-a", "owner-1", "pro-model", 2*time.Minute, 30)
	add("key-a", "owner-1", "", 59*time.Minute, 40)
	add("key-b", "owner-1", "flash", time.Hour, 50) // past an end of base+1h
	add("key-c", "owner-2", "pro-model", time.Minute, 60)
	countWant(t, l, events, len(events))

	u := func(requests, units int64, fs ...any) ledger.Usage {
		out := ledger.Usage{Totals: ledger.Totals{Requests: requests, Units: units}}
		for i := 0; i < len(fs); i += 3 {
			out.AddFeature(fs[i].(string), ledger.Totals{Requests: int64(fs[i+1].(int)), Units: int64(fs[i+2].(int))})
		}
		return out
	}
	got, err := l.OwnerSeries(t.Context(), "owner-1", plan.Minute, base, base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []ledger.Point{
		{Start: base, Usage: u(2, 30, "pro-model", 1, 10, "flash", 1, 20)},
		{Start: base.Add(2 * time.Minute), Usage: u(1, 30, "pro-model", 1, 30)},
		{Start: base.Add(59 * time.Minute), Usage: u(1, 40)},
	}
	if d := gocmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("OwnerSeries(owner-1, minute, 10:00-11:00) mismatch (-want +got):\n%s", d)
	}
	got, err = l.OwnerSeries(t.Context(), "owner-1", plan.Hour, base.Add(-time.Hour), base.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want = []ledger.Point{
		{Start: base, Usage: u(4, 100, "pro-model", 2, 40, "flash", 1, 20)},
		{Start: base.Add(time.Hour), Usage: u(1, 50, "flash", 1, 50)},
	}
	if d := gocmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("OwnerSeries(owner-1, hour, 09:00-12:00) mismatch (-want +got):\n%s", d)
	}
	if got, err := l.OwnerSeries(t.Context(), "owner-3", plan.Hour, base, base.Add(time.Hour)); err != nil || len(got) != 0 {
		t.Errorf("OwnerSeries(an owner without usage): got %v, %v; want nothing", got, err)
	}

	keys, more, err := l.KeySeries(t.Context(), "owner-1", plan.Minute, base, base.Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []ledger.KeyPoint{
		{KeyID: "key-a", Start: base, Totals: ledger.Totals{Requests: 1, Units: 10}},
		{KeyID: "key-b", Start: base, Totals: ledger.Totals{Requests: 1, Units: 20}},
		{KeyID: "key-a", Start: base.Add(2 * time.Minute), Totals: ledger.Totals{Requests: 1, Units: 30}},
		{KeyID: "key-a", Start: base.Add(59 * time.Minute), Totals: ledger.Totals{Requests: 1, Units: 40}},
	}
	if d := gocmp.Diff(wantKeys, keys); d != "" || more {
		t.Errorf("KeySeries(owner-1, minute, 10:00-11:00): more %v, mismatch (-want +got):\n%s", more, d)
	}
}

func testKeySeriesStopsAtLimit(t *testing.T, h Harness) {
	l := h.Ledger
	base := time.Date(2031, time.March, 4, 10, 0, 0, 0, time.UTC)
	var events []ledger.Counted
	for i := range 12 {
		// Three events of each key in each minute, so that shards differ.
		for j := range 3 {
			events = append(events, ev(fmt.Sprintf("evt-%d-%d", i, j), fmt.Sprintf("key-%d", i%4), "owner-1",
				base.Add(time.Duration(i/4)*time.Minute+time.Duration(j)*time.Second), 1, 1, 0))
		}
	}
	for _, e := range events {
		countWant(t, l, []ledger.Counted{e}, 1) // one commit each: several shards per key and minute
	}
	for _, tc := range []struct {
		limit    int
		wantMore bool
	}{{1, true}, {11, true}, {12, false}, {13, false}} {
		got, more, err := l.KeySeries(t.Context(), "owner-1", plan.Minute, base, base.Add(time.Hour), tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(tc.limit, 12); len(got) != want || more != tc.wantMore {
			t.Errorf("KeySeries(limit %d): got %d points, more %v; want %d, %v", tc.limit, len(got), more, want, tc.wantMore)
		}
		for i, p := range got {
			if p.Requests != 3 || p.KeyID != fmt.Sprintf("key-%d", i%4) || !p.Start.Equal(base.Add(time.Duration(i/4)*time.Minute)) {
				t.Errorf("KeySeries(limit %d)[%d]: got %+v, want key-%d at minute %d with 3 requests", tc.limit, i, p, i%4, i/4)
			}
		}
	}
}

func testActiveOwnersListsOnlyOwnersWithUsageInWindow(t *testing.T, h Harness) {
	l := h.Ledger
	day1 := time.Date(2031, time.March, 4, 10, 0, 0, 0, time.UTC)
	day2 := day1.AddDate(0, 0, 1)
	var events []ledger.Counted
	add := func(owner string, at time.Time) {
		events = append(events, ev(fmt.Sprintf("evt-%d", len(events)), "key-"+owner, owner, at, 1, 0, 0))
	}
	for _, owner := range []string{"acct_f", "acct_a", "acct_e", "acct_c"} {
		add(owner, day1)
		add(owner, day1.Add(time.Hour))
	}
	add("acct_b", day2)
	add("", day2) // no owner
	for i := range 3 {
		// acct_c's usage of day 2 in separate commits: several shards.
		events = append(events, ev(fmt.Sprintf("evt-c-%d", i), "key-acct_c", "acct_c", day2, 1, 0, 0))
	}
	for _, e := range events {
		countWant(t, l, []ledger.Counted{e}, 1)
	}
	tests := []struct {
		w    plan.Window
		at   time.Time
		want []string
	}{
		{plan.Day, day1, []string{"acct_a", "acct_c", "acct_e", "acct_f"}},
		{plan.Day, day2, []string{"acct_b", "acct_c"}},
		{plan.Day, day2.AddDate(0, 0, 1), nil},
		{plan.Month, day1, []string{"acct_a", "acct_b", "acct_c", "acct_e", "acct_f"}},
		{plan.Hour, day1.Add(time.Hour), []string{"acct_a", "acct_c", "acct_e", "acct_f"}},
	}
	for _, tc := range tests {
		start, _ := tc.w.Bounds(tc.at)
		for _, size := range []int{1, 2, 1000} {
			got := pages(t, fmt.Sprintf("ActiveOwners(%s, %s, size %d)", tc.w, start.Format(time.RFC3339), size), size,
				func(token string) ([]string, string, error) {
					return l.ActiveOwners(t.Context(), tc.w, start, size, token)
				})
			if !slices.Equal(got, tc.want) {
				t.Errorf("ActiveOwners(%s, %v, size %d): got %v, want %v", tc.w, start.Format(time.RFC3339), size, got, tc.want)
			}
		}
	}
}

func testBadSeriesQueryIsInvalid(t *testing.T, h Harness) {
	l := h.Ledger
	ctx := t.Context()
	day := time.Date(2031, time.March, 4, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		w        plan.Window
		from, to time.Time
	}{
		{"unknown window", "week", day, day.AddDate(0, 0, 7)},
		{"start inside a window", plan.Hour, day.Add(time.Minute), day.Add(2 * time.Hour)},
		{"end inside a window", plan.Day, day, day.Add(36 * time.Hour)},
		{"empty range", plan.Day, day, day},
		{"end before start", plan.Day, day, day.AddDate(0, 0, -1)},
		{"a day and a minute of minutes", plan.Minute, day, day.Add(24*time.Hour + time.Minute)},
		{"a year and a day of days", plan.Day, day, day.AddDate(1, 0, 2)},
	}
	for _, tc := range tests {
		_, err := l.OwnerSeries(ctx, "owner-1", tc.w, tc.from, tc.to)
		wantKind(t, "OwnerSeries("+tc.name+")", err, errs.Invalid)
		_, _, err = l.KeySeries(ctx, "owner-1", tc.w, tc.from, tc.to, 10)
		wantKind(t, "KeySeries("+tc.name+")", err, errs.Invalid)
	}
	if _, err := l.OwnerSeries(ctx, "owner-1", plan.Minute, day, day.Add(24*time.Hour)); err != nil {
		t.Errorf("OwnerSeries over exactly a day of minutes: %v", err)
	}
	for _, limit := range []int{0, -1, ledger.MaxSeriesPoints + 1} {
		_, _, err := l.KeySeries(ctx, "owner-1", plan.Hour, day, day.Add(time.Hour), limit)
		wantKind(t, fmt.Sprintf("KeySeries(limit %d)", limit), err, errs.Invalid)
	}
	for _, size := range []int{0, 1001} {
		_, _, err := l.ActiveOwners(ctx, plan.Day, day, size, "")
		wantKind(t, fmt.Sprintf("ActiveOwners(page size %d)", size), err, errs.Invalid)
	}
	for _, tok := range badTokens {
		_, _, err := l.ActiveOwners(ctx, plan.Day, day, 2, tok)
		wantKind(t, fmt.Sprintf("ActiveOwners(token %q)", tok), err, errs.Invalid)
	}
	_, err := l.OwnerUsage(ctx, "owner-1", "week", day)
	wantKind(t, "OwnerUsage(window week)", err, errs.Invalid)
}

func testDeadLettersRecordedOnceNewestFirst(t *testing.T, h Harness) {
	l := h.Ledger
	got, next, err := l.ListDeadLetters(t.Context(), 10, "")
	if err != nil || len(got) != 0 || next != "" {
		t.Errorf("ListDeadLetters on an empty ledger: got %v, %q, %v; want nothing", got, next, err)
	}
	var want []ledger.DeadLetter
	for i := range 5 {
		want = append(want, ledger.DeadLetter{
			ID:      fmt.Sprintf("evt-%d", i),
			Time:    monthEnd.Add(time.Duration(i)*time.Minute + time.Duration(i)*time.Microsecond),
			Reason:  []string{"unknown_key", "invalid_event", "undecodable_message"}[i%3],
			Detail:  fmt.Sprintf("event %d: ünïcode detail", i),
			Payload: []byte(fmt.Sprintf(`{"id":"evt-%d","bin":"\u0000\u00ff"}`, i)),
		})
	}
	want[1].Payload = nil
	for _, i := range []int{3, 0, 4, 3, 1, 2, 3} { // evt-3 is recorded three times
		if err := l.AddDeadLetter(t.Context(), want[i]); err != nil {
			t.Fatalf("AddDeadLetter(%s): %v", want[i].ID, err)
		}
	}
	slices.Reverse(want)
	for _, size := range []int{1, 2, 1000} {
		got := pages(t, fmt.Sprintf("ListDeadLetters(size %d)", size), size,
			func(token string) ([]ledger.DeadLetter, string, error) {
				return l.ListDeadLetters(t.Context(), size, token)
			})
		if d := gocmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("ListDeadLetters(size %d) mismatch (-want +got):\n%s", size, d)
		}
	}
	if err := l.AddDeadLetter(t.Context(), ledger.DeadLetter{Time: monthEnd, Reason: "unknown_key"}); !errs.Is(err, errs.Invalid) {
		t.Errorf("AddDeadLetter without an ID: got %v, want kind Invalid", err)
	}
}

func testBadQueryIsInvalid(t *testing.T, h Harness) {
	l := h.Ledger
	ctx := t.Context()
	countWant(t, l, []ledger.Counted{ev("evt-1", "key-1", "owner-1", monthEnd, 1, 0, 0)}, 1)
	if err := l.AddDeadLetter(ctx, ledger.DeadLetter{ID: "evt-x", Time: monthEnd, Reason: "unknown_key"}); err != nil {
		t.Fatalf("AddDeadLetter: %v", err)
	}
	start, _ := plan.Day.Bounds(monthEnd)
	for _, size := range []int{-1, 0, 1001} {
		_, _, err := l.OwnerTotals(ctx, "owner-1", plan.Day, start, size, "")
		wantKind(t, fmt.Sprintf("OwnerTotals(page size %d)", size), err, errs.Invalid)
		_, _, err = l.ActiveKeys(ctx, plan.Day, start, size, "")
		wantKind(t, fmt.Sprintf("ActiveKeys(page size %d)", size), err, errs.Invalid)
		_, _, err = l.ListDeadLetters(ctx, size, "")
		wantKind(t, fmt.Sprintf("ListDeadLetters(page size %d)", size), err, errs.Invalid)
		_, _, err = l.Adjustments(ctx, "", start, size, "")
		wantKind(t, fmt.Sprintf("Adjustments(page size %d)", size), err, errs.Invalid)
	}
	for _, tok := range badTokens {
		_, _, err := l.OwnerTotals(ctx, "owner-1", plan.Day, start, 2, tok)
		wantKind(t, fmt.Sprintf("OwnerTotals(token %q)", tok), err, errs.Invalid)
		_, _, err = l.ActiveKeys(ctx, plan.Day, start, 2, tok)
		wantKind(t, fmt.Sprintf("ActiveKeys(token %q)", tok), err, errs.Invalid)
		_, _, err = l.ListDeadLetters(ctx, 2, tok)
		wantKind(t, fmt.Sprintf("ListDeadLetters(token %q)", tok), err, errs.Invalid)
		_, _, err = l.Adjustments(ctx, "", start, 2, tok)
		wantKind(t, fmt.Sprintf("Adjustments(token %q)", tok), err, errs.Invalid)
	}
	for _, w := range []plan.Window{"", "week", "Day"} {
		_, err := l.Totals(ctx, "key-1", w, start)
		wantKind(t, fmt.Sprintf("Totals(window %q)", w), err, errs.Invalid)
		_, _, err = l.OwnerTotals(ctx, "", w, start, 10, "")
		wantKind(t, fmt.Sprintf("OwnerTotals(window %q)", w), err, errs.Invalid)
		_, _, err = l.ActiveKeys(ctx, w, start, 10, "")
		wantKind(t, fmt.Sprintf("ActiveKeys(window %q)", w), err, errs.Invalid)
	}
}

func testDeadLetterPayloadIsCutTo64KiB(t *testing.T, h Harness) {
	big := make([]byte, 100<<10)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	if err := h.Ledger.AddDeadLetter(t.Context(), ledger.DeadLetter{ID: "big", Time: monthEnd, Reason: "invalid_event", Payload: big}); err != nil {
		t.Fatal(err)
	}
	got, _, err := h.Ledger.ListDeadLetters(t.Context(), 10, "")
	if err != nil || len(got) != 1 {
		t.Fatalf("ListDeadLetters = %d letters, %v; want 1", len(got), err)
	}
	if n := len(got[0].Payload); n != 64<<10 || string(got[0].Payload) != string(big[:64<<10]) {
		t.Errorf("stored payload is %d bytes, want the first %d", n, 64<<10)
	}
}

// ipDay is the UTC day the client IP tests record on.
var ipDay = time.Date(2031, time.January, 31, 0, 0, 0, 0, time.UTC)

// addClientIPs calls AddClientIPs, retrying transient failures a bounded
// number of times as a flushing recorder would.
func addClientIPs(ctx context.Context, l ledger.Ledger, day time.Time, ips map[string][]string) error {
	var err error
	for range 50 {
		if err = l.AddClientIPs(ctx, day, ips); !errs.Is(err, errs.Unavailable) {
			break
		}
	}
	return err
}

func addIPs(t *testing.T, l ledger.Ledger, day time.Time, ips map[string][]string) {
	t.Helper()
	if err := addClientIPs(t.Context(), l, day, ips); err != nil {
		t.Fatalf("AddClientIPs(%s, %d keys): %v", day.Format(time.RFC3339), len(ips), err)
	}
}

// wantIPs checks ClientIPs(key, day, sample) against count and sample ips.
func wantIPs(t *testing.T, l ledger.Ledger, key string, day time.Time, sample, wantCount int, wantSample []string) {
	t.Helper()
	n, ips, err := l.ClientIPs(t.Context(), key, day, sample)
	if err != nil {
		t.Fatalf("ClientIPs(%s, %s, %d): %v", key, day.Format(time.RFC3339), sample, err)
	}
	if n != wantCount || !slices.Equal(ips, wantSample) {
		t.Errorf("ClientIPs(%s, %s, %d): got %d, %q; want %d, %q", key, day.Format(time.RFC3339), sample, n, ips, wantCount, wantSample)
	}
}

// ipv4 returns the i-th address of 10.0.0.0/8, in canonical form.
func ipv4(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff) }

func testClientIPsRecordedOnceInCanonicalForm(t *testing.T, h Harness) {
	l := h.Ledger
	wantIPs(t, l, "key-1", ipDay, 10, 0, nil)
	addIPs(t, l, ipDay, map[string][]string{
		"key-1": {"203.0.113.7", "2001:DB8::1", "198.51.100.1", "203.0.113.7"},
		"key-2": {"2001:db8:0:0:0:0:0:2"},
		"key-3": {}, // a key without IPs is left out
	})
	want := []string{"198.51.100.1", "2001:db8::1", "203.0.113.7"}
	wantIPs(t, l, "key-1", ipDay, 10, 3, want)
	wantIPs(t, l, "key-2", ipDay, 10, 1, []string{"2001:db8::2"})
	wantIPs(t, l, "key-3", ipDay, 10, 0, nil)
	wantIPs(t, l, "key-unknown", ipDay, 10, 0, nil)

	// Recording again, in other spellings, adds nothing.
	addIPs(t, l, ipDay, map[string][]string{"key-1": {"2001:db8::1", "2001:0db8:0000::0001", "198.51.100.1"}})
	wantIPs(t, l, "key-1", ipDay, 10, 3, want)
	addIPs(t, l, ipDay, map[string][]string{"key-1": {"192.0.2.1"}})
	wantIPs(t, l, "key-1", ipDay, 10, 4, []string{"192.0.2.1", "198.51.100.1", "2001:db8::1", "203.0.113.7"})

	for _, ips := range []map[string][]string{nil, {}, {"key-9": nil}} {
		if err := l.AddClientIPs(t.Context(), ipDay, ips); err != nil {
			t.Errorf("AddClientIPs(%v): got %v, want nil (nothing to record)", ips, err)
		}
	}
	wantIPs(t, l, "key-9", ipDay, 10, 0, nil)
}

func testClientIPsAreKeptPerUTCDay(t *testing.T, h Harness) {
	l := h.Ledger
	next := ipDay.AddDate(0, 0, 1)
	// A time within the day is rounded down to its UTC start, whatever
	// its time zone: 02:00 on February 1 in UTC+5 is 21:00 on January 31
	// UTC.
	east := time.FixedZone("UTC+5", 5*60*60)
	addIPs(t, l, ipDay.Add(13*time.Hour+45*time.Minute), map[string][]string{"key-1": {"192.0.2.1"}})
	addIPs(t, l, time.Date(2031, time.February, 1, 2, 0, 0, 0, east), map[string][]string{"key-1": {"192.0.2.2"}})
	addIPs(t, l, next, map[string][]string{"key-1": {"192.0.2.3", "192.0.2.1"}})
	addIPs(t, l, next.Add(-time.Nanosecond), map[string][]string{"key-2": {"192.0.2.9"}})

	day1 := []string{"192.0.2.1", "192.0.2.2"}
	for _, at := range []time.Time{ipDay, ipDay.Add(23*time.Hour + 59*time.Minute), ipDay.In(east)} {
		wantIPs(t, l, "key-1", at, 10, 2, day1)
	}
	wantIPs(t, l, "key-1", next, 10, 2, []string{"192.0.2.1", "192.0.2.3"})
	wantIPs(t, l, "key-1", ipDay.AddDate(0, 0, -1), 10, 0, nil)
	wantIPs(t, l, "key-1", next.AddDate(0, 0, 1), 10, 0, nil)
	wantIPs(t, l, "key-2", ipDay, 10, 1, []string{"192.0.2.9"})
	wantIPs(t, l, "key-2", next, 10, 0, nil)
}

func testClientIPsSampleIsSortedAndLimited(t *testing.T, h Harness) {
	l := h.Ledger
	rng, _ := newRand(t)
	var ips []string
	for i := range 40 {
		ips = append(ips, ipv4(i*37))
	}
	ips = append(ips, "2001:db8::a", "2001:db8::1:0", "::1", "fe80::1", "0.0.0.0", "255.255.255.255")
	rng.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
	addIPs(t, l, ipDay, map[string][]string{"key-1": ips})
	sorted := slices.Sorted(slices.Values(ips))
	for _, sample := range []int{0, 1, 7, len(ips), 1000} {
		want := sorted[:min(sample, len(sorted))]
		if sample == 0 {
			want = nil
		}
		wantIPs(t, l, "key-1", ipDay, sample, len(ips), want)
	}
}

func testClientIPsOfManyKeysInOneCall(t *testing.T, h Harness) {
	l := h.Ledger
	// More keys than one Firestore batch (500 writes) holds, the most one
	// call takes.
	ips := map[string][]string{}
	for k := range ledger.MaxClientIPKeys {
		ips[fmt.Sprintf("key-%04d", k)] = []string{ipv4(k), ipv4(k + 1), "2001:db8::1"}
	}
	addIPs(t, l, ipDay, ips)
	var (
		wg  sync.WaitGroup
		sem = make(chan struct{}, 8)
	)
	for k := range ledger.MaxClientIPKeys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			key := fmt.Sprintf("key-%04d", k)
			want := slices.Sorted(slices.Values([]string{ipv4(k), ipv4(k + 1), "2001:db8::1"}))
			n, got, err := l.ClientIPs(t.Context(), key, ipDay, 10)
			if err != nil || n != 3 || !slices.Equal(got, want) {
				t.Errorf("ClientIPs(%s): got %d, %q, %v; want 3, %q, nil", key, n, got, err, want)
			}
		})
	}
	wg.Wait()
}

// testConcurrentAddClientIPsLoseNothing has workers record overlapping IP
// sets of the same keys at once, in random chunks: every IP is recorded
// once.
func testConcurrentAddClientIPsLoseNothing(t *testing.T, h Harness) {
	l := h.Ledger
	const keys, perWorker, overlap, workers = 3, 400, 200, 2
	_, seed := newRand(t)
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		var mine []string // IPs w*(perWorker-overlap) to that + perWorker
		for i := range perWorker {
			mine = append(mine, ipv4(w*(perWorker-overlap)+i))
		}
		rng.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
		wg.Go(func() {
			for len(mine) > 0 {
				n := min(len(mine), 1+rng.IntN(80))
				batch := map[string][]string{}
				for k := range keys {
					batch[fmt.Sprintf("key-%d", k)] = mine[:n]
				}
				if err := addClientIPs(t.Context(), l, ipDay, batch); err != nil {
					t.Errorf("worker %d: AddClientIPs: %v", w, err)
					return
				}
				mine = mine[n:]
			}
		})
	}
	wg.Wait()
	var all []string
	for i := range workers*(perWorker-overlap) + overlap {
		all = append(all, ipv4(i))
	}
	slices.Sort(all)
	for k := range keys {
		wantIPs(t, l, fmt.Sprintf("key-%d", k), ipDay, len(all)+1, len(all), all)
	}
}

func testInvalidClientIPsWriteNothing(t *testing.T, h Harness) {
	l := h.Ledger
	ctx := t.Context()
	good := []string{"192.0.2.1", "2001:db8::1"}
	tooManyIPs := make([]string, ledger.MaxClientIPsPerKey+1)
	for i := range tooManyIPs {
		tooManyIPs[i] = ipv4(i)
	}
	tooManyKeys := map[string][]string{}
	for k := range ledger.MaxClientIPKeys + 1 {
		tooManyKeys[fmt.Sprintf("key-%04d", k)] = good
	}
	tests := []struct {
		name string
		day  time.Time
		ips  map[string][]string
	}{
		{"a bad IP", ipDay, map[string][]string{"key-1": good, "key-2": {"192.0.2.2", "not-an-ip", "192.0.2.3"}}},
		{"an empty IP", ipDay, map[string][]string{"key-1": good, "key-2": {""}}},
		{"an IPv4 with a leading zero", ipDay, map[string][]string{"key-1": good, "key-2": {"192.0.2.01"}}},
		{"an IP with a zone", ipDay, map[string][]string{"key-1": good, "key-2": {"fe80::1%eth0"}}},
		{"an IP and port", ipDay, map[string][]string{"key-1": good, "key-2": {"192.0.2.2:443"}}},
		{"a CIDR prefix", ipDay, map[string][]string{"key-1": good, "key-2": {"192.0.2.0/24"}}},
		{"an empty key id", ipDay, map[string][]string{"key-1": good, "": good}},
		{"too many IPs of a key", ipDay, map[string][]string{"key-1": good, "key-2": tooManyIPs}},
		{"too many keys", ipDay, tooManyKeys},
		{"a zero day", time.Time{}, map[string][]string{"key-1": good}},
	}
	for _, tc := range tests {
		wantKind(t, "AddClientIPs with "+tc.name, l.AddClientIPs(ctx, tc.day, tc.ips), errs.Invalid)
	}
	for _, key := range []string{"key-1", "key-2", "key-0000", "key-1000"} {
		wantIPs(t, l, key, ipDay, 10, 0, nil)
	}

	_, _, err := l.ClientIPs(ctx, "", ipDay, 10)
	wantKind(t, "ClientIPs with an empty key id", err, errs.Invalid)
	_, _, err = l.ClientIPs(ctx, "key-1", time.Time{}, 10)
	wantKind(t, "ClientIPs with a zero day", err, errs.Invalid)
	_, _, err = l.ClientIPs(ctx, "key-1", ipDay, -1)
	wantKind(t, "ClientIPs with a negative sample", err, errs.Invalid)

	// The largest valid call is accepted.
	most := map[string][]string{"key-1": tooManyIPs[:ledger.MaxClientIPsPerKey]}
	addIPs(t, l, ipDay, most)
	wantIPs(t, l, "key-1", ipDay, 0, ledger.MaxClientIPsPerKey, nil)
}

func testFailedAddClientIPsIsRetried(t *testing.T, h Harness) {
	if h.Break == nil || h.Repair == nil {
		t.Skip("the harness cannot make commits fail")
	}
	l := h.Ledger
	ips := map[string][]string{"key-1": {"192.0.2.1"}, "key-2": {"192.0.2.2", "192.0.2.3"}}
	h.Break(0)
	wantKind(t, "AddClientIPs while broken", l.AddClientIPs(t.Context(), ipDay, ips), errs.Unavailable)
	h.Repair()
	addIPs(t, l, ipDay, ips)
	wantIPs(t, l, "key-1", ipDay, 10, 1, []string{"192.0.2.1"})
	wantIPs(t, l, "key-2", ipDay, 10, 2, []string{"192.0.2.2", "192.0.2.3"})
}
