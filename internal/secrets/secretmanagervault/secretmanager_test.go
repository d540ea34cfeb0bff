package secretmanagervault_test

import (
	"bytes"
	"strings"
	"testing"

	sm "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault"
	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault/smfake"
	"github.com/keyplane/keyplane/internal/secrets/secretstest"
)

const (
	project = "kp-test"
	prefix  = "kp-"
)

// newVault returns a vault on a fresh fake, the fake, and a client for
// looking behind the vault's back.
func newVault(t *testing.T) (*secretmanagervault.Vault, *smfake.Server, *sm.Client) {
	t.Helper()
	srv, opts := smfake.Start(t)
	c, err := sm.NewClient(t.Context(), opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	v, err := secretmanagervault.NewFromClient(c, project, secretmanagervault.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("NewFromClient: %v", err)
	}
	return v, srv, c
}

func TestConformance(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Vault {
		v, _, _ := newVault(t)
		return v
	})
}

func TestNewOwnsItsClient(t *testing.T) {
	_, opts := smfake.Start(t)
	v, err := secretmanagervault.New(t.Context(), project, secretmanagervault.Options{}, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := v.AddSecretVersion(t.Context(), secrets.Pepper, []byte("p")); err != nil {
		t.Fatalf("AddSecretVersion: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestBackendErrorsBecomeKinds(t *testing.T) {
	plaintext := []byte("kp_live_NeverInAnError")
	tests := []struct {
		code       codes.Code
		want       errs.Kind
		retryAfter bool
	}{
		{codes.ResourceExhausted, errs.Unavailable, true},
		{codes.Unavailable, errs.Unavailable, false},
		{codes.DeadlineExceeded, errs.Unavailable, false},
		{codes.PermissionDenied, errs.Internal, false},
		{codes.Unauthenticated, errs.Internal, false},
		{codes.Internal, errs.Internal, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			v, srv, _ := newVault(t)
			srv.FailNext("CreateSecret", tt.code)
			err := v.CreateKeySecret(t.Context(), secrets.KeyRef{KeyID: "key_1", Owner: "o"}, plaintext)
			e, ok := errs.As(err)
			if !ok {
				t.Fatalf("CreateKeySecret: got %v, want an *errs.Error", err)
			}
			if e.Kind != tt.want {
				t.Errorf("kind = %v, want %v (%v)", e.Kind, tt.want, err)
			}
			if got := e.RetryAfter > 0; got != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want set: %v", e.RetryAfter, tt.retryAfter)
			}
			if strings.Contains(err.Error(), string(plaintext)) {
				t.Errorf("error %q contains the plaintext", err)
			}
			// The failure had no effect: a retry succeeds.
			if err := v.CreateKeySecret(t.Context(), secrets.KeyRef{KeyID: "key_1", Owner: "o"}, plaintext); err != nil {
				t.Errorf("retried CreateKeySecret: %v", err)
			}
		})
	}
}

func TestQuotaErrorSaysRetryLater(t *testing.T) {
	v, srv, _ := newVault(t)
	srv.FailNext("AddSecretVersion", codes.ResourceExhausted)
	err := v.AddSecretVersion(t.Context(), secrets.Pepper, []byte("p"))
	e, ok := errs.As(err)
	if !ok || e.Kind != errs.Unavailable || e.RetryAfter != secretmanagervault.QuotaRetryAfter {
		t.Fatalf("AddSecretVersion over quota: got %#v, want Unavailable with RetryAfter %v", err, secretmanagervault.QuotaRetryAfter)
	}
	if want := "secret store over its write quota; retry later"; e.Msg != want {
		t.Errorf("message = %q, want %q", e.Msg, want)
	}
}

func TestKeySecretIsLabelled(t *testing.T) {
	v, _, c := newVault(t)
	owner := "Alice.Smith+keys@Example.COM/" + strings.Repeat("x", 80)
	ref := secrets.KeyRef{KeyID: "key_AbC123", Owner: owner}
	if err := v.CreateKeySecret(t.Context(), ref, []byte("p")); err != nil {
		t.Fatalf("CreateKeySecret: %v", err)
	}
	got, err := c.GetSecret(t.Context(), &secretmanagerpb.GetSecretRequest{Name: "projects/kp-test/secrets/kp-key-key_AbC123"})
	if err != nil {
		t.Fatalf("GetSecret: %v", err)
	}
	wantLabels := map[string]string{
		"keyplane-key-id": "key_abc123",
		"keyplane-owner":  ("alice_smith_keys_example_com_" + strings.Repeat("x", 80))[:63],
	}
	if diff := cmp.Diff(wantLabels, got.GetLabels()); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	wantAnnotations := map[string]string{"keyplane-key-id": ref.KeyID, "keyplane-owner": owner}
	if diff := cmp.Diff(wantAnnotations, got.GetAnnotations()); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if got.GetReplication().GetAutomatic() == nil {
		t.Errorf("replication = %v, want automatic", got.GetReplication())
	}
}

func TestCreateCompletesAfterCrashBetweenWrites(t *testing.T) {
	v, srv, _ := newVault(t)
	ctx := t.Context()
	ref := secrets.KeyRef{KeyID: "key_1", Owner: "o"}
	srv.FailNext("AddSecretVersion", codes.Unavailable)
	if err := v.CreateKeySecret(ctx, ref, []byte("plaintext")); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("CreateKeySecret with AddSecretVersion failing: got %v, want Unavailable", err)
	}
	if _, err := v.KeySecret(ctx, "key_1"); !errs.Is(err, errs.NotFound) {
		t.Errorf("KeySecret of a secret without a version: got %v, want NotFound", err)
	}
	if err := v.CreateKeySecret(ctx, ref, []byte("plaintext")); err != nil {
		t.Fatalf("retried CreateKeySecret: %v", err)
	}
	got, err := v.KeySecret(ctx, "key_1")
	if err != nil || string(got) != "plaintext" {
		t.Errorf("KeySecret = %q, %v; want %q, nil", got, err, "plaintext")
	}
}

func TestRetryAfterLostResponseKeepsStoredPlaintext(t *testing.T) {
	v, srv, _ := newVault(t)
	ctx := t.Context()
	ref := secrets.KeyRef{KeyID: "key_1", Owner: "o"}
	srv.LoseNextResponse("AddSecretVersion")
	if err := v.CreateKeySecret(ctx, ref, []byte("first")); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("CreateKeySecret with its response lost: got %v, want Unavailable", err)
	}
	if err := v.CreateKeySecret(ctx, ref, []byte("second")); !errs.Is(err, errs.Exists) {
		t.Fatalf("retried CreateKeySecret: got %v, want Exists", err)
	}
	got, err := v.KeySecret(ctx, "key_1")
	if err != nil || string(got) != "first" {
		t.Errorf("KeySecret = %q, %v; want %q, nil", got, err, "first")
	}
}

func TestSecretFallsBackToNewestEnabledVersion(t *testing.T) {
	v, _, c := newVault(t)
	ctx := t.Context()
	for _, s := range []string{"one", "two", "three"} {
		if err := v.AddSecretVersion(ctx, secrets.Pepper, []byte(s)); err != nil {
			t.Fatalf("AddSecretVersion: %v", err)
		}
	}
	// An operator disables version 3 and destroys version 2 by hand.
	base := "projects/kp-test/secrets/kp-pepper/versions/"
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: base + "3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: base + "2"}); err != nil {
		t.Fatal(err)
	}
	got, err := v.Secret(ctx, secrets.Pepper)
	if err != nil || !bytes.Equal(got, []byte("one")) {
		t.Errorf("Secret = %q, %v; want %q, nil", got, err, "one")
	}
	vs, err := v.SecretVersions(ctx, secrets.Pepper)
	if err != nil || len(vs) != 1 || string(vs[0]) != "one" {
		t.Errorf("SecretVersions = %q, %v; want [one], nil", vs, err)
	}

	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: base + "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Secret(ctx, secrets.Pepper); !errs.Is(err, errs.NotFound) {
		t.Errorf("Secret with no enabled version: got %v, want NotFound", err)
	}
}

func TestSecretVersionsReadsEveryPage(t *testing.T) {
	v, _, _ := newVault(t)
	const n = 60 // the fake pages by 25
	for i := range n {
		if err := v.AddSecretVersion(t.Context(), secrets.AdminToken, []byte{byte(i)}); err != nil {
			t.Fatalf("AddSecretVersion: %v", err)
		}
	}
	vs, err := v.SecretVersions(t.Context(), secrets.AdminToken)
	if err != nil {
		t.Fatalf("SecretVersions: %v", err)
	}
	if len(vs) != n {
		t.Fatalf("SecretVersions returned %d versions, want %d", len(vs), n)
	}
	for i, b := range vs {
		if want := []byte{byte(n - 1 - i)}; !bytes.Equal(b, want) {
			t.Errorf("version #%d = %v, want %v", i, b, want)
		}
	}
}

func TestNamedSecretCannotShadowAKey(t *testing.T) {
	v, _, _ := newVault(t)
	err := v.AddSecretVersion(t.Context(), "key-key_1", []byte("x"))
	if !errs.Is(err, errs.Invalid) {
		t.Errorf("AddSecretVersion(%q): got %v, want Invalid", "key-key_1", err)
	}
}

func TestInvalidOptionsAreRefused(t *testing.T) {
	tests := []struct {
		project string
		opts    secretmanagervault.Options
	}{
		{"", secretmanagervault.Options{}},
		{"a/b", secretmanagervault.Options{}},
		{"p", secretmanagervault.Options{Prefix: "bad prefix"}},
	}
	for _, tt := range tests {
		if _, err := secretmanagervault.NewFromClient(nil, tt.project, tt.opts); err == nil {
			t.Errorf("NewFromClient(%q, %+v): got nil error, want one", tt.project, tt.opts)
		}
	}
}
