package tokens_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/tokens"
)

var admin = tokens.Caller{Actor: "admin", Permissions: tokens.All}

// newServices returns two instances' services on one store, as two
// verifier instances share a database.
func newServices(t *testing.T) (a, b *tokens.Service, clk *clock.Fake) {
	t.Helper()
	st, err := sqlitestore.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h, err := apikey.NewHasher([]byte(strings.Repeat("p", 32)))
	if err != nil {
		t.Fatal(err)
	}
	clk = clock.NewFake(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	a = &tokens.Service{Store: st, Hasher: h, Clock: clk}
	b = &tokens.Service{Store: st, Hasher: h, Clock: clk}
	return a, b, clk
}

func mint(t *testing.T, s *tokens.Service, by tokens.Caller, req tokens.CreateRequest) *tokens.Created {
	t.Helper()
	c, err := s.Create(t.Context(), by, req)
	if err != nil {
		t.Fatalf("Create(%+v): %v", req, err)
	}
	return c
}

func TestTokenAuthenticatesAsItsIDWithItsPermissionsAndOwner(t *testing.T) {
	a, _, _ := newServices(t)
	c := mint(t, a, admin, tokens.CreateRequest{Name: "signup", Permissions: []string{"keys:read", "keys:create"}, Owner: "acct_1"})
	if !strings.HasPrefix(c.Secret, tokens.SecretPrefix+"_") || !strings.HasPrefix(c.Token.ID, "tok_") {
		t.Errorf("got id %q secret prefix %q, want tok_… and %s_…", c.Token.ID, c.Secret[:4], tokens.SecretPrefix)
	}
	if c.Token.Hash == (apikey.Hash{}) || c.Token.Hash == apikey.Hash([]byte(c.Secret)[:32]) {
		t.Errorf("stored hash %v is not a keyed hash of the secret", c.Token.Hash)
	}
	got, err := a.Authenticate(t.Context(), c.Secret)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	want := tokens.Caller{Actor: c.Token.ID, Permissions: tokens.SetOf(tokens.KeysRead, tokens.KeysCreate), Owner: "acct_1"}
	if got != want {
		t.Errorf("Authenticate: got %+v, want %+v", got, want)
	}
}

func TestRevocationIsImmediateLocallyAndWithinTTLElsewhere(t *testing.T) {
	a, b, clk := newServices(t)
	c := mint(t, a, admin, tokens.CreateRequest{Name: "gw", Permissions: []string{"verify"}})
	for _, s := range []*tokens.Service{a, b} {
		if _, err := s.Authenticate(t.Context(), c.Secret); err != nil {
			t.Fatalf("Authenticate before revoke: %v", err)
		}
	}
	if _, err := a.Revoke(t.Context(), admin, c.Token.ID); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if _, err := a.Authenticate(t.Context(), c.Secret); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("revoking instance right after revoke: got %v, want Unauthenticated", err)
	}
	clk.Advance(tokens.DefaultCacheTTL - time.Millisecond)
	if _, err := b.Authenticate(t.Context(), c.Secret); err != nil {
		t.Errorf("other instance within the TTL still serves its cached entry: got %v, want nil (the stated bound)", err)
	}
	clk.Advance(time.Millisecond)
	if _, err := b.Authenticate(t.Context(), c.Secret); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("other instance after the TTL: got %v, want Unauthenticated", err)
	}
}

func TestExpiredTokenIsRefused(t *testing.T) {
	a, _, clk := newServices(t)
	exp := clk.Now().Add(time.Hour)
	c := mint(t, a, admin, tokens.CreateRequest{Name: "temp", Permissions: []string{"keys:read"}, ExpiresAt: &exp})
	if _, err := a.Authenticate(t.Context(), c.Secret); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	clk.Advance(time.Hour)
	if _, err := a.Authenticate(t.Context(), c.Secret); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("at expiry: got %v, want Unauthenticated", err)
	}
}

func TestMalformedAndUnknownSecretsAreUnauthenticated(t *testing.T) {
	a, _, _ := newServices(t)
	unknown, err := apikey.Generate(tokens.SecretPrefix)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := apikey.Generate("kp_live")
	for _, s := range []string{"", "kpt_short", unknown, key} {
		if _, err := a.Authenticate(t.Context(), s); !errs.Is(err, errs.Unauthenticated) {
			t.Errorf("Authenticate(%q): got %v, want Unauthenticated", s, err)
		}
	}
}

func TestMintingGrantsNoMoreThanTheMinterHolds(t *testing.T) {
	a, _, _ := newServices(t)
	mgr := tokens.Caller{Actor: "tok_mgr", Permissions: tokens.SetOf(tokens.TokensManage, tokens.KeysCreate)}
	scoped := tokens.Caller{Actor: "tok_s", Permissions: tokens.SetOf(tokens.TokensManage, tokens.KeysRead), Owner: "acct_1"}
	for _, tc := range []struct {
		name string
		by   tokens.Caller
		req  tokens.CreateRequest
		want errs.Kind
	}{
		{"escalation", mgr, tokens.CreateRequest{Name: "x", Permissions: []string{"keys:create", "keys:reveal"}}, errs.PermissionDenied},
		{"other owner", scoped, tokens.CreateRequest{Name: "x", Permissions: []string{"keys:read"}, Owner: "acct_2"}, errs.PermissionDenied},
		{"unknown permission", admin, tokens.CreateRequest{Name: "x", Permissions: []string{"keys:everything"}}, errs.Invalid},
		{"no permissions", admin, tokens.CreateRequest{Name: "x"}, errs.Invalid},
		{"no name", admin, tokens.CreateRequest{Permissions: []string{"verify"}}, errs.Invalid},
		{"bad owner", admin, tokens.CreateRequest{Name: "x", Permissions: []string{"verify"}, Owner: "a b"}, errs.Invalid},
		{"past expiry", admin, tokens.CreateRequest{Name: "x", Permissions: []string{"verify"}, ExpiresAt: &time.Time{}}, errs.Invalid},
	} {
		if _, err := a.Create(t.Context(), tc.by, tc.req); !errs.Is(err, tc.want) {
			t.Errorf("%s: got %v, want kind %v", tc.name, err, tc.want)
		}
	}
	c := mint(t, a, scoped, tokens.CreateRequest{Name: "child", Permissions: []string{"keys:read"}})
	if c.Token.Owner != "acct_1" {
		t.Errorf("a scoped minter's token: got owner %q, want acct_1", c.Token.Owner)
	}
	toks, _, err := a.Store.ListTokens(t.Context(), store.ListTokensQuery{PageSize: 10})
	if err != nil || len(toks) != 1 {
		t.Errorf("refused creates wrote tokens: got %d tokens (%v), want 1", len(toks), err)
	}
}

func TestScopedCallerSeesOnlyItsOwnersTokens(t *testing.T) {
	a, _, _ := newServices(t)
	mine := mint(t, a, admin, tokens.CreateRequest{Name: "mine", Permissions: []string{"keys:read"}, Owner: "acct_1"})
	theirs := mint(t, a, admin, tokens.CreateRequest{Name: "theirs", Permissions: []string{"keys:read"}, Owner: "acct_2"})
	global := mint(t, a, admin, tokens.CreateRequest{Name: "global", Permissions: []string{"keys:read"}})
	scoped := tokens.Caller{Actor: "tok_s", Permissions: tokens.SetOf(tokens.TokensManage), Owner: "acct_1"}
	got, _, err := a.List(t.Context(), scoped, store.ListTokensQuery{PageSize: 10})
	if err != nil || len(got) != 1 || got[0].ID != mine.Token.ID {
		t.Errorf("List: got %v (%v), want only %s", got, err, mine.Token.ID)
	}
	if _, _, err := a.List(t.Context(), scoped, store.ListTokensQuery{Owner: "acct_2", PageSize: 10}); !errs.Is(err, errs.NotFound) {
		t.Errorf("List(owner acct_2): got %v, want NotFound", err)
	}
	for _, id := range []string{theirs.Token.ID, global.Token.ID} {
		if _, err := a.Revoke(t.Context(), scoped, id); !errs.Is(err, errs.NotFound) {
			t.Errorf("Revoke(%s) by a caller scoped to acct_1: got %v, want NotFound", id, err)
		}
	}
	if _, err := a.Revoke(t.Context(), scoped, mine.Token.ID); err != nil {
		t.Errorf("Revoke(own): %v", err)
	}
}
