package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/pkg/client"
)

// TestTwoServesShareOneKeysPerMinuteLimit: two `keyplane serve` processes
// (two instances) with one shared Redis admit exactly a key's
// requests_per_minute N of N+k concurrent verifies spread over both; each
// counting alone would admit up to N.
//
// The two share their keys the way production instances do: one
// datastore (the Firestore emulator; two serves cannot share a SQLite
// data directory, which one serve locks) and one lookup-hash pepper
// (seeded into each one's file vault, which lives in its data
// directory).
func TestTwoServesShareOneKeysPerMinuteLimit(t *testing.T) {
	testenv.Firestore(t)
	redis := testenv.Redis(t)
	const n, k = 5, 15
	vaultKey := bytes.Repeat([]byte{7}, 32)
	pepper := bytes.Repeat([]byte("p"), 48)
	plans := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(plans, []byte(`{"plans": {"metered": {"scopes": ["generate"], "limits": {"requests_per_minute": 5}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := serveEnv(t)
	env.vars = append(env.vars, "KEYPLANE_STORE=firestore", "GOOGLE_CLOUD_PROJECT="+testenv.ProjectID(),
		"KEYPLANE_VAULT_KEY="+hex.EncodeToString(vaultKey), "KEYPLANE_PLANS="+plans,
		"KEYPLANE_REDIS_ADDR="+redis.Addr, "KEYPLANE_REDIS_TIMEOUT=1s", "KEYPLANE_SWEEP_INTERVAL=0")
	var bases []string
	for range 2 {
		dir := t.TempDir()
		v, err := filevault.Open(filepath.Join(dir, "vault.json.enc"), vaultKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.AddSecretVersion(context.Background(), secrets.Pepper, pepper); err != nil {
			t.Fatal(err)
		}
		v.Close()
		bases = append(bases, startServeProcess(t, dir, env).base)
	}
	// A burst that straddles a minute's end counts in two minutes; it is
	// run again on a fresh key (the answers' reset_at tell), at most twice.
	var codes map[string]int
	for range 3 {
		created, err := admin(t, bases[0]).CreateKey(t.Context(), client.CreateKeyRequest{Owner: "acct_shared", Plan: "metered"}, "")
		if err != nil {
			t.Fatalf("create a key: %v", err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes = map[string]int{}
		resets := map[string]bool{}
		body := `{"key": "` + created.Secret + `", "scope": "generate"}`
		for i := range n + k {
			base := bases[i%2]
			wg.Go(func() {
				code, reset := verifyOver(base, body)
				mu.Lock()
				codes[code]++
				resets[reset] = true
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(resets) == 1 {
			break
		}
	}
	if codes["VALID"] != n || codes["RATE_LIMITED"] != k {
		t.Errorf("%d verifies over two serves: %v, want exactly %d VALID and %d RATE_LIMITED", n+k, codes, n, k)
	}
}

// verifyOver posts a verify body to the serve at base and returns the
// decision's code and its requests_per_minute's reset_at, or the error or
// HTTP status of any other answer.
func verifyOver(base, body string) (code, resetAt string) {
	req, err := http.NewRequest("POST", base+"/v1/verify", strings.NewReader(body))
	if err != nil {
		return err.Error(), ""
	}
	req.Header.Set("Authorization", "Bearer "+shutdownAdminToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error(), ""
	}
	defer res.Body.Close()
	var d struct {
		Code   string `json:"code"`
		Limits struct {
			RPM struct {
				ResetAt string `json:"reset_at"`
			} `json:"requests_per_minute"`
		} `json:"limits"`
	}
	if err := json.NewDecoder(res.Body).Decode(&d); err != nil || res.StatusCode != http.StatusOK {
		return res.Status, ""
	}
	return d.Code, d.Limits.RPM.ResetAt
}
