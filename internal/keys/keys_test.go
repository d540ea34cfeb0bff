package keys_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// env is a keys.Service on real embedded backends, each wrapped so that a
// test can crash the process after any write.
type env struct {
	svc   *keys.Service
	store *crashStore
	vault *crashVault
	clock *clock.Fake
	crash *crash
}

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
	v, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("pepper"), 6))
	c := &crash{}
	e := &env{store: &crashStore{Store: st, c: c}, vault: &crashVault{Vault: v, c: c}, clock: clock.NewFake(t0), crash: c}
	e.svc = &keys.Service{Store: e.store, Vault: e.vault, Hasher: h, Plans: plan.Builtin(), Prefix: "kp_test", Clock: e.clock,
		Logger: slog.New(slog.DiscardHandler)}
	return e
}

// crash simulates a process dying right after a named write has
// committed: that call and every later call fail until restart. With
// survive set, only that call fails (a write whose answer was lost, in a
// process that lives on).
type crash struct {
	mu      sync.Mutex
	after   string // method name whose success triggers the crash
	dead    bool
	survive bool
}

var errCrashed = errs.E(errs.Unavailable, "simulated crash")

func (c *crash) arm(method string) {
	c.mu.Lock()
	c.after, c.dead, c.survive = method, false, false
	c.mu.Unlock()
}
func (c *crash) failOnce(method string) {
	c.mu.Lock()
	c.after, c.dead, c.survive = method, false, true
	c.mu.Unlock()
}
func (c *crash) restart() { c.mu.Lock(); c.after, c.dead = "", false; c.mu.Unlock() }

// before fails calls made after the crash.
func (c *crash) before() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errCrashed
	}
	return nil
}

// after turns a successful write of the armed method into a crash.
func (c *crash) afterWrite(method string, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.after == method {
		c.after, c.dead = "", !c.survive
		return errCrashed
	}
	return err
}

type crashStore struct {
	store.Store
	c *crash
}

func (s *crashStore) ReserveIdempotency(ctx context.Context, rec store.Idempotency, now time.Time) (store.Idempotency, bool, error) {
	if err := s.c.before(); err != nil {
		return store.Idempotency{}, false, err
	}
	r, owned, err := s.Store.ReserveIdempotency(ctx, rec, now)
	return r, owned, s.c.afterWrite("ReserveIdempotency", err)
}

func (s *crashStore) CreatePending(ctx context.Context, p store.Pending) error {
	if err := s.c.before(); err != nil {
		return err
	}
	return s.c.afterWrite("CreatePending", s.Store.CreatePending(ctx, p))
}

func (s *crashStore) Activate(ctx context.Context, k *store.Key, a store.AuditEntry) error {
	if err := s.c.before(); err != nil {
		return err
	}
	return s.c.afterWrite("Activate", s.Store.Activate(ctx, k, a))
}

func (s *crashStore) UpdateKey(ctx context.Context, id string, m func(*store.Key) (*store.AuditEntry, error)) (*store.Key, error) {
	if err := s.c.before(); err != nil {
		return nil, err
	}
	k, err := s.Store.UpdateKey(ctx, id, m)
	return k, s.c.afterWrite("UpdateKey", err)
}

func (s *crashStore) CompleteIdempotency(ctx context.Context, key string, status int) error {
	if err := s.c.before(); err != nil {
		return err
	}
	return s.c.afterWrite("CompleteIdempotency", s.Store.CompleteIdempotency(ctx, key, status))
}

func (s *crashStore) ReleaseIdempotency(ctx context.Context, key string) error {
	if err := s.c.before(); err != nil {
		return err
	}
	return s.Store.ReleaseIdempotency(ctx, key)
}

func (s *crashStore) GetKey(ctx context.Context, id string) (*store.Key, error) {
	if err := s.c.before(); err != nil {
		return nil, err
	}
	return s.Store.GetKey(ctx, id)
}

type crashVault struct {
	secrets.Vault
	c       *crash
	mu      sync.Mutex
	created []string // key ids whose secret was written
}

func (v *crashVault) CreateKeySecret(ctx context.Context, ref secrets.KeyRef, p []byte) error {
	if err := v.c.before(); err != nil {
		return err
	}
	err := v.Vault.CreateKeySecret(ctx, ref, p)
	if err == nil {
		v.mu.Lock()
		v.created = append(v.created, ref.KeyID)
		v.mu.Unlock()
	}
	return v.c.afterWrite("CreateKeySecret", err)
}

func (v *crashVault) KeySecret(ctx context.Context, id string) ([]byte, error) {
	if err := v.c.before(); err != nil {
		return nil, err
	}
	return v.Vault.KeySecret(ctx, id)
}

func (e *env) allKeys(t *testing.T) []*store.Key {
	t.Helper()
	ks, _, err := e.store.Store.ListKeys(context.Background(), store.ListKeysQuery{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// checkConsistent asserts the crash-consistency invariants: every stored
// key has its secret, whose hash is the key's; every stored secret belongs
// to a key or a pending intent.
func (e *env) checkConsistent(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, k := range e.allKeys(t) {
		sec, err := e.vault.Vault.KeySecret(ctx, k.ID)
		if err != nil {
			t.Fatalf("key %s is stored (verifiable) but its secret is not: %v", k.ID, err)
		}
		if e.svc.Hasher.Sum(string(sec)) != k.Hash {
			t.Fatalf("key %s: stored secret does not hash to the stored hash", k.ID)
		}
	}
	e.vault.mu.Lock()
	defer e.vault.mu.Unlock()
	for _, id := range e.vault.created {
		_, kerr := e.store.Store.GetKey(ctx, id)
		_, perr := e.store.Store.GetPending(ctx, id)
		if kerr != nil && perr != nil {
			t.Fatalf("secret of %s is stored but neither a key nor an intent finds it", id)
		}
	}
}

var req = keys.CreateRequest{Owner: "acct_1", Name: "ci", Metadata: map[string]string{"team": "ml"}}

func TestCrashAfterEachWriteThenRetryReturnsSameKey(t *testing.T) {
	for _, step := range []string{"ReserveIdempotency", "CreatePending", "CreateKeySecret", "Activate", "CompleteIdempotency"} {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t, nil)
			ctx := context.Background()
			e.crash.arm(step)
			if _, err := e.svc.Create(ctx, "admin", req, "idem-1"); !errors.Is(err, errCrashed) {
				t.Fatalf("Create with a crash after %s = %v, want the crash", step, err)
			}
			e.checkConsistent(t)
			e.crash.restart()

			// The crashed request never released its lease: a retry within
			// it is told to wait, one after it finishes the work.
			if step != "CompleteIdempotency" {
				if _, err := e.svc.Create(ctx, "admin", req, "idem-1"); !errs.Is(err, errs.Conflict) {
					t.Fatalf("retry inside the lease = %v, want Conflict", err)
				}
			}
			e.clock.Advance(31 * time.Second)
			c, err := e.svc.Create(ctx, "admin", req, "idem-1")
			if err != nil {
				t.Fatalf("retry after the lease: %v", err)
			}
			e.checkConsistent(t)
			if ks := e.allKeys(t); len(ks) != 1 || ks[0].ID != c.Key.ID {
				t.Fatalf("after retry: %d keys, want exactly the returned one", len(ks))
			}
			again, err := e.svc.Create(ctx, "admin", req, "idem-1")
			if err != nil || again.Key.ID != c.Key.ID || again.Secret != c.Secret || !again.Replayed {
				t.Fatalf("replay = %+v, %v; want the same key and secret", again, err)
			}
			if got := e.svc.Hasher.Sum(c.Secret); got != c.Key.Hash {
				t.Fatal("returned secret does not match the stored hash")
			}
		})
	}
}

func TestFailedWriteReleasesLeaseForImmediateRetry(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.crash.failOnce("CreateKeySecret") // the process survives the failure
	if _, err := e.svc.Create(ctx, "admin", req, "idem-2"); !errors.Is(err, errCrashed) {
		t.Fatalf("Create = %v, want the injected failure", err)
	}
	// No clock advance: the lease must have been released by the service,
	// or this retry would be told to wait (Conflict).
	c, err := e.svc.Create(ctx, "admin", req, "idem-2")
	if err != nil {
		t.Fatalf("immediate retry after a survived failure: %v", err)
	}
	e.checkConsistent(t)
	if ks := e.allKeys(t); len(ks) != 1 || ks[0].ID != c.Key.ID {
		t.Fatalf("%d keys after the retry, want exactly the returned one", len(ks))
	}
}

func TestCrashWithoutIdempotencyKeyIsReaped(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.crash.arm("CreateKeySecret")
	if _, err := e.svc.Create(ctx, "admin", req, ""); err == nil {
		t.Fatal("want the crash")
	}
	e.crash.restart()
	e.checkConsistent(t)
	if n, err := e.svc.ReapAbandoned(ctx); err != nil || n != 0 {
		t.Fatalf("ReapAbandoned inside the idempotency window = %d, %v; want 0", n, err)
	}
	e.clock.Advance(25 * time.Hour)
	if n, err := e.svc.ReapAbandoned(ctx); err != nil || n != 1 {
		t.Fatalf("ReapAbandoned = %d, %v; want 1", n, err)
	}
	id := e.vault.created[0]
	if _, err := e.vault.Vault.KeySecret(ctx, id); !errs.Is(err, errs.NotFound) {
		t.Errorf("abandoned secret still readable: %v", err)
	}
	if _, err := e.store.GetPending(ctx, id); !errs.Is(err, errs.NotFound) {
		t.Errorf("abandoned intent still stored: %v", err)
	}
}

func TestIdempotencyKeyWithDifferentBodyIsUnprocessable(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.svc.Create(ctx, "admin", req, "k"); err != nil {
		t.Fatal(err)
	}
	other := req
	other.Name = "other"
	if _, err := e.svc.Create(ctx, "admin", other, "k"); !errs.Is(err, errs.Unprocessable) {
		t.Fatalf("got %v, want Unprocessable", err)
	}
}

// RunConcurrentIdempotency sends 50 concurrent creates with one
// Idempotency-Key and checks that exactly one key exists and every success
// returned it.
func runConcurrentIdempotency(t *testing.T, e *env) {
	ctx := context.Background()
	var wg sync.WaitGroup
	var ok, conflict atomic.Int32
	ids := make(chan string, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.svc.Create(ctx, "admin", req, "same")
			switch {
			case err == nil:
				ok.Add(1)
				ids <- c.Key.ID
			case errs.Is(err, errs.Conflict):
				conflict.Add(1)
			default:
				t.Errorf("Create: %v", err)
			}
		}()
	}
	wg.Wait()
	close(ids)
	if ks := e.allKeys(t); len(ks) != 1 {
		t.Fatalf("50 concurrent creates with one Idempotency-Key made %d keys, want 1", len(ks))
	}
	first := ""
	for id := range ids {
		if first == "" {
			first = id
		}
		if id != first {
			t.Fatalf("two successes returned different keys: %s, %s", first, id)
		}
	}
	if ok.Load() == 0 || ok.Load()+conflict.Load() != 50 {
		t.Errorf("ok=%d conflict=%d, want at least one ok and the rest conflicts", ok.Load(), conflict.Load())
	}
}

func TestConcurrentIdempotentCreatesMakeOneKeySQLite(t *testing.T) {
	runConcurrentIdempotency(t, newEnv(t, nil))
}

func TestRotationGrace(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	old, err := e.svc.Create(ctx, "admin", req, "")
	if err != nil {
		t.Fatal(err)
	}
	nk, err := e.svc.Rotate(ctx, "admin", old.Key.ID, keys.RotateRequest{GracePeriod: "1h"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if nk.Key.RotatedFrom != old.Key.ID || nk.Secret == old.Secret || nk.Key.Owner != "acct_1" || nk.Key.Metadata["team"] != "ml" {
		t.Fatalf("rotated key = %+v", nk.Key)
	}
	o, _ := e.svc.Get(ctx, old.Key.ID)
	if o.RotatedTo != nk.Key.ID || o.ExpiresAt == nil || !o.ExpiresAt.Equal(t0.Add(time.Hour)) || o.Status != store.Active {
		t.Fatalf("old key after rotation = %+v", o)
	}
	if _, err := e.svc.Rotate(ctx, "admin", old.Key.ID, keys.RotateRequest{}, ""); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("rotating twice = %v, want FailedPrecondition", err)
	}
}

func TestRotateWithIdempotencyKeyRetriesToSameKey(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	old, _ := e.svc.Create(ctx, "admin", req, "")
	e.crash.arm("Activate") // the new key is active, the old one not yet updated
	if _, err := e.svc.Rotate(ctx, "admin", old.Key.ID, keys.RotateRequest{GracePeriod: "0s"}, "r1"); err == nil {
		t.Fatal("want the crash")
	}
	e.crash.restart()
	e.clock.Advance(time.Minute)
	nk, err := e.svc.Rotate(ctx, "admin", old.Key.ID, keys.RotateRequest{GracePeriod: "0s"}, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if ks := e.allKeys(t); len(ks) != 2 {
		t.Fatalf("%d keys after a retried rotation, want 2", len(ks))
	}
	o, _ := e.svc.Get(ctx, old.Key.ID)
	if o.RotatedTo != nk.Key.ID {
		t.Fatalf("old key rotated_to = %q, want %q", o.RotatedTo, nk.Key.ID)
	}
	replay, err := e.svc.Rotate(ctx, "admin", old.Key.ID, keys.RotateRequest{GracePeriod: "0s"}, "r1")
	if err != nil || !replay.Replayed || replay.Key.ID != nk.Key.ID || replay.Secret != nk.Secret {
		t.Fatalf("replayed rotation = %+v, %v; want the same new key", replay, err)
	}
}

func TestLifecycleAuditsEveryChange(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c, _ := e.svc.Create(ctx, "admin", req, "")
	id := c.Key.ID
	steps := []func() error{
		func() error { _, err := e.svc.Disable(ctx, "ops", id, "investigating"); return err },
		func() error { _, err := e.svc.Enable(ctx, "ops", id); return err },
		func() error { _, err := e.svc.Enable(ctx, "ops", id); return err }, // no change, no entry
		func() error { _, err := e.svc.Reveal(ctx, "ops", id); return err },
		func() error {
			n := "renamed"
			_, err := e.svc.Update(ctx, "ops", id, keys.UpdateRequest{Name: &n})
			return err
		},
		func() error { _, err := e.svc.Revoke(ctx, "ops", id, "leaked"); return err },
	}
	for i, f := range steps {
		e.clock.Advance(time.Second) // audit entries order by time
		if err := f(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	es, _, err := e.svc.Audit(ctx, store.AuditQuery{KeyID: id, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range es {
		got = append(got, a.Action)
	}
	want := []string{"key.revoke", "key.update", "key.secret.reveal", "key.enable", "key.disable", "key.create"}
	if len(got) != len(want) {
		t.Fatalf("audit actions = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("audit actions = %v, want %v", got, want)
		}
	}
	if _, err := e.svc.Reveal(ctx, "ops", id); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("reveal of a revoked key = %v, want FailedPrecondition", err)
	}
	if _, err := e.vault.Vault.KeySecret(ctx, id); !errs.Is(err, errs.FailedPrecondition) && !errs.Is(err, errs.NotFound) {
		t.Errorf("secret of a revoked key still readable: %v", err)
	}
	if _, err := e.svc.Enable(ctx, "ops", id); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("enable of a revoked key = %v, want FailedPrecondition", err)
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	past := t0.Add(-time.Hour)
	for _, tc := range []struct {
		name string
		req  keys.CreateRequest
	}{
		{"no owner", keys.CreateRequest{}},
		{"bad owner", keys.CreateRequest{Owner: "a b"}},
		{"unknown plan", keys.CreateRequest{Owner: "a", Plan: "gold"}},
		{"scope outside plan", keys.CreateRequest{Owner: "a", Scopes: []string{"admin"}}},
		{"empty scopes", keys.CreateRequest{Owner: "a", Scopes: []string{}}},
		{"past expiry", keys.CreateRequest{Owner: "a", ExpiresAt: &past}},
		{"negative limit", keys.CreateRequest{Owner: "a", Limits: plan.Limits{"requests_per_day": -1}}},
		{"unknown limit", keys.CreateRequest{Owner: "a", Limits: plan.Limits{"requests_per_hour": 1}}},
		{"bad cidr", keys.CreateRequest{Owner: "a", Restrictions: &store.Restrictions{AllowedIPs: []string{"1.2.3.4/40"}}}},
		{"too much metadata", keys.CreateRequest{Owner: "a", Metadata: map[string]string{"k": string(bytes.Repeat([]byte("x"), 5000))}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.svc.Create(ctx, "admin", tc.req, ""); !errs.Is(err, errs.Invalid) {
				t.Errorf("got %v, want Invalid", err)
			}
		})
	}
	if ks := e.allKeys(t); len(ks) != 0 {
		t.Errorf("invalid requests stored %d keys", len(ks))
	}
}

func TestDisableDisablesTheSecretAndEnableRestoresIt(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c, _ := e.svc.Create(ctx, "admin", req, "")
	id := c.Key.ID
	if _, err := e.svc.Disable(ctx, "ops", id, "investigating"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Reveal(ctx, "ops", id); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("reveal of a disabled key = %v, want FailedPrecondition (its secret version is disabled)", err)
	}
	if _, err := e.svc.Enable(ctx, "ops", id); err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.Reveal(ctx, "ops", id); err != nil || got != c.Secret {
		t.Errorf("reveal after enable = %v, want the key's secret", err)
	}
}

func TestManualReasonsCannotImpersonateTheSweep(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c, _ := e.svc.Create(ctx, "admin", req, "")
	for _, reason := range []string{"quota_exceeded", "window_reset", "abuse_spike"} {
		if _, err := e.svc.Disable(ctx, "ops", c.Key.ID, reason); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("Disable(reason %q) = %v, want Invalid: reserved", reason, err)
		}
	}
	if k, _ := e.svc.Get(ctx, c.Key.ID); k.Status != store.Active {
		t.Errorf("status = %s after refused disables", k.Status)
	}
}
