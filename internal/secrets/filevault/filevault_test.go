package filevault_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/secrets/secretstest"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, filevault.KeySize) }

func mustOpen(t *testing.T, path string, key []byte) *filevault.Vault {
	t.Helper()
	v, err := filevault.Open(path, key)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return v
}

func mustClose(t *testing.T, v *filevault.Vault) {
	t.Helper()
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestConformance(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Vault {
		return mustOpen(t, filepath.Join(t.TempDir(), "vault"), testKey(1))
	})
}

func TestFileIsPrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix file modes on Windows")
	}
	path := filepath.Join(t.TempDir(), "state", "vault")
	v := mustOpen(t, path, testKey(1))
	defer mustClose(t, v)
	if err := v.CreateKeySecret(t.Context(), secrets.KeyRef{KeyID: "key_1"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, path + ".lock": 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
}

func TestPlaintextNeverReachesDisk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vault")
	v := mustOpen(t, path, testKey(1))
	defer mustClose(t, v)
	ctx := t.Context()
	keyPlain := []byte("kp_live_SuperSecretPlaintextValue")
	namedPlain := []byte("whsec_AnotherSecretPlaintextValue")
	if err := v.CreateKeySecret(ctx, secrets.KeyRef{KeyID: "key_1", Owner: "o"}, keyPlain); err != nil {
		t.Fatal(err)
	}
	if err := v.AddSecretVersion(ctx, secrets.WebhookSecret, namedPlain); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range [][]byte{keyPlain, namedPlain, []byte("key_1")} {
			if bytes.Contains(data, p) {
				t.Errorf("%s contains %q in the clear", e.Name(), p)
			}
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault")
	ctx := t.Context()
	v := mustOpen(t, path, testKey(1))
	if err := v.CreateKeySecret(ctx, secrets.KeyRef{KeyID: "key_1"}, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := v.CreateKeySecret(ctx, secrets.KeyRef{KeyID: "key_2"}, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := v.SetKeySecretEnabled(ctx, "key_2", false); err != nil {
		t.Fatal(err)
	}
	if err := v.AddSecretVersion(ctx, secrets.Pepper, []byte("p1")); err != nil {
		t.Fatal(err)
	}
	if err := v.AddSecretVersion(ctx, secrets.Pepper, []byte("p2")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, v)

	v = mustOpen(t, path, testKey(1))
	defer mustClose(t, v)
	got, err := v.KeySecret(ctx, "key_1")
	if err != nil || string(got) != "one" {
		t.Errorf("KeySecret(key_1) after reopen = %q, %v; want %q, nil", got, err, "one")
	}
	if _, err := v.KeySecret(ctx, "key_2"); err == nil {
		t.Errorf("KeySecret(key_2) after reopen: got nil error, want the key still disabled")
	}
	vs, err := v.SecretVersions(ctx, secrets.Pepper)
	if err != nil || len(vs) != 2 || string(vs[0]) != "p2" || string(vs[1]) != "p1" {
		t.Errorf("SecretVersions after reopen = %q, %v; want [p2 p1], nil", vs, err)
	}
}

func TestWrongKeyFailsClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault")
	v := mustOpen(t, path, testKey(1))
	if err := v.AddSecretVersion(t.Context(), secrets.Pepper, []byte("p")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, v)

	_, err := filevault.Open(path, testKey(2))
	if !errors.Is(err, filevault.ErrWrongKey) {
		t.Fatalf("Open with the wrong key: got %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), "vault: wrong key or corrupted file") {
		t.Errorf("Open with the wrong key: got %q, want it to say %q", err, "vault: wrong key or corrupted file")
	}
	// The failed Open released the lock.
	mustClose(t, mustOpen(t, path, testKey(1)))
}

func TestCorruptFileFailsClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault")
	v := mustOpen(t, path, testKey(1))
	if err := v.AddSecretVersion(t.Context(), secrets.Pepper, []byte("p")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, v)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	badVersion := bytes.Clone(good)
	badVersion[8] = 9

	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)/2], "vault: wrong key or corrupted file"},
		{"header only", good[:9], "vault: wrong key or corrupted file"},
		{"empty", nil, "vault: wrong key or corrupted file"},
		{"bit flipped", flipped, "vault: wrong key or corrupted file"},
		{"unknown format version", badVersion, "format version 9"},
		{"not a vault", []byte(`{"keys":{}}`), "not a keyplane vault file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			v, err := filevault.Open(path, testKey(1))
			if err == nil {
				v.Close()
				t.Fatalf("Open: got nil error, want one saying %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open: got %q, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no flock on Windows")
	}
	path := filepath.Join(t.TempDir(), "vault")
	v := mustOpen(t, path, testKey(1))
	if v2, err := filevault.Open(path, testKey(1)); !errors.Is(err, filevault.ErrInUse) {
		if err == nil {
			v2.Close()
		}
		t.Fatalf("second Open of an open vault: got %v, want ErrInUse", err)
	}
	mustClose(t, v)
	mustClose(t, mustOpen(t, path, testKey(1)))
}

func TestLoadOrCreateKeyIsStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets", "master.key")
	k1, err := filevault.LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("LoadOrCreateKey (create): %v", err)
	}
	if len(k1) != filevault.KeySize {
		t.Errorf("key is %d bytes, want %d", len(k1), filevault.KeySize)
	}
	k2, err := filevault.LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("LoadOrCreateKey (load): %v", err)
	}
	if !bytes.Equal(k1, k2) {
		t.Errorf("loaded key differs from the created one")
	}
	if runtime.GOOS == "windows" {
		return
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
}

func TestMalformedKeyFileIsRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte("abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := filevault.LoadOrCreateKey(path); err == nil {
		t.Errorf("LoadOrCreateKey of a short key: got nil error, want one")
	}
}

// TestReadSecretWhileOpenCreatesNothing: ReadSecret reads a vault another
// Vault holds open, and on a missing file or secret it fails with NotFound
// and creates nothing.
func TestReadSecretWhileOpenCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vault")
	if _, err := filevault.ReadSecret(path, testKey(1), secrets.AdminToken); !errs.Is(err, errs.NotFound) {
		t.Errorf("ReadSecret of a missing file: got %v, want NotFound", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("ReadSecret of a missing file created %v", entries)
	}
	v := mustOpen(t, path, testKey(1))
	defer mustClose(t, v)
	if _, err := filevault.ReadSecret(path, testKey(1), secrets.AdminToken); !errs.Is(err, errs.NotFound) {
		t.Errorf("ReadSecret of a missing secret: got %v, want NotFound", err)
	}
	for _, version := range []string{"one", "two"} {
		if err := v.AddSecretVersion(t.Context(), secrets.AdminToken, []byte(version)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := filevault.ReadSecret(path, testKey(1), secrets.AdminToken)
	if err != nil || string(got) != "two" {
		t.Errorf("ReadSecret while open: got %q, %v; want the newest version, two", got, err)
	}
	if _, err := filevault.ReadSecret(path, testKey(2), secrets.AdminToken); !errors.Is(err, filevault.ErrWrongKey) {
		t.Errorf("ReadSecret with another key: got %v, want ErrWrongKey", err)
	}
}
