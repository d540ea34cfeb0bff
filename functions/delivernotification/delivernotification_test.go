package delivernotification

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/sqlitenotify"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/webhook"
)

// topic keeps what is published: the messages a test pushes itself.
type topic struct {
	mu   sync.Mutex
	msgs []queue.Message
}

func (tp *topic) Publish(_ context.Context, msgs ...queue.Message) error {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.msgs = append(tp.msgs, msgs...)
	return nil
}

func (tp *topic) Close() error { return nil }

func (tp *topic) take(t *testing.T) queue.Message {
	t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if len(tp.msgs) != 1 {
		t.Fatalf("published %d messages, want 1", len(tp.msgs))
	}
	m := tp.msgs[0]
	tp.msgs = nil
	return m
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// env is a notify Service and Deliverer on embedded backends, the owner's
// receiver (which verifies signatures), and the Functions Framework
// serving this function's handler on that Deliverer, as the Cloud
// Functions runtime would.
type env struct {
	svc      *notify.Service
	topic    *topic
	logs     *syncBuffer
	received chan string // verified bodies
	endpoint string      // the push endpoint: its path names the topic
}

var (
	frameworkOnce sync.Once
	frameworkURL  string
	frameworkErr  error
	current       struct { // what the framework-served handler uses
		sync.Mutex
		d   *notify.Deliverer
		log *slog.Logger
	}
)

// startFramework serves handle through the Functions Framework once per
// test binary (it cannot be stopped); each test points it at its own
// Deliverer.
func startFramework(t *testing.T) string {
	t.Helper()
	frameworkOnce.Do(func() {
		fn := func(ctx context.Context, e event.Event) error {
			current.Lock()
			d, log := current.d, current.log
			current.Unlock()
			return handle(ctx, e, func() (*notify.Deliverer, error) { return d, nil }, log)
		}
		if frameworkErr = funcframework.RegisterCloudEventFunctionContext(context.Background(), "/", fn); frameworkErr != nil {
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			frameworkErr = err
			return
		}
		port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		go funcframework.StartHostPort("127.0.0.1", port)
		frameworkURL = "http://127.0.0.1:" + port
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", "127.0.0.1:"+port)
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				frameworkErr = fmt.Errorf("the Functions Framework did not start: %w", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	if frameworkErr != nil {
		t.Fatal(frameworkErr)
	}
	return frameworkURL
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := sqlitenotify.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := filevault.Open(filepath.Join(t.TempDir(), "vault"), bytes.Repeat([]byte{7}, filevault.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	e := &env{topic: &topic{}, logs: &syncBuffer{}, received: make(chan string, 10)}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	guard := &notify.Guard{AllowPrivate: true}
	e.svc = &notify.Service{Registry: st, Deliveries: st, Vault: v, Topic: e.topic, Guard: guard, Logger: log}
	d := &notify.Deliverer{Registry: st, Deliveries: st, Vault: v, Topic: e.topic, Guard: guard, Logger: log}

	var secret webhook.Secret
	var mu sync.Mutex
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		s := secret
		mu.Unlock()
		if _, err := webhook.Verify([]webhook.Secret{s}, r.Header, body, time.Now(), webhook.DefaultTolerance); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		e.received <- string(body)
	}))
	t.Cleanup(recv.Close)
	_, text, err := e.svc.SetWebhook(t.Context(), "acct_1", recv.URL+"/hook", nil)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	secret, _ = webhook.ParseSecret(text)
	mu.Unlock()

	base := startFramework(t)
	current.Lock()
	current.d, current.log = d, log
	current.Unlock()
	e.endpoint = base + "/projects/demo/topics/notifications"
	return e
}

// push POSTs m to the function as a Pub/Sub push subscription does (the
// plain push envelope, which the Functions Framework turns into a
// messagePublished CloudEvent) and returns the HTTP status: 2xx acks,
// anything else makes Pub/Sub redeliver.
func (e *env) push(t *testing.T, m queue.Message) int {
	t.Helper()
	env := map[string]any{
		"message": map[string]any{
			"attributes": m.Attributes, "messageId": "1234", "publishTime": time.Now().UTC().Format(time.RFC3339Nano),
		},
		"subscription": "projects/demo/subscriptions/notifications-deliver-notifications",
	}
	b, _ := json.Marshal(env)
	res, err := http.Post(e.endpoint, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func TestPushedMessageIsDeliveredSignedAndAcked(t *testing.T) {
	e := newEnv(t)
	ev := notify.KeyDisabledEvent(notify.KeyStatusData{KeyID: "key_1", Owner: "acct_1", Status: "disabled", Reason: "manual"}, time.Now())
	if _, _, err := e.svc.Notify(t.Context(), "acct_1", ev); err != nil {
		t.Fatal(err)
	}
	if code := e.push(t, e.topic.take(t)); code/100 != 2 {
		t.Fatalf("push of a due message = HTTP %d, want 2xx (ack)", code)
	}
	select {
	case body := <-e.received:
		if !strings.Contains(body, `"type":"key.disabled"`) || !strings.Contains(body, `"key_id":"key_1"`) {
			t.Errorf("the receiver got %s", body)
		}
	default:
		t.Fatal("the owner's receiver got nothing, or nothing it could verify")
	}
}

// TestNotDueMessageIsRedeliveredQuietly: a message polled before its
// attempt is due is nacked (so Pub/Sub brings it back after its backoff)
// without a request to the owner and without a warning or error in the
// function's log (the Functions Framework itself still prints the
// returned error to stderr).
func TestNotDueMessageIsRedeliveredQuietly(t *testing.T) {
	e := newEnv(t)
	ev := notify.KeyEnabledEvent(notify.KeyStatusData{KeyID: "key_2", Owner: "acct_1", Status: "active", Reason: "manual"}, time.Now())
	if _, _, err := e.svc.Notify(t.Context(), "acct_1", ev); err != nil {
		t.Fatal(err)
	}
	m := e.topic.take(t)
	m.Attributes["not_before"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	if code := e.push(t, m); code/100 == 2 {
		t.Fatalf("push of a message not due = HTTP %d, want a failure status (redeliver)", code)
	}
	select {
	case body := <-e.received:
		t.Errorf("the receiver got %s before it was due", body)
	default:
	}
	if logs := e.logs.String(); strings.Contains(logs, `"level":"WARN"`) || strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("a message not due yet was logged as a problem:\n%s", logs)
	}
}

func TestNonPubSubEventIsAcked(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	e := event.New()
	e.SetID("x")
	e.SetData("text/plain", []byte("not json"))
	err := handle(t.Context(), e, func() (*notify.Deliverer, error) {
		t.Fatal("built a Deliverer for a non-Pub/Sub event")
		return nil, nil
	}, log)
	if err != nil || !strings.Contains(logs.String(), "non-Pub/Sub event") {
		t.Errorf("handle = %v, logs %s; want nil (ack: retrying cannot help) and an error logged", err, logs)
	}
}

func TestNotStartedIsRetried(t *testing.T) {
	e := event.New()
	e.SetID("x")
	e.SetData("application/json", []byte(`{"message": {"attributes": {"notification_id": "ntf_1", "attempt": "1"}}}`))
	down := errs.E(errs.Unavailable, "start-up failed")
	err := handle(t.Context(), e, func() (*notify.Deliverer, error) { return nil, down }, slog.New(slog.DiscardHandler))
	if !errors.Is(err, down) {
		t.Errorf("handle while the function cannot start = %v, want its error (redeliver)", err)
	}
}
