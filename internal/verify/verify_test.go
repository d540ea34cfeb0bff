package verify_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/race"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/telemetry"
	"github.com/keyplane/keyplane/internal/verify"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// countingStore is a real store that counts the reads verify makes and can
// be made unreachable.
type countingStore struct {
	store.Store
	lookups, feeds atomic.Int64
	down           atomic.Bool
}

func (s *countingStore) LookupHash(ctx context.Context, h apikey.Hash) (*store.Key, error) {
	s.lookups.Add(1)
	if s.down.Load() {
		return nil, errs.E(errs.Unavailable, "down")
	}
	return s.Store.LookupHash(ctx, h)
}

func (s *countingStore) ChangedKeys(ctx context.Context, since time.Time, after string, limit int) ([]*store.Key, error) {
	s.feeds.Add(1)
	if s.down.Load() {
		return nil, errs.E(errs.Unavailable, "down")
	}
	return s.Store.ChangedKeys(ctx, since, after, limit)
}

type env struct {
	keys   *keys.Service
	store  *countingStore
	clock  *clock.Fake
	hasher *apikey.Hasher
	plans  *plan.Catalog
}

var plansJSON = `{"plans": {
  "tiny": {"scopes": ["generate", "embed"], "limits": {"requests_per_minute": 3, "units_per_minute": 100}},
  "free": {"scopes": ["generate", "embed"], "limits": {"requests_per_minute": 1000}},
  "watched": {"scopes": ["generate"], "limits": {}, "abuse": {"distinct_ips": {"max_per_day": 2}}},
  "tier1": {"scopes": ["generate"], "limits": {"requests_per_minute": 100}, "owner_limits": {"requests_per_minute": 3},
    "features": {"pro-model": {"requests_per_minute": 1, "units_per_minute": 1000}, "flash": {}}},
  "tier2": {"scopes": ["generate"], "limits": {"requests_per_minute": 100}, "owner_limits": {"requests_per_minute": 10},
    "features": {"pro-model": {"requests_per_minute": 5}, "flash": {}}},
  "daily": {"scopes": ["generate"], "limits": {}, "owner_limits": {"requests_per_day": 5},
    "features": {"pro-model": {"units_per_month": 100}, "flash": {}}},
  "metered": {"scopes": ["generate"], "limits": {}, "prices": {"*": {"per_request": "0.01", "per_1k_units": "1.00"}},
    "spend_cap": {"monthly": "0.10"}},
  "prepaid": {"scopes": ["generate"], "limits": {}, "prices": {"*": {"per_request": "0.01"}}, "prepaid": true}}}`

func newEnv(t *testing.T, st store.Store) *env {
	t.Helper()
	dir := t.TempDir()
	if st == nil {
		s, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
		if err != nil {
			t.Fatal(err)
		}
		st = s
	}
	t.Cleanup(func() { st.Close() })
	v, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans, err := plan.Parse([]byte(plansJSON), false)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: &countingStore{Store: st}, clock: clock.NewFake(t0), hasher: h, plans: plans}
	e.keys = &keys.Service{Store: st, Vault: v, Hasher: h, Plans: plans, Prefix: "kp_test", Clock: e.clock,
		Logger: slog.New(slog.DiscardHandler)}
	return e
}

func (e *env) verifier(opts *verify.Options) *verify.Verifier {
	if opts == nil {
		opts = &verify.Options{}
	}
	opts.Logger = slog.New(slog.DiscardHandler)
	return verify.New(e.store, e.hasher, e.plans, e.clock, opts)
}

func (e *env) create(t *testing.T, req keys.CreateRequest) *keys.Created {
	t.Helper()
	if req.Owner == "" {
		req.Owner = "acct"
	}
	c, err := e.keys.Create(context.Background(), "test", req, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func check(t *testing.T, v *verify.Verifier, req verify.Request, want verify.Code) verify.Decision {
	t.Helper()
	d, err := v.Verify(context.Background(), req)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if d.Code != want {
		t.Fatalf("Verify(%+v) = %s, want %s", req.Scope, d.Code, want)
	}
	return d
}

func TestEveryCodeFromTheRightInput(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	soon := t0.Add(time.Hour)
	plain := e.create(t, keys.CreateRequest{Plan: "tiny", Scopes: []string{"generate"}})
	restricted := e.create(t, keys.CreateRequest{Restrictions: &store.Restrictions{
		AllowedIPs: []string{"203.0.113.0/24"}, AllowedReferrers: []string{"*.example.com"}}})
	expiring := e.create(t, keys.CreateRequest{ExpiresAt: &soon})
	disabled := e.create(t, keys.CreateRequest{})
	e.keys.Disable(ctx, "t", disabled.Key.ID, "")
	revoked := e.create(t, keys.CreateRequest{})
	e.keys.Revoke(ctx, "t", revoked.Key.ID, "")
	unknown, _ := apikey.Generate("kp_test")
	typo := []byte(plain.Secret)
	typo[12] ^= 1

	v := e.verifier(nil)
	d := check(t, v, verify.Request{Key: plain.Secret, Scope: "generate", Units: 10}, verify.Valid)
	if d.Key.ID != plain.Key.ID || d.Key.Owner != "acct" || len(d.Limits()) != 2 {
		t.Errorf("VALID decision = %+v", d)
	}
	check(t, v, verify.Request{Key: "garbage"}, verify.NotFound)
	check(t, v, verify.Request{Key: string(typo)}, verify.NotFound)
	check(t, v, verify.Request{Key: unknown}, verify.NotFound)
	check(t, v, verify.Request{Key: revoked.Secret}, verify.Revoked)
	check(t, v, verify.Request{Key: disabled.Secret}, verify.Disabled)
	check(t, v, verify.Request{Key: plain.Secret, Scope: "embed"}, verify.InsufficientPermissions)
	check(t, v, verify.Request{Key: restricted.Secret, IP: "203.0.113.5", Referrer: "https://app.example.com/"}, verify.Valid)
	// A refusal says which restriction refused, and whether the request
	// lacked what it needs.
	for _, tc := range []struct {
		req    verify.Request
		reason string
	}{
		{verify.Request{Key: restricted.Secret, IP: "198.51.100.1", Referrer: "https://app.example.com/"}, verify.ReasonIPNotAllowed},
		{verify.Request{Key: restricted.Secret, IP: "not-an-ip", Referrer: "https://app.example.com/"}, verify.ReasonIPNotAllowed},
		{verify.Request{Key: restricted.Secret, IP: "203.0.113.5", Referrer: "https://evil.test/"}, verify.ReasonReferrerNotAllowed},
		{verify.Request{Key: restricted.Secret, Referrer: "https://app.example.com/"}, verify.ReasonIPMissing},
		{verify.Request{Key: restricted.Secret}, verify.ReasonIPMissing},
		{verify.Request{Key: restricted.Secret, IP: "203.0.113.5"}, verify.ReasonReferrerMissing},
	} {
		if d := check(t, v, tc.req, verify.Forbidden); d.Reason != tc.reason {
			t.Errorf("Verify(ip %q, referrer %q).Reason = %q, want %q", tc.req.IP, tc.req.Referrer, d.Reason, tc.reason)
		}
	}
	if d := check(t, v, verify.Request{Key: disabled.Secret}, verify.Disabled); d.Reason != "" {
		t.Errorf("DISABLED decision has reason %q, want none", d.Reason)
	}
	check(t, v, verify.Request{Key: plain.Secret, Units: 91}, verify.RateLimited) // 10 of 100 units used
	check(t, v, verify.Request{Key: plain.Secret, Units: 90}, verify.Valid)
	check(t, v, verify.Request{Key: expiring.Secret}, verify.Valid)
	e.clock.Advance(time.Hour)
	check(t, v, verify.Request{Key: expiring.Secret}, verify.Expired)
}

func TestMalformedKeyReadsNothing(t *testing.T) {
	e := newEnv(t, nil)
	v := e.verifier(nil)
	good := e.create(t, keys.CreateRequest{}).Secret
	bad := good[:len(good)-1] + "0"
	if bad == good {
		bad = good[:len(good)-1] + "1"
	}
	for _, k := range []string{"", "kp_test_short", bad, good + "x"} {
		check(t, v, verify.Request{Key: k}, verify.NotFound)
	}
	if n := e.store.lookups.Load() + e.store.feeds.Load(); n != 0 {
		t.Errorf("malformed keys caused %d datastore reads, want 0", n)
	}
}

func TestRotatedKeyVerifiesUntilGraceEnds(t *testing.T) {
	e := newEnv(t, nil)
	old := e.create(t, keys.CreateRequest{})
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: old.Secret}, verify.Valid)
	nk, err := e.keys.Rotate(context.Background(), "t", old.Key.ID, keys.RotateRequest{GracePeriod: "10m"}, "")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second) // one feed poll
	check(t, v, verify.Request{Key: old.Secret}, verify.Valid)
	check(t, v, verify.Request{Key: nk.Secret}, verify.Valid)
	e.clock.Advance(10 * time.Minute)
	check(t, v, verify.Request{Key: old.Secret}, verify.Expired)
	check(t, v, verify.Request{Key: nk.Secret}, verify.Valid)
}

func TestConcurrentVerifiesAdmitExactlyTheLimit(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Plan: "tiny"}) // 3 requests per minute
	v := e.verifier(nil)
	var valid, limited atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := v.Verify(context.Background(), verify.Request{Key: k.Secret})
			switch {
			case err != nil:
				t.Error(err)
			case d.Code == verify.Valid:
				valid.Add(1)
			case d.Code == verify.RateLimited:
				limited.Add(1)
				if d.RetryAfter <= 0 || d.RetryAfter > time.Minute {
					t.Errorf("retry after %v", d.RetryAfter)
				}
			}
		}()
	}
	wg.Wait()
	if valid.Load() != 3 || limited.Load() != 47 {
		t.Fatalf("admitted %d, limited %d; want exactly 3 and 47", valid.Load(), limited.Load())
	}
	e.clock.Advance(time.Minute) // next window
	check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
}

func TestRefusedRequestConsumesNoBudget(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{Plan: "tiny", Scopes: []string{"generate"}})
	v := e.verifier(nil)
	for range 10 {
		check(t, v, verify.Request{Key: k.Secret, Scope: "embed"}, verify.InsufficientPermissions)
		check(t, v, verify.Request{Key: k.Secret, Units: 101}, verify.RateLimited) // over units: refused whole
	}
	for range 3 {
		check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
	}
	d := check(t, v, verify.Request{Key: k.Secret}, verify.RateLimited)
	for _, l := range d.Limits() {
		if l.Name == "requests_per_minute" && (l.Limit != 3 || l.Remaining != 0) {
			t.Errorf("limit state %+v", l)
		}
	}
}

func TestBurstOfMissesReadsOnce(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{})
	v := e.verifier(nil)
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() { defer wg.Done(); v.Verify(context.Background(), verify.Request{Key: k.Secret}) }()
	}
	wg.Wait()
	// Single flight makes one read per burst; a goroutine scheduled after
	// the first load finished hits the cache.
	if n := e.store.lookups.Load(); n != 1 {
		t.Errorf("200 concurrent first verifies made %d lookups, want 1", n)
	}
}

func TestUnchangedKeyIsReadOncePerTTL(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{})
	v := e.verifier(nil)
	for range 9 * 60 { // nine minutes of one verify a second
		check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
		e.clock.Advance(time.Second)
	}
	if n := e.store.lookups.Load(); n != 1 {
		t.Errorf("%d key reads in 9 minutes, want 1", n)
	}
	e.clock.Advance(2 * time.Minute)
	check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
	if n := e.store.lookups.Load(); n != 2 {
		t.Errorf("%d key reads after the TTL, want 2", n)
	}
}

func TestDisableReachesCachedVerifierWithinOnePoll(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{})
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
	if _, err := e.keys.Disable(context.Background(), "t", k.Key.ID, "leak"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second) // SyncInterval
	check(t, v, verify.Request{Key: k.Secret}, verify.Disabled)
	e.keys.Enable(context.Background(), "t", k.Key.ID)
	e.clock.Advance(time.Second)
	check(t, v, verify.Request{Key: k.Secret}, verify.Valid)
}

func TestNewKeyIsFoundAfterACachedMiss(t *testing.T) {
	e := newEnv(t, nil)
	v := e.verifier(nil)
	plaintext, _ := apikey.Generate("kp_test")
	check(t, v, verify.Request{Key: plaintext}, verify.NotFound) // the miss is cached
	check(t, v, verify.Request{Key: plaintext}, verify.NotFound)
	if n := e.store.lookups.Load(); n != 1 {
		t.Fatalf("%d lookups for a repeated unknown key, want 1 (negative cache)", n)
	}
	// Now a key with exactly that plaintext appears, as provisioning
	// elsewhere would store it. The feed must clear the cached miss
	// within one poll.
	now := e.clock.Now()
	k := &store.Key{ID: "key_0123456789abcdef", Owner: "acct", Plan: "free", Scopes: []string{"generate"},
		Status: store.Active, Prefix: "kp_test", Last4: apikey.Last4(plaintext), Hash: e.hasher.Sum(plaintext),
		CreatedAt: now, UpdatedAt: now}
	if err := e.store.Activate(context.Background(), k, store.AuditEntry{Time: now, Actor: "t", Action: "key.create", KeyID: k.ID}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	check(t, v, verify.Request{Key: plaintext}, verify.Valid)
}

func TestNegativeCacheIsBounded(t *testing.T) {
	e := newEnv(t, nil)
	v := e.verifier(&verify.Options{NegativeCacheSize: 100})
	for range 2000 {
		k, _ := apikey.Generate("kp_test")
		check(t, v, verify.Request{Key: k}, verify.NotFound)
	}
	if n := v.NegativeCacheLen(); n > 100 {
		t.Errorf("negative cache holds %d hashes, want at most 100", n)
	}
}

func TestFailClosedWhenStoreDownAndKeyNotCached(t *testing.T) {
	e := newEnv(t, nil)
	cached := e.create(t, keys.CreateRequest{})
	uncached := e.create(t, keys.CreateRequest{})
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: cached.Secret}, verify.Valid)
	e.store.down.Store(true)
	e.clock.Advance(time.Second)
	if d, err := v.Verify(context.Background(), verify.Request{Key: uncached.Secret}); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("uncached key with the store down = %s, %v; want Unavailable", d.Code, err)
	}
	check(t, v, verify.Request{Key: cached.Secret}, verify.Valid) // within MaxStale
	e.clock.Advance(5 * time.Minute)
	if d, err := v.Verify(context.Background(), verify.Request{Key: cached.Secret}); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("cached key after MaxStale without a poll = %s, %v; want Unavailable", d.Code, err)
	}
	e.store.down.Store(false)
	e.clock.Advance(time.Second)
	check(t, v, verify.Request{Key: cached.Secret}, verify.Valid)
}

func TestCachedVerifyAllocations(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{})
	v := e.verifier(nil)
	checkCachedVerifyAllocs(t, v, k.Secret, "a cached verify")
}

// checkCachedVerifyAllocs checks that verifying secret, once cached,
// allocates at most twice.
func checkCachedVerifyAllocs(t *testing.T, v *verify.Verifier, secret, what string) {
	t.Helper()
	req := verify.Request{Key: secret, Scope: "generate"}
	check(t, v, req, verify.Valid)
	if race.Enabled {
		return // the race detector makes sync.Pool drop items
	}
	if n := testing.AllocsPerRun(1000, func() { v.Verify(context.Background(), req) }); n > 2 {
		t.Errorf("%s allocates %v times, want at most 2", what, n)
	}
}

func TestCachedVerifyAllocationsWithTelemetryOn(t *testing.T) {
	e := newEnv(t, nil)
	k := e.create(t, keys.CreateRequest{})
	tel := telemetry.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())), nil)
	latency, err := tel.VerifyLatency()
	if err != nil || latency == nil {
		t.Fatalf("VerifyLatency = %v, %v; want a recorder", latency != nil, err)
	}
	v := e.verifier(&verify.Options{ObserveLatency: latency})
	if err := tel.ObserveVerifier(v); err != nil {
		t.Fatal(err)
	}
	checkCachedVerifyAllocs(t, v, k.Secret, "a cached verify with telemetry on")
}

type sightings struct {
	mu   sync.Mutex
	got  []string
	used []string
}

func (s *sightings) Used(id string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used = append(s.used, id)
}

func (s *sightings) Saw(id, ip string, limit int, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, fmt.Sprintf("%s %s %d", id, ip, limit))
}

func TestClientIPsAreRecordedOnlyWhereTheRuleApplies(t *testing.T) {
	e := newEnv(t, nil)
	rec := &sightings{}
	v := e.verifier(&verify.Options{ClientIPs: rec})
	watched := e.create(t, keys.CreateRequest{Plan: "watched"})
	browser := e.create(t, keys.CreateRequest{Plan: "watched", Restrictions: &store.Restrictions{AllowedReferrers: []string{"*.example.com"}}})
	unwatched := e.create(t, keys.CreateRequest{Plan: "free"})
	check(t, v, verify.Request{Key: watched.Secret, IP: "203.0.113.7"}, verify.Valid)
	check(t, v, verify.Request{Key: watched.Secret}, verify.Valid) // no IP: nothing to record
	check(t, v, verify.Request{Key: browser.Secret, IP: "203.0.113.8", Referrer: "https://app.example.com/"}, verify.Valid)
	check(t, v, verify.Request{Key: unwatched.Secret, IP: "203.0.113.9"}, verify.Valid)
	want := []string{watched.Key.ID + " 203.0.113.7 3"}
	if fmt.Sprint(rec.got) != fmt.Sprint(want) {
		t.Errorf("sightings = %v, want %v", rec.got, want)
	}
}

// TestEveryVerifyOfAnExistingKeyIsAUse: refused verifies of a stored key
// count as its use (it is still in someone's hands); unknown and malformed
// keys record nothing.
func TestEveryVerifyOfAnExistingKeyIsAUse(t *testing.T) {
	e := newEnv(t, nil)
	rec := &sightings{}
	v := e.verifier(&verify.Options{ClientIPs: rec})
	ok := e.create(t, keys.CreateRequest{Plan: "free"})
	disabled := e.create(t, keys.CreateRequest{Plan: "free"})
	if _, err := e.keys.Disable(t.Context(), "t", disabled.Key.ID, ""); err != nil {
		t.Fatal(err)
	}
	check(t, v, verify.Request{Key: ok.Secret}, verify.Valid)
	check(t, v, verify.Request{Key: disabled.Secret}, verify.Disabled)
	check(t, v, verify.Request{Key: ok.Secret, Scope: "no-such-scope"}, verify.InsufficientPermissions)
	check(t, v, verify.Request{Key: "kp_live_nosuchkeynosuchkeynosuchkey"}, verify.NotFound)
	check(t, v, verify.Request{Key: "garbage"}, verify.NotFound)
	want := []string{ok.Key.ID, disabled.Key.ID, ok.Key.ID}
	if fmt.Sprint(rec.used) != fmt.Sprint(want) {
		t.Errorf("uses = %v, want %v", rec.used, want)
	}
}
