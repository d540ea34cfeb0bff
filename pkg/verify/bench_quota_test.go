package verify_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/keyplane/keyplane/pkg/apikey"
	"github.com/keyplane/keyplane/pkg/clock"
	"github.com/keyplane/keyplane/pkg/keys"
	"github.com/keyplane/keyplane/pkg/plan"
	"github.com/keyplane/keyplane/pkg/secrets/filevault"
	"github.com/keyplane/keyplane/pkg/store/sqlite"
	"github.com/keyplane/keyplane/pkg/usage"
	ledgersqlite "github.com/keyplane/keyplane/pkg/usage/ledger/sqlite"
	"github.com/keyplane/keyplane/pkg/verify"
)

// BenchmarkVerifyCachedWithQuotas is BenchmarkVerifyCached for a key with
// day and month quotas, answered from the metering cache (usage.Quotas) as
// in keyplane serve and the Verify function.
func BenchmarkVerifyCachedWithQuotas(b *testing.B) {
	dir := b.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "k.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ledger, err := ledgersqlite.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ledger.Close() })
	vault, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { vault.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans, err := plan.Parse([]byte(`{"plans": {"bench": {"scopes": ["generate"], "limits": {
		"requests_per_minute": 1000000000000, "requests_per_day": 1000000000000, "units_per_month": 1000000000000}}}}`), false)
	if err != nil {
		b.Fatal(err)
	}
	discard := slog.New(slog.DiscardHandler)
	svc := &keys.Service{Store: st, Vault: vault, Hasher: h, Plans: plans, Prefix: "kp_live", Logger: discard}
	c, err := svc.Create(context.Background(), "bench", keys.CreateRequest{Owner: "acct_bench", Plan: "bench"}, "")
	if err != nil {
		b.Fatal(err)
	}
	quotas := usage.NewQuotas(ledger, clock.Real{}, 0, discard)
	v := verify.New(st, h, plans, clock.Real{}, &verify.Options{Logger: discard, Quota: quotas})
	req := verify.Request{Key: c.Secret, Scope: "generate", Units: 1}
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
