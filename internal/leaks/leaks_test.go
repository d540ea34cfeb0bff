package leaks_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/leaks"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

// leakTold is a keys.Notifier and LeakNotifier that keeps what it was told.
type leakTold struct {
	mu     sync.Mutex
	events []string // "<type> <key id> <status> <url> <source>"
}

func (n *leakTold) add(s string) { n.mu.Lock(); n.events = append(n.events, s); n.mu.Unlock() }
func (n *leakTold) KeyDisabled(_ context.Context, k *store.Key, _ string) error {
	n.add("key.disabled " + k.ID)
	return nil
}
func (n *leakTold) KeyEnabled(_ context.Context, k *store.Key, _ string) error {
	n.add("key.enabled " + k.ID)
	return nil
}
func (n *leakTold) KeySwept(_ context.Context, k *store.Key, _ map[string]any) error {
	n.add("swept " + k.ID)
	return nil
}
func (n *leakTold) KeyLeaked(_ context.Context, k *store.Key, ev map[string]any) error {
	n.add(fmt.Sprintf("key.leaked %s %s %v %v %v", k.ID, k.Status, ev["reporter"], ev["url"], ev["source"]))
	return nil
}
func (n *leakTold) got() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.events...)
}

type leakEnv struct {
	store store.Store
	keys  *keys.Service
	svc   *leaks.Service
	told  *leakTold
	clock *clock.Fake
}

func newLeakEnv(t *testing.T, st store.Store, action keys.LeakAction) *leakEnv {
	t.Helper()
	return newLeakEnvTB(t, st, action)
}

func newLeakEnvTB(t testing.TB, st store.Store, action keys.LeakAction) *leakEnv {
	t.Helper()
	dir := t.TempDir()
	if st == nil {
		s, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
		if err != nil {
			t.Fatal(err)
		}
		st = s
	}
	t.Cleanup(func() { st.Close() })
	v, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("pepper"), 6))
	log := slog.New(slog.DiscardHandler)
	e := &leakEnv{store: st, told: &leakTold{}, clock: clock.NewFake(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))}
	e.keys = &keys.Service{Store: st, Vault: v, Hasher: h, Plans: plan.Builtin(), Prefix: "kp_test", Clock: e.clock, Logger: log, Notifier: e.told}
	e.svc = &leaks.Service{Lookup: st, Keys: e.keys, Hasher: h, Action: action, Logger: log, Workers: 4}
	return e
}

func (e *leakEnv) create(t *testing.T, owner string) (id, secret string) {
	t.Helper()
	c, err := e.keys.Create(context.Background(), "admin", keys.CreateRequest{Owner: owner}, "")
	if err != nil {
		t.Fatal(err)
	}
	return c.Key.ID, c.Secret
}

func (e *leakEnv) audit(t *testing.T, id string) []store.AuditEntry {
	t.Helper()
	es, _, err := e.store.ListAudit(context.Background(), store.AuditQuery{KeyID: id, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func (e *leakEnv) key(t *testing.T, id string) *store.Key {
	t.Helper()
	k, err := e.store.GetKey(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMixedReportStopsOurKeysOnceAndLabelsEveryEntry(t *testing.T) {
	runMixedReport(t, newLeakEnv(t, nil, keys.LeakDisable))
}

func TestMixedReportStopsOurKeysOnceAndLabelsEveryEntryFirestore(t *testing.T) {
	testenv.Firestore(t)
	runMixedReport(t, newLeakEnv(t, firestorestore.NewFromClient(testenv.FirestoreClient(t)), keys.LeakDisable))
}

func runMixedReport(t *testing.T, e *leakEnv) {
	ctx := context.Background()
	active, activeSecret := e.create(t, "acct_1")
	manual, manualSecret := e.create(t, "acct_2")
	revoked, revokedSecret := e.create(t, "acct_3")
	if _, err := e.keys.Disable(ctx, "ops", manual, "investigating"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Revoke(ctx, "ops", revoked, "done"); err != nil {
		t.Fatal(err)
	}
	foreign, _ := apikey.Generate("kp_test") // well formed, not ours
	badSum := activeSecret[:len(activeSecret)-1] + "x"
	if badSum == activeSecret {
		badSum = activeSecret[:len(activeSecret)-1] + "y"
	}
	entries := []leaks.Entry{
		{Token: activeSecret, Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/1/a.env", Source: "content"},
		{Token: foreign, Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/1/b.env", Source: "content"},
		{Token: "kp_test_short", Type: "keyplane_api_key"},
		{Token: badSum, Type: "keyplane_api_key"},
		{Token: manualSecret, Type: "keyplane_api_key", URL: "https://github.com/o/r/issues/1", Source: "issue_comment"},
		{Token: revokedSecret, Type: "keyplane_api_key", Source: "commit"},
		{Token: activeSecret, Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/2/a.env", Source: "commit"}, // the same token again
	}
	e.told.events = nil
	before := len(e.audit(t, ""))
	e.clock.Advance(time.Second) // the leak's audit entries sort after the setup's
	got, err := e.svc.Handle(ctx, "github", entries)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{leaks.TruePositive, leaks.FalsePositive, leaks.FalsePositive, leaks.FalsePositive, leaks.TruePositive, leaks.TruePositive, leaks.TruePositive}
	if len(got) != len(entries) {
		t.Fatalf("%d results for %d entries", len(got), len(entries))
	}
	for i, r := range got {
		if r.Label != want[i] || r.TokenRaw != entries[i].Token || r.TokenType != entries[i].Type {
			t.Errorf("result %d: got %+v, want label %s for its own token and type", i, r, want[i])
		}
	}
	for _, id := range []string{active, manual} {
		if k := e.key(t, id); k.Status != store.Disabled || k.StatusReason != keys.ReasonLeaked {
			t.Errorf("key %s: %s/%s, want disabled/leaked", id, k.Status, k.StatusReason)
		}
	}
	if k := e.key(t, revoked); k.Status != store.Revoked || k.StatusReason != "done" {
		t.Errorf("a revoked key was changed: %s/%s", k.Status, k.StatusReason)
	}
	a := e.audit(t, active)[0]
	if a.Action != keys.ActionDisable || a.Actor != "leak:github" || a.Details["reason"] != "leaked" ||
		a.Details["url"] != "https://github.com/o/r/blob/1/a.env" || a.Details["source"] != "content" {
		t.Errorf("audit entry of the leak: %+v", a)
	}
	if m := e.audit(t, manual)[0]; m.Details["previous_reason"] != "investigating" || m.Details["source"] != "issue_comment" {
		t.Errorf("audit entry of the leak of a disabled key: %+v", m)
	}
	if n := len(e.audit(t, "")) - before; n != 2 {
		t.Errorf("%d audit entries written, want 2 (one per key changed)", n)
	}
	told := e.told.got()
	wantTold := []string{
		"key.leaked " + active + " disabled github https://github.com/o/r/blob/1/a.env content",
		"key.leaked " + manual + " disabled github https://github.com/o/r/issues/1 issue_comment",
	}
	if strings.Join(sorted(told), "\n") != strings.Join(sorted(wantTold), "\n") {
		t.Errorf("owners told %q, want %q", told, wantTold)
	}
	stamp := e.key(t, active).UpdatedAt

	// GitHub sends the report again: nothing changes, nobody is told.
	e.clock.Advance(time.Minute)
	again, err := e.svc.Handle(ctx, "github", entries)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again) != fmt.Sprint(got) {
		t.Errorf("a replay answered %v, want %v", again, got)
	}
	if n := len(e.audit(t, "")) - before; n != 2 {
		t.Errorf("after a replay %d audit entries, want still 2", n)
	}
	if len(e.told.got()) != len(told) {
		t.Errorf("a replay told owners %q", e.told.got()[len(told):])
	}
	if k := e.key(t, active); !k.UpdatedAt.Equal(stamp) {
		t.Errorf("a replay rewrote the key: updated_at %v, was %v", k.UpdatedAt, stamp)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestRevokePolicyRevokesAndDestroysTheSecret(t *testing.T) {
	e := newLeakEnv(t, nil, keys.LeakRevoke)
	ctx := context.Background()
	id, secret := e.create(t, "acct_1")
	e.clock.Advance(time.Second)
	got, err := e.svc.Handle(ctx, "scanner", []leaks.Entry{{Token: secret, Source: "content"}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Label != leaks.TruePositive {
		t.Fatalf("got %+v", got)
	}
	k := e.key(t, id)
	if k.Status != store.Revoked || k.StatusReason != keys.ReasonLeaked {
		t.Fatalf("key %s/%s, want revoked/leaked", k.Status, k.StatusReason)
	}
	if _, err := e.keys.Reveal(ctx, "admin", id); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("reveal after a leak revoke: %v, want FailedPrecondition (secret destroyed)", err)
	}
	if a := e.audit(t, id)[0]; a.Action != keys.ActionRevoke || a.Actor != "leak:scanner" {
		t.Fatalf("audit %+v", a)
	}
	if _, err := e.svc.Handle(ctx, "scanner", []leaks.Entry{{Token: secret}}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.told.got()); n != 1 {
		t.Fatalf("owner told %d times for one leak reported twice", n)
	}
}

func TestLeakedReasonIsReservedForReportsOnDisable(t *testing.T) {
	e := newLeakEnv(t, nil, keys.LeakDisable)
	id, _ := e.create(t, "acct_1")
	if _, err := e.keys.Disable(context.Background(), "ops", id, keys.ReasonLeaked); !errs.Is(err, errs.Invalid) {
		t.Fatalf("a manual disable with reason leaked: %v, want Invalid", err)
	}
	if _, err := e.keys.Revoke(context.Background(), "ops", id, keys.ReasonLeaked); err != nil {
		t.Fatalf("a manual revoke with reason leaked: %v, want it allowed (revocation is final)", err)
	}
}

// TestLargeReportHandlesEveryEntry sends a full report of our keys and
// others', to check the concurrent lookups answer every entry in order.
func TestLargeReportHandlesEveryEntry(t *testing.T) {
	e := newLeakEnv(t, nil, keys.LeakDisable)
	ctx := context.Background()
	var entries []leaks.Entry
	ours := map[int]string{}
	for i := range 50 {
		id, secret := e.create(t, fmt.Sprintf("acct_%d", i))
		ours[len(entries)] = id
		entries = append(entries, leaks.Entry{Token: secret, Type: "keyplane_api_key"})
		for range 19 {
			other, _ := apikey.Generate("kp_test")
			entries = append(entries, leaks.Entry{Token: other, Type: "keyplane_api_key"})
		}
	}
	got, err := e.svc.Handle(ctx, "github", entries)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		_, mine := ours[i]
		if (r.Label == leaks.TruePositive) != mine || r.TokenRaw != entries[i].Token {
			t.Fatalf("result %d: %+v, ours %v", i, r, mine)
		}
	}
	for _, id := range ours {
		if k := e.key(t, id); k.Status != store.Disabled {
			t.Fatalf("key %s is %s", id, k.Status)
		}
	}
}
