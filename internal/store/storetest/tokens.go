package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
)

// newToken returns a minimal token: unscoped, no expiry, not revoked.
func newToken(id string, created time.Time) *store.Token {
	return &store.Token{ID: id, Name: "token " + id, Permissions: []string{"keys:read"},
		Hash: hashOf("token " + id), CreatedBy: "admin", CreatedAt: created}
}

func tokenAudit(t *store.Token, action string) store.AuditEntry {
	return store.AuditEntry{Time: t.CreatedAt, Actor: "admin", Action: action,
		Details: map[string]string{"token_id": t.ID}}
}

func createToken(t *testing.T, s store.Store, tok *store.Token) {
	t.Helper()
	if err := s.CreateToken(t.Context(), tok, tokenAudit(tok, "token.create")); err != nil {
		t.Fatalf("CreateToken(%s): %v", tok.ID, err)
	}
}

// tokenAuditActions lists the actions of the audit entries naming token id.
func tokenAuditActions(t *testing.T, s store.Store, id string) []string {
	t.Helper()
	var out []string
	for _, e := range auditOf(t, s, "") {
		if e.Details["token_id"] == id {
			out = append(out, e.Action)
		}
	}
	return out
}

func testCreateTokenRoundTripsEveryFieldAndAudits(t *testing.T, s store.Store) {
	want := &store.Token{ID: "tok_full", Name: "provisioner", Permissions: []string{"keys:create", "keys:read"},
		Owner: "acct_1", Hash: hashOf("full"), CreatedBy: "admin", CreatedAt: at(0),
		ExpiresAt: ptr(at(time.Hour)), RevokedAt: nil}
	createToken(t, s, want)
	got, err := s.GetToken(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("GetToken mismatch (-want +got):\n%s", d)
	}
	got, err = s.LookupTokenHash(t.Context(), want.Hash)
	if err != nil {
		t.Fatalf("LookupTokenHash: %v", err)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("LookupTokenHash mismatch (-want +got):\n%s", d)
	}
	if got, want := tokenAuditActions(t, s, want.ID), []string{"token.create"}; !cmp.Equal(got, want) {
		t.Errorf("audit actions: got %v, want %v", got, want)
	}
}

func testCreateTokenDuplicateIsExistsAndWritesNothing(t *testing.T, s store.Store) {
	first := newToken("tok_a", at(0))
	createToken(t, s, first)
	sameID := newToken("tok_a", at(time.Second))
	sameID.Hash = hashOf("other")
	wantKind(t, "CreateToken(same id)", s.CreateToken(t.Context(), sameID, tokenAudit(sameID, "dup.id")), errs.Exists)
	sameHash := newToken("tok_b", at(time.Second))
	sameHash.Hash = first.Hash
	wantKind(t, "CreateToken(same hash)", s.CreateToken(t.Context(), sameHash, tokenAudit(sameHash, "dup.hash")), errs.Exists)
	if _, err := s.GetToken(t.Context(), "tok_b"); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetToken(tok_b) after a refused create: got %v, want NotFound", err)
	}
	if _, err := s.LookupTokenHash(t.Context(), sameID.Hash); !errs.Is(err, errs.NotFound) {
		t.Errorf("LookupTokenHash(refused hash): got %v, want NotFound", err)
	}
	for _, e := range auditOf(t, s, "") {
		if e.Action == "dup.id" || e.Action == "dup.hash" {
			t.Errorf("a refused CreateToken wrote audit entry %q", e.Action)
		}
	}
}

func testUnknownTokenIsNotFound(t *testing.T, s store.Store) {
	_, err := s.GetToken(t.Context(), "tok_none")
	wantKind(t, "GetToken", err, errs.NotFound)
	_, err = s.GetToken(t.Context(), "a/b")
	wantKind(t, "GetToken(a/b)", err, errs.NotFound)
	_, err = s.LookupTokenHash(t.Context(), hashOf("none"))
	wantKind(t, "LookupTokenHash", err, errs.NotFound)
	_, err = s.RevokeToken(t.Context(), "tok_none", at(0), store.AuditEntry{Time: at(0), Action: "token.revoke"})
	wantKind(t, "RevokeToken", err, errs.NotFound)
}

func testListTokensNewestFirstFilteredAndPaged(t *testing.T, s store.Store) {
	var all, owned []string
	for i := range 7 {
		tok := newToken(fmt.Sprintf("tok_%02d", i), at(time.Duration(i/2)*time.Second)) // pairs share a time
		if i%3 == 0 {
			tok.Owner = "acct_1"
		}
		createToken(t, s, tok)
	}
	for i := 6; i >= 0; i-- {
		id := fmt.Sprintf("tok_%02d", i)
		all = append(all, id)
		if i%3 == 0 {
			owned = append(owned, id)
		}
	}
	for _, tc := range []struct {
		owner string
		want  []string
	}{{"", all}, {"acct_1", owned}, {"acct_none", nil}} {
		var got []string
		token := ""
		for range 10 {
			page, next, err := s.ListTokens(t.Context(), store.ListTokensQuery{Owner: tc.owner, PageSize: 2, PageToken: token})
			if err != nil {
				t.Fatalf("ListTokens(%q): %v", tc.owner, err)
			}
			for _, tok := range page {
				got = append(got, tok.ID)
			}
			if token = next; token == "" {
				break
			}
		}
		if !cmp.Equal(got, tc.want, cmpOpts) {
			t.Errorf("ListTokens(owner %q) pages: got %v, want %v", tc.owner, got, tc.want)
		}
	}
}

func testListTokensBadQueryIsInvalid(t *testing.T, s store.Store) {
	for _, q := range []store.ListTokensQuery{{PageSize: 0}, {PageSize: 1001}, {PageSize: 10, PageToken: "garbage"}} {
		_, _, err := s.ListTokens(t.Context(), q)
		wantKind(t, fmt.Sprintf("ListTokens(%+v)", q), err, errs.Invalid)
	}
}

func testRevokeTokenOnceKeepsFirstTime(t *testing.T, s store.Store) {
	tok := newToken("tok_r", at(0))
	createToken(t, s, tok)
	first := at(time.Minute)
	got, err := s.RevokeToken(t.Context(), tok.ID, first, store.AuditEntry{Time: first, Actor: "admin", Action: "token.revoke",
		Details: map[string]string{"token_id": tok.ID}})
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if got.RevokedAt == nil || !got.RevokedAt.Equal(first) {
		t.Errorf("RevokeToken: got RevokedAt %v, want %v", got.RevokedAt, first)
	}
	later := at(time.Hour)
	got, err = s.RevokeToken(t.Context(), tok.ID, later, store.AuditEntry{Time: later, Actor: "admin", Action: "token.revoke",
		Details: map[string]string{"token_id": tok.ID}})
	if err != nil {
		t.Fatalf("RevokeToken again: %v", err)
	}
	if got.RevokedAt == nil || !got.RevokedAt.Equal(first) {
		t.Errorf("RevokeToken again: got RevokedAt %v, want the first, %v", got.RevokedAt, first)
	}
	stored, err := s.LookupTokenHash(t.Context(), tok.Hash)
	if err != nil {
		t.Fatalf("LookupTokenHash: %v", err)
	}
	if stored.RevokedAt == nil || !stored.RevokedAt.Equal(first) {
		t.Errorf("stored RevokedAt: got %v, want %v", stored.RevokedAt, first)
	}
	if got, want := tokenAuditActions(t, s, tok.ID), []string{"token.revoke", "token.create"}; !cmp.Equal(got, want) {
		t.Errorf("audit actions, newest first: got %v, want %v", got, want)
	}
}
