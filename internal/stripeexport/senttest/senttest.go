package senttest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/stripeexport"
)

// Harness is a fresh, empty record and the clock it tells the time by.
type Harness struct {
	Sent stripeexport.Sent
	// Advance moves the record's clock forward by d.
	Advance func(d time.Duration)
}

// Run runs the conformance suite. Each subtest calls open once; open
// releases what it made (closing the record) through t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"NothingIsSentInAnEmptyRecord", testNothingIsSentInAnEmptyRecord},
		{"MarkedIDsAreSentOthersNot", testMarkedIDsAreSentOthersNot},
		{"IDsAreComparedExactly", testIDsAreComparedExactly},
		{"MarkingAgainIsNoError", testMarkingAgainIsNoError},
		{"RecordExpiresAfterItsRetention", testRecordExpiresAfterItsRetention},
		{"MarkingAgainRenewsTheRetention", testMarkingAgainRenewsTheRetention},
		{"ExpiredIDCanBeMarkedAgain", testExpiredIDCanBeMarkedAgain},
		{"ManyIDsInOneCall", testManyIDsInOneCall},
		{"ConcurrentMarksLoseNothing", testConcurrentMarksLoseNothing},
		{"EmptyCallsDoNothing", testEmptyCallsDoNothing},
		{"BadInputIsInvalidAndRecordsNothing", testBadInputIsInvalidAndRecordsNothing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// retention is what the suite marks with unless a test says otherwise.
const retention = 40 * 24 * time.Hour

func mark(t *testing.T, h Harness, ids []string, retention time.Duration) {
	t.Helper()
	if err := h.Sent.MarkSent(t.Context(), ids, retention); err != nil {
		t.Fatalf("MarkSent(%d ids, %v): %v", len(ids), retention, err)
	}
}

// sent returns the ids among ids that h reports sent, sorted.
func sent(t *testing.T, h Harness, ids ...string) []string {
	t.Helper()
	got, err := h.Sent.Sent(t.Context(), ids)
	if err != nil {
		t.Fatalf("Sent(%d ids): %v", len(ids), err)
	}
	var out []string
	for id, ok := range got {
		if !ok {
			t.Errorf("Sent returned %q: false; absent ids must be left out", id)
			continue
		}
		if !slices.Contains(ids, id) {
			t.Errorf("Sent returned %q, which was not asked for", id)
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func want(t *testing.T, what string, got, want []string) {
	t.Helper()
	if d := gocmp.Diff(want, got); d != "" {
		t.Errorf("%s: sent ids (-want +got):\n%s", what, d)
	}
}

func testNothingIsSentInAnEmptyRecord(t *testing.T, h Harness) {
	want(t, "empty record", sent(t, h, "evt_1", "evt_2:units"), nil)
}

func testMarkedIDsAreSentOthersNot(t *testing.T, h Harness) {
	mark(t, h, []string{"evt_1", "evt_2:units"}, retention)
	want(t, "after marking evt_1 and evt_2:units", sent(t, h, "evt_1", "evt_2:units", "evt_2:requests", "evt_3"), []string{"evt_1", "evt_2:units"})
	want(t, "asking twice for one id", sent(t, h, "evt_1", "evt_1"), []string{"evt_1"})
}

func testIDsAreComparedExactly(t *testing.T, h Harness) {
	// Identifiers are opaque strings: case, slashes, dots and non-ASCII
	// characters are theirs, and a prefix is another identifier.
	ids := []string{"Evt", "a/b", ".", "__x__", "évt-ü", strings.Repeat("x", 100), "kp_Zm9v-_"}
	mark(t, h, ids, retention)
	got := sent(t, h, append(slices.Clone(ids), "evt", "a", "a/b/", "..", strings.Repeat("x", 99), "kp_Zm9v")...)
	want(t, "exact ids", got, slices.Sorted(slices.Values(ids)))
}

func testMarkingAgainIsNoError(t *testing.T, h Harness) {
	mark(t, h, []string{"evt_1"}, retention)
	mark(t, h, []string{"evt_1", "evt_1", "evt_2"}, retention)
	want(t, "after marking again", sent(t, h, "evt_1", "evt_2"), []string{"evt_1", "evt_2"})
}

func testRecordExpiresAfterItsRetention(t *testing.T, h Harness) {
	mark(t, h, []string{"short"}, time.Hour)
	mark(t, h, []string{"long"}, retention)
	h.Advance(time.Hour - time.Second)
	want(t, "a second before short's retention ends", sent(t, h, "short", "long"), []string{"long", "short"})
	h.Advance(2 * time.Second)
	want(t, "a second after short's retention ended", sent(t, h, "short", "long"), []string{"long"})
	h.Advance(retention)
	// A write lets an adapter forget expired records (SQLite deletes them
	// as it writes); what it kept or forgot must read the same.
	mark(t, h, []string{"other"}, retention)
	want(t, "after long's retention", sent(t, h, "short", "long", "other"), []string{"other"})
}

func testMarkingAgainRenewsTheRetention(t *testing.T, h Harness) {
	mark(t, h, []string{"evt_1", "evt_2"}, 10*time.Hour)
	h.Advance(6 * time.Hour)
	mark(t, h, []string{"evt_1"}, 10*time.Hour)
	h.Advance(6 * time.Hour) // 12 h after the first mark, 6 h after the second
	want(t, "after the first mark's retention", sent(t, h, "evt_1", "evt_2"), []string{"evt_1"})
	h.Advance(5 * time.Hour)
	want(t, "after the second mark's retention", sent(t, h, "evt_1", "evt_2"), nil)
}

func testExpiredIDCanBeMarkedAgain(t *testing.T, h Harness) {
	mark(t, h, []string{"evt_1"}, time.Hour)
	h.Advance(2 * time.Hour)
	want(t, "expired", sent(t, h, "evt_1"), nil)
	mark(t, h, []string{"evt_1"}, time.Hour)
	want(t, "marked again", sent(t, h, "evt_1"), []string{"evt_1"})
	h.Advance(time.Hour - time.Second)
	want(t, "within the new retention", sent(t, h, "evt_1"), []string{"evt_1"})
}

func testManyIDsInOneCall(t *testing.T, h Harness) {
	// A usage message of 1,000 events feeding three meters: 3,000 ids,
	// past any backend's batch limit, some of them repeated.
	var ids []string
	for i := range 3000 {
		ids = append(ids, fmt.Sprintf("evt_%06d:%s", i/3, stripeexport.Metrics[i%3]))
	}
	marked := ids[:2500]
	mark(t, h, append(slices.Clone(marked), marked[:100]...), retention)
	got := sent(t, h, ids...)
	want(t, "2,500 of 3,000 marked", got, slices.Sorted(slices.Values(marked)))
}

func testConcurrentMarksLoseNothing(t *testing.T, h Harness) {
	const writers, each = 8, 60
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	all := map[string]bool{}
	for w := range writers {
		// Each writer's ids overlap the next writer's by half.
		var ids []string
		for i := range each {
			ids = append(ids, fmt.Sprintf("evt_%d", w*each/2+i))
		}
		for _, id := range ids {
			all[id] = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- h.Sent.MarkSent(t.Context(), ids, retention)
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("concurrent MarkSent: %v", err)
		}
	}
	ids := slices.Sorted(maps.Keys(all))
	want(t, "after concurrent marks", sent(t, h, ids...), ids)
}

func testEmptyCallsDoNothing(t *testing.T, h Harness) {
	if err := h.Sent.MarkSent(t.Context(), nil, retention); err != nil {
		t.Errorf("MarkSent(nil): %v", err)
	}
	got, err := h.Sent.Sent(t.Context(), nil)
	if err != nil || len(got) != 0 {
		t.Errorf("Sent(nil) = %v, %v; want an empty set", got, err)
	}
}

func testBadInputIsInvalidAndRecordsNothing(t *testing.T, h Harness) {
	ctx := t.Context()
	for _, tc := range []struct {
		name      string
		ids       []string
		retention time.Duration
	}{
		{"an empty id", []string{"evt_1", ""}, retention},
		{"zero retention", []string{"evt_1"}, 0},
		{"negative retention", []string{"evt_1"}, -time.Hour},
	} {
		if err := h.Sent.MarkSent(ctx, tc.ids, tc.retention); !errs.Is(err, errs.Invalid) {
			t.Errorf("MarkSent with %s: %v, want Invalid", tc.name, err)
		}
	}
	if _, err := h.Sent.Sent(ctx, []string{"evt_1", ""}); !errs.Is(err, errs.Invalid) {
		t.Errorf("Sent with an empty id: %v, want Invalid", err)
	}
	want(t, "after the refused marks", sent(t, h, "evt_1"), nil)
}
