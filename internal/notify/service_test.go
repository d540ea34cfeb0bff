package notify_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/webhook"
)

func TestSetWebhookStoresURLEventsAndSecret(t *testing.T) {
	e := newEnv(t)
	w, secret, err := e.svc.SetWebhook(t.Context(), "acct_1", "https://127.0.0.1/hook",
		[]string{notify.UsageThreshold, notify.KeyDisabled, notify.KeyDisabled})
	if err != nil {
		t.Fatalf("SetWebhook: %v", err)
	}
	if _, err := webhook.ParseSecret(secret); err != nil || !strings.HasPrefix(secret, "whsec_") {
		t.Errorf("secret %q: want a whsec_ secret (%v)", secret, err)
	}
	want := notify.OwnerWebhook{
		Owner: "acct_1", URL: "https://127.0.0.1/hook", Events: []string{notify.KeyDisabled, notify.UsageThreshold},
		SecretFingerprint: notify.Fingerprint(secret), UpdatedAt: base,
	}
	if diff := cmp.Diff(want, w); diff != "" {
		t.Errorf("SetWebhook's webhook (-want +got):\n%s", diff)
	}
	stored, err := e.store.Get(t.Context(), "acct_1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("the stored webhook (-want +got):\n%s", diff)
	}
	got, err := e.svc.Vault.Secret(t.Context(), notify.SecretName("acct_1"))
	if err != nil || string(got) != secret {
		t.Errorf("the vault's %s: got %q (%v), want the returned secret", notify.SecretName("acct_1"), got, err)
	}
}

func TestSetWebhookDefaultsToEveryEvent(t *testing.T) {
	e := newEnv(t)
	for _, events := range [][]string{nil, {}} {
		w, _, err := e.svc.SetWebhook(t.Context(), "acct_1", "https://127.0.0.1/hook", events)
		if err != nil {
			t.Fatalf("SetWebhook: %v", err)
		}
		if diff := cmp.Diff(notify.EventTypes, w.Events); diff != "" {
			t.Errorf("events for %v (-want +got):\n%s", events, diff)
		}
	}
}

func TestSetWebhookRotatesTheSecretOnEveryCall(t *testing.T) {
	e := newEnv(t)
	_, first, err := e.svc.SetWebhook(t.Context(), "acct_1", "https://127.0.0.1/a", nil)
	if err != nil {
		t.Fatalf("SetWebhook: %v", err)
	}
	w, second, err := e.svc.SetWebhook(t.Context(), "acct_1", "https://127.0.0.1/a", nil)
	if err != nil {
		t.Fatalf("SetWebhook: %v", err)
	}
	if first == second {
		t.Errorf("two SetWebhook calls returned the same secret")
	}
	if w.SecretFingerprint != notify.Fingerprint(second) {
		t.Errorf("the webhook names secret %s, want the new one %s", w.SecretFingerprint, notify.Fingerprint(second))
	}
}

func TestSetWebhookRejectsWithAMessageThatSaysWhatToFix(t *testing.T) {
	e := newEnv(t)
	e.svc.Guard = &notify.Guard{} // production rules
	for _, tc := range []struct {
		name, owner, url string
		events           []string
		field, wantMsg   string
	}{
		{"empty owner", "", "https://8.8.8.8/", nil, "owner", "owner must be 1-128 characters"},
		{"owner with a slash", "a/b", "https://8.8.8.8/", nil, "owner", "owner must be"},
		{"owner too long", strings.Repeat("a", 129), "https://8.8.8.8/", nil, "owner", "owner must be"},
		{"unknown event", "acct_1", "https://8.8.8.8/", []string{"key.created"}, "events", `"key.created" is not an event type`},
		{"http", "acct_1", "http://8.8.8.8/", nil, "url", "https://"},
		{"userinfo", "acct_1", "https://u:p@8.8.8.8/", nil, "url", "user name or password"},
		{"loopback", "acct_1", "https://127.0.0.1/", nil, "url", "loopback"},
		{"private", "acct_1", "https://10.0.0.7/", nil, "url", "private"},
		{"metadata server", "acct_1", "https://169.254.169.254/", nil, "url", "link-local"},
		{"IPv6 loopback", "acct_1", "https://[::1]/", nil, "url", "loopback"},
		{"IPv6 unique local", "acct_1", "https://[fd00::1]/", nil, "url", "unique local"},
		{"CGNAT", "acct_1", "https://100.64.0.9/", nil, "url", "carrier-grade NAT"},
		{"too long", "acct_1", "https://8.8.8.8/" + strings.Repeat("x", 2048), nil, "url", "at most 2048"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.svc.SetWebhook(t.Context(), tc.owner, tc.url, tc.events)
			ee, ok := errs.As(err)
			if !ok || ee.Kind != errs.Invalid || !strings.Contains(ee.Msg, tc.wantMsg) {
				t.Fatalf("SetWebhook: got %v, want Invalid saying %q", err, tc.wantMsg)
			}
			if len(ee.Details) != 1 || ee.Details[0].Field != tc.field {
				t.Errorf("details: got %+v, want one about %s", ee.Details, tc.field)
			}
		})
	}
	if _, err := e.store.Get(t.Context(), "acct_1"); !errs.Is(err, errs.NotFound) {
		t.Errorf("after rejected calls: Get = %v, want NotFound", err)
	}
	if _, err := e.svc.Vault.Secret(t.Context(), notify.SecretName("acct_1")); !errs.Is(err, errs.NotFound) {
		t.Errorf("after rejected calls: the vault has a secret (%v), want none", err)
	}
}

// A public IP literal passes validation; nothing dials it.
func TestSetWebhookAcceptsAPublicAddress(t *testing.T) {
	e := newEnv(t)
	e.svc.Guard = &notify.Guard{}
	if _, _, err := e.svc.SetWebhook(t.Context(), "acct_1", "https://8.8.8.8/keyplane", nil); err != nil {
		t.Errorf("SetWebhook with a public address: %v", err)
	}
}

func TestNotifyWithoutWebhookEnqueuesNothing(t *testing.T) {
	e := newEnv(t)
	id, outcome, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil || outcome != notify.NoWebhook {
		t.Fatalf("Notify: got %q, %v; want %q", outcome, err, notify.NoWebhook)
	}
	if msgs := e.topic.take(); len(msgs) != 0 {
		t.Errorf("published %d messages, want none", len(msgs))
	}
	if _, err := e.store.GetDelivery(t.Context(), id); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetDelivery: got %v, want NotFound (no record)", err)
	}
}

func TestNotifyNotSubscribedEnqueuesNothing(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r, notify.UsageThreshold)
	id, outcome, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil || outcome != notify.NotSubscribed {
		t.Fatalf("Notify: got %q, %v; want %q", outcome, err, notify.NotSubscribed)
	}
	if msgs := e.topic.take(); len(msgs) != 0 {
		t.Errorf("published %d messages, want none", len(msgs))
	}
	if _, err := e.store.GetDelivery(t.Context(), id); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetDelivery: got %v, want NotFound (no record)", err)
	}
}

func TestNotifyRecordsPayloadAndEnqueuesTheFirstAttempt(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	ev := disabledEvent("key_1")
	id, outcome, err := e.svc.Notify(t.Context(), "acct_1", ev)
	if err != nil || outcome != notify.Queued {
		t.Fatalf("Notify: got %q, %v; want %q", outcome, err, notify.Queued)
	}
	if want := notify.NotificationID("acct_1", notify.KeyDisabled, ev.ID); id != want || !strings.HasPrefix(id, "ntf_") {
		t.Errorf("id: got %q, want %q", id, want)
	}
	m := e.topic.takeOne(t)
	want := map[string]string{"notification_id": id, "attempt": "1", "not_before": base.Format("2006-01-02T15:04:05Z07:00")}
	if diff := cmp.Diff(want, m.Attributes); diff != "" {
		t.Errorf("message attributes (-want +got):\n%s", diff)
	}
	d := e.delivery(t, id)
	if d.Status != notify.Pending || d.Attempts != 0 || d.Enqueued != 1 || !d.ExpireAt.Equal(base.Add(notify.Retention)) {
		t.Errorf("record: got %+v, want pending, 0 attempts, enqueued 1, expiring after Retention", d)
	}
	var body map[string]any
	if err := json.Unmarshal(d.Payload, &body); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
	wantBody := map[string]any{
		"type": "key.disabled", "timestamp": "2026-03-14T15:09:26Z",
		"data": map[string]any{"key_id": "key_1", "owner": "acct_1", "status": "disabled", "reason": "quota_exceeded"},
	}
	if diff := cmp.Diff(wantBody, body); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
}

// TestSameEventNotifiedTwiceIsQueuedOnce is two sweeps emitting the same
// event, one after the other and at the same time.
func TestSameEventNotifiedTwiceIsQueuedOnce(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	first, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	e.topic.takeOne(t)
	second, outcome, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil || outcome != notify.Duplicate || second != first {
		t.Errorf("Notify again: got %s %q %v, want %s %q", second, outcome, err, first, notify.Duplicate)
	}
	if msgs := e.topic.take(); len(msgs) != 0 {
		t.Errorf("the repeated Notify published %d messages, want none", len(msgs))
	}

	var wg sync.WaitGroup
	outcomes := make([]notify.Outcome, 4)
	for i := range outcomes {
		wg.Go(func() {
			_, o, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_2"))
			if err != nil {
				t.Errorf("concurrent Notify: %v", err)
			}
			outcomes[i] = o
		})
	}
	wg.Wait()
	queued := 0
	for _, o := range outcomes {
		if o == notify.Queued {
			queued++
		}
	}
	if queued != 1 {
		t.Errorf("concurrent Notify outcomes %v: want exactly one %q", outcomes, notify.Queued)
	}
}

func TestNotifyAfterAFailedPublishCompletesIt(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	e.topic.setFail(errs.E(errs.Unavailable, "queue down"))
	if _, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1")); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Notify with the queue down: got %v, want Unavailable", err)
	}
	e.topic.setFail(nil)
	id, outcome, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil || outcome != notify.Duplicate {
		t.Fatalf("Notify again: got %q, %v; want %q", outcome, err, notify.Duplicate)
	}
	m := e.topic.takeOne(t)
	if m.Attributes["notification_id"] != id || m.Attributes["attempt"] != "1" {
		t.Errorf("the retried Notify published %v, want attempt 1 of %s", m.Attributes, id)
	}
}

func TestNotifyRejectsBadEvents(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name  string
		owner string
		ev    notify.Event
	}{
		{"bad owner", "a b", disabledEvent("key_1")},
		{"unknown type", "acct_1", notify.Event{Type: "key.created", ID: "x"}},
		{"no id", "acct_1", notify.Event{Type: notify.KeyEnabled}},
		{"data not an object", "acct_1", notify.Event{Type: notify.KeyEnabled, ID: "x", Data: []int{1}}},
		{"data not JSON", "acct_1", notify.Event{Type: notify.KeyEnabled, ID: "x", Data: func() {}}},
		{"data too big", "acct_1", notify.Event{Type: notify.KeyEnabled, ID: "x", Data: map[string]string{"k": strings.Repeat("x", notify.MaxDataBytes)}}},
	} {
		if _, _, err := e.svc.Notify(t.Context(), tc.owner, tc.ev); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: got %v, want Invalid", tc.name, err)
		}
	}
}

func TestEventIDsIdentifyTheEvent(t *testing.T) {
	at := base
	d := notify.KeyStatusData{KeyID: "key_1"}
	if a, b := notify.KeyDisabledEvent(d, at), notify.KeyDisabledEvent(d, at); a.ID != b.ID {
		t.Errorf("the same disable gave ids %q and %q", a.ID, b.ID)
	}
	if a, b := notify.KeyDisabledEvent(d, at), notify.KeyDisabledEvent(d, at.Add(24*3600e9)); a.ID == b.ID {
		t.Errorf("two disables at different times share id %q", a.ID)
	}
	u := notify.UsageThresholdData{KeyID: "key_1", Limit: "requests_per_day", Threshold: 80, WindowStart: base}
	later := u
	later.Used = 99
	if a, b := notify.UsageThresholdEvent(u, at), notify.UsageThresholdEvent(later, at.Add(3600e9)); a.ID != b.ID {
		t.Errorf("the same threshold in the same window emitted twice gave ids %q and %q", a.ID, b.ID)
	}
	full := u
	full.Threshold = 100
	if a, b := notify.UsageThresholdEvent(u, at), notify.UsageThresholdEvent(full, at); a.ID == b.ID {
		t.Errorf("80%% and 100%% share id %q", a.ID)
	}
	if notify.NotificationID("a", notify.KeyEnabled, "x") == notify.NotificationID("b", notify.KeyEnabled, "x") {
		t.Errorf("two owners share a notification id")
	}
}
