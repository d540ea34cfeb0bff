package secretstest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets"
)

// Run runs the suite. open must return a fresh, empty vault for each
// subtest; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) secrets.Vault) {
	tests := []struct {
		name string
		fn   func(t *testing.T, v secrets.Vault)
	}{
		{"CreatedKeySecretIsReadable", testCreatedKeySecretIsReadable},
		{"SecondCreateKeepsFirstPlaintext", testSecondCreateKeepsFirstPlaintext},
		{"ConcurrentCreatesHaveOneWinner", testConcurrentCreatesHaveOneWinner},
		{"UnknownKeySecretIsNotFound", testUnknownKeySecretIsNotFound},
		{"DisabledKeySecretIsUnreadable", testDisabledKeySecretIsUnreadable},
		{"ReenabledKeySecretIsReadable", testReenabledKeySecretIsReadable},
		{"DestroyedKeySecretIsGoneForGood", testDestroyedKeySecretIsGoneForGood},
		{"DestroyIsIdempotent", testDestroyIsIdempotent},
		{"DeletedKeySecretCanBeRecreated", testDeletedKeySecretCanBeRecreated},
		{"KeySecretsAreIndependent", testKeySecretsAreIndependent},
		{"UnknownSecretIsNotFound", testUnknownSecretIsNotFound},
		{"NewestSecretVersionWins", testNewestSecretVersionWins},
		{"ConcurrentAddsKeepEveryVersion", testConcurrentAddsKeepEveryVersion},
		{"KeyAndNamedSecretsDoNotCollide", testKeyAndNamedSecretsDoNotCollide},
		{"BinaryValuesRoundTrip", testBinaryValuesRoundTrip},
		{"StoredBytesAreNotAliased", testStoredBytesAreNotAliased},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := open(t)
			t.Cleanup(func() {
				if err := v.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, v)
		})
	}
}

func ref(id string) secrets.KeyRef { return secrets.KeyRef{KeyID: id, Owner: "owner@example.com"} }

func mustCreate(t *testing.T, v secrets.Vault, id string, plaintext []byte) {
	t.Helper()
	if err := v.CreateKeySecret(t.Context(), ref(id), plaintext); err != nil {
		t.Fatalf("CreateKeySecret(%q): %v", id, err)
	}
}

func mustSetEnabled(t *testing.T, v secrets.Vault, id string, enabled bool) {
	t.Helper()
	if err := v.SetKeySecretEnabled(t.Context(), id, enabled); err != nil {
		t.Fatalf("SetKeySecretEnabled(%q, %v): %v", id, enabled, err)
	}
}

func mustAdd(t *testing.T, v secrets.Vault, name string, value []byte) {
	t.Helper()
	if err := v.AddSecretVersion(t.Context(), name, value); err != nil {
		t.Fatalf("AddSecretVersion(%q): %v", name, err)
	}
}

// wantKeySecret checks that keyID reads as want.
func wantKeySecret(t *testing.T, v secrets.Vault, keyID string, want []byte) {
	t.Helper()
	got, err := v.KeySecret(t.Context(), keyID)
	if err != nil {
		t.Fatalf("KeySecret(%q): %v", keyID, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("KeySecret(%q) = %q, want %q", keyID, got, want)
	}
}

// wantKind checks that err is of kind want.
func wantKind(t *testing.T, what string, err error, want errs.Kind) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got nil error, want %v", what, want)
		return
	}
	if got := errs.KindOf(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// wantNil checks that err is nil.
func wantNil(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: got %v, want nil", what, err)
	}
}

func keySecretErr(ctx context.Context, v secrets.Vault, keyID string) error {
	_, err := v.KeySecret(ctx, keyID)
	return err
}

func testCreatedKeySecretIsReadable(t *testing.T, v secrets.Vault) {
	mustCreate(t, v, "key_1", []byte("kp_test_plaintext1"))
	wantKeySecret(t, v, "key_1", []byte("kp_test_plaintext1"))
}

func testSecondCreateKeepsFirstPlaintext(t *testing.T, v secrets.Vault) {
	mustCreate(t, v, "key_1", []byte("first"))
	err := v.CreateKeySecret(t.Context(), ref("key_1"), []byte("second"))
	wantKind(t, "second CreateKeySecret", err, errs.Exists)
	wantKeySecret(t, v, "key_1", []byte("first"))
}

func testConcurrentCreatesHaveOneWinner(t *testing.T, v secrets.Vault) {
	const n = 20
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = v.CreateKeySecret(t.Context(), ref("key_race"), fmt.Appendf(nil, "plaintext-%d", i))
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("CreateKeySecret #%d and #%d both succeeded, want exactly one", winner, i)
		case err == nil:
			winner = i
		default:
			wantKind(t, fmt.Sprintf("CreateKeySecret #%d", i), err, errs.Exists)
		}
	}
	if winner < 0 {
		t.Fatalf("no CreateKeySecret succeeded, want exactly one")
	}
	wantKeySecret(t, v, "key_race", fmt.Appendf(nil, "plaintext-%d", winner))
}

func testUnknownKeySecretIsNotFound(t *testing.T, v secrets.Vault) {
	ctx := t.Context()
	wantKind(t, "KeySecret", keySecretErr(ctx, v, "key_unknown"), errs.NotFound)
	wantKind(t, "SetKeySecretEnabled(false)", v.SetKeySecretEnabled(ctx, "key_unknown", false), errs.NotFound)
	wantKind(t, "SetKeySecretEnabled(true)", v.SetKeySecretEnabled(ctx, "key_unknown", true), errs.NotFound)
}

func testDisabledKeySecretIsUnreadable(t *testing.T, v secrets.Vault) {
	mustCreate(t, v, "key_1", []byte("plaintext"))
	mustSetEnabled(t, v, "key_1", false)
	wantKind(t, "KeySecret of a disabled key", keySecretErr(t.Context(), v, "key_1"), errs.FailedPrecondition)
	// Disabling is idempotent, so that a retried sweep succeeds.
	mustSetEnabled(t, v, "key_1", false)
	wantKind(t, "KeySecret of a twice-disabled key", keySecretErr(t.Context(), v, "key_1"), errs.FailedPrecondition)
}

func testReenabledKeySecretIsReadable(t *testing.T, v secrets.Vault) {
	mustCreate(t, v, "key_1", []byte("plaintext"))
	mustSetEnabled(t, v, "key_1", false)
	mustSetEnabled(t, v, "key_1", true)
	wantKeySecret(t, v, "key_1", []byte("plaintext"))
	mustSetEnabled(t, v, "key_1", true)
	wantKeySecret(t, v, "key_1", []byte("plaintext"))
}

func testDestroyedKeySecretIsGoneForGood(t *testing.T, v secrets.Vault) {
	ctx := t.Context()
	mustCreate(t, v, "key_1", []byte("plaintext"))
	wantNil(t, "DestroyKeySecret", v.DestroyKeySecret(ctx, "key_1"))
	wantKind(t, "KeySecret after destroy", keySecretErr(ctx, v, "key_1"), errs.FailedPrecondition)
	wantKind(t, "SetKeySecretEnabled(true) after destroy", v.SetKeySecretEnabled(ctx, "key_1", true), errs.FailedPrecondition)
	wantKind(t, "SetKeySecretEnabled(false) after destroy", v.SetKeySecretEnabled(ctx, "key_1", false), errs.FailedPrecondition)
	// The destroyed version is still the key's version: a retried
	// provisioning must not silently store a new plaintext for it.
	wantKind(t, "CreateKeySecret after destroy", v.CreateKeySecret(ctx, ref("key_1"), []byte("other")), errs.Exists)
	wantKind(t, "KeySecret after the refused create", keySecretErr(ctx, v, "key_1"), errs.FailedPrecondition)
}

func testDestroyIsIdempotent(t *testing.T, v secrets.Vault) {
	ctx := t.Context()
	mustCreate(t, v, "key_1", []byte("plaintext"))
	wantNil(t, "first DestroyKeySecret", v.DestroyKeySecret(ctx, "key_1"))
	wantNil(t, "second DestroyKeySecret", v.DestroyKeySecret(ctx, "key_1"))
	wantNil(t, "DestroyKeySecret of a key without a secret", v.DestroyKeySecret(ctx, "key_unknown"))

	mustCreate(t, v, "key_2", []byte("plaintext"))
	mustSetEnabled(t, v, "key_2", false)
	wantNil(t, "DestroyKeySecret of a disabled key", v.DestroyKeySecret(ctx, "key_2"))
	wantKind(t, "KeySecret after destroying a disabled key", keySecretErr(ctx, v, "key_2"), errs.FailedPrecondition)
}

func testDeletedKeySecretCanBeRecreated(t *testing.T, v secrets.Vault) {
	ctx := t.Context()
	mustCreate(t, v, "key_1", []byte("first"))
	wantNil(t, "DeleteKeySecret", v.DeleteKeySecret(ctx, "key_1"))
	wantKind(t, "KeySecret after delete", keySecretErr(ctx, v, "key_1"), errs.NotFound)
	wantNil(t, "second DeleteKeySecret", v.DeleteKeySecret(ctx, "key_1"))
	wantNil(t, "DeleteKeySecret of a key without a secret", v.DeleteKeySecret(ctx, "key_unknown"))

	mustCreate(t, v, "key_1", []byte("second"))
	wantKeySecret(t, v, "key_1", []byte("second"))

	wantNil(t, "DestroyKeySecret", v.DestroyKeySecret(ctx, "key_1"))
	wantNil(t, "DeleteKeySecret of a destroyed key", v.DeleteKeySecret(ctx, "key_1"))
	mustCreate(t, v, "key_1", []byte("third"))
	wantKeySecret(t, v, "key_1", []byte("third"))
}

func testKeySecretsAreIndependent(t *testing.T, v secrets.Vault) {
	ctx := t.Context()
	mustCreate(t, v, "key_1", []byte("one"))
	mustCreate(t, v, "key_2", []byte("two"))
	mustCreate(t, v, "key_3", []byte("three"))
	mustSetEnabled(t, v, "key_1", false)
	wantNil(t, "DestroyKeySecret(key_2)", v.DestroyKeySecret(ctx, "key_2"))
	wantKeySecret(t, v, "key_3", []byte("three"))
	wantNil(t, "DeleteKeySecret(key_3)", v.DeleteKeySecret(ctx, "key_3"))
	wantKind(t, "KeySecret(key_1)", keySecretErr(ctx, v, "key_1"), errs.FailedPrecondition)
	wantKind(t, "KeySecret(key_2)", keySecretErr(ctx, v, "key_2"), errs.FailedPrecondition)
	mustSetEnabled(t, v, "key_1", true)
	wantKeySecret(t, v, "key_1", []byte("one"))
}

func testUnknownSecretIsNotFound(t *testing.T, v secrets.Vault) {
	_, err := v.Secret(t.Context(), secrets.Pepper)
	wantKind(t, "Secret", err, errs.NotFound)
	_, err = v.SecretVersions(t.Context(), secrets.Pepper)
	wantKind(t, "SecretVersions", err, errs.NotFound)
}

func testNewestSecretVersionWins(t *testing.T, v secrets.Vault) {
	mustAdd(t, v, secrets.WebhookSecret, []byte("whsec_one"))
	mustAdd(t, v, secrets.WebhookSecret, []byte("whsec_two"))
	mustAdd(t, v, secrets.AdminToken, []byte("admin"))

	got, err := v.Secret(t.Context(), secrets.WebhookSecret)
	if err != nil {
		t.Fatalf("Secret: %v", err)
	}
	if want := []byte("whsec_two"); !bytes.Equal(got, want) {
		t.Errorf("Secret = %q, want %q", got, want)
	}
	wantVersions(t, v, secrets.WebhookSecret, "whsec_two", "whsec_one")
	wantVersions(t, v, secrets.AdminToken, "admin")
}

func wantVersions(t *testing.T, v secrets.Vault, name string, want ...string) {
	t.Helper()
	got, err := v.SecretVersions(t.Context(), name)
	if err != nil {
		t.Fatalf("SecretVersions(%q): %v", name, err)
	}
	gotS := make([]string, len(got))
	for i, b := range got {
		gotS[i] = string(b)
	}
	if fmt.Sprint(gotS) != fmt.Sprint(want) {
		t.Errorf("SecretVersions(%q) = %q, want %q (newest first)", name, gotS, want)
	}
}

func testConcurrentAddsKeepEveryVersion(t *testing.T, v secrets.Vault) {
	const n = 10
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := v.AddSecretVersion(t.Context(), secrets.Pepper, fmt.Appendf(nil, "pepper-%d", i)); err != nil {
				t.Errorf("AddSecretVersion #%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := v.SecretVersions(t.Context(), secrets.Pepper)
	if err != nil {
		t.Fatalf("SecretVersions: %v", err)
	}
	seen := map[string]bool{}
	for _, b := range got {
		seen[string(b)] = true
	}
	for i := range n {
		if want := fmt.Sprintf("pepper-%d", i); !seen[want] {
			t.Errorf("SecretVersions lacks %q; got %q", want, got)
		}
	}
	if len(got) != n {
		t.Errorf("SecretVersions returned %d versions, want %d", len(got), n)
	}
}

func testKeyAndNamedSecretsDoNotCollide(t *testing.T, v secrets.Vault) {
	ctx := t.Context()
	mustCreate(t, v, "key_x", []byte("key plaintext"))
	mustAdd(t, v, "key_y", []byte("named value"))
	_, err := v.Secret(ctx, "key_x")
	wantKind(t, `Secret("key_x") with only a key secret key_x`, err, errs.NotFound)
	wantKind(t, `KeySecret("key_y") with only a named secret key_y`, keySecretErr(ctx, v, "key_y"), errs.NotFound)
}

func testBinaryValuesRoundTrip(t *testing.T, v secrets.Vault) {
	value := make([]byte, 0, 512)
	for i := range 256 {
		value = append(value, byte(i), byte(255-i))
	}
	mustCreate(t, v, "key_bin", value)
	wantKeySecret(t, v, "key_bin", value)

	mustAdd(t, v, secrets.Pepper, value)
	got, err := v.Secret(t.Context(), secrets.Pepper)
	if err != nil {
		t.Fatalf("Secret: %v", err)
	}
	if !bytes.Equal(got, value) {
		t.Errorf("Secret = %x, want %x", got, value)
	}
}

func testStoredBytesAreNotAliased(t *testing.T, v secrets.Vault) {
	in := []byte("plaintext")
	mustCreate(t, v, "key_1", in)
	in[0] = 'X'
	got, err := v.KeySecret(t.Context(), "key_1")
	if err != nil {
		t.Fatalf("KeySecret: %v", err)
	}
	got[1] = 'Y'
	wantKeySecret(t, v, "key_1", []byte("plaintext"))

	named := []byte("value")
	mustAdd(t, v, secrets.Pepper, named)
	named[0] = 'X'
	vs, err := v.SecretVersions(t.Context(), secrets.Pepper)
	if err != nil {
		t.Fatalf("SecretVersions: %v", err)
	}
	vs[0][1] = 'Y'
	wantVersions(t, v, secrets.Pepper, "value")
}
