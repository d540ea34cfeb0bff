package leaks_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/leaks"
)

// signer is a GitHub secret scanning key pair, made in the test.
type signer struct {
	id  string
	key *ecdsa.PrivateKey
}

func newSigner(t *testing.T, id string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{id: id, key: k}
}

// sign returns the Github-Public-Key-Signature of body.
func (s signer) sign(t *testing.T, body []byte) string {
	t.Helper()
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// keyList is signers' public keys in the format GitHub publishes them.
func keyList(t *testing.T, signers ...signer) []byte {
	t.Helper()
	type entry struct {
		ID      string `json:"key_identifier"`
		Key     string `json:"key"`
		Current bool   `json:"is_current"`
	}
	var list struct {
		PublicKeys []entry `json:"public_keys"`
	}
	for i, s := range signers {
		der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		list.PublicKeys = append(list.PublicKeys, entry{ID: s.id, Key: string(p), Current: i == len(signers)-1})
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeKeys publishes signers through a keys file (KEYPLANE_GITHUB_SCANNING_KEYS).
func writeKeys(t *testing.T, path string, signers ...signer) {
	t.Helper()
	if err := os.WriteFile(path, keyList(t, signers...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSignatureFromAPublishedKeyVerifies(t *testing.T) {
	old, cur, stranger := newSigner(t, "key-old"), newSigner(t, "key-current"), newSigner(t, "key-current")
	path := filepath.Join(t.TempDir(), "keys.json")
	writeKeys(t, path, old, cur)
	ring := &leaks.Keyring{Source: leaks.FileKeys{Path: path}, Clock: clock.NewFake(time.Unix(1e9, 0))}
	body := []byte(`[{"token":"kp_live_x","type":"keyplane_api_key","url":"https://github.com/o/r/blob/1/f","source":"content"}]`)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		id, sig  string
		body     []byte
		wantKind errs.Kind // 0 for success
	}{
		{"current key", cur.id, cur.sign(t, body), body, 0},
		{"older published key", old.id, old.sign(t, body), body, 0},
		{"signature of another body", cur.id, cur.sign(t, []byte(`[]`)), body, errs.Unauthenticated},
		{"body changed by one byte", cur.id, cur.sign(t, body), append([]byte(" "), body...), errs.Unauthenticated},
		{"forged: an unpublished key under a published id", stranger.id, stranger.sign(t, body), body, errs.Unauthenticated},
		{"signed by one published key, named as the other", old.id, cur.sign(t, body), body, errs.Unauthenticated},
		{"unknown key id", "key-unknown", cur.sign(t, body), body, errs.Unauthenticated},
		{"no key id", "", cur.sign(t, body), body, errs.Unauthenticated},
		{"no signature", cur.id, "", body, errs.Unauthenticated},
		{"signature not base64", cur.id, "not base64!", body, errs.Unauthenticated},
		{"signature not ASN.1", cur.id, base64.StdEncoding.EncodeToString([]byte("garbage")), body, errs.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ring.Verify(ctx, tc.id, tc.sig, tc.body)
			switch {
			case tc.wantKind == 0 && err != nil:
				t.Fatalf("got %v, want it verified", err)
			case tc.wantKind != 0 && !errs.Is(err, tc.wantKind):
				t.Fatalf("got %v, want a %v error", err, tc.wantKind)
			}
		})
	}
}

// keyServer serves a key list like api.github.com and counts its requests.
type keyServer struct {
	srv      *httptest.Server
	list     atomic.Pointer[[]byte]
	requests atomic.Int64
	fail     atomic.Bool
}

func newKeyServer(t *testing.T, list []byte) *keyServer {
	ks := &keyServer{}
	ks.list.Store(&list)
	ks.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.requests.Add(1)
		if ks.fail.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*ks.list.Load())
	}))
	t.Cleanup(ks.srv.Close)
	return ks
}

func TestUnknownKeyIDRefreshesAtABoundedRate(t *testing.T) {
	a, b := newSigner(t, "key-a"), newSigner(t, "key-b")
	ks := newKeyServer(t, keyList(t, a))
	clk := clock.NewFake(time.Unix(1e9, 0))
	ring := &leaks.Keyring{Source: leaks.HTTPKeys{URL: ks.srv.URL, Client: ks.srv.Client()}, Clock: clk, MinRefresh: time.Minute}
	ctx := context.Background()
	body := []byte(`[{"token":"t"}]`)
	if err := ring.Verify(ctx, a.id, a.sign(t, body), body); err != nil {
		t.Fatal(err)
	}
	// GitHub starts signing with a new key; we learn of it on its first use.
	list := keyList(t, a, b)
	ks.list.Store(&list)
	clk.Advance(time.Minute)
	if err := ring.Verify(ctx, b.id, b.sign(t, body), body); err != nil {
		t.Fatalf("a key published since the last fetch: %v", err)
	}
	fetched := ks.requests.Load()
	// An attacker naming made-up keys gets 401s, and no fetch until
	// MinRefresh has passed.
	for i := range 100 {
		if err := ring.Verify(ctx, "made-up-"+string(rune('a'+i%26)), a.sign(t, body), body); !errs.Is(err, errs.Unauthenticated) {
			t.Fatalf("made-up key id: got %v, want Unauthenticated", err)
		}
	}
	if got := ks.requests.Load() - fetched; got > 1 {
		t.Fatalf("100 requests with unknown key ids within MinRefresh fetched the key list %d times, want at most 1", got)
	}
	// Known keys keep verifying meanwhile.
	if err := ring.Verify(ctx, a.id, a.sign(t, body), body); err != nil {
		t.Fatal(err)
	}
}

func TestKeyListDownKeepsKnownKeysAndAnswersUnavailableForUnknownOnes(t *testing.T) {
	a := newSigner(t, "key-a")
	ks := newKeyServer(t, keyList(t, a))
	clk := clock.NewFake(time.Unix(1e9, 0))
	ring := &leaks.Keyring{Source: leaks.HTTPKeys{URL: ks.srv.URL}, Clock: clk, MinRefresh: time.Minute, MaxAge: time.Hour}
	ctx := context.Background()
	body := []byte(`[{"token":"t"}]`)
	if err := ring.Verify(ctx, a.id, a.sign(t, body), body); err != nil {
		t.Fatal(err)
	}
	ks.fail.Store(true)
	clk.Advance(2 * time.Hour) // old enough to refresh, which fails
	if err := ring.Verify(ctx, a.id, a.sign(t, body), body); err != nil {
		t.Fatalf("a known key while the list cannot be fetched: %v", err)
	}
	clk.Advance(time.Minute)
	if err := ring.Verify(ctx, "key-new", a.sign(t, body), body); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("an unknown key while the list cannot be fetched: got %v, want Unavailable (GitHub retries)", err)
	}
}

func TestWithdrawnKeyStopsVerifyingOnceTheListIsOld(t *testing.T) {
	a, b := newSigner(t, "key-a"), newSigner(t, "key-b")
	path := filepath.Join(t.TempDir(), "keys.json")
	writeKeys(t, path, a, b)
	clk := clock.NewFake(time.Unix(1e9, 0))
	ring := &leaks.Keyring{Source: leaks.FileKeys{Path: path}, Clock: clk, MaxAge: time.Hour}
	ctx := context.Background()
	body := []byte(`[{"token":"t"}]`)
	if err := ring.Verify(ctx, a.id, a.sign(t, body), body); err != nil {
		t.Fatal(err)
	}
	writeKeys(t, path, b) // GitHub withdraws key a
	clk.Advance(time.Hour)
	if err := ring.Verify(ctx, a.id, a.sign(t, body), body); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("a withdrawn key after MaxAge: got %v, want Unauthenticated", err)
	}
}

func TestParseKeysSkipsKeysThatAreNotP256(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	other := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	good := newSigner(t, "good")
	var list map[string][]map[string]any
	json.Unmarshal(keyList(t, good), &list)
	list["public_keys"] = append(list["public_keys"], map[string]any{"key_identifier": "p384", "key": other},
		map[string]any{"key_identifier": "junk", "key": "not pem"})
	b, _ := json.Marshal(list)
	keys, err := leaks.ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys["good"] == nil {
		t.Fatalf("got keys %v, want only the P-256 one", keys)
	}
	for _, bad := range []string{`{}`, `{"public_keys":[]}`, `[]`, `{"public_keys":[{"key_identifier":"x","key":"junk"}]}`} {
		if _, err := leaks.ParseKeys([]byte(bad)); err == nil {
			t.Errorf("ParseKeys(%s): no error, want one (no usable key)", bad)
		}
	}
}
