package verify_test

import (
	"context"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/limiter/redislimiter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/verify"
)

// redisLimiter returns a shared limiter on the Redis at addr whose breaker
// runs on e's clock. Its timeout is generous: the tests' concurrent
// bursts queue on the client's pool on a shared machine.
func (e *env) redisLimiter(t *testing.T, addr string) *redislimiter.Limiter {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	l, err := redislimiter.New(c, &redislimiter.Options{Prefix: "kp:test:" + t.Name() + ":", Timeout: 2 * time.Second, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// records is a slog.Handler that keeps the records logged through it.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// count returns how many records at level contain msg.
func (r *records) count(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			n++
		}
	}
	return n
}

// decisionOf is what a caller sees of a decision, for comparing two.
type decisionOf struct {
	Code    verify.Code
	Refused int
	Limits  []verify.LimitState
}

func seen(d verify.Decision) decisionOf {
	return decisionOf{d.Code, d.Refused(), append([]verify.LimitState(nil), d.Limits()...)}
}

// TestSharedLimiterDecidesAsTheInProcessOne: the same requests get the
// same decisions (codes, the limit that refused, every limit's remaining
// budget) from a Verifier counting in Redis as from one counting in
// process, across the key's, the owner's and the feature's limits and
// into the next minute.
func TestSharedLimiterDecidesAsTheInProcessOne(t *testing.T) {
	srv := testenv.Redis(t)
	e := newEnv(t, nil)
	a := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	b := e.create(t, keys.CreateRequest{Owner: "proj_1", Plan: "tier1"})
	tiny := e.create(t, keys.CreateRequest{Owner: "proj_2", Plan: "tiny"})
	local := e.verifier(nil)
	shared := e.verifier(&verify.Options{Limiter: e.redisLimiter(t, srv.Addr)})
	reqs := []verify.Request{
		{Key: a.Secret, Feature: "pro-model", Units: 10},
		{Key: b.Secret, Feature: "pro-model", Units: 10}, // the feature's 1 per minute
		{Key: b.Secret, Feature: "flash"},
		{Key: a.Secret},
		{Key: b.Secret}, // the owner's 3 per minute
		{Key: tiny.Secret, Units: 60},
		{Key: tiny.Secret, Units: 60}, // the key's 100 units per minute
		{Key: tiny.Secret, Units: 40},
		{Key: tiny.Secret, Units: 0},
		{Key: tiny.Secret}, // the key's 3 requests per minute
	}
	for minute := range 2 {
		for i, req := range reqs {
			want, err := local.Verify(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := shared.Verify(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(seen(want), seen(got)); diff != "" {
				t.Errorf("minute %d, request %d: shared decision differs from in-process (-want +got):\n%s", minute, i, diff)
			}
		}
		e.clock.Advance(time.Minute)
	}
	if n := shared.Counts().LimiterFallbacks; n != 0 {
		t.Errorf("%d fallbacks with Redis up, want 0", n)
	}
}

// TestSharedLimiterIsExactAcrossVerifiers: N+k concurrent verifies of one
// key, spread over two Verifiers (two instances) sharing one Redis, admit
// exactly the key's N per minute; in process, each would admit N.
func TestSharedLimiterIsExactAcrossVerifiers(t *testing.T) {
	srv := testenv.Redis(t)
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Plan: "tiny"}) // 3 requests per minute
	vs := []*verify.Verifier{
		e.verifier(&verify.Options{Limiter: e.redisLimiter(t, srv.Addr)}),
		e.verifier(&verify.Options{Limiter: e.redisLimiter(t, srv.Addr)}),
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, failed := 0, 0
	for i := range 20 {
		v := vs[i%2]
		wg.Go(func() {
			d, err := v.Verify(context.Background(), verify.Request{Key: k.Secret})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
			case d.Code == verify.Valid:
				admitted++
			}
		})
	}
	wg.Wait()
	if admitted != 3 || failed != 0 {
		t.Errorf("%d of 20 verifies over two instances admitted (%d failed), want exactly the key's 3", admitted, failed)
	}
	for i, v := range vs {
		if n := v.Counts().LimiterFallbacks; n != 0 {
			t.Errorf("instance %d: %d fallbacks with Redis up, want 0", i, n)
		}
	}
}

// TestSharedLimiterDownFallsBackToThisInstancesCounts: when Redis stops
// mid-minute, verify goes on deciding on the instance's own counts, which
// include what it admitted through Redis earlier in the minute, so the
// instance admits at most the limit in that minute; the fallback is
// logged once and counted; when Redis is back (after the breaker's
// cooldown), verify counts there again.
func TestSharedLimiterDownFallsBackToThisInstancesCounts(t *testing.T) {
	srv := testenv.Redis(t)
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Plan: "tiny"}) // 3 requests per minute
	logs := &records{}
	v := verify.New(e.store, e.hasher, e.plans, e.clock, &verify.Options{Limiter: e.redisLimiter(t, srv.Addr), Logger: slog.New(logs)})
	req := verify.Request{Key: k.Secret}
	check(t, v, req, verify.Valid)
	check(t, v, req, verify.Valid)
	srv.Stop()
	d := check(t, v, req, verify.Valid) // the third of 3, counted here
	if got := refusalFree(d); got != 0 {
		t.Errorf("remaining after the third request = %d, want 0", got)
	}
	for range 5 {
		d := check(t, v, req, verify.RateLimited)
		if l := refusal(t, d); l.Name != "requests_per_minute" || l.Scope != verify.ScopeKey {
			t.Errorf("fallback refusal names %s %s, want the key's requests_per_minute", l.Scope, l.Name)
		}
	}
	if n := v.Counts().LimiterFallbacks; n != 6 {
		t.Errorf("LimiterFallbacks = %d, want 6 (every verify since Redis stopped)", n)
	}
	if n := logs.count(slog.LevelWarn, "shared limiter is unavailable"); n != 1 {
		t.Errorf("%d warnings of the fallback, want 1 for the whole outage", n)
	}

	srv.Start() // empty: the new minute starts from zero anyway
	e.clock.Advance(time.Minute)
	for range 3 {
		check(t, v, req, verify.Valid)
	}
	check(t, v, req, verify.RateLimited)
	if n := v.Counts().LimiterFallbacks; n != 6 {
		t.Errorf("LimiterFallbacks = %d after Redis came back, want still 6", n)
	}
	if n := logs.count(slog.LevelInfo, "shared limiter answers again"); n != 1 {
		t.Errorf("%d notes of the recovery, want 1", n)
	}
}

// refusalFree returns the remaining budget of d's first limit.
func refusalFree(d verify.Decision) int64 { return d.Limits()[0].Remaining }

// TestUnreachableSharedLimiterBoundsEachInstance: with the shared
// limiter's address a closed port, N instances admit at most N × the
// limit (each its own limit), never unlimited.
func TestUnreachableSharedLimiterBoundsEachInstance(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Plan: "tiny"}) // 3 requests per minute
	admitted := 0
	for range 2 {
		v := e.verifier(&verify.Options{Limiter: e.redisLimiter(t, closed)})
		for range 10 {
			d, err := v.Verify(context.Background(), verify.Request{Key: k.Secret})
			if err != nil {
				t.Fatalf("Verify with Redis unreachable: %v, want a decision", err)
			}
			if d.Code == verify.Valid {
				admitted++
			}
		}
	}
	if admitted != 2*3 {
		t.Errorf("two instances admitted %d of 20 with Redis unreachable, want 2 × 3", admitted)
	}
}

// TestUnitsAboveMaxValueAreRefusedNotWrapped: a request of more units than
// limiter.MaxValue (2^53) counts as MaxValue: refused by a units limit on
// either limiter, never wrapped around into an admission, and never a
// malformed request to Redis (which would be a fallback). A limit above
// MaxValue is counted as MaxValue.
func TestUnitsAboveMaxValueAreRefusedNotWrapped(t *testing.T) {
	srv := testenv.Redis(t)
	e := newEnv(t, nil)
	tiny := e.create(t, keys.CreateRequest{Plan: "tiny"}) // 100 units per minute
	huge := e.create(t, keys.CreateRequest{Plan: "tiny", Limits: plan.Limits{"units_per_minute": math.MaxInt64}})
	for _, c := range []struct {
		name string
		opts *verify.Options
	}{
		{"in-process", nil},
		{"redis", &verify.Options{Limiter: e.redisLimiter(t, srv.Addr)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := e.verifier(c.opts)
			check(t, v, verify.Request{Key: tiny.Secret, Units: 1}, verify.Valid)
			d := check(t, v, verify.Request{Key: tiny.Secret, Units: math.MaxInt64}, verify.RateLimited)
			if l := refusal(t, d); l.Name != "units_per_minute" {
				t.Errorf("refused by %s, want units_per_minute", l.Name)
			}
			check(t, v, verify.Request{Key: huge.Secret, Units: limiter.MaxValue + 1}, verify.Valid)
			if n := v.Counts().LimiterFallbacks; n != 0 {
				t.Errorf("%d fallbacks, want 0: the requests were well-formed for Redis", n)
			}
			e.clock.Advance(time.Minute)
		})
	}
}
