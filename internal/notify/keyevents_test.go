package notify_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/store"
)

// TestKeyEventsNotifyEachManualChangeOnce is the keys.Notifier adapter: a
// manual disable and enable become key.disabled and key.enabled with the
// change's time, reporting the same change twice sends it once, and the
// operator's free-text reason and identity stay out of the payload.
func TestKeyEventsNotifyEachManualChangeOnce(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	ke := notify.KeyEvents{Service: e.svc}
	changed := base.Add(-time.Minute)
	k := &store.Key{ID: "key_1", Owner: "acct_1", Status: store.Disabled, StatusReason: "customer 42 owes us money", UpdatedAt: changed}

	for range 2 {
		if err := ke.KeyDisabled(t.Context(), k, "ops@example.com"); err != nil {
			t.Fatalf("KeyDisabled: %v", err)
		}
	}
	m := e.topic.takeOne(t) // the second call is a duplicate: nothing more is queued
	d := e.delivery(t, m.Attributes["notification_id"])
	var body map[string]any
	if err := json.Unmarshal(d.Payload, &body); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
	want := map[string]any{
		"type": "key.disabled", "timestamp": changed.Format(time.RFC3339),
		"data": map[string]any{"key_id": "key_1", "owner": "acct_1", "status": "disabled", "reason": "manual"},
	}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("key.disabled payload (-want +got):\n%s", diff)
	}
	if p := string(d.Payload); strings.Contains(p, "owes") || strings.Contains(p, "ops@") {
		t.Errorf("the payload carries the operator's reason or identity: %s", p)
	}

	k.Status, k.StatusReason, k.UpdatedAt = store.Active, "", changed.Add(time.Second)
	if err := ke.KeyEnabled(t.Context(), k, "ops@example.com"); err != nil {
		t.Fatalf("KeyEnabled: %v", err)
	}
	d = e.delivery(t, e.topic.takeOne(t).Attributes["notification_id"])
	if d.Type != notify.KeyEnabled || !strings.Contains(string(d.Payload), `"status":"active","reason":"manual"`) {
		t.Errorf("key.enabled record: type %s, payload %s", d.Type, d.Payload)
	}
}

func TestKeyEventsForAnOwnerWithoutWebhookSendNothing(t *testing.T) {
	e := newEnv(t)
	k := &store.Key{ID: "key_1", Owner: "acct_2", Status: store.Disabled, UpdatedAt: base}
	if err := (notify.KeyEvents{Service: e.svc}).KeyDisabled(t.Context(), k, "ops"); err != nil {
		t.Fatalf("KeyDisabled: %v", err)
	}
	if msgs := e.topic.take(); len(msgs) != 0 {
		t.Errorf("published %d messages for an owner without a webhook, want 0", len(msgs))
	}
}

// TestKeyLeakedTellsWhereTheKeyWasFoundOnce: key.leaked carries the
// report's evidence (so the owner can remove the copy), and one change
// reported twice is one notification.
func TestKeyLeakedTellsWhereTheKeyWasFoundOnce(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	ke := notify.KeyEvents{Service: e.svc}
	changed := base.Add(-time.Minute)
	k := &store.Key{ID: "key_1", Owner: "acct_1", Status: store.Disabled, StatusReason: "leaked", UpdatedAt: changed}
	ev := map[string]any{"reporter": "github", "url": "https://github.com/o/r/blob/1/.env", "source": "content"}
	for range 2 {
		if err := ke.KeyLeaked(t.Context(), k, ev); err != nil {
			t.Fatalf("KeyLeaked: %v", err)
		}
	}
	d := e.delivery(t, e.topic.takeOne(t).Attributes["notification_id"])
	var body map[string]any
	if err := json.Unmarshal(d.Payload, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"type": "key.leaked", "timestamp": changed.Format(time.RFC3339),
		"data": map[string]any{"key_id": "key_1", "owner": "acct_1", "status": "disabled", "reason": "leaked",
			"evidence": map[string]any{"reporter": "github", "url": "https://github.com/o/r/blob/1/.env", "source": "content"}},
	}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("key.leaked payload (-want +got):\n%s", diff)
	}
}
