package leaks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
)

// The headers GitHub signs a report with.
const (
	HeaderKeyID     = "Github-Public-Key-Identifier"
	HeaderSignature = "Github-Public-Key-Signature"
)

// Defaults of Keyring.
const (
	// DefaultMinRefresh is the least time between two fetches of the key
	// list: an unknown key identifier makes at most one fetch per
	// DefaultMinRefresh, however many requests carry one.
	DefaultMinRefresh = time.Minute
	// DefaultMaxAge is how long a fetched key list is trusted before the
	// next verification fetches it again (GitHub may withdraw a key).
	DefaultMaxAge = time.Hour
	// maxKeysBytes bounds the key list's size.
	maxKeysBytes = 1 << 20
	// fetchTimeout bounds one fetch of the key list.
	fetchTimeout = 10 * time.Second
)

// KeySource returns the published key list: the JSON GitHub serves at
// https://api.github.com/meta/public_keys/secret_scanning, {"public_keys": [{"key_identifier", "key", "is_current"}]}.
type KeySource interface {
	FetchKeys(ctx context.Context) ([]byte, error)
}

// FileKeys reads the key list from a file in GitHub's format (for local
// use and tests: KEYPLANE_GITHUB_SCANNING_KEYS). The file is read again
// whenever the Keyring refreshes, so a key added to it is found.
type FileKeys struct{ Path string }

// FetchKeys reads the file.
func (f FileKeys) FetchKeys(context.Context) ([]byte, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("reading the GitHub scanning keys file: %w", err)
	}
	return b, nil
}

// HTTPKeys fetches the key list from URL (https://api.github.com/meta/public_keys/secret_scanning in production).
type HTTPKeys struct {
	URL    string
	Client *http.Client // default: a client with a 10 s timeout
}

// FetchKeys GETs the key list.
func (h HTTPKeys) FetchKeys(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: fetchTimeout}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching GitHub's secret scanning keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching GitHub's secret scanning keys: %s answered %d", h.URL, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetching GitHub's secret scanning keys: %w", err)
	}
	if len(b) > maxKeysBytes {
		return nil, fmt.Errorf("GitHub's secret scanning keys are over %d bytes", maxKeysBytes)
	}
	return b, nil
}

// ParseKeys decodes a key list. Keys that are not PEM-encoded ECDSA P-256
// public keys are left out (a key of another kind cannot have signed a
// report we accept); a list with no usable key is an error.
func ParseKeys(b []byte) (map[string]*ecdsa.PublicKey, error) {
	var list struct {
		PublicKeys []struct {
			ID        string `json:"key_identifier"`
			Key       string `json:"key"`
			IsCurrent bool   `json:"is_current"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf(`the key list is not {"public_keys": [{"key_identifier", "key", "is_current"}]}: %w`, err)
	}
	keys := make(map[string]*ecdsa.PublicKey, len(list.PublicKeys))
	for _, k := range list.PublicKeys {
		if k.ID == "" {
			continue
		}
		if pub, err := parseP256(k.Key); err == nil {
			keys[k.ID] = pub
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the key list has no ECDSA P-256 public key (%d entries)", len(list.PublicKeys))
	}
	return keys, nil
}

func parseP256(s string) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("not a PEM public key")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("not an ECDSA P-256 key")
	}
	return ec, nil
}

// Keyring checks GitHub's signatures over reports with the keys of
// Source, which it caches. It fetches the list on first use, again when a
// report names a key it does not hold, and when the list is older than
// MaxAge; never more than once per MinRefresh, so that requests naming
// made-up keys cannot make it hammer GitHub. A fetch that fails keeps the
// keys it has. Safe for concurrent use.
type Keyring struct {
	Source     KeySource
	Clock      clock.Clock   // default clock.Real
	MinRefresh time.Duration // default DefaultMinRefresh
	MaxAge     time.Duration // default DefaultMaxAge
	Logger     *slog.Logger  // default slog.Default()

	refresh sync.Mutex // held while fetching: one fetch at a time

	mu        sync.RWMutex
	keys      map[string]*ecdsa.PublicKey
	fetchedAt time.Time // of the keys held
	triedAt   time.Time // of the last fetch, successful or not
	lastErr   error     // of the last fetch
}

func (k *Keyring) now() time.Time {
	if k.Clock == nil {
		return time.Now().UTC()
	}
	return k.Clock.Now()
}

func (k *Keyring) minRefresh() time.Duration {
	if k.MinRefresh <= 0 {
		return DefaultMinRefresh
	}
	return k.MinRefresh
}

func (k *Keyring) maxAge() time.Duration {
	if k.MaxAge <= 0 {
		return DefaultMaxAge
	}
	return k.MaxAge
}

func (k *Keyring) logger() *slog.Logger {
	if k.Logger == nil {
		return slog.Default()
	}
	return k.Logger
}

// Verify checks that signature (the base64 of an ASN.1 DER ECDSA
// signature) signs SHA-256(body) under the key named keyID. Errors:
// Unauthenticated for a missing or malformed header, a key GitHub does
// not publish (after a refresh) or a signature that does not verify;
// Unavailable when the key is unknown and the key list cannot be fetched.
func (k *Keyring) Verify(ctx context.Context, keyID, signature string, body []byte) error {
	keyID, signature = strings.TrimSpace(keyID), strings.TrimSpace(signature)
	switch {
	case keyID == "":
		return errs.E(errs.Unauthenticated, "the %s header is missing: reports must be signed by GitHub", HeaderKeyID)
	case signature == "":
		return errs.E(errs.Unauthenticated, "the %s header is missing: reports must be signed by GitHub", HeaderSignature)
	case len(keyID) > 256 || len(signature) > 1024:
		return errs.E(errs.Unauthenticated, "the signature headers are too long to be GitHub's")
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return errs.E(errs.Unauthenticated, "the %s header is not base64", HeaderSignature)
	}
	pub, err := k.key(ctx, keyID)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return errs.E(errs.Unauthenticated, "the %s does not verify over the body with the key %s names", HeaderSignature, HeaderKeyID)
	}
	return nil
}

// key returns the key named id, refreshing the list when it is unknown
// or old and a fetch is allowed.
func (k *Keyring) key(ctx context.Context, id string) (*ecdsa.PublicKey, error) {
	pub, fresh := k.lookup(id)
	if pub != nil && fresh {
		return pub, nil
	}
	if k.mayFetch() {
		k.fetch(ctx)
		pub, _ = k.lookup(id)
	}
	if pub != nil {
		return pub, nil
	}
	k.mu.RLock()
	lastErr := k.lastErr
	k.mu.RUnlock()
	if lastErr != nil {
		e := errs.Wrap(errs.Unavailable, lastErr, "GitHub's secret scanning public keys cannot be fetched to check the signature; retry later")
		e.RetryAfter = k.minRefresh()
		return nil, e
	}
	return nil, errs.E(errs.Unauthenticated, "%s names a key GitHub does not publish", HeaderKeyID)
}

// lookup returns the key named id, if held, and whether the list is
// younger than MaxAge.
func (k *Keyring) lookup(id string) (*ecdsa.PublicKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[id], k.now().Sub(k.fetchedAt) < k.maxAge()
}

// mayFetch reports whether MinRefresh has passed since the last fetch.
func (k *Keyring) mayFetch() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.triedAt.IsZero() || k.now().Sub(k.triedAt) >= k.minRefresh()
}

// fetch replaces the keys with Source's, unless another fetch did so
// since the caller decided to fetch, or MinRefresh has not passed.
func (k *Keyring) fetch(ctx context.Context) {
	k.refresh.Lock()
	defer k.refresh.Unlock()
	if !k.mayFetch() {
		return // a concurrent request fetched while this one waited
	}
	now := k.now()
	// Detached: a caller that hangs up must not make the fetch fail for
	// everyone until MinRefresh has passed.
	b, err := k.Source.FetchKeys(context.WithoutCancel(ctx))
	var keys map[string]*ecdsa.PublicKey
	if err == nil {
		keys, err = ParseKeys(b)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.triedAt, k.lastErr = now, err
	if err != nil {
		k.logger().WarnContext(ctx, "GitHub's secret scanning keys were not refreshed; keeping the keys held", "held", len(k.keys), "error", err)
		return
	}
	k.keys, k.fetchedAt = keys, now
}
