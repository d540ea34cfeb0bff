package client

import (
	"context"
	"strings"
	"testing"
)

// TestProvisionerTokenCreatesButCannotReveal is the README's example
// through the client: a token minted with keys:create provisions keys and
// is refused the reveal route with a 403 naming keys:reveal; once revoked
// it is refused at once on the instance that revoked it.
func TestProvisionerTokenCreatesButCannotReveal(t *testing.T) {
	url := newServer(t)
	admin, err := New(url, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := admin.CreateToken(ctx, CreateTokenRequest{Name: "signup flow", Permissions: []string{PermKeysCreate, PermKeysRead}})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if !strings.HasPrefix(tok.ID, "tok_") || !strings.HasPrefix(tok.Secret, "kpt_") {
		t.Fatalf("CreateToken = id %q, secret %.4s…; want tok_… and kpt_…", tok.ID, tok.Secret)
	}
	prov, err := New(url, tok.Secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := mustCreate(t, prov, CreateKeyRequest{Owner: "acct_1"})
	_, err = prov.RevealSecret(ctx, k.ID)
	if e := apiErr(t, err); e.Status != 403 || !strings.Contains(e.Message, PermKeysReveal) {
		t.Errorf("RevealSecret with the provisioner token: got %d %q, want 403 naming %s", e.Status, e.Message, PermKeysReveal)
	}
	list, err := admin.ListTokens(ctx, ListTokensOptions{})
	if err != nil || len(list.Tokens) != 1 || list.Tokens[0].ID != tok.ID {
		t.Fatalf("ListTokens = %+v, %v; want the one token", list, err)
	}
	revoked, err := admin.RevokeToken(ctx, tok.ID)
	if err != nil || revoked.RevokedAt == nil {
		t.Fatalf("RevokeToken = %+v, %v; want revoked_at set", revoked, err)
	}
	_, err = prov.GetKey(ctx, k.ID)
	if e := apiErr(t, err); e.Status != 401 {
		t.Errorf("GetKey with the revoked token: got %d %q, want 401", e.Status, e.Message)
	}
}
