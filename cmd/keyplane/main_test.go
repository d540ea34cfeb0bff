package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/webhook"
)

// TestServePrintsTokenServesAndShutsDown runs `keyplane serve` as a newcomer
// would (no token configured): it must print where it listens and a
// generated admin token that works, and return cleanly when signalled.
func TestServePrintsTokenServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data", dir}, func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var out strings.Builder
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "curl") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	base := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(out.String())
	tok := regexp.MustCompile(`(kpadm_\w+)`).FindStringSubmatch(out.String())
	if base == nil || tok == nil {
		t.Fatalf("serve printed:\n%s\nwant the address and a generated admin token", out.String())
	}
	req, _ := http.NewRequest("POST", base[1]+"/v1/keys", strings.NewReader(`{"owner": "acct_123"}`))
	req.Header.Set("Authorization", "Bearer "+tok[1])
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("the printed curl's request = %d, want 201", res.StatusCode)
	}
	console := regexp.MustCompile(`operator console: (http://\S+)`).FindStringSubmatch(out.String())
	if console == nil || console[1] != base[1]+"/console" {
		t.Fatalf("serve printed:\n%s\nwant the console's URL", out.String())
	}
	if res, err := http.Get(console[1]); err != nil || res.StatusCode != 200 || res.Request.URL.Path != "/console/signin" {
		t.Fatalf("the printed console URL: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after the signal, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not shut down")
	}
}

// TestShutdownKeepsTheLastClientIPFlush: serve stopped right after a
// verify that recorded a client IP has written that IP to the ledger, and
// the key's last use to the store, by the time it returns. The recorder flushes every 10 s; only its last
// flush, made when serve shuts down and waited for before the ledger
// closes, can have written it.
func TestShutdownKeepsTheLastClientIPFlush(t *testing.T) {
	dir := t.TempDir()
	plans := filepath.Join(dir, "plans.json")
	if err := os.WriteFile(plans, []byte(`{"plans": {"watched": {"scopes": ["generate"], "limits": {}, "abuse": {"distinct_ips": {"max_per_day": 5}}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "shutdown-test-admin-token"
	env := map[string]string{"KEYPLANE_PLANS": plans, "KEYPLANE_ADMIN_TOKEN": token}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data", dir}, func(k string) string { return env[k] }, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var base string
	for base == "" && sc.Scan() {
		if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		t.Fatalf("serve did not print where it listens: %v", <-done)
	}
	post := func(path, body string, want int, out any) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != want {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("POST %s = %d %s, want %d", path, res.StatusCode, b, want)
		}
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
	}
	var key struct{ ID, Secret string }
	post("/v1/keys", `{"owner": "acct_1", "plan": "watched"}`, 201, &key)
	var decision struct{ Code string }
	verifiedAt := time.Now()
	post("/v1/verify", `{"key": "`+key.Secret+`", "ip": "203.0.113.7"}`, 200, &decision)
	if decision.Code != "VALID" {
		t.Fatalf("verify = %s, want VALID", decision.Code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after the signal, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
	l, err := sqliteledger.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n, ips, err := l.ClientIPs(context.Background(), key.ID, time.Now().UTC().Truncate(24*time.Hour), 10)
	if err != nil || n != 1 {
		t.Errorf("client IPs of the key in the ledger after shutdown: got %d %v, %v; want 1 (203.0.113.7)", n, ips, err)
	}
	st, err := sqlitestore.Open(filepath.Join(dir, "keyplane.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, err := st.GetKey(context.Background(), key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt == nil || k.LastUsedAt.Before(verifiedAt.Truncate(time.Microsecond)) {
		t.Errorf("last use of the key in the store after shutdown: got %v, want at or after %v", k.LastUsedAt, verifiedAt)
	}
}

func TestUnknownCommand(t *testing.T) {
	err := run(context.Background(), []string{"frobnicate"}, func(string) string { return "" }, io.Discard, io.Discard)
	var stderr strings.Builder
	if code := exit(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage") {
		t.Errorf("got exit code %d, stderr %q; want 2 and the usage", code, stderr.String())
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestServeWarnsWhenPrivateWebhooksAreAllowed: the SSRF guard's escape
// hatch must not go unnoticed in a server's log.
func TestServeWarnsWhenPrivateWebhooksAreAllowed(t *testing.T) {
	for _, allow := range []string{"1", ""} {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		stderr := &syncBuffer{}
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		getenv := func(k string) string {
			if k == "KEYPLANE_WEBHOOK_ALLOW_PRIVATE" {
				return allow
			}
			return ""
		}
		go func() {
			done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data", dir}, getenv, pw, stderr)
			pw.Close()
		}()
		sc := bufio.NewScanner(pr)
		for sc.Scan() && !strings.Contains(sc.Text(), "listening on") {
		}
		go io.Copy(io.Discard, pr)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("serve: %v", err)
		}
		warned := strings.Contains(stderr.String(), `"severity":"WARNING"`) && strings.Contains(stderr.String(), "KEYPLANE_WEBHOOK_ALLOW_PRIVATE")
		if warned != (allow == "1") {
			t.Errorf("KEYPLANE_WEBHOOK_ALLOW_PRIVATE=%q: warned %v; log:\n%s", allow, warned, stderr)
		}
	}
}

// The walkthrough's receiver: it checks signatures with the secret file
// written after it started, fails the first deliveries when told to, and
// prints what it verified.
func TestReceiveWebhooksChecksSignatures(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "owner.whsec")
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncWriter{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"receive-webhooks", "--addr", "127.0.0.1:0", "--secret-file", secretFile, "--fail", "1"}, func(string) string { return "" }, out, io.Discard)
	}()
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := regexp.MustCompile(`on (http://\S+)/`).FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
	}
	if base == "" {
		t.Fatalf("receive-webhooks printed %q", out.String())
	}
	secret := webhook.NewSecret()
	post := func(s string) int {
		body := []byte(`{"type": "key.disabled"}`)
		req, _ := http.NewRequest("POST", base+"/", bytes.NewReader(body))
		sec, _ := webhook.ParseSecret(s)
		sec.SetHeaders(req.Header, "ntf_1", time.Now(), body)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := post(secret); got != 503 {
		t.Errorf("before the secret file exists: %d, want 503", got)
	}
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	if got := post(webhook.NewSecret()); got != 401 {
		t.Errorf("signed with another secret: %d, want 401", got)
	}
	if got := post(secret); got != 503 {
		t.Errorf("first good delivery with --fail 1: %d, want 503", got)
	}
	if got := post(secret); got != 204 {
		t.Errorf("second good delivery: %d, want 204", got)
	}
	if !strings.Contains(out.String(), `verified ntf_1 {"type": "key.disabled"}`) {
		t.Errorf("output = %q", out.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("receive-webhooks returned %v", err)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
