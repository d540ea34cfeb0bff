package filevault

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets"
)

// KeySize is the size of a master key in bytes (AES-256).
const KeySize = 32

// ErrWrongKey is returned by Open when the file does not decrypt: the
// master key is wrong, or the file was truncated or altered.
var ErrWrongKey = errors.New("vault: wrong key or corrupted file")

// ErrInUse is returned by Open when another Vault (in this process or
// another) has the file open.
var ErrInUse = errors.New("in use by another process")

const (
	magic         = "KPVAULT\x00"
	formatVersion = 1
	headerLen     = len(magic) + 1
	nonceLen      = 12
)

// state is the state of a key's secret.
type state string

const (
	enabled   state = "enabled"
	disabled  state = "disabled"
	destroyed state = "destroyed"
)

type keySecret struct {
	Owner string `json:"owner"`
	State state  `json:"state"`
	Value []byte `json:"value,omitempty"` // nil once destroyed
}

// document is the vault's plaintext content. Values are never modified in
// place, so a shallow copy of the maps is a snapshot.
type document struct {
	Keys    map[string]keySecret `json:"keys"`
	Secrets map[string][][]byte  `json:"secrets"` // oldest version first
}

func (d document) clone() document {
	return document{Keys: maps.Clone(d.Keys), Secrets: maps.Clone(d.Secrets)}
}

// Vault is an encrypted file vault.
type Vault struct {
	path   string
	aead   cipher.AEAD
	unlock func() error

	mu     sync.Mutex
	doc    document
	closed bool
}

var _ secrets.Vault = (*Vault)(nil)

// Open opens the vault at path with a KeySize-byte master key, creating an
// empty vault (and its directory, mode 0700) if the file does not exist.
// It fails with ErrWrongKey if the file does not decrypt with masterKey,
// and with ErrInUse if another Vault has the file open. Close the Vault
// to release the file.
func Open(path string, masterKey []byte) (*Vault, error) {
	aead, err := newAEAD(masterKey)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	unlock, err := lock(path)
	if err != nil {
		return nil, err
	}
	v := &Vault{path: path, aead: aead, unlock: unlock}
	if err := v.load(true); err != nil {
		unlock()
		return nil, err
	}
	return v, nil
}

// load reads the file, or creates it (if create) so that a later Open
// with another key fails instead of starting a second vault.
func (v *Vault) load(create bool) error {
	data, err := os.ReadFile(v.path)
	if errors.Is(err, fs.ErrNotExist) && !create {
		return errs.E(errs.NotFound, "no vault file %s", v.path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		v.doc = document{Keys: map[string]keySecret{}, Secrets: map[string][][]byte{}}
		return v.save(v.doc)
	}
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	if len(data) >= len(magic) && string(data[:len(magic)]) != magic {
		return fmt.Errorf("vault: %s is not a keyplane vault file", v.path)
	}
	if len(data) > len(magic) && data[len(magic)] != formatVersion {
		return fmt.Errorf("vault: %s has format version %d; this build reads version %d", v.path, data[len(magic)], formatVersion)
	}
	if len(data) < headerLen+nonceLen+v.aead.Overhead() {
		return fmt.Errorf("%w: %s is truncated", ErrWrongKey, v.path)
	}
	nonce := data[headerLen : headerLen+nonceLen]
	plain, err := v.aead.Open(nil, nonce, data[headerLen+nonceLen:], data[:headerLen])
	if err != nil {
		return fmt.Errorf("%w: %s", ErrWrongKey, v.path)
	}
	var doc document
	if err := json.Unmarshal(plain, &doc); err != nil {
		return fmt.Errorf("vault: %s: malformed document: %w", v.path, err)
	}
	if doc.Keys == nil {
		doc.Keys = map[string]keySecret{}
	}
	if doc.Secrets == nil {
		doc.Secrets = map[string][][]byte{}
	}
	v.doc = doc
	return nil
}

// save seals doc under a fresh nonce and replaces the file atomically.
func (v *Vault) save(doc document) error {
	plain, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	out := make([]byte, headerLen+nonceLen, headerLen+nonceLen+len(plain)+v.aead.Overhead())
	copy(out, magic)
	out[len(magic)] = formatVersion
	rand.Read(out[headerLen:])
	out = v.aead.Seal(out, out[headerLen:headerLen+nonceLen], plain, out[:headerLen])
	clear(plain)
	return writeFileAtomic(v.path, out)
}

// writeFileAtomic replaces path with data, mode 0600: write a temporary
// file in the same directory, fsync it, rename it over path, fsync the
// directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// view runs fn on the current document.
func (v *Vault) view(fn func(d *document) error) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return errs.E(errs.Internal, "vault: closed")
	}
	return fn(&v.doc)
}

// update runs fn on a copy of the document and, if fn reports a change,
// writes the copy and makes it current. A failed write changes nothing.
func (v *Vault) update(fn func(d *document) (changed bool, err error)) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return errs.E(errs.Internal, "vault: closed")
	}
	next := v.doc.clone()
	changed, err := fn(&next)
	if err != nil || !changed {
		return err
	}
	if err := v.save(next); err != nil {
		return errs.Wrap(errs.Internal, err, "vault: cannot write the vault file")
	}
	v.doc = next
	return nil
}

// CreateKeySecret implements secrets.Vault.
func (v *Vault) CreateKeySecret(_ context.Context, ref secrets.KeyRef, plaintext []byte) error {
	return v.update(func(d *document) (bool, error) {
		if _, ok := d.Keys[ref.KeyID]; ok {
			return false, errs.E(errs.Exists, "key %s already has a secret", ref.KeyID)
		}
		d.Keys[ref.KeyID] = keySecret{Owner: ref.Owner, State: enabled, Value: bytes.Clone(plaintext)}
		return true, nil
	})
}

// KeySecret implements secrets.Vault.
func (v *Vault) KeySecret(_ context.Context, keyID string) ([]byte, error) {
	var out []byte
	err := v.view(func(d *document) error {
		k, ok := d.Keys[keyID]
		switch {
		case !ok:
			return errs.E(errs.NotFound, "key %s has no secret", keyID)
		case k.State != enabled:
			return errs.E(errs.FailedPrecondition, "the secret of key %s is %s", keyID, k.State)
		}
		out = bytes.Clone(k.Value)
		return nil
	})
	return out, err
}

// SetKeySecretEnabled implements secrets.Vault.
func (v *Vault) SetKeySecretEnabled(_ context.Context, keyID string, enable bool) error {
	want := disabled
	if enable {
		want = enabled
	}
	return v.update(func(d *document) (bool, error) {
		k, ok := d.Keys[keyID]
		switch {
		case !ok:
			return false, errs.E(errs.NotFound, "key %s has no secret", keyID)
		case k.State == destroyed:
			return false, errs.E(errs.FailedPrecondition, "the secret of key %s is destroyed", keyID)
		case k.State == want:
			return false, nil
		}
		k.State = want
		d.Keys[keyID] = k
		return true, nil
	})
}

// DestroyKeySecret implements secrets.Vault.
func (v *Vault) DestroyKeySecret(_ context.Context, keyID string) error {
	return v.update(func(d *document) (bool, error) {
		k, ok := d.Keys[keyID]
		if !ok || k.State == destroyed {
			return false, nil
		}
		d.Keys[keyID] = keySecret{Owner: k.Owner, State: destroyed}
		return true, nil
	})
}

// DeleteKeySecret implements secrets.Vault.
func (v *Vault) DeleteKeySecret(_ context.Context, keyID string) error {
	return v.update(func(d *document) (bool, error) {
		if _, ok := d.Keys[keyID]; !ok {
			return false, nil
		}
		delete(d.Keys, keyID)
		return true, nil
	})
}

// Secret implements secrets.Vault.
func (v *Vault) Secret(_ context.Context, name string) ([]byte, error) {
	var out []byte
	err := v.view(func(d *document) error {
		vs := d.Secrets[name]
		if len(vs) == 0 {
			return errs.E(errs.NotFound, "no secret %q", name)
		}
		out = bytes.Clone(vs[len(vs)-1])
		return nil
	})
	return out, err
}

// AddSecretVersion implements secrets.Vault.
func (v *Vault) AddSecretVersion(_ context.Context, name string, value []byte) error {
	return v.update(func(d *document) (bool, error) {
		// Clip, so that append never writes into the current document.
		d.Secrets[name] = append(slices.Clip(d.Secrets[name]), bytes.Clone(value))
		return true, nil
	})
}

// SecretVersions implements secrets.Vault.
func (v *Vault) SecretVersions(_ context.Context, name string) ([][]byte, error) {
	var out [][]byte
	err := v.view(func(d *document) error {
		vs := d.Secrets[name]
		if len(vs) == 0 {
			return errs.E(errs.NotFound, "no secret %q", name)
		}
		for i := len(vs) - 1; i >= 0; i-- {
			out = append(out, bytes.Clone(vs[i]))
		}
		return nil
	})
	return out, err
}

// newAEAD returns the AES-GCM cipher of masterKey.
func newAEAD(masterKey []byte) (cipher.AEAD, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("vault: master key is %d bytes, want %d", len(masterKey), KeySize)
	}
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return aead, nil
}

// ReadSecret returns the newest version of the deployment secret name from
// the vault file at path, without taking the vault's lock and without
// creating anything: for reading a secret while another process has the
// vault open. The file is only ever replaced whole (by rename), so the
// read sees one complete version of it. It fails with an errs.NotFound
// error if the file or the secret does not exist, and with ErrWrongKey if
// the file does not decrypt with masterKey.
func ReadSecret(path string, masterKey []byte, name string) ([]byte, error) {
	aead, err := newAEAD(masterKey)
	if err != nil {
		return nil, err
	}
	v := &Vault{path: path, aead: aead}
	if err := v.load(false); err != nil {
		return nil, err
	}
	vs := v.doc.Secrets[name]
	if len(vs) == 0 {
		return nil, errs.E(errs.NotFound, "no secret %q", name)
	}
	return vs[len(vs)-1], nil
}

// Close releases the file lock. The vault is unusable afterwards.
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	v.doc = document{}
	return v.unlock()
}

// LoadOrCreateKey returns the master key stored at path as 64 hex digits,
// first creating the file (mode 0600, its directory 0700) with a new random
// key if it does not exist.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := ReadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	key = make([]byte, KeySize)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReadKey(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("vault: write key file: %w", err)
	}
	return key, nil
}

// ReadKey returns the master key stored at path as 64 hex digits. It
// fails with an error matching fs.ErrNotExist if there is no such file.
func ReadKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("vault: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("vault: key file %s must hold %d hex digits (a %d-byte key)", path, 2*KeySize, KeySize)
	}
	return key, nil
}
