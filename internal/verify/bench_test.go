package verify_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clientips"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/limiter/redislimiter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/telemetry"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/verify"
)

// The hot path: a verify of a key the Verifier has cached, against its
// floors measured in the same run (BenchmarkFloor*): one SHA-256 of the
// key, and the key's parse plus its lookup hash (HMAC-SHA256 with a pooled
// state), which every verify of a well-formed key must pay.
//
//	go test -run '^$' -bench 'Verify|Floor' -benchmem -count 10 ./internal/verify
//
// The Verifier runs as in `keyplane serve`: SQLite store, real clock (so
// the change feed is polled once a second, by whichever request finds it
// due), default options. The key's plan has per-minute limits high enough
// never to refuse, so every decision takes the whole VALID path,
// admission control included.

// benchPlans has one plan whose per-minute limits are checked but never
// reached.
const benchPlans = `{"plans": {"bench": {"scopes": ["generate", "embed"],
  "limits": {"requests_per_minute": 1000000000000, "units_per_minute": 1000000000000}}}}`

// benchQuotaPlans adds day and month quotas, answered from the metering
// cache (verify.Quotas) as in keyplane serve and the Verify function.
const benchQuotaPlans = `{"plans": {"bench": {"scopes": ["generate", "embed"], "limits": {
  "requests_per_minute": 1000000000000, "requests_per_day": 1000000000000, "units_per_month": 1000000000000}}}}`

// benchIPPlans turns on the distinct-IPs rule, so that verify records the
// client IP of each request (clientips.Recorder), as the built-in free
// and pro plans do.
const benchIPPlans = `{"plans": {"bench": {"scopes": ["generate", "embed"],
  "limits": {"requests_per_minute": 1000000000000}, "abuse": {"distinct_ips": {"max_per_day": 20}}}}}`

// benchOwnerPlans adds limits shared by the owner's keys and per-feature
// limits, checked but never reached: the decision counts the request in
// the key's, the owner's and the feature's windows.
const benchOwnerPlans = `{"plans": {"bench": {"scopes": ["generate", "embed"],
  "limits": {"requests_per_minute": 1000000000000, "units_per_minute": 1000000000000},
  "owner_limits": {"requests_per_minute": 1000000000000, "units_per_minute": 1000000000000},
  "features": {"pro-model": {"requests_per_minute": 1000000000000, "units_per_minute": 1000000000000}, "flash": {}}}}}`

// benchVerifier returns a Verifier on a fresh SQLite store holding one
// active key on plans' "bench" plan, and that key. With quotas, the
// Verifier checks day and month quotas against a SQLite usage ledger, and
// records client IPs into it.
func benchVerifier(b *testing.B, plansJSON string, quotas bool) (*verify.Verifier, string) {
	b.Helper()
	return benchVerifierWith(b, plansJSON, quotas, false, nil)
}

// benchVerifierWith is benchVerifier, with telemetry on if tel, and
// counting per-minute limits on lim if not nil.
func benchVerifierWith(b *testing.B, plansJSON string, quotas, tel bool, lim limiter.Limiter) (*verify.Verifier, string) {
	b.Helper()
	dir := b.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	vault, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { vault.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans, err := plan.Parse([]byte(plansJSON), false)
	if err != nil {
		b.Fatal(err)
	}
	discard := slog.New(slog.DiscardHandler)
	svc := &keys.Service{Store: st, Vault: vault, Hasher: h, Plans: plans, Prefix: "kp_live", Logger: discard}
	c, err := svc.Create(context.Background(), "bench", keys.CreateRequest{Owner: "acct_bench", Plan: "bench"}, "")
	if err != nil {
		b.Fatal(err)
	}
	opts := &verify.Options{Logger: discard, Limiter: lim}
	if quotas {
		ledger, err := sqliteledger.Open(filepath.Join(dir, "usage.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ledger.Close() })
		opts.Quota = verify.NewQuotas(ledger, 0, discard)
		opts.ClientIPs = clientips.New(struct {
			*sqliteledger.Ledger
			*sqlitestore.Store
		}{ledger, st}, clock.Real{}, 0, discard)
	}
	var t *telemetry.Telemetry
	if tel {
		t = telemetry.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())), nil)
	}
	if opts.ObserveLatency, err = t.VerifyLatency(); err != nil {
		b.Fatal(err)
	}
	v := verify.New(st, h, plans, clock.Real{}, opts)
	if err := t.ObserveVerifier(v); err != nil {
		b.Fatal(err)
	}
	return v, c.Secret
}

// warm verifies req once, so that the key (or its miss) is cached, and
// checks the decision.
func warm(b *testing.B, v *verify.Verifier, req verify.Request, want verify.Code) {
	b.Helper()
	d, err := v.Verify(context.Background(), req)
	if err != nil || d.Code != want {
		b.Fatalf("Verify = %s, %v; want %s", d.Code, err, want)
	}
}

// benchValid measures VALID verifies of req, after one to warm the cache.
func benchValid(b *testing.B, v *verify.Verifier, req verify.Request) {
	warm(b, v, req, verify.Valid)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d, err := v.Verify(ctx, req)
		if err != nil || d.Code != verify.Valid {
			b.Fatalf("Verify = %s, %v", d.Code, err)
		}
	}
}

// BenchmarkVerifyCached is a VALID verify of a cached key with a scope.
// Target: ≤ 1 µs and ≤ 2 allocs per op.
func BenchmarkVerifyCached(b *testing.B) {
	v, key := benchVerifier(b, benchPlans, false)
	req := verify.Request{Key: key, Scope: "generate", Units: 1}
	benchValid(b, v, req)
}

// BenchmarkVerifyCachedWithOwnerAndFeature is BenchmarkVerifyCached with
// the owner's and the feature's per-minute limits too. Target: ≤ 1.5 µs,
// 0 allocs per op.
func BenchmarkVerifyCachedWithOwnerAndFeature(b *testing.B) {
	v, key := benchVerifier(b, benchOwnerPlans, false)
	req := verify.Request{Key: key, Scope: "generate", Units: 1, Feature: "pro-model"}
	benchValid(b, v, req)
}

// BenchmarkVerifyCachedWithQuotas is BenchmarkVerifyCached for a key with
// day and month quotas.
func BenchmarkVerifyCachedWithQuotas(b *testing.B) {
	v, key := benchVerifier(b, benchQuotaPlans, true)
	req := verify.Request{Key: key, Scope: "generate", Units: 1}
	benchValid(b, v, req)
}

// BenchmarkVerifyCachedWithClientIP is BenchmarkVerifyCached for a key
// whose plan has the distinct-IPs rule, from a client IP seen before.
func BenchmarkVerifyCachedWithClientIP(b *testing.B) {
	v, key := benchVerifier(b, benchIPPlans, true)
	req := verify.Request{Key: key, Scope: "generate", Units: 1, IP: "203.0.113.7"}
	benchValid(b, v, req)
}

// BenchmarkVerifyCachedParallel is BenchmarkVerifyCached from GOMAXPROCS
// goroutines, all on the same key (the worst case for the cache's and the
// rate window's locks).
func BenchmarkVerifyCachedParallel(b *testing.B) {
	v, key := benchVerifier(b, benchPlans, false)
	req := verify.Request{Key: key, Scope: "generate", Units: 1}
	warm(b, v, req, verify.Valid)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			d, err := v.Verify(ctx, req)
			if err != nil || d.Code != verify.Valid {
				b.Errorf("Verify = %s, %v", d.Code, err)
				return
			}
		}
	})
}

// BenchmarkVerifyUnknownKeyNegativeCached is a NOT_FOUND verify of a
// well-formed key that matches no key, after its miss has been cached.
func BenchmarkVerifyUnknownKeyNegativeCached(b *testing.B) {
	v, _ := benchVerifier(b, benchPlans, false)
	unknown, _ := apikey.Generate("kp_live")
	req := verify.Request{Key: unknown, Scope: "generate"}
	warm(b, v, req, verify.NotFound)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d, err := v.Verify(ctx, req)
		if err != nil || d.Code != verify.NotFound {
			b.Fatalf("Verify = %s, %v", d.Code, err)
		}
	}
}

// BenchmarkVerifyUnknownKeyStoreMiss is what each request of a flood of
// random well-formed keys costs: every key is new, so every verify reads
// the store and records a miss in the (bounded) negative cache. The time
// includes generating the key (apikey.Generate, crypto/rand).
func BenchmarkVerifyUnknownKeyStoreMiss(b *testing.B) {
	v, _ := benchVerifier(b, benchPlans, false)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		k, _ := apikey.Generate("kp_live")
		d, err := v.Verify(ctx, verify.Request{Key: k})
		if err != nil || d.Code != verify.NotFound {
			b.Fatalf("Verify = %s, %v", d.Code, err)
		}
	}
}

// BenchmarkVerifyMalformedKey is a NOT_FOUND for a key with a bad
// checksum: decided by the parse alone.
func BenchmarkVerifyMalformedKey(b *testing.B) {
	v, key := benchVerifier(b, benchPlans, false)
	bad := []byte(key)
	bad[10] ^= 1 // still base62, checksum now wrong
	req := verify.Request{Key: string(bad)}
	warm(b, v, req, verify.NotFound)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v.Verify(ctx, req)
	}
}

// BenchmarkFloorSHA256 is the physical floor of any verify: one SHA-256 of
// the key.
func BenchmarkFloorSHA256(b *testing.B) {
	k, _ := apikey.Generate("kp_live")
	kb := []byte(k)
	b.ReportAllocs()
	for b.Loop() {
		sha256.Sum256(kb)
	}
}

// BenchmarkFloorParseAndHash is the floor of a verify of a well-formed
// key: apikey.Parse and the lookup hash, as Verify computes them.
func BenchmarkFloorParseAndHash(b *testing.B) {
	k, _ := apikey.Generate("kp_live")
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := apikey.Parse(k); err != nil {
			b.Fatal(err)
		}
		h.Sum(k)
	}
}

// BenchmarkFloorParseAndHashParallel is the floor of
// BenchmarkVerifyCachedParallel.
func BenchmarkFloorParseAndHashParallel(b *testing.B) {
	k, _ := apikey.Generate("kp_live")
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := apikey.Parse(k); err != nil {
				b.Error(err)
				return
			}
			h.Sum(k)
		}
	})
}

// BenchmarkVerifyCachedTelemetry is BenchmarkVerifyCached with telemetry
// off and on (internal/telemetry: the decision and cache counters
// observed, the latency histogram recorded, on an SDK meter provider with
// a manual reader), for the cost of telemetry on the hot path:
//
//	go test -run '^$' -bench 'VerifyCached' -benchmem ./internal/verify
func BenchmarkVerifyCachedTelemetry(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			v, key := benchVerifierWith(b, benchPlans, false, on, nil)
			benchValid(b, v, verify.Request{Key: key, Scope: "generate", Units: 1})
		})
	}
}

// BenchmarkVerifyCachedSharedLimiter is BenchmarkVerifyCachedWithOwnerAndFeature
// (key, owner and feature per-minute limits: six buckets) with the
// per-minute limits counted in process and in a local redis-server over
// loopback (redislimiter, as with KEYPLANE_REDIS_ADDR), in the same run,
// for the ratio in docs/benchmarks.md:
//
//	go test -run '^$' -bench 'VerifyCachedSharedLimiter' -benchmem -count 5 ./internal/verify
func BenchmarkVerifyCachedSharedLimiter(b *testing.B) {
	srv := testenv.Redis(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	b.Cleanup(func() { c.Close() })
	shared, err := redislimiter.New(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, lim := range []struct {
		name string
		l    limiter.Limiter
	}{{"in-process", nil}, {"redis", shared}} {
		b.Run(lim.name, func(b *testing.B) {
			v, key := benchVerifierWith(b, benchOwnerPlans, false, false, lim.l)
			benchValid(b, v, verify.Request{Key: key, Scope: "generate", Units: 1, Feature: "pro-model"})
			if n := v.Counts().LimiterFallbacks; n != 0 {
				b.Fatalf("%d fallbacks: Redis did not answer every verify", n)
			}
		})
	}
}

// BenchmarkVerifyCachedSharedLimiterParallel is BenchmarkVerifyCachedSharedLimiter
// from 8 × GOMAXPROCS goroutines at once, as an instance serving many
// concurrent requests does: what Redis costs in throughput rather than in
// latency. All verify one key, so they contend on the same buckets.
//
//	go test -run '^$' -bench 'VerifyCachedSharedLimiterParallel' -benchmem -count 5 ./internal/verify
func BenchmarkVerifyCachedSharedLimiterParallel(b *testing.B) {
	srv := testenv.Redis(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	b.Cleanup(func() { c.Close() })
	shared, err := redislimiter.New(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, lim := range []struct {
		name string
		l    limiter.Limiter
	}{{"in-process", nil}, {"redis", shared}} {
		b.Run(lim.name, func(b *testing.B) {
			v, key := benchVerifierWith(b, benchOwnerPlans, false, false, lim.l)
			req := verify.Request{Key: key, Scope: "generate", Units: 1, Feature: "pro-model"}
			warm(b, v, req, verify.Valid)
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if d, err := v.Verify(ctx, req); err != nil || d.Code != verify.Valid {
						b.Errorf("Verify = %s, %v", d.Code, err)
						return
					}
				}
			})
			if n := v.Counts().LimiterFallbacks; n != 0 {
				b.Fatalf("%d fallbacks: Redis did not answer every verify", n)
			}
		})
	}
}
