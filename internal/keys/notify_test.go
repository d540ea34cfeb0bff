package keys_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store"
)

// told is a keys.Notifier that keeps what it was told, or fails.
type told struct {
	mu       sync.Mutex
	events   []string         // "<type> <key id> <status> <updated_at>"; KeySwept's type is "swept"
	evidence []map[string]any // what each KeySwept call carried, in order
	fail     error
}

func (n *told) record(typ string, k *store.Key) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail != nil {
		return n.fail
	}
	n.events = append(n.events, typ+" "+k.ID+" "+string(k.Status)+" "+k.UpdatedAt.Format(time.RFC3339))
	return nil
}

func (n *told) KeyDisabled(_ context.Context, k *store.Key, _ string) error {
	return n.record("key.disabled", k)
}

func (n *told) KeyEnabled(_ context.Context, k *store.Key, _ string) error {
	return n.record("key.enabled", k)
}

func (n *told) KeySwept(_ context.Context, k *store.Key, evidence map[string]any) error {
	if err := n.record("swept", k); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.evidence = append(n.evidence, evidence)
	return nil
}

func (n *told) got() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.events...)
}

func TestOwnerToldOnlyOfChangesTheySee(t *testing.T) {
	e := newEnv(t, nil)
	n := &told{}
	e.svc.Notifier = n
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", req, "")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Key.ID
	at := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339) }
	var want []string
	for i, step := range []struct {
		name string
		do   func() error
		tell string // what the owner is told, "" for nothing
	}{
		{"disable an active key", func() error { _, err := e.svc.Disable(ctx, "ops", id, "investigating"); return err }, "key.disabled %s disabled %s"},
		{"disable again, same reason", func() error { _, err := e.svc.Disable(ctx, "ops", id, "investigating"); return err }, ""},
		{"disable again, another reason", func() error { _, err := e.svc.Disable(ctx, "ops", id, "still investigating"); return err }, ""},
		{"enable", func() error { _, err := e.svc.Enable(ctx, "ops", id); return err }, "key.enabled %s active %s"},
		{"enable an active key", func() error { _, err := e.svc.Enable(ctx, "ops", id); return err }, ""},
		{"suspended by the sweep until the window ends", func() error {
			k, err := e.svc.Get(ctx, id)
			if err != nil {
				return err
			}
			until := e.clock.Now().Add(time.Hour)
			_, _, err = e.svc.Suspend(ctx, "sweep", k, keys.Suspension{Reason: keys.ReasonQuotaExceeded, Until: &until})
			return err
		}, "swept %s disabled %s"},
		{"a suspension becomes a manual disable", func() error { _, err := e.svc.Disable(ctx, "ops", id, "manual"); return err }, "key.disabled %s disabled %s"},
		{"revoke", func() error { _, err := e.svc.Revoke(ctx, "ops", id, "leaked"); return err }, ""},
	} {
		e.clock.Advance(time.Second)
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if step.tell != "" {
			want = append(want, fmt.Sprintf(step.tell, id, at(i+1)))
		}
	}
	if _, err := e.svc.Disable(ctx, "ops", id, "x"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("disable of a revoked key = %v, want FailedPrecondition", err)
	}
	if _, err := e.svc.Enable(ctx, "ops", id); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("enable of a revoked key = %v, want FailedPrecondition", err)
	}
	if diff := cmp.Diff(want, n.got()); diff != "" {
		t.Errorf("what the owner was told (-want +got):\n%s", diff)
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

func TestNotifierFailureIsLoggedNotReturned(t *testing.T) {
	e := newEnv(t, nil)
	logs := &syncBuffer{}
	e.svc.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	e.svc.Notifier = &told{fail: errs.E(errs.Unavailable, "notification store down")}
	ctx := context.Background()
	c, err := e.svc.Create(ctx, "admin", req, "")
	if err != nil {
		t.Fatal(err)
	}
	k, err := e.svc.Disable(ctx, "ops", c.Key.ID, "")
	if err != nil || k.Status != store.Disabled {
		t.Fatalf("Disable with a failing Notifier = %v, %v; want the disabled key and no error (the change stands)", k, err)
	}
	if got, err := e.svc.Get(ctx, c.Key.ID); err != nil || got.Status != store.Disabled {
		t.Fatalf("the key after Disable = %v, %v; want it disabled", got, err)
	}
	var entry struct {
		Level, Msg, KeyID, Event string
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || !strings.Contains(m["msg"].(string), "notification was not queued") {
			continue
		}
		entry.Level, entry.Msg = m["level"].(string), m["msg"].(string)
		entry.KeyID, _ = m["key_id"].(string)
		entry.Event, _ = m["event"].(string)
	}
	if entry.Level != "ERROR" || entry.KeyID != c.Key.ID || entry.Event != "key.disabled" {
		t.Errorf("log entry for the lost notification = %+v; want an ERROR naming the key and key.disabled\nlogs:\n%s", entry, logs)
	}
}
