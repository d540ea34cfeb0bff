package sqliteledger

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/ledgertest"
	"github.com/keyplane/keyplane/internal/sqlitedb"
	"github.com/keyplane/keyplane/internal/usage"
)

func open(t testing.TB, opts Options) *Ledger {
	t.Helper()
	l, err := OpenWith(filepath.Join(t.TempDir(), "usage.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func harness(t *testing.T, path string) ledgertest.Harness {
	var b ledgertest.Breaker
	c := clock.NewFake(time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC))
	l, err := OpenWith(path, Options{Clock: c})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	l.failCommit = b.Hook
	return ledgertest.Harness{Ledger: l, Break: b.Break, Repair: b.Repair, Advance: c.Advance, SetClock: c.Set}
}

func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledgertest.Harness {
		return harness(t, filepath.Join(t.TempDir(), "usage.db"))
	})
}

func TestConformanceInMemory(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledgertest.Harness { return harness(t, ":memory:") })
}

func TestReopenKeepsCountsIDsAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	e := ledger.Counted{Event: usage.Event{ID: "evt-1", KeyID: "key-1", Time: time.Now(), Requests: 1}, Owner: "owner-1"}
	if n, err := l.Count(t.Context(), []ledger.Counted{e}, time.Hour); n != 1 || err != nil {
		t.Fatalf("Count: got %d, %v; want 1, nil", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if l, err = Open(path); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l.Close()
	if n, err := l.Count(t.Context(), []ledger.Counted{e}, time.Hour); n != 0 || err != nil {
		t.Errorf("Count after reopen: got %d, %v; want 0 (a duplicate), nil", n, err)
	}
	var v int
	if err := l.r.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version: got %d (%v), want %d", v, err, len(migrations))
	}
}

func TestExpiredEventsAreDeleted(t *testing.T) {
	c := clock.NewFake(time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC))
	l := open(t, Options{Clock: c})
	defer l.Close()
	batch := func(prefix string, n int) []ledger.Counted {
		var events []ledger.Counted
		for i := range n {
			events = append(events, ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("%s-%d", prefix, i), KeyID: "key-1",
				Time: c.Now(), Requests: 1}, Owner: "owner-1"})
		}
		return events
	}
	if _, err := l.Count(t.Context(), batch("old", 500), time.Hour); err != nil {
		t.Fatalf("Count: %v", err)
	}
	c.Advance(2 * time.Hour)
	// Each Count deletes up to 2n+100 expired rows: 300, then the last 200.
	for i := range 2 {
		if _, err := l.Count(t.Context(), batch(fmt.Sprint("new", i), 100), time.Hour); err != nil {
			t.Fatalf("Count: %v", err)
		}
	}
	var rows int
	if err := l.r.QueryRow("SELECT count(*) FROM usage_events").Scan(&rows); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if rows != 200 {
		t.Errorf("event rows after the expired ones were purged: got %d, want 200", rows)
	}
}

// TestOpenMigratesVersion1File opens a file of the first schema version,
// from before client IPs were recorded: Open migrates it and keeps its
// events.
func TestOpenMigratesVersion1File(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	old, err := sqlitedb.Open(path, migrations[:1], nil)
	if err != nil {
		t.Fatalf("open a version 1 file: %v", err)
	}
	if _, err := old.W.Exec(`INSERT INTO usage_events (id, key_id, time, expire_at) VALUES ('evt-1', 'key-1', 0, ?)`,
		micros(time.Now().Add(time.Hour))); err != nil {
		t.Fatalf("insert an event: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer l.Close()
	var v int
	if err := l.r.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version: got %d (%v), want %d", v, err, len(migrations))
	}
	e := ledger.Counted{Event: usage.Event{ID: "evt-1", KeyID: "key-1", Time: time.Now(), Requests: 1}, Owner: "owner-1"}
	if n, err := l.Count(t.Context(), []ledger.Counted{e}, time.Hour); n != 0 || err != nil {
		t.Errorf("Count of an event of the old file: got %d, %v; want 0 (a duplicate), nil", n, err)
	}
	day := time.Now()
	if err := l.AddClientIPs(t.Context(), day, map[string][]string{"key-1": {"192.0.2.1"}}); err != nil {
		t.Fatalf("AddClientIPs: %v", err)
	}
	if n, _, err := l.ClientIPs(t.Context(), "key-1", day, 0); n != 1 || err != nil {
		t.Errorf("ClientIPs: got %d, %v; want 1, nil", n, err)
	}
}

// TestExpiredClientIPsAreDeleted checks that a day's client IPs are kept
// until ClientIPRetention after the day's start and then deleted by later
// writes, a bounded number at a time.
func TestExpiredClientIPsAreDeleted(t *testing.T) {
	day := time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC)
	c := clock.NewFake(day)
	l := open(t, Options{Clock: c})
	defer l.Close()
	ips := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		}
		return out
	}
	add := func(day time.Time, key string, n int) {
		t.Helper()
		if err := l.AddClientIPs(t.Context(), day, map[string][]string{key: ips(n)}); err != nil {
			t.Fatalf("AddClientIPs: %v", err)
		}
	}
	rows := func() int {
		t.Helper()
		var n int
		if err := l.r.QueryRow("SELECT count(*) FROM usage_client_ips").Scan(&n); err != nil {
			t.Fatalf("count rows: %v", err)
		}
		return n
	}
	add(day, "key-old", 500)
	c.Advance(ledger.ClientIPRetention - time.Hour)
	add(c.Now(), "key-1", 1)
	if got := rows(); got != 501 {
		t.Errorf("rows within retention: got %d, want 501", got)
	}
	if n, _, err := l.ClientIPs(t.Context(), "key-old", day, 0); n != 500 || err != nil {
		t.Errorf("ClientIPs within retention: got %d, %v; want 500, nil", n, err)
	}
	c.Advance(2 * time.Hour)
	// Each write deletes up to 2n+100 expired rows: 300, then the last 200.
	add(c.Now(), "key-2", 100)
	if got := rows(); got != 501-300+100 {
		t.Errorf("rows after one purging write: got %d, want %d", got, 501-300+100)
	}
	add(c.Now(), "key-3", 100)
	if got := rows(); got != 201 {
		t.Errorf("rows after the expired ones were purged: got %d, want 201", got)
	}
	if n, _, err := l.ClientIPs(t.Context(), "key-old", day, 0); n != 0 || err != nil {
		t.Errorf("ClientIPs after retention: got %d, %v; want 0, nil", n, err)
	}
}

// BenchmarkCount measures Count with batches of 100 new events of 20 keys,
// interleaved with a baseline that inserts the same rows into a table of
// the same shape without an expiry index, in one multi-row INSERT (its own
// transaction), and does nothing else. It reports the
// ledger's events/s, the baseline's, and the ledger's time over the
// baseline's.
func BenchmarkCount(b *testing.B) {
	const batch = 100
	l := open(b, Options{})
	defer l.Close()
	ctx := b.Context()
	if _, err := l.w.Exec(`CREATE TABLE raw (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, time INTEGER NOT NULL,
		expire_at INTEGER NOT NULL) STRICT, WITHOUT ROWID`); err != nil {
		b.Fatalf("create baseline table: %v", err)
	}
	now := time.Now().UTC()
	var (
		seq             int
		counting, plain time.Duration
	)
	for b.Loop() {
		events := make([]ledger.Counted, batch)
		for i := range events {
			seq++
			events[i] = ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("evt-%09d", seq), KeyID: fmt.Sprintf("key-%02d", seq%20),
				Time: now.Add(time.Duration(seq) * time.Millisecond), Requests: 1, Units: 350, Bytes: 2048}, Owner: "owner-1"}
		}
		start := time.Now()
		if n, err := l.Count(ctx, events, 35*24*time.Hour); err != nil || n != batch {
			b.Fatalf("Count: got %d, %v; want %d, nil", n, err, batch)
		}
		mid := time.Now()
		args := make([]any, 0, 4*batch)
		for _, e := range events {
			args = append(args, e.ID, e.KeyID, micros(e.Time), micros(now))
		}
		if _, err := l.w.ExecContext(ctx, `INSERT INTO raw (id, key_id, time, expire_at) VALUES `+values(batch, 4), args...); err != nil {
			b.Fatalf("baseline insert: %v", err)
		}
		counting += mid.Sub(start)
		plain += time.Since(mid)
	}
	events := float64(b.N * batch)
	b.ReportMetric(events/counting.Seconds(), "events/s")
	b.ReportMetric(events/plain.Seconds(), "baseline-events/s")
	b.ReportMetric(counting.Seconds()/plain.Seconds(), "time/baseline")
	b.ReportMetric(0, "ns/op") // covers the ledger and the baseline: see the metrics above
}
