package httpapi_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/config"
)

// scanningKey is a GitHub secret scanning key pair made in the test and
// published through KEYPLANE_GITHUB_SCANNING_KEYS.
type scanningKey struct {
	id  string
	key *ecdsa.PrivateKey
}

func newScanningKey(t *testing.T, id string) scanningKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return scanningKey{id: id, key: k}
}

func (k scanningKey) sign(t *testing.T, body string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(body))
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func publishScanningKeys(t *testing.T, path string, keys ...scanningKey) {
	t.Helper()
	type entry struct {
		ID      string `json:"key_identifier"`
		Key     string `json:"key"`
		Current bool   `json:"is_current"`
	}
	var list struct {
		PublicKeys []entry `json:"public_keys"`
	}
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(&k.key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		list.PublicKeys = append(list.PublicKeys, entry{ID: k.id, Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), Current: true})
	}
	b, _ := json.Marshal(list)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// postGitHub sends a report as GitHub does: no bearer token, signed.
func (a *api) postGitHub(body, keyID, signature string) (response, []map[string]any) {
	a.t.Helper()
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/leaks/github", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if keyID != "" {
		req.Header.Set("Github-Public-Key-Identifier", keyID)
	}
	if signature != "" {
		req.Header.Set("Github-Public-Key-Signature", signature)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	json.Unmarshal(raw, &out.Body)
	var results []map[string]any
	json.Unmarshal(raw, &results)
	return out, results
}

func labels(results []map[string]any) string {
	var ls []string
	for _, r := range results {
		ls = append(ls, r["label"].(string))
	}
	return strings.Join(ls, " ")
}

func leakAudit(t *testing.T, a *api, id string) []map[string]any {
	t.Helper()
	r := a.do("GET", "/v1/audit?key_id="+id, "")
	if r.Status != 200 {
		t.Fatalf("audit: %d %s", r.Status, r.Raw)
	}
	var out []map[string]any
	for _, e := range r.Body["entries"].([]any) {
		if m := e.(map[string]any); strings.HasPrefix(m["actor"].(string), "leak:") {
			out = append(out, m)
		}
	}
	return out
}

func TestGitHubReportDisablesOurKeysAtOnceAndOnlyOnce(t *testing.T) {
	gh := newScanningKey(t, "gh-key-1")
	keysFile := filepath.Join(t.TempDir(), "github-keys.json")
	publishScanningKeys(t, keysFile, gh)
	a := newAPIWith(t, func(c *config.Config) { c.GitHubScanningKeys = keysFile })
	id, secret := a.create(`{"owner": "acct_leak"}`)
	foreign, _ := apikey.Generate("kp_live")
	body := `[{"token":"` + secret + `","type":"keyplane_api_key","url":"https://github.com/o/r/blob/abc/.env","source":"Content"},` +
		`{"token":"` + foreign + `","type":"keyplane_api_key","url":"https://github.com/o/r/blob/abc/b","source":"commit"},` +
		`{"token":"kp_live_nope","type":"keyplane_api_key","url":"","source":"content","new_github_field":1}]`

	r, results := a.postGitHub(body, gh.id, gh.sign(t, body))
	if r.Status != 200 {
		t.Fatalf("signed report: %d %s", r.Status, r.Raw)
	}
	if got := labels(results); got != "true_positive false_positive false_positive" {
		t.Fatalf("labels %q", got)
	}
	if results[0]["token_raw"] != secret || results[0]["token_type"] != "keyplane_api_key" {
		t.Fatalf("result %v does not echo the token and its type", results[0])
	}
	if v := a.do("POST", "/v1/verify", `{"key": "`+secret+`"}`); v.Body["code"] != "DISABLED" {
		t.Fatalf("verify right after the report: %v, want DISABLED", v.Body)
	}
	if k := a.do("GET", "/v1/keys/"+id, ""); k.Body["status_reason"] != "leaked" {
		t.Fatalf("key after the report: %v", k.Body)
	}
	entries := leakAudit(t, a, id)
	if len(entries) != 1 {
		t.Fatalf("%d leak audit entries, want 1", len(entries))
	}
	d := entries[0]["details"].(map[string]any)
	if entries[0]["actor"] != "leak:github" || d["url"] != "https://github.com/o/r/blob/abc/.env" || d["source"] != "content" {
		t.Fatalf("audit entry %v", entries[0])
	}
	if strings.Contains(a.logs.String(), secret) || strings.Contains(a.logs.String(), foreign) {
		t.Fatal("a reported token was logged")
	}

	// GitHub retries the same report: same answer, nothing changes twice.
	r, again := a.postGitHub(body, gh.id, gh.sign(t, body))
	if r.Status != 200 || labels(again) != labels(results) {
		t.Fatalf("replay: %d %s", r.Status, r.Raw)
	}
	if n := len(leakAudit(t, a, id)); n != 1 {
		t.Fatalf("after a replay %d leak audit entries, want 1", n)
	}
}

func TestGitHubReportWithoutAGoodSignatureChangesNothing(t *testing.T) {
	gh, forger := newScanningKey(t, "gh-key-1"), newScanningKey(t, "gh-key-1")
	keysFile := filepath.Join(t.TempDir(), "github-keys.json")
	publishScanningKeys(t, keysFile, gh)
	a := newAPIWith(t, func(c *config.Config) { c.GitHubScanningKeys = keysFile })
	id, secret := a.create(`{"owner": "acct_leak"}`)
	body := `[{"token":"` + secret + `","type":"keyplane_api_key","url":"https://github.com/o/r","source":"content"}]`
	for _, tc := range []struct {
		name, keyID, sig, body string
	}{
		{"forged: signed by an unpublished key", gh.id, forger.sign(t, body), body},
		{"signature of another body", gh.id, gh.sign(t, "[]"), body},
		{"unknown key identifier", "gh-key-unknown", gh.sign(t, body), body},
		{"no signature", gh.id, "", body},
		{"no key identifier", "", gh.sign(t, body), body},
		{"signature not base64", gh.id, "%%%", body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := a.postGitHub(tc.body, tc.keyID, tc.sig)
			if r.Status != 401 || errCode(r) != "UNAUTHENTICATED" {
				t.Fatalf("got %d %s, want 401 UNAUTHENTICATED as JSON", r.Status, r.Raw)
			}
		})
	}
	if k := a.do("GET", "/v1/keys/"+id, ""); k.Body["status"] != "active" {
		t.Fatalf("an unsigned report changed the key: %v", k.Body)
	}
	// A bearer token is no substitute for GitHub's signature.
	if r := a.do("POST", "/v1/leaks/github", body); r.Status != 401 {
		t.Fatalf("the admin token on the GitHub route: %d, want 401", r.Status)
	}
	// (A key GitHub starts using is found on its first report, at most one
	// key-list fetch per minute: internal/leaks' keyring tests, on a fake
	// clock.)
}

func TestReportLeaksTakesTheSameReportFromOperators(t *testing.T) {
	a := newAPIWith(t, func(c *config.Config) { c.LeakPolicy = config.LeakRevoke })
	id, secret := a.create(`{"owner": "acct_leak"}`)
	body := `[{"token":"` + secret + `","type":"keyplane_api_key","url":"https://pastebin.example/x","source":"paste"},{"token":"junk"}]`
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/leaks", strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("without a token: %d, want 401", res.StatusCode)
	}
	if r := a.do("POST", "/v1/leaks", `[{"token":"x","secret_type":"y"}]`); r.Status != 400 || !strings.Contains(errMessage(r), "unknown field") {
		t.Fatalf("an unknown field: %d %s, want 400 naming it", r.Status, r.Raw)
	}
	if r := a.do("POST", "/v1/leaks", `[]`); r.Status != 400 {
		t.Fatalf("an empty report: %d %s, want 400", r.Status, r.Raw)
	}
	r := a.do("POST", "/v1/leaks", body)
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	var results []map[string]any
	json.Unmarshal([]byte(r.Raw), &results)
	if labels(results) != "true_positive false_positive" {
		t.Fatalf("labels %q", labels(results))
	}
	if v := a.do("POST", "/v1/verify", `{"key": "`+secret+`"}`); v.Body["code"] != "REVOKED" {
		t.Fatalf("verify after a report with the revoke policy: %v", v.Body)
	}
	if e := leakAudit(t, a, id); len(e) != 1 || e[0]["action"] != "key.revoke" || e[0]["actor"] != "leak:admin" {
		t.Fatalf("audit %v", e)
	}
}
