package notify_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/sqlitenotify"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/webhook"
)

var base = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// topic is an in-memory queue.Topic that keeps what is published, for
// tests that hand messages to the Deliverer themselves.
type topic struct {
	mu   sync.Mutex
	msgs []queue.Message
	seq  int
	fail error
}

func (tp *topic) Publish(_ context.Context, msgs ...queue.Message) error {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.fail != nil {
		return tp.fail
	}
	for _, m := range msgs {
		tp.seq++
		m.ID = fmt.Sprint("msg-", tp.seq)
		tp.msgs = append(tp.msgs, m)
	}
	return nil
}

func (tp *topic) Close() error { return nil }

func (tp *topic) setFail(err error) {
	tp.mu.Lock()
	tp.fail = err
	tp.mu.Unlock()
}

// take removes and returns every published message.
func (tp *topic) take() []queue.Message {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	out := tp.msgs
	tp.msgs = nil
	return out
}

// takeOne returns the one message published since the last take.
func (tp *topic) takeOne(t *testing.T) queue.Message {
	t.Helper()
	msgs := tp.take()
	if len(msgs) != 1 {
		t.Fatalf("published messages: got %d (%v), want 1", len(msgs), msgs)
	}
	return msgs[0]
}

// request is what the receiver saw.
type request struct {
	ID        string
	Timestamp string
	Body      []byte
	At        time.Time // the fake clock when it arrived
	Err       error     // signature verification
}

// receiver is a real HTTP server that verifies Standard Webhooks
// signatures with internal/webhook.Verify against the owner's current secret
// and answers with a scripted status per request (the last one repeats).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	clk    *clock.Fake
	mu     sync.Mutex
	secret webhook.Secret
	script []int
	reqs   []request
	seen   chan request
	hang   bool // block until the client gives up
}

func newReceiver(t *testing.T, clk *clock.Fake, script ...int) *receiver {
	r := &receiver{t: t, clk: clk, script: script, seen: make(chan request, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	secret, hang := r.secret, r.hang
	_, err := webhook.Verify([]webhook.Secret{secret}, req.Header, body, r.clk.Now(), webhook.DefaultTolerance)
	got := request{ID: req.Header.Get(webhook.HeaderID), Timestamp: req.Header.Get(webhook.HeaderTimestamp), Body: body, At: r.clk.Now(), Err: err}
	r.reqs = append(r.reqs, got)
	status := http.StatusOK
	if n := len(r.reqs); len(r.script) > 0 {
		status = r.script[min(n, len(r.script))-1]
	}
	r.mu.Unlock()
	r.seen <- got
	if hang {
		<-req.Context().Done()
		return
	}
	if err != nil {
		status = http.StatusUnauthorized
	}
	w.WriteHeader(status)
}

func (r *receiver) setSecret(s string) {
	r.t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		r.t.Fatalf("ParseSecret: %v", err)
	}
	r.mu.Lock()
	r.secret = sec
	r.mu.Unlock()
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// env is a Service and a Deliverer on SQLite, a file vault, an in-memory
// topic and a fake clock, with a guard that admits the local receiver.
type env struct {
	clk   *clock.Fake
	store notify.Store
	topic *topic
	svc   *notify.Service
	del   *notify.Deliverer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := sqlitenotify.Open(":memory:")
	if err != nil {
		t.Fatalf("sqlitenotify.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := filevault.Open(filepath.Join(t.TempDir(), "vault"), bytes.Repeat([]byte{7}, filevault.KeySize))
	if err != nil {
		t.Fatalf("filevault.Open: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	clk := clock.NewFake(base)
	tp := &topic{}
	guard := &notify.Guard{AllowPrivate: true}
	log := slog.New(slog.DiscardHandler)
	return &env{
		clk: clk, store: st, topic: tp,
		svc: &notify.Service{Registry: st, Deliveries: st, Vault: v, Topic: tp, Guard: guard, Clock: clk, Logger: log},
		del: &notify.Deliverer{Registry: st, Deliveries: st, Vault: v, Topic: tp, Guard: guard, Clock: clk, Logger: log},
	}
}

// subscribe sets the receiver as owner's webhook and tells it the secret.
func (e *env) subscribe(t *testing.T, owner string, r *receiver, events ...string) notify.OwnerWebhook {
	t.Helper()
	w, secret, err := e.svc.SetWebhook(t.Context(), owner, r.srv.URL+"/hook", events)
	if err != nil {
		t.Fatalf("SetWebhook: %v", err)
	}
	r.setSecret(secret)
	return w
}

func (e *env) delivery(t *testing.T, id string) notify.Delivery {
	t.Helper()
	d, err := e.store.GetDelivery(t.Context(), id)
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	return d
}

// handle runs the Deliverer on m and checks whether it asked for a
// redelivery (ErrNotDue) or acknowledged it.
func (e *env) handle(t *testing.T, m queue.Message, wantNotDue bool) {
	t.Helper()
	err := e.del.Handle(t.Context(), m)
	switch {
	case wantNotDue && !errors.Is(err, notify.ErrNotDue):
		t.Fatalf("Handle: got %v, want ErrNotDue", err)
	case !wantNotDue && err != nil:
		t.Fatalf("Handle: got %v, want nil (ack)", err)
	}
}

func disabledEvent(keyID string) notify.Event {
	return notify.KeyDisabledEvent(notify.KeyStatusData{KeyID: keyID, Owner: "acct_1", Status: "disabled", Reason: "quota_exceeded"}, base)
}
