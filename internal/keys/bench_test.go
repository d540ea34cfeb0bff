package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	sm "cloud.google.com/go/secretmanager/apiv1"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault"
	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault/smfake"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

// Provisioning throughput. BenchmarkProvision creates keys through
// keys.Service.Create on each combination of store and vault, and right
// after each, in the same run, the raw writes provisioning cannot avoid: "store-activate" (one Store.Activate of a key like the ones
// Create makes: key record, hash lookup and audit entry in one transaction)
// and "vault-write" (one Vault.CreateKeySecret). So provisioning reads as a
// fraction of its baselines' rates even on a machine whose load changes
// from minute to minute. Every case reports keys/s; "seq" runs one request at a
// time, "parallel" runs 8×GOMAXPROCS concurrent requests
// (b.SetParallelism(8)).
//
//	go test -run '^$' -bench Provision -benchtime 500x -count 5 ./internal/keys
//
// A fixed -benchtime (500x) gives every file vault case the same growth
// during the run: "file" measures vaults of 0 to 500 secrets, "file-1k"
// 1,000 to 1,500, "file-10k" 10,000 to 10,500.
//
// The Firestore cases need FIRESTORE_EMULATOR_HOST (make bench starts the
// emulator); they skip without it unless KEYPLANE_REQUIRE_EMULATORS is set.
// The file-10k case seeds its vault once per test binary, which takes about
// a minute (the file vault rewrites its whole file per write, so seeding is
// O(n²)); it is skipped with -short.

// benchParallelism is the b.SetParallelism factor of the "parallel" cases.
const benchParallelism = 8

var benchMasterKey = bytes.Repeat([]byte{7}, filevault.KeySize)

var benchCreate = keys.CreateRequest{Owner: "acct_bench", Name: "bench", Metadata: map[string]string{"team": "ml"}}

// benchStore opens a fresh store of the named backend for b.
func benchStore(b *testing.B, name string) store.Store {
	b.Helper()
	var st store.Store
	switch name {
	case "sqlite":
		s, err := sqlitestore.Open(filepath.Join(b.TempDir(), "k.db"))
		if err != nil {
			b.Fatal(err)
		}
		st = s
	case "firestore":
		testenv.Firestore(b)
		s := firestorestore.NewFromClient(testenv.FirestoreClient(b))
		st = s
	default:
		b.Fatalf("unknown store %q", name)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// benchVault opens a fresh vault of the named backend for b: "file" (empty
// file vault), "file-1k" and "file-10k" (a file vault already holding 1,000
// or 10,000 key secrets), "secretmanager" (the Secret Manager adapter on
// the in-process fake, over loopback gRPC) or "mem" (an in-memory vault
// that isolates the store's share of provisioning).
func benchVault(b *testing.B, name string) secrets.Vault {
	b.Helper()
	var v secrets.Vault
	switch name {
	case "file", "file-1k", "file-10k":
		n := map[string]int{"file": 0, "file-1k": 1000, "file-10k": 10000}[name]
		dir := b.TempDir()
		if n > 0 {
			if err := os.WriteFile(filepath.Join(dir, "vault"), seededVault(b, n), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		fv, err := filevault.Open(filepath.Join(dir, "vault"), benchMasterKey)
		if err != nil {
			b.Fatal(err)
		}
		v = fv
	case "secretmanager":
		_, opts := smfake.Start(b)
		c, err := sm.NewClient(context.Background(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		smv, err := secretmanagervault.NewFromClient(c, "kp-bench", secretmanagervault.Options{Prefix: "kp-"})
		if err != nil {
			b.Fatal(err)
		}
		v = smv
	case "mem":
		v = &memVault{m: map[string][]byte{}}
	default:
		b.Fatalf("unknown vault %q", name)
	}
	b.Cleanup(func() { v.Close() })
	return v
}

// seededVaults caches, per size, the bytes of a file vault holding that
// many key secrets. The file vault rewrites its whole file on every write,
// so seeding n secrets through its API costs O(n²): 10,000 take about a
// minute, which is paid once per test binary rather than once per run.
var seededVaults struct {
	sync.Mutex
	files map[int][]byte
}

func seededVault(b *testing.B, n int) []byte {
	b.Helper()
	seededVaults.Lock()
	defer seededVaults.Unlock()
	if f, ok := seededVaults.files[n]; ok {
		return f
	}
	path := filepath.Join(b.TempDir(), "seed")
	v, err := filevault.Open(path, benchMasterKey)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		plaintext, _ := apikey.Generate("kp_live")
		ref := secrets.KeyRef{KeyID: fmt.Sprintf("key_seed%012d", i), Owner: fmt.Sprintf("acct_%d", i%100)}
		if err := v.CreateKeySecret(ctx, ref, []byte(plaintext)); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
	f, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if seededVaults.files == nil {
		seededVaults.files = map[int][]byte{}
	}
	seededVaults.files[n] = f
	return f
}

// memVault keeps key secrets in a map. It implements only the methods
// provisioning calls; the others are the nil embedded interface's.
type memVault struct {
	secrets.Vault
	mu sync.Mutex
	m  map[string][]byte
}

func (v *memVault) CreateKeySecret(_ context.Context, ref secrets.KeyRef, plaintext []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.m[ref.KeyID]; ok {
		return errs.E(errs.Exists, "key %s already has a secret", ref.KeyID)
	}
	v.m[ref.KeyID] = bytes.Clone(plaintext)
	return nil
}

func (v *memVault) KeySecret(_ context.Context, id string) ([]byte, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.m[id]
	if !ok {
		return nil, errs.E(errs.NotFound, "key %s has no secret", id)
	}
	return bytes.Clone(s), nil
}

func (v *memVault) Close() error { return nil }

// runKeysPerSecond runs op in a "seq" and a "parallel" sub-benchmark, each
// on a fresh setup, and reports keys/s.
func runKeysPerSecond(b *testing.B, setup func(b *testing.B) func(ctx context.Context) error) {
	b.Run("seq", func(b *testing.B) {
		op := setup(b)
		ctx := context.Background()
		for b.Loop() {
			if err := op(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
	})
	b.Run("parallel", func(b *testing.B) {
		op := setup(b)
		b.SetParallelism(benchParallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := op(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
	})
}

// BenchmarkProvision creates keys through keys.Service.Create (no
// Idempotency-Key: a store read, the pending intent, the vault write and
// the activation with its audit entry), with its baselines.
func BenchmarkProvision(b *testing.B) {
	for _, c := range []struct{ store, vault string }{
		{"sqlite", "file"},
		{"sqlite", "file-1k"},
		{"sqlite", "file-10k"},
		{"sqlite", "mem"},
		{"firestore", "mem"},
		{"firestore", "secretmanager"},
	} {
		b.Run(c.store+"+"+c.vault, func(b *testing.B) {
			if c.vault == "file-10k" && testing.Short() {
				b.Skip("seeding 10,000 secrets takes about a minute; skipped with -short")
			}
			b.Run("service", func(b *testing.B) {
				runKeysPerSecond(b, func(b *testing.B) func(context.Context) error {
					h, _ := apikey.NewHasher(bytes.Repeat([]byte("pepper"), 6))
					svc := &keys.Service{Store: benchStore(b, c.store), Vault: benchVault(b, c.vault), Hasher: h,
						Plans: plan.Builtin(), Prefix: "kp_live", Logger: slog.New(slog.DiscardHandler)}
					return func(ctx context.Context) error {
						_, err := svc.Create(ctx, "bench", benchCreate, "")
						return err
					}
				})
			})
			b.Run("store-activate", func(b *testing.B) { runKeysPerSecond(b, storeActivate(c.store)) })
			if c.vault != "mem" {
				b.Run("vault-write", func(b *testing.B) { runKeysPerSecond(b, vaultWrite(c.vault)) })
			}
		})
	}
}

// storeActivate is the raw store baseline: one Store.Activate of a key
// shaped like the ones Create makes, with its audit entry.
func storeActivate(name string) func(b *testing.B) func(context.Context) error {
	return func(b *testing.B) func(context.Context) error {
		st := benchStore(b, name)
		h, _ := apikey.NewHasher(bytes.Repeat([]byte("pepper"), 6))
		return func(ctx context.Context) error {
			plaintext, _ := apikey.Generate("kp_live")
			now := time.Now().UTC().Truncate(time.Microsecond)
			k := &store.Key{ID: "key_" + apikey.RandomString(16), Owner: benchCreate.Owner, Name: benchCreate.Name,
				Plan: "free", Scopes: []string{"embed", "generate"}, Status: store.Active, Prefix: "kp_live",
				Last4: apikey.Last4(plaintext), Hash: h.Sum(plaintext), CreatedAt: now, UpdatedAt: now,
				Metadata: benchCreate.Metadata}
			return st.Activate(ctx, k, store.AuditEntry{Time: now, Actor: "bench", Action: keys.ActionCreate, KeyID: k.ID,
				Details: map[string]string{"owner": k.Owner, "plan": k.Plan}})
		}
	}
}

// vaultWrite is the raw vault baseline: one CreateKeySecret of a fresh
// key's plaintext.
func vaultWrite(name string) func(b *testing.B) func(context.Context) error {
	return func(b *testing.B) func(context.Context) error {
		v := benchVault(b, name)
		return func(ctx context.Context) error {
			plaintext, _ := apikey.Generate("kp_live")
			return v.CreateKeySecret(ctx, secrets.KeyRef{KeyID: "key_" + apikey.RandomString(16), Owner: benchCreate.Owner}, []byte(plaintext))
		}
	}
}
