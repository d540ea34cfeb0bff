package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/race"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/tokens"
	"github.com/keyplane/keyplane/internal/verify"
)

// TestVerifyWithCallerTokenAllocatesAsTheAdminTokenDoes: once its token
// is cached, a gateway holding a minted verify token costs the verify
// route no allocation beyond what the admin token's request costs, and a
// static verify token (KEYPLANE_VERIFY_TOKENS) none either. The three are
// measured in the same run, on the same handler.
func TestVerifyWithCallerTokenAllocatesAsTheAdminTokenDoes(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a store")
	}
	dir := t.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vault, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vault.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans := plan.Builtin()
	log := logging.New(io.Discard, slog.LevelError)
	svc := &keys.Service{Store: st, Vault: vault, Hasher: h, Plans: plans, Prefix: "kp_live", Logger: log}
	c, err := svc.Create(context.Background(), "bench", keys.CreateRequest{Owner: "acct_bench", Plan: "enterprise",
		Limits: plan.Limits{"requests_per_minute": 1_000_000_000_000}}, "")
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokens.Service{Store: st, Hasher: h}
	minted, err := ts.Create(context.Background(), tokens.Caller{Actor: "admin", Permissions: tokens.All},
		tokens.CreateRequest{Name: "gateway", Permissions: []string{"verify"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &httpapi.Server{
		Keys: svc, Verifier: verify.New(st, h, plans, clock.Real{}, &verify.Options{Logger: log}),
		Plans: plans, Auth: httpapi.NewTokenAuth(benchToken), VerifyAuth: httpapi.NewTokenAuthAs("gateway", "static-verify-token-0123456789"),
		Tokens: ts, Logger: log,
	}
	handler := srv.Handler(httpapi.FuncVerify)
	body := []byte(`{"key": "` + c.Secret + `", "scope": "generate"}`)
	w := &discardWriter{h: http.Header{}}
	allocs := func(bearer string) float64 {
		r := func() {
			req := &http.Request{
				Method: http.MethodPost, URL: verifyURL, RequestURI: verifyURL.Path, Host: "127.0.0.1",
				Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, RemoteAddr: "127.0.0.1:40000",
				Header: http.Header{"Authorization": {"Bearer " + bearer}, "Content-Type": {"application/json"}},
				Body:   io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			}
			clear(w.h)
			w.code = http.StatusOK
			handler.ServeHTTP(w, req)
			if w.code != http.StatusOK {
				t.Fatalf("verify with bearer %.8s…: status %d", bearer, w.code)
			}
		}
		r() // warm the key and token caches
		if race.Enabled {
			return 0
		}
		return testing.AllocsPerRun(200, r)
	}
	admin := allocs(benchToken)
	for _, tc := range []struct{ name, bearer string }{
		{"minted verify token", minted.Secret},
		{"static verify token", "static-verify-token-0123456789"},
	} {
		if race.Enabled {
			allocs(tc.bearer) // still checks the status
			continue
		}
		got := allocs(tc.bearer)
		t.Logf("%s: %.0f allocations per verify; the admin token's: %.0f", tc.name, got, admin)
		if got > admin {
			t.Errorf("%s: %.0f allocations per verify, want at most the admin token's %.0f", tc.name, got, admin)
		}
	}
}
