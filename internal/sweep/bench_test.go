package sweep_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/usage"
)

// benchPlans is a free-tier-like plan with every rule on, so that each key
// costs what the builtin free plan costs: day totals, the hour and
// yesterday (spike), and the day's client IPs.
const benchPlans = `{"plans": {"bench": {"scopes": ["generate"],
  "limits": {"requests_per_day": 1500, "units_per_day": 50000000},
  "abuse": {"spike": {"floor": 500}, "distinct_ips": {"max_per_day": 20}}}}}`

// benchSizes reads SWEEP_BENCH_KEYS (comma-separated key counts, default
// 10000) and SWEEP_BENCH_IDLE (keys without usage per key with usage,
// default 0).
func benchSizes(b *testing.B) (sizes []int, idle int) {
	spec := os.Getenv("SWEEP_BENCH_KEYS")
	if spec == "" {
		spec = "10000"
	}
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("SWEEP_BENCH_KEYS: %q is not a key count", f)
		}
		sizes = append(sizes, n)
	}
	if v := os.Getenv("SWEEP_BENCH_IDLE"); v != "" {
		var err error
		if idle, err = strconv.Atoi(v); err != nil || idle < 0 {
			b.Fatalf("SWEEP_BENCH_IDLE: %q", v)
		}
	}
	return sizes, idle
}

// populate stores active keys with usage today (1% of them over their day
// quota) and idle×active keys without usage.
func populate(b *testing.B, st store.Store, l ledger.Ledger, active, idle int, now time.Time) {
	b.Helper()
	ctx := context.Background()
	total := active * (1 + idle)
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < total; i += 16 {
				id := fmt.Sprintf("key_%016d", i)
				k := &store.Key{ID: id, Owner: fmt.Sprintf("acct_%d", i%1000), Plan: "bench", Scopes: []string{"generate"},
					Status: store.Active, Prefix: "kp_bench", Last4: "abcd", Hash: apikey.Hash(sha256.Sum256([]byte(id))),
					CreatedAt: now.Add(-72 * time.Hour), UpdatedAt: now.Add(-72 * time.Hour)}
				if err := st.Activate(ctx, k, store.AuditEntry{Time: k.CreatedAt, Actor: "bench", Action: "key.create", KeyID: id}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	batch := make([]ledger.Counted, 0, 1000)
	flush := func() {
		if _, err := l.Count(ctx, batch, usage.Retention); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range active {
		id := fmt.Sprintf("key_%016d", i*(1+idle))
		reqs := int64(10)
		if i%100 == 0 {
			reqs = 1501
		}
		batch = append(batch, ledger.Counted{Event: usage.Event{ID: "e" + id, KeyID: id, Time: now.Add(-time.Hour), Requests: reqs}, Owner: "acct"})
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}

// BenchmarkSweep measures full passes over keys with usage today, in keys
// per second, against a baseline in the same run: a bare pass that lists
// the keys with usage and reads their records, the least any sweep reads.
// ratio = sweep keys/s ÷ bare keys/s.
//
//	SWEEP_BENCH_KEYS=10000,100000,1000000 go test -run '^$' -bench Sweep -benchtime 1x -timeout 2h ./internal/sweep/
//	SWEEP_BENCH_IDLE=9 …  (nine keys without usage per key with usage)
//	SWEEP_BENCH_WORKERS=32 …  (keys read at once; default sweep.DefaultWorkers)
//
// It runs on every backend of the sweep's tests; the Firestore case needs
// FIRESTORE_EMULATOR_HOST (make bench starts the emulator).
func BenchmarkSweep(b *testing.B) {
	sizes, idle := benchSizes(b)
	workers, _ := strconv.Atoi(os.Getenv("SWEEP_BENCH_WORKERS")) // 0: the default
	plans, err := plan.Parse([]byte(benchPlans), false)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2030, 1, 15, 12, 0, 0, 0, time.UTC)
	for _, backend := range backends {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s/keys=%d/idle=%d", backend.name, n, n*idle), func(b *testing.B) {
				st, l, _ := backend.open(b)
				start := time.Now()
				populate(b, st, l, n, idle, now)
				b.Logf("stored %d keys and their usage in %v", n*(1+idle), time.Since(start).Round(time.Second))
				clk := clock.NewFake(now)
				log := slog.New(slog.DiscardHandler)
				ks := &keys.Service{Store: st, Vault: nopVault{}, Clock: clk, Logger: log}
				s := &sweep.Sweeper{Store: st, Ledger: l, Plans: plans, Keys: ks, Clock: clk,
					Logger: log, Budget: time.Hour, Workers: workers}
				var sweepDur, bareDur time.Duration
				b.ResetTimer()
				for range b.N {
					start := time.Now()
					bare(b, st, l, now, n)
					bareDur += time.Since(start)
					start = time.Now()
					rep, err := s.Run(context.Background(), sweep.Options{})
					if err != nil {
						b.Fatal(err)
					}
					sweepDur += time.Since(start)
					if rep.Scanned != n || !rep.Complete {
						b.Fatalf("scanned %d of %d (complete %v)", rep.Scanned, n, rep.Complete)
					}
				}
				b.StopTimer()
				sweepRate := float64(n*b.N) / sweepDur.Seconds()
				bareRate := float64(n*b.N) / bareDur.Seconds()
				b.ReportMetric(sweepRate, "keys/s")
				b.ReportMetric(bareRate, "bare-keys/s")
				b.ReportMetric(sweepRate/bareRate, "ratio")
				b.ReportMetric(float64(sweepDur.Microseconds())/float64(n*b.N), "µs/key")
			})
		}
	}
}

// bare lists the keys with usage today and reads their records.
func bare(b *testing.B, st store.Store, l ledger.Ledger, now time.Time, want int) {
	ctx := context.Background()
	token, n := "", 0
	for {
		page, next, err := l.OwnerTotals(ctx, "", plan.Day, now, sweep.DefaultPageSize, token)
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]string, len(page))
		for i, t := range page {
			ids[i] = t.KeyID
		}
		if _, err := st.GetKeys(ctx, ids); err != nil {
			b.Fatal(err)
		}
		n += len(page)
		if token = next; token == "" {
			break
		}
	}
	if n != want {
		b.Fatalf("bare pass read %d keys, want %d", n, want)
	}
}

// nopVault stands in for the vault: the benchmark's keys have no secrets.
type nopVault struct{ secrets.Vault }

func (nopVault) SetKeySecretEnabled(context.Context, string, bool) error { return nil }
