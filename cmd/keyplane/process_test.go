package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMain lets the tests run keyplane as a real process: the test binary
// started with KEYPLANE_TEST_RUN_MAIN=1 is keyplane's main.
func TestMain(m *testing.M) {
	if os.Getenv("KEYPLANE_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// keyplane returns a command that runs keyplane with args as a process of
// its own, with env added to a minimal environment.
func keyplane(t *testing.T, ctx context.Context, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append([]string{"KEYPLANE_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH")}, env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	return cmd
}

// result is what a finished keyplane process left.
type result struct {
	code           int
	stdout, stderr string
}

func runKeyplane(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := keyplane(t, ctx, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("keyplane %v: %v", args, err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// startServe starts `keyplane serve` on dir as a process of its own and
// returns what it printed up to its "try:" hint; it is stopped (by
// SIGINT, as Ctrl-C would) at the end of the test.
func startServe(t *testing.T, dir string, env ...string) string {
	t.Helper()
	cmd := keyplane(t, context.Background(), env, "serve", "--addr", "127.0.0.1:0", "--data", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("serve exited with %v after SIGINT; stderr:\n%s", err, stderr.String())
		}
	})
	sc := bufio.NewScanner(stdout)
	var out strings.Builder
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "curl ") {
			go io.Copy(io.Discard, stdout)
			return out.String()
		}
	}
	t.Fatalf("serve ended before printing its hint; stdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
	return ""
}

// checkOneLineError checks that r is a failed start-up: exit code code, and
// one line on stderr containing every one of want, without a panic.
func checkOneLineError(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d", r.code, code)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
		t.Errorf("stderr:\n%s\nwant one line, and no panic", r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q does not say %q", r.stderr, w)
		}
	}
}

// TestSecondServeOnTheSameDataDirSaysSo: a second serve on a data
// directory in use fails with one line naming the directory and what to do.
func TestSecondServeOnTheSameDataDirSaysSo(t *testing.T) {
	dir := t.TempDir()
	startServe(t, dir)
	r := runKeyplane(t, nil, "serve", "--addr", "127.0.0.1:0", "--data", dir)
	checkOneLineError(t, r, 1, dir, "in use by another keyplane process", "stop it, or pass another --data")
}

// TestAdminTokenReadsWhileServeRuns: admin-token prints the token that a
// running serve generated and accepts.
func TestAdminTokenReadsWhileServeRuns(t *testing.T) {
	dir := t.TempDir()
	out := startServe(t, dir)
	generated := regexp.MustCompile(`KEYPLANE_ADMIN_TOKEN=(kpadm_\w+)`).FindStringSubmatch(out)
	if generated == nil {
		t.Fatalf("serve printed:\n%s\nwant a generated admin token", out)
	}
	r := runKeyplane(t, nil, "admin-token", "--data", dir)
	if r.code != 0 || strings.TrimSpace(r.stdout) != generated[1] {
		t.Errorf("admin-token while serve runs: exit %d, stdout %q, stderr %q; want 0 and %s", r.code, r.stdout, r.stderr, generated[1])
	}
}

// TestAdminTokenCreatesNothing: with nothing to read (a mistyped data
// directory, or one serve never started on) admin-token says so, fails,
// and leaves the file system as it was.
func TestAdminTokenCreatesNothing(t *testing.T) {
	parent := t.TempDir()
	typo := filepath.Join(parent, "no-such-dir")
	r := runKeyplane(t, nil, "admin-token", "--data", typo)
	checkOneLineError(t, r, 1, typo, "nothing to read", "does not exist")
	if _, err := os.Stat(typo); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after admin-token --data %s: stat = %v, want it still not to exist", typo, err)
	}

	empty := t.TempDir()
	r = runKeyplane(t, nil, "admin-token", "--data", empty)
	checkOneLineError(t, r, 1, filepath.Join(empty, "vault.key"), "nothing to read")
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("admin-token created %v in an empty data directory, want nothing", entries)
	}

	// A vault without the token (serve was given KEYPLANE_ADMIN_TOKEN).
	r = runKeyplane(t, []string{"KEYPLANE_VAULT_KEY=" + strings.Repeat("ab", 32)}, "admin-token", "--data", empty)
	checkOneLineError(t, r, 1, "vault.json.enc", "nothing to read")
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("admin-token created %v in an empty data directory, want nothing", entries)
	}
}

// TestTheServeHintWorksInAShell pastes serve's printed "try:" line into
// bash, with the token generated and with it configured in the
// environment (where the hint names $KEYPLANE_ADMIN_TOKEN): it must create
// a key.
func TestTheServeHintWorksInAShell(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	const configured = "kpadm_configuredInTheEnvironment0123456789"
	for _, env := range [][]string{nil, {"KEYPLANE_ADMIN_TOKEN=" + configured}} {
		out := startServe(t, t.TempDir(), env...)
		hint := out[strings.LastIndex(out, "curl "):]
		if env != nil && !strings.Contains(hint, "$KEYPLANE_ADMIN_TOKEN") {
			t.Errorf("hint %q does not name $KEYPLANE_ADMIN_TOKEN when the token is configured", hint)
		}
		sh := exec.Command("bash", "-c", strings.Replace(hint, "curl -s ", "curl -s -w ' %{http_code}' ", 1))
		sh.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		got, err := sh.CombinedOutput()
		if err != nil || !strings.HasSuffix(string(got), " 201") || !strings.Contains(string(got), `"secret":"kp_live_`) {
			t.Errorf("bash -c %q (env %v): %s, %v; want a created key and 201", hint, env, got, err)
		}
	}
}

// TestHelpAndUsageErrors: help goes to stdout with exit 0; an unknown
// command or a stray argument is exit 2 with the usage on stderr.
func TestHelpAndUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "serve"}, {"serve", "--help"}, {"admin-token", "-h"}, {"report-usage", "--help"}, {"receive-webhooks", "--help"}} {
		r := runKeyplane(t, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "usage:") || r.stderr != "" {
			t.Errorf("keyplane %v: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout only", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"serve", "extra"}, {"admin-token", "--data", "x", "y"}, {"serve", "--no-such-flag"}, {"help", "serve", "extra"}, {"report-usage"}} {
		r := runKeyplane(t, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "usage:") || r.stdout != "" {
			t.Errorf("keyplane %v: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr only", args, r.code, r.stdout, r.stderr)
		}
	}
}
