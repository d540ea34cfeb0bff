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

// credentialHandler is the Verify function's handler with the admin
// token, a static verify token and caller tokens, and a verify body for a
// key whose per-minute limit is never reached; minted is a caller token
// holding verify.
func credentialHandler(tb testing.TB) (handler http.Handler, body []byte, minted string) {
	tb.Helper()
	dir := tb.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	vault, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { vault.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans := plan.Builtin()
	log := logging.New(io.Discard, slog.LevelError)
	svc := &keys.Service{Store: st, Vault: vault, Hasher: h, Plans: plans, Prefix: "kp_live", Logger: log}
	c, err := svc.Create(context.Background(), "bench", keys.CreateRequest{Owner: "acct_bench", Plan: "enterprise",
		Limits: plan.Limits{"requests_per_minute": 1_000_000_000_000}}, "")
	if err != nil {
		tb.Fatal(err)
	}
	ts := &tokens.Service{Store: st, Hasher: h}
	tok, err := ts.Create(context.Background(), tokens.Caller{Actor: "admin", Permissions: tokens.All},
		tokens.CreateRequest{Name: "gateway", Permissions: []string{"verify"}})
	if err != nil {
		tb.Fatal(err)
	}
	srv := &httpapi.Server{
		Keys: svc, Verifier: verify.New(st, h, plans, clock.Real{}, &verify.Options{Logger: log}),
		Plans: plans, Auth: httpapi.NewTokenAuth(benchToken), VerifyAuth: httpapi.NewTokenAuthAs("gateway", staticVerifyToken),
		Tokens: ts, Logger: log,
	}
	handler = srv.Handler(httpapi.FuncVerify)
	body = []byte(`{"key": "` + c.Secret + `", "scope": "generate"}`)
	return handler, body, tok.Secret
}

// verifyAs sends the verify request with bearer and fails unless it is a 200.
func verifyAs(tb testing.TB, h http.Handler, w *discardWriter, body []byte, bearer string) {
	req := &http.Request{
		Method: http.MethodPost, URL: verifyURL, RequestURI: verifyURL.Path, Host: "127.0.0.1",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, RemoteAddr: "127.0.0.1:40000",
		Header: http.Header{"Authorization": {"Bearer " + bearer}, "Content-Type": {"application/json"}},
		Body:   io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}
	clear(w.h)
	w.code = http.StatusOK
	h.ServeHTTP(w, req)
	if w.code != http.StatusOK {
		tb.Fatalf("verify with bearer %.8s…: status %d", bearer, w.code)
	}
}

const staticVerifyToken = "static-verify-token-0123456789"

// TestVerifyWithCallerTokenAllocatesAsTheAdminTokenDoes: once its token
// is cached, a gateway holding a minted verify token costs the verify
// route no allocation beyond what the admin token's request costs, and a
// static verify token (KEYPLANE_VERIFY_TOKENS) none either. The three are
// measured in the same run, on the same handler.
func TestVerifyWithCallerTokenAllocatesAsTheAdminTokenDoes(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a store")
	}
	handler, body, minted := credentialHandler(t)
	w := &discardWriter{h: http.Header{}}
	allocs := func(bearer string) float64 {
		verifyAs(t, handler, w, body, bearer) // warms the key and token caches
		if race.Enabled {
			return 0
		}
		return testing.AllocsPerRun(200, func() { verifyAs(t, handler, w, body, bearer) })
	}
	admin := allocs(benchToken)
	for _, tc := range []struct{ name, bearer string }{
		{"minted verify token", minted},
		{"static verify token", staticVerifyToken},
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

// BenchmarkVerifyByCredential compares the verify route's cost by
// credential, in one run:
//
//	go test -run '^$' -bench VerifyByCredential -benchmem -count 5 ./internal/httpapi
func BenchmarkVerifyByCredential(b *testing.B) {
	handler, body, minted := credentialHandler(b)
	for _, c := range []struct{ name, bearer string }{
		{"admin", benchToken}, {"static-verify", staticVerifyToken}, {"minted-verify", minted},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := &discardWriter{h: http.Header{}}
			verifyAs(b, handler, w, body, c.bearer)
			b.ReportAllocs()
			for b.Loop() {
				verifyAs(b, handler, w, body, c.bearer)
			}
		})
	}
}
