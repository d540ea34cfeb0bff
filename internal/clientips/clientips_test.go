package clientips_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyplane/keyplane/internal/clientips"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/store"
)

// ipNow is the recorder tests' "now": 10:00 UTC on ipToday.
var (
	ipToday = time.Date(2031, time.May, 6, 0, 0, 0, 0, time.UTC)
	ipNow   = ipToday.Add(10 * time.Hour)
)

// ipCall is one AddClientIPs call a ledger received.
type ipCall struct {
	day time.Time
	ips map[string][]string
}

// ipLedger is a real (SQLite) ledger that keeps the AddClientIPs calls it
// received, can be made unreachable, rejects the key ids in invalid as
// Invalid, sends on written (if not nil) after each call, and with
// callsOnly keeps the calls without writing them through.
type ipLedger struct {
	ledger.Ledger
	down      atomic.Bool
	invalid   map[string]bool
	written   chan struct{}
	callsOnly bool

	mu    sync.Mutex
	calls []ipCall
	uses  []map[string]time.Time // MarkUsed calls, in order
}

// MarkUsed keeps the uses it is given, checked as a store checks them.
func (l *ipLedger) MarkUsed(_ context.Context, uses map[string]time.Time) error {
	if l.down.Load() {
		return errs.E(errs.Unavailable, "the store is unreachable")
	}
	if err := store.CheckMarkUsed(uses); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.uses = append(l.uses, maps.Clone(uses))
	return nil
}

// takeUses returns the MarkUsed calls since the last takeUses, merged.
func (l *ipLedger) takeUses() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]time.Time{}
	for _, u := range l.uses {
		for id, t := range u {
			if len(out) > 0 && !out[id].IsZero() {
				panic("key " + id + " in two MarkUsed calls of one flush")
			}
			out[id] = t
		}
	}
	l.uses = nil
	return out
}

func newIPLedger(t *testing.T) *ipLedger {
	t.Helper()
	l, err := sqliteledger.Open(":memory:")
	if err != nil {
		t.Fatalf("open the ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return &ipLedger{Ledger: l}
}

func (l *ipLedger) AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error {
	if l.written != nil {
		defer func() { l.written <- struct{}{} }()
	}
	if l.down.Load() {
		return errs.E(errs.Unavailable, "the ledger is unreachable")
	}
	for id := range ips {
		if l.invalid[id] {
			return errs.E(errs.Invalid, "key id %s is invalid", id)
		}
	}
	l.mu.Lock()
	c := ipCall{day, map[string][]string{}}
	for id, list := range ips {
		c.ips[id] = slices.Sorted(slices.Values(list))
	}
	l.calls = append(l.calls, c)
	l.mu.Unlock()
	if l.callsOnly {
		return nil
	}
	return l.Ledger.AddClientIPs(ctx, day, ips)
}

// takeCalls returns the calls received since the last takeCalls, ordered
// by day.
func (l *ipLedger) takeCalls() []ipCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	calls := l.calls
	l.calls = nil
	slices.SortStableFunc(calls, func(a, b ipCall) int { return a.day.Compare(b.day) })
	return calls
}

// wantCount checks how many IPs the ledger holds for key on day.
func (l *ipLedger) wantCount(t *testing.T, key string, day time.Time, want int) {
	t.Helper()
	n, _, err := l.ClientIPs(t.Context(), key, day, 0)
	if err != nil || n != want {
		t.Errorf("ClientIPs(%s, %s): got %d, %v; want %d, nil", key, day.Format(time.DateOnly), n, err, want)
	}
}

func wantCalls(t *testing.T, got []ipCall, want ...ipCall) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("AddClientIPs calls: got %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].day.Equal(want[i].day) || !maps.EqualFunc(got[i].ips, want[i].ips, slices.Equal) {
			t.Errorf("AddClientIPs call %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

// logRecords is a slog.Handler that keeps the records it is given.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecords) WithGroup(string) slog.Handler            { return h }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

// take returns the records since the last take.
func (h *logRecords) take() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.records
	h.records = nil
	return r
}

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

func flush(t *testing.T, r *clientips.Recorder) {
	t.Helper()
	if err := r.Flush(t.Context()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func TestClientIPFlushWritesExactlyTheNewSightings(t *testing.T) {
	l := newIPLedger(t)
	clk := clock.NewFake(ipNow)
	r := clientips.New(l, clk, time.Hour, nil)
	yesterday := ipToday.AddDate(0, 0, -1)

	flush(t, r)
	wantCalls(t, l.takeCalls()) // nothing seen, nothing written

	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	r.Saw("key-1", "2001:DB8::1", 10, ipNow)
	r.Saw("key-1", "2001:db8::1", 10, ipNow)
	r.Saw("key-1", "::ffff:192.0.2.1", 10, ipNow) // IPv4-mapped: 192.0.2.1 again
	r.Saw("key-2", "192.0.2.1", 10, ipNow)
	r.Saw("key-1", "198.51.100.1", 10, yesterday.Add(23*time.Hour))
	flush(t, r)
	wantCalls(t, l.takeCalls(),
		ipCall{yesterday, map[string][]string{"key-1": {"198.51.100.1"}}},
		ipCall{ipToday, map[string][]string{"key-1": {"192.0.2.1", "2001:db8::1"}, "key-2": {"192.0.2.1"}}})
	l.wantCount(t, "key-1", ipToday, 2)
	l.wantCount(t, "key-1", yesterday, 1)

	// Seen again: nothing to write. One new IP: only it is written.
	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	r.Saw("key-2", "192.0.2.1", 10, ipNow)
	flush(t, r)
	wantCalls(t, l.takeCalls())
	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	r.Saw("key-2", "192.0.2.7", 10, ipNow)
	flush(t, r)
	wantCalls(t, l.takeCalls(), ipCall{ipToday, map[string][]string{"key-2": {"192.0.2.7"}}})
	l.wantCount(t, "key-2", ipToday, 2)
}

func TestClientIPRecorderIgnoresWhatItCannotRecord(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	r.Saw("key-1", "not-an-ip", 10, ipNow)
	r.Saw("key-1", "", 10, ipNow)
	r.Saw("key-1", "192.0.2.1:443", 10, ipNow)
	r.Saw("", "192.0.2.1", 10, ipNow)
	r.Saw("key-2", "192.0.2.1", 0, ipNow)
	r.Saw("key-1", "fe80::1%eth0", 10, ipNow) // a zone is dropped
	flush(t, r)
	wantCalls(t, l.takeCalls(), ipCall{ipToday, map[string][]string{"key-1": {"fe80::1"}}})
}

func TestFailedClientIPFlushIsRetried(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	r.Saw("key-2", "192.0.2.2", 10, ipNow)
	l.down.Store(true)
	if err := r.Flush(t.Context()); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Flush while the ledger is down: got %v, want kind Unavailable", err)
	}
	l.wantCount(t, "key-1", ipToday, 0)
	r.Saw("key-1", "192.0.2.3", 10, ipNow)
	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	l.down.Store(false)
	flush(t, r)
	wantCalls(t, l.takeCalls(), ipCall{ipToday, map[string][]string{"key-1": {"192.0.2.1", "192.0.2.3"}, "key-2": {"192.0.2.2"}}})
	l.wantCount(t, "key-1", ipToday, 2)
	l.wantCount(t, "key-2", ipToday, 1)
	flush(t, r)
	wantCalls(t, l.takeCalls())
}

// TestClientIPsTheLedgerRejectsAreDropped checks that a key whose IPs the
// ledger rejects as Invalid does not hold back the other keys of its
// batch and is not written again.
func TestClientIPsTheLedgerRejectsAreDropped(t *testing.T) {
	l := newIPLedger(t)
	l.invalid = map[string]bool{"key-bad": true}
	logs := &logRecords{}
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, slog.New(logs))
	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	r.Saw("key-bad", "192.0.2.2", 10, ipNow)
	r.Saw("key-2", "192.0.2.3", 10, ipNow)
	flush(t, r)
	wantCalls(t, l.takeCalls(),
		ipCall{ipToday, map[string][]string{"key-1": {"192.0.2.1"}}},
		ipCall{ipToday, map[string][]string{"key-2": {"192.0.2.3"}}})
	l.wantCount(t, "key-1", ipToday, 1)
	l.wantCount(t, "key-2", ipToday, 1)
	recs := logs.take()
	if len(recs) != 1 || recs[0].Level != slog.LevelError || attr(recs[0], "key_id").String() != "key-bad" {
		t.Errorf("logs: got %v, want one error naming key-bad", recs)
	}
	flush(t, r)
	wantCalls(t, l.takeCalls())
}

func TestClientIPRecorderRemembersAtMostLimitIPs(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	yesterday := ipNow.AddDate(0, 0, -1)
	for i := range 10 {
		ip := fmt.Sprintf("192.0.2.%d", i)
		r.Saw("key-1", ip, 3, ipNow)
		r.Saw("key-1", ip, 3, yesterday) // each day has its own limit
		r.Saw("key-2", ip, 5, ipNow)     // and each key
	}
	flush(t, r)
	l.wantCount(t, "key-1", ipToday, 3)
	l.wantCount(t, "key-1", yesterday, 3)
	l.wantCount(t, "key-2", ipToday, 5)
	// The limit holds across flushes: what was written still counts.
	r.Saw("key-1", "198.51.100.1", 3, ipNow)
	flush(t, r)
	l.wantCount(t, "key-1", ipToday, 3)
	// A limit above what any rule needs counts as plan.MaxDistinctIPsPerDay+1;
	// a key's 1,001 IPs take two calls of at most 1,000.
	l.takeCalls()
	for i := range 1500 {
		r.Saw("key-3", fmt.Sprintf("10.0.%d.%d", i/256, i%256), 1_000_000, ipNow)
	}
	flush(t, r)
	l.wantCount(t, "key-3", ipToday, 1001)
	calls := l.takeCalls()
	if len(calls) != 2 || len(calls[0].ips["key-3"])+len(calls[1].ips["key-3"]) != 1001 ||
		max(len(calls[0].ips["key-3"]), len(calls[1].ips["key-3"])) > ledger.MaxClientIPsPerKey {
		t.Errorf("calls writing 1,001 IPs of a key: got %d", len(calls))
	}
}

// TestClientIPRecorderIsBoundedAndForgetsOldDays fills the recorder's
// table: the sightings of further keys are dropped and logged once per
// flush, until a flush two days later forgets the full day.
func TestClientIPRecorderIsBoundedAndForgetsOldDays(t *testing.T) {
	const max = 100_000
	l := newIPLedger(t)
	l.callsOnly = true // writing 100,000 keys to SQLite takes long under -race
	clk := clock.NewFake(ipNow)
	logs := &logRecords{}
	r := clientips.New(l, clk, 100*24*time.Hour, slog.New(logs))
	for i := range max {
		r.Saw(fmt.Sprintf("key-%06d", i), "192.0.2.1", 2, ipNow)
	}
	r.Saw("key-over-1", "192.0.2.1", 2, ipNow)
	r.Saw("key-over-2", "192.0.2.1", 2, ipNow)
	r.Saw("key-over-1", "192.0.2.2", 2, ipNow)
	r.Saw("key-000000", "192.0.2.2", 2, ipNow) // a key it holds still takes new IPs
	flush(t, r)
	written := map[string][]string{}
	for _, c := range l.takeCalls() {
		if len(c.ips) > ledger.MaxClientIPKeys {
			t.Errorf("a call of %d keys, more than the %d AddClientIPs takes", len(c.ips), ledger.MaxClientIPKeys)
		}
		maps.Copy(written, c.ips)
	}
	if len(written) != max || len(written["key-000000"]) != 2 || len(written["key-099999"]) != 1 || written["key-over-1"] != nil {
		t.Errorf("written: %d keys, key-000000 %v, key-099999 %v, key-over-1 %v; want %d keys, 2 IPs, 1 IP, none",
			len(written), written["key-000000"], written["key-099999"], written["key-over-1"], max)
	}
	recs := logs.take()
	if len(recs) != 1 || recs[0].Level != slog.LevelWarn || attr(recs[0], "dropped").Int64() != 3 {
		t.Errorf("logs: got %v, want one warning of 3 dropped sightings", recs)
	}
	flush(t, r)
	if recs := logs.take(); len(recs) != 0 {
		t.Errorf("logs of a flush with nothing dropped: got %v, want none", recs)
	}

	// Tomorrow the full day is yesterday: it is kept, and so are its
	// unwritten sightings when a flush fails. The day after, it is
	// forgotten, unwritten sightings too, and the table has room again.
	r.Saw("key-000001", "192.0.2.9", 2, ipNow)
	clk.Advance(24 * time.Hour)
	l.down.Store(true)
	if err := r.Flush(t.Context()); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Flush while the ledger is down: got %v, want kind Unavailable", err)
	}
	l.down.Store(false)
	r.Saw("key-new", "192.0.2.1", 2, clk.Now()) // still full: dropped
	clk.Advance(24 * time.Hour)
	flush(t, r)
	wantCalls(t, l.takeCalls()) // 192.0.2.9 of key-000001 is forgotten
	if recs := logs.take(); len(recs) != 1 || attr(recs[0], "dropped").Int64() != 1 {
		t.Errorf("logs: got %v, want one warning of 1 dropped sighting", recs)
	}
	r.Saw("key-new", "192.0.2.1", 2, clk.Now())
	flush(t, r)
	wantCalls(t, l.takeCalls(), ipCall{ipToday.AddDate(0, 0, 2), map[string][]string{"key-new": {"192.0.2.1"}}})
}

// TestSawStartsABackgroundFlushAfterInterval checks that Saw starts a
// flush once the last one is interval old, and only then.
func TestSawStartsABackgroundFlushAfterInterval(t *testing.T) {
	l := newIPLedger(t)
	l.written = make(chan struct{}, 10)
	clk := clock.NewFake(ipNow)
	r := clientips.New(l, clk, time.Minute, nil)
	r.Saw("key-1", "192.0.2.1", 10, ipNow.Add(59*time.Second))
	flush(t, r) // waits for a background flush, had one started
	if got := l.takeCalls(); len(got) != 1 {
		t.Fatalf("calls: got %v, want only the one of the explicit Flush", got)
	}
	<-l.written

	// The last flush started at ipNow, by the recorder's clock.
	r.Saw("key-1", "192.0.2.2", 10, ipNow.Add(59*time.Second))
	select {
	case <-l.written:
		t.Fatalf("a flush started less than interval after the last")
	default:
	}
	r.Saw("key-1", "192.0.2.3", 10, ipNow.Add(time.Minute))
	select {
	case <-l.written:
	case <-time.After(10 * time.Second):
		t.Fatal("no background flush within 10s of Saw past interval")
	}
	wantCalls(t, l.takeCalls(), ipCall{ipToday, map[string][]string{"key-1": {"192.0.2.2", "192.0.2.3"}}})
	flush(t, r) // after the background flush marked its IPs written
	wantCalls(t, l.takeCalls())
}

// TestRunFlushesWhenItsContextEnds: Run's last flush writes both the
// sightings and the key uses.
func TestRunFlushesWhenItsContextEnds(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	r.Saw("key-1", "192.0.2.1", 10, ipNow)
	r.Used("key-1", ipNow)
	cancel()
	<-done
	l.wantCount(t, "key-1", ipToday, 1)
	wantUses(t, l.takeUses(), map[string]time.Time{"key-1": ipNow})
}

// heldWriter is a Writer whose writes wait until release is closed, and
// which keeps what it was given.
type heldWriter struct {
	release chan struct{}
	mu      sync.Mutex
	calls   []map[string][]string
}

func (w *heldWriter) AddClientIPs(ctx context.Context, _ time.Time, ips map[string][]string) error {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, ips)
	return nil
}

func (w *heldWriter) MarkUsed(context.Context, map[string]time.Time) error { return nil }

func (w *heldWriter) written() []map[string][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls)
}

// TestRunWaitsForBackgroundFlushes: when its context ends, Run returns
// only after the flush that Saw started in the background has finished and
// the last flush has written what came after it; once Run has returned, Saw
// starts no flush, so the writer can be closed.
func TestRunWaitsForBackgroundFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &heldWriter{release: make(chan struct{})}
		clk := clock.NewFake(ipNow)
		r := clientips.New(w, clk, time.Minute, nil)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			r.Run(ctx)
			close(done)
		}()
		r.Saw("key-1", "192.0.2.1", 10, ipNow.Add(time.Minute)) // a background flush starts and is held
		synctest.Wait()
		r.Saw("key-1", "192.0.2.2", 10, ipNow.Add(time.Minute)) // after it took its sightings
		cancel()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Run returned while a background flush was still writing")
		default:
		}
		close(w.release)
		<-done
		want := []map[string][]string{{"key-1": {"192.0.2.1"}}, {"key-1": {"192.0.2.2"}}}
		if got := w.written(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("written by the background flush and Run's last flush: got %v, want %v", got, want)
		}

		r.Saw("key-1", "192.0.2.3", 10, ipNow.Add(time.Hour)) // a flush would be due
		synctest.Wait()
		if got := w.written(); len(got) != len(want) {
			t.Errorf("writes after Run returned: got %v, want none", got[len(want):])
		}
	})
}

// TestClientIPRecorderIsExactUnderConcurrency has goroutines report
// sightings of overlapping IPs while flushes run, some started by Saw: the
// ledger ends with each key's limit of IPs, all of them sighted.
func TestClientIPRecorderIsExactUnderConcurrency(t *testing.T) {
	const keys, ips, limit, workers = 20, 50, 30, 8
	l := newIPLedger(t)
	clk := clock.NewFake(ipNow)
	r := clientips.New(l, clk, time.Second, nil)
	var (
		wg   sync.WaitGroup
		stop atomic.Bool
	)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			order := rng.Perm(keys * ips)
			for i, n := range order {
				// Every 100th sighting is a second later: Saw starts
				// background flushes.
				now := ipNow.Add(time.Duration(i/100) * time.Second)
				r.Saw(fmt.Sprintf("key-%02d", n%keys), fmt.Sprintf("2001:db8::%x", n/keys), limit, now)
			}
		})
	}
	flushes := make(chan error, 1)
	go func() {
		var err error
		for !stop.Load() && err == nil {
			err = r.Flush(t.Context())
		}
		flushes <- err
	}()
	wg.Wait()
	stop.Store(true)
	if err := <-flushes; err != nil {
		t.Fatalf("Flush: %v", err)
	}
	flush(t, r)
	sighted := map[string]bool{}
	for i := range ips {
		sighted[netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i)).String()] = true
	}
	for k := range keys {
		n, got, err := l.ClientIPs(t.Context(), fmt.Sprintf("key-%02d", k), ipToday, ips)
		if err != nil || n != limit {
			t.Errorf("key-%02d: got %d IPs, %v; want %d", k, n, err, limit)
		}
		for _, ip := range got {
			if !sighted[ip] {
				t.Errorf("key-%02d: IP %s was never sighted", k, ip)
			}
		}
	}
}

// BenchmarkClientIPRecorderSaw measures Saw on the hot path: an IP the
// recorder holds already for a key of 1,000, IPv4 and IPv6, alone and
// from parallel goroutines (over all keys, and all on one key).
func BenchmarkClientIPRecorderSaw(b *testing.B) {
	l, err := sqliteledger.Open(":memory:")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const keys = 1000
	clk := clock.NewFake(ipNow)
	r := clientips.New(struct {
		ledger.Ledger
		nopUses
	}{l, nopUses{}}, clk, 24*time.Hour, nil)
	ids := make([]string, keys)
	addrs := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%06d", i)
		addrs[i] = fmt.Sprintf("203.0.%d.%d", i/256, i%256)
		r.Saw(ids[i], addrs[i], 21, ipNow)
		r.Saw(ids[i], "2001:db8::1", 21, ipNow)
	}
	b.Run("seen", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r.Saw(ids[i%keys], addrs[i%keys], 21, ipNow)
			i++
		}
	})
	b.Run("seen-ipv6", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r.Saw(ids[i%keys], "2001:db8::1", 21, ipNow)
			i++
		}
	})
	b.Run("seen-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(keys)
			for pb.Next() {
				r.Saw(ids[i%keys], addrs[i%keys], 21, ipNow)
				i++
			}
		})
	})
	b.Run("seen-parallel-one-key", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Saw(ids[0], addrs[0], 21, ipNow)
			}
		})
	})
}

// nopUses is the MarkUsed of a Writer whose uses a test ignores.
type nopUses struct{}

func (nopUses) MarkUsed(context.Context, map[string]time.Time) error { return nil }

func wantUses(t *testing.T, got, want map[string]time.Time) {
	t.Helper()
	if !maps.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("key uses written: got %v, want %v", got, want)
	}
}

func TestKeyUsesFlushTheLatestUseOfEachKeyOnce(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	r.Used("key-1", ipNow.Add(time.Second))
	r.Used("key-1", ipNow.Add(3*time.Second))
	r.Used("key-1", ipNow.Add(2*time.Second)) // out of order: the latest wins
	r.Used("key-2", ipNow)
	r.Used("", ipNow)
	flush(t, r)
	wantUses(t, l.takeUses(), map[string]time.Time{"key-1": ipNow.Add(3 * time.Second), "key-2": ipNow})
	flush(t, r)
	wantUses(t, l.takeUses(), map[string]time.Time{}) // nothing new: nothing written
	r.Used("key-2", ipNow.Add(time.Minute))
	flush(t, r)
	wantUses(t, l.takeUses(), map[string]time.Time{"key-2": ipNow.Add(time.Minute)})
}

func TestKeyUsesFlushSplitsIntoCallsTheStoreTakes(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	want := map[string]time.Time{}
	for i := range 2*store.MaxMarkUsed + 1 {
		id := fmt.Sprintf("key-%d", i)
		r.Used(id, ipNow)
		want[id] = ipNow
	}
	flush(t, r) // ipLedger.MarkUsed rejects calls of more than store.MaxMarkUsed keys
	wantUses(t, l.takeUses(), want)
}

func TestFailedKeyUsesFlushIsRetried(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	r.Used("key-1", ipNow.Add(2*time.Second))
	r.Used("key-2", ipNow)
	l.down.Store(true)
	if err := r.Flush(t.Context()); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Flush while the store is down: got %v, want kind Unavailable", err)
	}
	r.Used("key-1", ipNow.Add(time.Second)) // older than the one put back: kept
	r.Used("key-2", ipNow.Add(time.Second))
	l.down.Store(false)
	flush(t, r)
	wantUses(t, l.takeUses(), map[string]time.Time{"key-1": ipNow.Add(2 * time.Second), "key-2": ipNow.Add(time.Second)})
}

func TestKeyUsesAreExactUnderConcurrency(t *testing.T) {
	l := newIPLedger(t)
	r := clientips.New(l, clock.NewFake(ipNow), time.Hour, nil)
	var wg sync.WaitGroup
	got := map[string]time.Time{}
	var mu sync.Mutex
	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() { // flushes race with the uses
		defer close(flushed)
		for {
			select {
			case <-stop:
				return
			default:
				flush(t, r)
				mu.Lock()
				mergeLatest(got, l.takeUses())
				mu.Unlock()
			}
		}
	}()
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				r.Used(fmt.Sprintf("key-%d", i%16), ipNow.Add(time.Duration(w*2000+i)*time.Millisecond))
			}
		})
	}
	wg.Wait()
	close(stop)
	<-flushed
	flush(t, r)
	mergeLatest(got, l.takeUses())
	want := map[string]time.Time{}
	for i := range 16 {
		want[fmt.Sprintf("key-%d", i)] = ipNow.Add(time.Duration(7*2000+2000-16+i) * time.Millisecond)
	}
	wantUses(t, got, want)
}

// mergeLatest keeps in dst the later time of each key, as a store does.
func mergeLatest(dst, src map[string]time.Time) {
	for id, t := range src {
		if t.After(dst[id]) {
			dst[id] = t
		}
	}
}

func TestKeyUseOfAHeldKeyDoesNotAllocate(t *testing.T) {
	r := clientips.New(newIPLedger(t), clock.NewFake(ipNow), time.Hour, nil)
	r.Used("key-1", ipNow)
	if n := testing.AllocsPerRun(1000, func() { r.Used("key-1", ipNow.Add(time.Second)) }); n != 0 {
		t.Errorf("Used of a key held since the last flush: %v allocations, want 0", n)
	}
}

// BenchmarkClientIPRecorderUsed measures Used on the hot path, next to
// BenchmarkClientIPRecorderSaw: a key already used since the last flush,
// of 1,000, alone and from parallel goroutines (over all keys, and all on
// one key).
func BenchmarkClientIPRecorderUsed(b *testing.B) {
	const keys = 1000
	r := clientips.New(struct {
		ledger.Ledger
		nopUses
	}{nil, nopUses{}}, clock.NewFake(ipNow), 24*time.Hour, nil)
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%06d", i)
		r.Used(ids[i], ipNow)
	}
	b.Run("held", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r.Used(ids[i%keys], ipNow)
			i++
		}
	})
	b.Run("held-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(keys)
			for pb.Next() {
				r.Used(ids[i%keys], ipNow)
				i++
			}
		})
	})
	b.Run("held-parallel-one-key", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Used(ids[0], ipNow)
			}
		})
	})
}
