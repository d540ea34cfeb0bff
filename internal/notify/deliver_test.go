package notify_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/webhook"
)

func notBefore(t *testing.T, m queue.Message) time.Time {
	t.Helper()
	nb, err := time.Parse(time.RFC3339Nano, m.Attributes["not_before"])
	if err != nil {
		t.Fatalf("not_before %q: %v", m.Attributes["not_before"], err)
	}
	return nb
}

// TestFailedAttemptsAreRetriedOnScheduleWithTheSameWebhookID: the
// receiver fails the first two attempts; the third, 5 s and then 5 min
// later, arrives with the same webhook-id and a valid signature.
func TestFailedAttemptsAreRetriedOnScheduleWithTheSameWebhookID(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk, 500, 503, 204)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}

	e.handle(t, e.topic.takeOne(t), false) // attempt 1: 500
	m := e.topic.takeOne(t)
	if got, want := notBefore(t, m), base.Add(5*time.Second); !got.Equal(want) || m.Attributes["attempt"] != "2" {
		t.Fatalf("the retry message: attempt %s not before %v, want 2 not before %v", m.Attributes["attempt"], got, want)
	}
	d := e.delivery(t, id)
	if d.Status != notify.Pending || d.Attempts != 1 || d.LastStatus != 500 || d.LastError != "HTTP 500" || !d.NextAttemptAt.Equal(base.Add(5*time.Second)) {
		t.Errorf("after attempt 1: %+v", d)
	}

	e.clk.Advance(4 * time.Second)
	e.handle(t, m, true) // early: redeliver later, no request
	e.clk.Advance(time.Second)
	e.handle(t, m, false) // attempt 2: 503
	m = e.topic.takeOne(t)
	if got, want := notBefore(t, m), base.Add(5*time.Second+5*time.Minute); !got.Equal(want) {
		t.Fatalf("the second retry is not before %v, want %v", got, want)
	}

	e.clk.Advance(5 * time.Minute)
	e.handle(t, m, false) // attempt 3: 204
	if msgs := e.topic.take(); len(msgs) != 0 {
		t.Errorf("after the successful attempt %d messages were published, want none", len(msgs))
	}

	reqs := r.requests()
	if len(reqs) != 3 {
		t.Fatalf("the receiver got %d requests, want 3", len(reqs))
	}
	wantAt := []time.Time{base, base.Add(5 * time.Second), base.Add(5*time.Second + 5*time.Minute)}
	for i, req := range reqs {
		if req.Err != nil {
			t.Errorf("request %d: signature: %v", i+1, req.Err)
		}
		if req.ID != id {
			t.Errorf("request %d: webhook-id %q, want %q", i+1, req.ID, id)
		}
		if want := strconv.FormatInt(wantAt[i].Unix(), 10); req.Timestamp != want || !req.At.Equal(wantAt[i]) {
			t.Errorf("request %d: at %v with webhook-timestamp %s, want %v and %s", i+1, req.At, req.Timestamp, wantAt[i], want)
		}
		if string(req.Body) != string(reqs[0].Body) {
			t.Errorf("request %d: body changed between attempts", i+1)
		}
	}
	d = e.delivery(t, id)
	if d.Status != notify.Delivered || d.Attempts != 3 || d.LastStatus != 204 || d.LastError != "" || d.Lease != "" {
		t.Errorf("after attempt 3: %+v, want delivered after 3 attempts", d)
	}
	e.handle(t, m, false) // a redelivery of the last message does nothing
	if n := len(r.requests()); n != 3 {
		t.Errorf("a redelivered message after success sent request %d", n)
	}
}

// TestDeadLetteredAfterTheLastAttempt walks the whole schedule: 7
// attempts, 5 s, 5 min, 30 min, 2 h, 5 h and 10 h apart, then Dead with
// the reason and the last status.
func TestDeadLetteredAfterTheLastAttempt(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk, 502)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	m := e.topic.takeOne(t)
	for i := 0; ; i++ {
		e.clk.Set(notBefore(t, m))
		e.handle(t, m, false)
		msgs := e.topic.take()
		if len(msgs) == 0 {
			break
		}
		if i == len(notify.DefaultSchedule) {
			t.Fatalf("attempt %d failed and was scheduled again; want the last", i+1)
		}
		m = msgs[0]
		if got, want := notBefore(t, m).Sub(e.clk.Now()), notify.DefaultSchedule[i]; got != want {
			t.Errorf("delay after attempt %d: got %v, want %v", i+1, got, want)
		}
	}
	reqs := r.requests()
	if len(reqs) != 7 {
		t.Errorf("the receiver got %d requests, want 7", len(reqs))
	}
	if total := reqs[len(reqs)-1].At.Sub(reqs[0].At); total != 5*time.Second+5*time.Minute+30*time.Minute+17*time.Hour {
		t.Errorf("first to last attempt: %v", total)
	}
	d := e.delivery(t, id)
	if d.Status != notify.Dead || d.Reason != notify.ReasonExhausted || d.Attempts != 7 || d.LastStatus != 502 || d.LastError != "HTTP 502" {
		t.Errorf("the dead letter: %+v, want dead, attempts_exhausted, 7 attempts, last status 502", d)
	}
	e.clk.Advance(24 * time.Hour)
	e.handle(t, m, false)
	if n := len(r.requests()); n != 7 {
		t.Errorf("a redelivered message after the dead letter sent request %d", n)
	}
}

func TestTimeoutIsAFailedAttempt(t *testing.T) {
	e := newEnv(t)
	e.del.Timeout = 200 * time.Millisecond
	r := newReceiver(t, e.clk)
	r.hang = true
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	e.handle(t, e.topic.takeOne(t), false)
	d := e.delivery(t, id)
	if d.Status != notify.Pending || d.LastStatus != 0 || !strings.Contains(d.LastError, "no answer within 200ms") {
		t.Errorf("after a timeout: %+v", d)
	}
	if m := e.topic.takeOne(t); m.Attributes["attempt"] != "2" {
		t.Errorf("after a timeout: published %v, want attempt 2", m.Attributes)
	}
}

func TestRedirectIsAFailedAttemptAndIsNotFollowed(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk, http.StatusFound)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	e.handle(t, e.topic.takeOne(t), false)
	if d := e.delivery(t, id); d.LastStatus != http.StatusFound || d.Status != notify.Pending {
		t.Errorf("after a 302: %+v", d)
	}
	if n := len(r.requests()); n != 1 {
		t.Errorf("the receiver got %d requests, want 1 (the redirect is not followed)", n)
	}
}

// TestAddressIsCheckedAgainAtDeliveryTime: the host passed validation
// while it resolved to a public address; at delivery time it resolves to
// the receiver's loopback address, and no request is made.
func TestAddressIsCheckedAgainAtDeliveryTime(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	res := &switchingResolver{addr: "8.8.8.8"}
	guard := &notify.Guard{Resolver: res}
	e.svc.Guard, e.del.Guard = guard, guard
	_, port, _ := net.SplitHostPort(r.srv.Listener.Addr().String())
	_, secret, err := e.svc.SetWebhook(t.Context(), "acct_1", "https://rebind.test:"+port+"/hook", nil)
	if err != nil {
		t.Fatalf("SetWebhook while the host is public: %v", err)
	}
	r.setSecret(secret)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	res.set("127.0.0.1")
	e.handle(t, e.topic.takeOne(t), false)
	d := e.delivery(t, id)
	if !strings.Contains(d.LastError, "refused") || !strings.Contains(d.LastError, "loopback") || d.Attempts != 1 {
		t.Errorf("after an attempt to a rebound host: %+v, want a refusal", d)
	}
	if n := len(r.requests()); n != 0 {
		t.Errorf("the loopback receiver got %d requests, want 0", n)
	}
}

type switchingResolver struct {
	mu   sync.Mutex
	addr string
}

func (s *switchingResolver) set(a string) {
	s.mu.Lock()
	s.addr = a
	s.mu.Unlock()
}

func (s *switchingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []netip.Addr{netip.MustParseAddr(s.addr)}, nil
}

// TestDuplicateMessagesMakeOneRequest: the queue delivers the same message
// twice, concurrently; the claim lets one handler make the attempt.
func TestDuplicateMessagesMakeOneRequest(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	m := e.topic.takeOne(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := e.del.Handle(t.Context(), m); err != nil && !errors.Is(err, notify.ErrNotDue) {
				t.Errorf("Handle: %v", err)
			}
		})
	}
	wg.Wait()
	if n := len(r.requests()); n != 1 {
		t.Errorf("the receiver got %d requests, want 1", n)
	}
	if d := e.delivery(t, id); d.Status != notify.Delivered {
		t.Errorf("status %q, want delivered", d.Status)
	}
}

// TestAttemptOfACrashedHandlerIsRetaken: a handler claimed attempt 1 and
// died; once its lease expires, the redelivered message makes the attempt.
func TestAttemptOfACrashedHandlerIsRetaken(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	m := e.topic.takeOne(t)
	if _, err := e.store.UpdateDelivery(t.Context(), id, func(d *notify.Delivery) error {
		d.Attempts, d.Lease, d.LeaseUntil = 1, "crashed-handler", base.Add(time.Minute)
		return nil
	}); err != nil {
		t.Fatalf("UpdateDelivery: %v", err)
	}
	e.handle(t, m, true) // the lease still holds
	e.clk.Advance(time.Minute)
	e.handle(t, m, false)
	if n := len(r.requests()); n != 1 {
		t.Errorf("the receiver got %d requests, want 1", n)
	}
	if d := e.delivery(t, id); d.Status != notify.Delivered || d.Attempts != 1 {
		t.Errorf("after the takeover: %+v, want delivered on attempt 1", d)
	}
}

// TestLostRetryMessageIsRepublished: the outcome of attempt 1 was recorded
// but the process died before publishing attempt 2; the redelivered
// message for attempt 1 publishes it, once.
func TestLostRetryMessageIsRepublished(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk, 500)
	e.subscribe(t, "acct_1", r)
	if _, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1")); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	m1 := e.topic.takeOne(t)
	e.topic.setFail(errs.E(errs.Unavailable, "queue down"))
	if err := e.del.Handle(t.Context(), m1); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Handle with the queue down: got %v, want Unavailable (redeliver)", err)
	}
	e.topic.setFail(nil)
	e.handle(t, m1, false)
	m2 := e.topic.takeOne(t)
	if m2.Attributes["attempt"] != "2" {
		t.Errorf("republished %v, want attempt 2", m2.Attributes)
	}
	e.handle(t, m1, false) // a further duplicate of message 1 publishes nothing more
	if msgs := e.topic.take(); len(msgs) != 0 {
		t.Errorf("a duplicate message 1 published %d more messages", len(msgs))
	}
	if n := len(r.requests()); n != 1 {
		t.Errorf("the receiver got %d requests, want 1", n)
	}
}

func TestUnsubscribedOrRemovedWebhookCancelsPendingDeliveries(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	e.subscribe(t, "acct_1", r, notify.KeyEnabled)
	e.handle(t, e.topic.takeOne(t), false)
	if d := e.delivery(t, id); d.Status != notify.Canceled || d.Reason != notify.ReasonNotSubscribed {
		t.Errorf("after unsubscribing: %+v, want canceled, unsubscribed", d)
	}
	if n := len(r.requests()); n != 0 {
		t.Errorf("the receiver got %d requests, want 0", n)
	}
}

// TestRetriesAreSignedWithTheRotatedSecret: the owner sets the webhook
// again between two attempts; the retry is signed with the new secret.
func TestRetriesAreSignedWithTheRotatedSecret(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk, 500, 200)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	e.handle(t, e.topic.takeOne(t), false)
	e.subscribe(t, "acct_1", r) // rotates; the receiver now accepts only the new secret
	m := e.topic.takeOne(t)
	e.clk.Set(notBefore(t, m))
	e.handle(t, m, false)
	reqs := r.requests()
	if len(reqs) != 2 || reqs[1].Err != nil {
		t.Fatalf("requests %+v: want the second verified with the new secret", reqs)
	}
	if d := e.delivery(t, id); d.Status != notify.Delivered {
		t.Errorf("status %q, want delivered", d.Status)
	}
}

// TestSecretOfTheWinningPutSigns: of two SetWebhook calls, the registry
// keeps the last one's URL, and deliveries use that call's secret even
// though the other call's secret is the vault's latest version.
func TestSecretOfTheWinningPutSigns(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	w, err := e.store.Get(t.Context(), "acct_1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	// A concurrent call added its version but lost the registry write.
	if err := e.svc.Vault.AddSecretVersion(t.Context(), notify.SecretName("acct_1"), []byte(webhook.NewSecret())); err != nil {
		t.Fatalf("AddSecretVersion: %v", err)
	}
	if err := e.store.Put(t.Context(), w); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if _, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1")); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	e.handle(t, e.topic.takeOne(t), false)
	if reqs := r.requests(); len(reqs) != 1 || reqs[0].Err != nil {
		t.Errorf("requests %+v: want one, verified with the registry's secret", reqs)
	}
}

func TestMalformedMessagesAreAcknowledged(t *testing.T) {
	e := newEnv(t)
	for _, attrs := range []map[string]string{
		nil,
		{"notification_id": "ntf_x"},
		{"notification_id": "ntf_x", "attempt": "zero", "not_before": base.Format(time.RFC3339)},
		{"notification_id": "ntf_x", "attempt": "1", "not_before": "yesterday"},
		{"notification_id": "ntf_unknown", "attempt": "1", "not_before": base.Format(time.RFC3339)},
	} {
		if err := e.del.Handle(t.Context(), queue.Message{ID: "m", Attributes: attrs}); err != nil {
			t.Errorf("Handle(%v): got %v, want nil (ack the poison message)", attrs, err)
		}
	}
}

func TestHandleDeadLetterMarksThePendingDeliveryDead(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, e.clk)
	e.subscribe(t, "acct_1", r)
	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	m := e.topic.takeOne(t)
	m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = "100"
	if err := e.del.HandleDeadLetter(t.Context(), m); err != nil {
		t.Fatalf("HandleDeadLetter: %v", err)
	}
	d := e.delivery(t, id)
	if d.Status != notify.Dead || d.Reason != notify.ReasonTransport || !strings.Contains(d.LastError, "after 100 deliveries") {
		t.Errorf("after the queue gave up: %+v", d)
	}
}

// TestDeliveredThroughTheEmbeddedQueue runs the whole path on the durable
// embedded queue with a fake clock: Notify publishes, the subscription's
// Receive calls Handle, the receiver fails twice and the third attempt
// arrives with the same webhook-id. The test advances the fake clock
// while it waits; it never sleeps.
func TestDeliveredThroughTheEmbeddedQueue(t *testing.T) {
	e := newEnv(t)
	q, err := embeddedqueue.Open(filepath.Join(t.TempDir(), "queue.db"), embeddedqueue.Options{
		Clock: e.clk, Logger: slog.New(slog.DiscardHandler), PollInterval: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("embeddedqueue.Open: %v", err)
	}
	defer q.Close()
	sub := q.Subscription("notifications", "deliver-notifications",
		queue.RetryPolicy{MinBackoff: 5 * time.Second, MaxBackoff: 600 * time.Second, MaxAttempts: 100}, "notifications-dead-letter")
	tp := q.Topic("notifications")
	e.svc.Topic, e.del.Topic = tp, tp

	r := newReceiver(t, e.clk, 500, 500, 200)
	e.subscribe(t, "acct_1", r)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sub.Receive(ctx, e.del.Handle) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Receive: %v", err)
		}
	}()

	id, _, err := e.svc.Notify(t.Context(), "acct_1", disabledEvent("key_1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	var got []request
	deadline := e.clk.Now().Add(2 * time.Hour)
	for len(got) < 3 {
		select {
		case req := <-r.seen:
			got = append(got, req)
		case <-time.After(20 * time.Millisecond):
			if e.clk.Now().After(deadline) {
				t.Fatalf("after %v of fake time the receiver got %d requests, want 3", 2*time.Hour, len(got))
			}
			e.clk.Advance(30 * time.Second)
		}
	}
	for i, req := range got {
		if req.Err != nil || req.ID != id {
			t.Errorf("request %d: webhook-id %q, signature %v; want %q and valid", i+1, req.ID, req.Err, id)
		}
	}
	if gap := got[1].At.Sub(got[0].At); gap < 5*time.Second || gap > 5*time.Second+2*time.Minute {
		t.Errorf("attempt 1 to 2: %v, want 5 s (plus polling)", gap)
	}
	if gap := got[2].At.Sub(got[1].At); gap < 5*time.Minute || gap > 5*time.Minute+10*time.Minute {
		t.Errorf("attempt 2 to 3: %v, want 5 min (plus polling)", gap)
	}
	// The outcome is recorded just after the receiver answers.
	for i := 0; e.delivery(t, id).Status != notify.Delivered; i++ {
		if i == 1000 {
			t.Fatalf("the delivery is %+v, want delivered", e.delivery(t, id))
		}
		<-time.After(5 * time.Millisecond)
	}
}
