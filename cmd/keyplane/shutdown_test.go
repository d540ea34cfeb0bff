package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/keyplane/keyplane/internal/webhook"
	"github.com/keyplane/keyplane/pkg/client"
)

// The tests in this file run `keyplane serve` as a real process (this
// test binary as keyplane's main, see TestMain), and stop it with a real signal while usage flows.

const (
	shutdownAdminToken = "shutdown-test-admin-token"
	eventsPerBatch     = 3
)

// TestSIGTERMLosesNoAcceptedUsage: serve stopped by SIGTERM while gateways
// post usage exits 0, and after a restart on the same data every event
// that was answered 202 is counted exactly once — none lost, none counted
// that was not accepted, and an accepted event sent again is not counted
// twice.
func TestSIGTERMLosesNoAcceptedUsage(t *testing.T) {
	dir := t.TempDir()
	env := serveEnv(t)
	p := startServeProcess(t, dir, env)
	keyID := createKey(t, p.base)
	at := time.Now().UTC().Truncate(time.Second)

	l := startLoad(t, p.base, env.secret, keyID, at)
	l.waitAccepted(t, 100)
	before := l.acceptedCount()
	code, took := p.stop(t, syscall.SIGTERM, 20*time.Second)
	l.stop()
	if code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0; log:\n%s", code, p.stderr)
	}
	if took > 15*time.Second {
		t.Errorf("serve took %v to exit after SIGTERM, want at most 15s", took)
	}
	accepted, unanswered := l.result(t)
	t.Logf("%d events accepted (%d of them after SIGTERM was sent), %d sent without an answer; serve exited %v after SIGTERM",
		len(accepted), len(accepted)-before, len(unanswered), took)

	p = startServeProcess(t, dir, env)
	waitQueueDrained(t, dir)
	if got := countedRequests(t, p.base, keyID, at); got != int64(len(accepted)) {
		t.Errorf("after the restart GET /v1/keys/{id}/usage counts %d requests, want %d (one per accepted event)", got, len(accepted))
	}
	checkCountedIDs(t, dir, keyID, accepted)

	// Accepted events sent again are accepted and not counted again.
	var again []string
	for id := range accepted {
		if len(again) == 2*eventsPerBatch {
			break
		}
		again = append(again, id)
	}
	for i := 0; i < len(again); i += eventsPerBatch {
		if status, body, err := postUsage(http.DefaultClient, p.base, env.secret, keyID, at, again[i:i+eventsPerBatch]); err != nil || status != http.StatusAccepted {
			t.Fatalf("resending accepted events: %d %s %v, want 202", status, body, err)
		}
	}
	waitQueueDrained(t, dir)
	if got := countedRequests(t, p.base, keyID, at); got != int64(len(accepted)) {
		t.Errorf("after resending %d accepted events: %d requests counted, want still %d", len(again), got, len(accepted))
	}
	checkCountedIDs(t, dir, keyID, accepted)
	if code, _ := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("the restarted serve exited %d after SIGTERM, want 0; log:\n%s", code, p.stderr)
	}
}

// TestSIGKILLKeepsAcceptedUsage: a 202 means the events are committed to
// the embedded queue, so serve killed outright while gateways post usage
// has every accepted event either counted or still in the queue, which
// delivers it again (docs/operations.md, "Stopping serve"). Events whose
// request got no answer may be in either place too, or nowhere.
func TestSIGKILLKeepsAcceptedUsage(t *testing.T) {
	dir := t.TempDir()
	env := serveEnv(t)
	p := startServeProcess(t, dir, env)
	keyID := createKey(t, p.base)
	at := time.Now().UTC().Truncate(time.Second)

	l := startLoad(t, p.base, env.secret, keyID, at)
	l.waitAccepted(t, 100)
	p.stop(t, syscall.SIGKILL, 20*time.Second)
	l.stop()
	accepted, unanswered := l.result(t)

	kept := countedIDs(t, dir, keyID)
	for id := range queuedEventIDs(t, dir) {
		kept[id] = true
	}
	var lost []string
	for id := range accepted {
		if !kept[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		t.Errorf("%d of %d accepted events are neither counted nor queued after SIGKILL: %v", len(lost), len(accepted), lost)
	}
	for id := range kept {
		if !accepted[id] && !unanswered[id] {
			t.Errorf("event %s is kept but was never sent", id)
		}
	}
	t.Logf("%d events accepted, %d sent without an answer, %d kept after SIGKILL", len(accepted), len(unanswered), len(kept))

	// The restarted serve counts what is queued and not leased; what the
	// killed process had leased comes back when the lease expires.
	p = startServeProcess(t, dir, env)
	if code, _ := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("serve restarted after SIGKILL exited %d after SIGTERM, want 0; log:\n%s", code, p.stderr)
	}
}

type environment struct {
	vars   []string
	secret webhook.Secret
}

// serveEnv is this process's environment without KEYPLANE_ settings, plus
// a fixed admin token and usage webhook secret that a restart keeps.
func serveEnv(t *testing.T) environment {
	t.Helper()
	s := webhook.NewSecret()
	secret, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYPLANE_") {
			vars = append(vars, kv)
		}
	}
	vars = append(vars, "KEYPLANE_ADMIN_TOKEN="+shutdownAdminToken, "KEYPLANE_WEBHOOK_SECRET="+s)
	return environment{vars: vars, secret: secret}
}

// serveProcess is a running `keyplane serve`.
type serveProcess struct {
	cmd    *exec.Cmd
	base   string
	stderr *syncBuffer
	exited chan struct{} // closed when the process has exited
}

// startServeProcess starts serve (this test binary as keyplane's main; see
// TestMain) on dir and a free port and waits until it
// listens. The process is killed when the test ends, if still running.
func startServeProcess(t *testing.T, dir string, env environment) *serveProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", dir)
	cmd.Env = append([]string{"KEYPLANE_TEST_RUN_MAIN=1"}, env.vars...)
	p := &serveProcess{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				listening <- m[1]
			}
		}
		cmd.Wait() // after the last read from stdout
		close(p.exited)
	}()
	select {
	case p.base = <-listening:
	case <-p.exited:
		t.Fatalf("serve exited before listening: %v; log:\n%s", cmd.ProcessState, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not listen within 30s; log:\n%s", p.stderr)
	}
	return p
}

// stop sends sig and waits up to limit for the process to exit, returning
// its exit code (-1 if a signal ended it) and how long it took.
func (p *serveProcess) stop(t *testing.T, sig os.Signal, limit time.Duration) (code int, took time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(limit):
		t.Fatalf("serve did not exit within %v of %v; log:\n%s", limit, sig, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// admin is a pkg/client client of serve at base with the admin token.
func admin(t *testing.T, base string) *client.Client {
	t.Helper()
	c, err := client.New(base, shutdownAdminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createKey provisions a key with the admin token and returns its id.
func createKey(t *testing.T, base string) string {
	t.Helper()
	k, err := admin(t, base).CreateKey(t.Context(), client.CreateKeyRequest{Owner: "acct_shutdown"}, "")
	if err != nil {
		t.Fatalf("create a key: %v", err)
	}
	return k.ID
}

// postUsage posts a signed batch of one-request events with the given ids,
// as a gateway does, and returns the status and body of the answer.
func postUsage(c *http.Client, base string, secret webhook.Secret, keyID string, at time.Time, ids []string) (int, []byte, error) {
	events := make([]map[string]any, len(ids))
	for i, id := range ids {
		events[i] = map[string]any{"id": id, "key_id": keyID, "time": at.Format(time.RFC3339), "requests": 1}
	}
	body, _ := json.Marshal(map[string]any{"events": events})
	req, err := http.NewRequest("POST", base+"/v1/usage", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	secret.SetHeaders(req.Header, "msg_"+ids[0], time.Now(), body)
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// load is gateways posting usage batches with unique event ids, each
// recording what it was answered, until the server goes away.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	accepted   map[string]bool // answered 202
	unanswered map[string]bool // the request failed without an answer
	unexpected []string        // answers other than 202
	more       chan struct{}   // signalled on every 202
}

func startLoad(t *testing.T, base string, secret webhook.Secret, keyID string, at time.Time) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, accepted: map[string]bool{}, unanswered: map[string]bool{}, more: make(chan struct{}, 1)}
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for w := range 4 {
		l.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				ids := make([]string, eventsPerBatch)
				for j := range ids {
					ids[j] = fmt.Sprintf("evt_w%d_%05d_%d", w, i, j)
				}
				status, body, err := postUsage(c, base, secret, keyID, at, ids)
				l.mu.Lock()
				switch {
				case err != nil:
					for _, id := range ids {
						l.unanswered[id] = true
					}
				case status == http.StatusAccepted && bytes.Contains(body, fmt.Appendf(nil, `"accepted":%d`, eventsPerBatch)):
					for _, id := range ids {
						l.accepted[id] = true
					}
				default:
					l.unexpected = append(l.unexpected, fmt.Sprintf("%d %s", status, body))
				}
				l.mu.Unlock()
				if err != nil || status != http.StatusAccepted {
					return // the server is going away
				}
				select {
				case l.more <- struct{}{}:
				default:
				}
			}
		})
	}
	return l
}

// waitAccepted waits until at least n events were accepted.
func (l *load) waitAccepted(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		got, unexpected := len(l.accepted), l.unexpected
		l.mu.Unlock()
		if got >= n {
			return
		}
		if len(unexpected) > 0 {
			t.Fatalf("usage posts answered %v before the signal", unexpected)
		}
		select {
		case <-l.more:
		case <-deadline:
			t.Fatalf("%d events accepted within 20s, want %d", got, n)
		}
	}
}

// acceptedCount returns how many events were accepted so far.
func (l *load) acceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// stop stops the gateways and waits for them.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// result reports what the stopped load was answered; an answer other than
// 202 fails the test (the server must not refuse usage while it stops).
func (l *load) result(t *testing.T) (accepted, unanswered map[string]bool) {
	t.Helper()
	if len(l.unexpected) > 0 {
		t.Errorf("usage posts answered %v, want only 202s (or no answer once the server stopped listening)", l.unexpected)
	}
	return l.accepted, l.unanswered
}

// openReadOnly opens the SQLite database file name of the data directory
// dir without writing to it, while serve may be running.
func openReadOnly(t *testing.T, dir, name string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, name)+"?_query_only=1&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// waitQueueDrained waits until the embedded queue holds no message: every
// message was handled and acknowledged, which the usage consumer does only
// after the ledger committed its events.
func waitQueueDrained(t *testing.T, dir string) {
	t.Helper()
	db := openReadOnly(t, dir, "queue.db")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM messages").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue still holds %d messages after 20s", n)
		}
		time.Sleep(20 * time.Millisecond) // polling, not an assertion
	}
}

// queuedEventIDs returns the ids of the usage events in the queue's
// messages.
func queuedEventIDs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	rows, err := openReadOnly(t, dir, "queue.db").Query("SELECT data FROM messages")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var data []byte
		var batch struct{ Events []struct{ ID string } }
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &batch); err != nil {
			t.Fatalf("a queued message is not a usage batch: %v", err)
		}
		for _, e := range batch.Events {
			ids[e.ID] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// countedIDs returns the ids of the key's events the ledger has counted.
func countedIDs(t *testing.T, dir, keyID string) map[string]bool {
	t.Helper()
	rows, err := openReadOnly(t, dir, "usage.db").Query("SELECT id FROM usage_events WHERE key_id = ?", keyID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// checkCountedIDs checks that the ledger counted exactly the accepted
// events of the key.
func checkCountedIDs(t *testing.T, dir, keyID string, accepted map[string]bool) {
	t.Helper()
	counted := countedIDs(t, dir, keyID)
	var lost, extra []string
	for id := range accepted {
		if !counted[id] {
			lost = append(lost, id)
		}
	}
	for id := range counted {
		if !accepted[id] {
			extra = append(extra, id)
		}
	}
	sort.Strings(lost)
	sort.Strings(extra)
	if len(lost) > 0 || len(extra) > 0 {
		t.Errorf("counted events: %d accepted ones missing %v, %d counted that were not accepted %v", len(lost), lost, len(extra), extra)
	}
}

// countedRequests reads the key's requests of the day of at through the
// API.
func countedRequests(t *testing.T, base, keyID string, at time.Time) int64 {
	t.Helper()
	u, err := admin(t, base).KeyUsage(t.Context(), keyID, "day", at)
	if err != nil {
		t.Fatalf("read the key's usage: %v", err)
	}
	return u.Requests
}
