package httpapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/api/option"

	"github.com/keyplane/keyplane/internal/errs"
)

const (
	testSweepHost = "keyplane-sweep-abc-uc.a.run.app"
	testSweepURL  = "https://" + testSweepHost
	testScheduler = "scheduler@proj.iam.gserviceaccount.com"
	testKeyID     = "google-key-1"
)

// fakeGoogleCerts stands in for https://www.googleapis.com/oauth2/v3/certs,
// the JWKS document the idtoken validator fetches for RS256 tokens. It is
// the transport of the validator's HTTP client, so every request the
// validator makes reaches it and none reaches the network.
type fakeGoogleCerts struct {
	jwks   []byte
	status int // 0: 200

	mu      sync.Mutex
	fetched []string
}

func newFakeGoogleCerts(t *testing.T, kid string, pub *rsa.PublicKey) *fakeGoogleCerts {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeGoogleCerts{jwks: jwks}
}

func (f *fakeGoogleCerts) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.fetched = append(f.fetched, r.URL.String())
	f.mu.Unlock()
	if r.URL.String() != "https://www.googleapis.com/oauth2/v3/certs" {
		return &http.Response{StatusCode: http.StatusNotFound, Body: http.NoBody, Request: r}, nil
	}
	status := f.status
	if status == 0 {
		status = http.StatusOK
	}
	return &http.Response{
		StatusCode: status,
		Header:     http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"public, max-age=3600"}},
		Body:       io.NopCloser(bytes.NewReader(f.jwks)),
		Request:    r,
	}, nil
}

func (f *fakeGoogleCerts) fetches() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.fetched...)
}

// signJWT encodes claims as an RS256 JWT signed with key.
func signJWT(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// schedulerClaims are the claims of the OIDC token Cloud Scheduler sends,
// changed by edit.
func schedulerClaims(edit func(map[string]any)) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": "https://accounts.google.com", "aud": testSweepURL,
		"azp": "1234567890", "sub": "1234567890",
		"email": testScheduler, "email_verified": true,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(c)
	}
	return c
}

func schedulerRequest(token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, testSweepURL+"/v1/sweep", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func newTestIDTokenAuth(t *testing.T, certs *fakeGoogleCerts, accounts, audiences []string) *IDTokenAuth {
	t.Helper()
	a, err := NewIDTokenAuth(context.Background(), accounts, audiences, option.WithHTTPClient(&http.Client{Transport: certs}))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestIDTokenAuthAcceptsOnlyAllowListedGoogleTokens(t *testing.T) {
	googleKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := signJWT(t, googleKey, testKeyID, schedulerClaims(nil))
	with := func(edit func(map[string]any)) string {
		return signJWT(t, googleKey, testKeyID, schedulerClaims(edit))
	}
	// Scheduler's default OIDC audience is the full target URL.
	withPath := with(func(c map[string]any) { c["aud"] = testSweepURL + "/v1/sweep" })

	for _, tc := range []struct {
		name      string
		accounts  []string
		audiences []string
		token     string
		want      string // actor; empty: rejected
		wantMsg   string // part of the rejection message
		noFetch   bool   // rejected before any certificate fetch
	}{
		{name: "valid", accounts: []string{testScheduler}, token: valid, want: "sa:" + testScheduler},
		{name: "allow-list is case-insensitive", accounts: []string{"Scheduler@Proj.iam.gserviceaccount.com"},
			token: with(func(c map[string]any) { c["email"] = "SCHEDULER@proj.iam.gserviceaccount.com" }), want: "sa:" + testScheduler},
		{name: "issuer without scheme", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["iss"] = "accounts.google.com" }), want: "sa:" + testScheduler},
		{name: "audience defaults to https://Host with path", accounts: []string{testScheduler}, token: withPath, want: "sa:" + testScheduler},
		{name: "configured audience", accounts: []string{testScheduler}, audiences: []string{"https://sweep.example.com"},
			token: with(func(c map[string]any) { c["aud"] = "https://sweep.example.com" }), want: "sa:" + testScheduler},
		{name: "configured audience replaces the Host default", accounts: []string{testScheduler}, audiences: []string{"https://sweep.example.com"},
			token: valid, wantMsg: "audience", noFetch: true},
		{name: "wrong audience", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["aud"] = "https://other-service-abc-uc.a.run.app" }), wantMsg: "audience", noFetch: true},
		{name: "audience of another path", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["aud"] = testSweepURL + "/v1/keys" }), wantMsg: "audience", noFetch: true},
		{name: "expired", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), wantMsg: "expired", noFetch: true},
		{name: "email not allow-listed", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["email"] = "intruder@proj.iam.gserviceaccount.com" }), wantMsg: "not allow-listed", noFetch: true},
		{name: "no email", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { delete(c, "email") }), wantMsg: "not allow-listed", noFetch: true},
		{name: "email not verified", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["email_verified"] = false }), wantMsg: "not verified", noFetch: true},
		{name: "email_verified missing", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { delete(c, "email_verified") }), wantMsg: "not verified", noFetch: true},
		{name: "issuer not Google", accounts: []string{testScheduler},
			token: with(func(c map[string]any) { c["iss"] = "https://evil.example.com" }), wantMsg: "not issued by Google", noFetch: true},
		{name: "signed by another key", accounts: []string{testScheduler},
			token: signJWT(t, otherKey, testKeyID, schedulerClaims(nil)), wantMsg: "signature"},
		{name: "signed by an unknown key", accounts: []string{testScheduler},
			token: signJWT(t, googleKey, "unknown-key", schedulerClaims(nil)), wantMsg: "unknown key"},
		{name: "signature of another token", accounts: []string{testScheduler},
			token: valid[:strings.LastIndex(valid, ".")] + withPath[strings.LastIndex(withPath, "."):], wantMsg: "signature"},
		{name: "empty allow-list rejects everything", token: valid, wantMsg: "not allow-listed", noFetch: true},
		{name: "not a JWT", accounts: []string{testScheduler}, token: "an-admin-token-0123456789", wantMsg: "invalid credentials", noFetch: true},
		{name: "three segments but not a JWT", accounts: []string{testScheduler}, token: "a.b.c", wantMsg: "invalid credentials", noFetch: true},
		{name: "unsigned", accounts: []string{testScheduler},
			token:   base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + strings.Split(valid, ".")[1] + ".",
			wantMsg: "invalid credentials", noFetch: true},
		{name: "no token", accounts: []string{testScheduler}, wantMsg: "missing credentials", noFetch: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs := newFakeGoogleCerts(t, testKeyID, &googleKey.PublicKey)
			a := newTestIDTokenAuth(t, certs, tc.accounts, tc.audiences)
			got, err := a.Authenticate(schedulerRequest(tc.token))
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got actor %q, want a rejection mentioning %q", got, tc.wantMsg)
			}
			e, ok := errs.As(err)
			if !ok || e.Kind != errs.Unauthenticated || !strings.Contains(e.Msg, tc.wantMsg) {
				t.Errorf("got error %v (%v), want Unauthenticated mentioning %q", err, errs.KindOf(err), tc.wantMsg)
			}
			if tc.token != "" {
				for _, part := range strings.Split(tc.token, ".") {
					if len(part) > 8 && strings.Contains(err.Error(), part) {
						t.Errorf("error %q echoes part of the token", err)
					}
				}
			}
			if f := certs.fetches(); tc.noFetch && len(f) > 0 {
				t.Errorf("fetched %v; want no certificate fetch", f)
			}
		})
	}
}

func TestIDTokenAuthDefaultAudienceIsRequestHost(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	certs := newFakeGoogleCerts(t, testKeyID, &key.PublicKey)
	a := newTestIDTokenAuth(t, certs, []string{testScheduler}, nil)
	token := signJWT(t, key, testKeyID, schedulerClaims(nil)) // aud https://keyplane-sweep-abc-uc.a.run.app

	if got, err := a.Authenticate(schedulerRequest(token)); err != nil || got != "sa:"+testScheduler {
		t.Errorf("addressed to %s: got %q, %v; want sa:%s", testSweepHost, got, err, testScheduler)
	}
	// The same token sent to another service must not be accepted there.
	r := httptest.NewRequest(http.MethodPost, "https://keyplane-keys-abc-uc.a.run.app/v1/sweep", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	if got, err := a.Authenticate(r); err == nil {
		t.Errorf("addressed to another host: got actor %q, want a rejection", got)
	}
}

func TestIDTokenAuthCertificateOutageIsUnavailable(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	certs := newFakeGoogleCerts(t, testKeyID, &key.PublicKey)
	certs.status = http.StatusServiceUnavailable
	a := newTestIDTokenAuth(t, certs, []string{testScheduler}, nil)
	_, err = a.Authenticate(schedulerRequest(signJWT(t, key, testKeyID, schedulerClaims(nil))))
	if got := errs.KindOf(err); got != errs.Unavailable {
		t.Errorf("certificates unavailable: got %v (%v), want Unavailable", err, got)
	}
}

func TestAdminTokenNeverFetchesCertificates(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const admin = "admin-token-0123456789"
	certs := newFakeGoogleCerts(t, testKeyID, &key.PublicKey)
	auth := WithIDTokens(NewTokenAuth(admin), newTestIDTokenAuth(t, certs, []string{testScheduler}, nil))

	for _, tc := range []struct {
		token, want string
	}{
		{admin, "admin"},
		{signJWT(t, key, testKeyID, schedulerClaims(nil)), "sa:" + testScheduler},
		{"wrong-admin-token-0123456789", ""},
	} {
		got, err := auth.Authenticate(schedulerRequest(tc.token))
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("got %q, %v; want %q", got, err, tc.want)
		}
		if tc.want == "" && !errs.Is(err, errs.Unauthenticated) {
			t.Errorf("got %v, want Unauthenticated", err)
		}
		if tc.want == "admin" && len(certs.fetches()) > 0 {
			t.Errorf("admin token: fetched %v, want no certificate fetch", certs.fetches())
		}
	}
	if got := WithIDTokens(NewTokenAuth(admin), nil); got == nil {
		t.Error("WithIDTokens(admin, nil) = nil, want admin")
	}
}

func TestNewIDTokenAuthRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name                string
		accounts, audiences []string
	}{
		{"account not an email", []string{"scheduler"}, nil},
		{"empty account", []string{""}, nil},
		{"empty audience", []string{testScheduler}, []string{""}},
	} {
		if _, err := NewIDTokenAuth(context.Background(), tc.accounts, tc.audiences, option.WithHTTPClient(http.DefaultClient)); err == nil {
			t.Errorf("%s: got no error", tc.name)
		}
	}
}
