package exportstripe

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/wire"
)

// TestHandleExportsAPushedUsageMessage: the function, started from the
// environment as Cloud Functions starts it (on the embedded backends),
// turns a pushed usage message into meter events, asks for a redelivery
// while Stripe fails, and acks what is not a Pub/Sub event.
func TestHandleExportsAPushedUsageMessage(t *testing.T) {
	var (
		mu       sync.Mutex
		down     bool
		accepted = map[string]string{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/customers/search" {
			fmt.Fprint(w, `{"object":"search_result","has_more":false,"data":[{"id":"cus_fn","object":"customer"}]}`)
			return
		}
		r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		if down {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, `{"error":{"type":"api_error","message":"down"}}`)
			return
		}
		accepted[r.PostForm.Get("identifier")] = r.PostForm.Get("event_name") + " " + r.PostForm.Get("payload[stripe_customer_id]") + " " + r.PostForm.Get("payload[value]")
		fmt.Fprint(w, `{"object":"billing.meter_event"}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"KEYPLANE_STORE": "sqlite", "KEYPLANE_SECRETS": "file", "KEYPLANE_QUEUE": "embedded", "KEYPLANE_DATA": dir,
		"KEYPLANE_STRIPE_API_KEY": "sk_test_fn", "KEYPLANE_STRIPE_METERS": "units=api_tokens", "KEYPLANE_STRIPE_URL": srv.URL,
	} {
		t.Setenv(k, v)
	}
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken = dir, "function-test-token-123"
	mgmt, err := wire.Keys(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	k, err := mgmt.Keys.Create(t.Context(), "test", keys.CreateRequest{Owner: "acme"}, "")
	mgmt.Close()
	if err != nil {
		t.Fatal(err)
	}

	push := func(id string, evs ...usage.Event) event.Event {
		data, _ := json.Marshal(usage.Batch{Events: evs})
		var m pubsubqueue.MessagePublished
		m.Message.Data, m.Message.MessageID, m.Message.PublishTime = data, id, time.Now()
		m.Message.Attributes = map[string]string{"type": "usage.batch"}
		e := event.New()
		e.SetID(id)
		e.SetType("google.cloud.pubsub.topic.v1.messagePublished")
		e.SetSource("//pubsub.googleapis.com/projects/p/topics/usage-events")
		if err := e.SetData("application/json", m); err != nil {
			t.Fatal(err)
		}
		return e
	}
	ev := usage.Event{ID: "fn-1", KeyID: k.Key.ID, Time: time.Now().UTC(), Requests: 1, Units: 9}
	if err := Handle(t.Context(), push("m1", ev)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := accepted["fn-1"]
	down = true
	mu.Unlock()
	if got != "api_tokens cus_fn 9" {
		t.Errorf("Stripe got %q, want api_tokens cus_fn 9", got)
	}
	ev2 := ev
	ev2.ID = "fn-2"
	if err := Handle(t.Context(), push("m2", ev2)); err == nil {
		t.Error("Stripe down: Handle = nil, want an error (Pub/Sub redelivers)")
	}
	bad := event.New()
	bad.SetID("x")
	bad.SetType("other")
	bad.SetSource("test")
	bad.SetData("application/json", "not a push")
	if err := Handle(t.Context(), bad); err != nil {
		t.Errorf("a non-Pub/Sub event: %v, want nil (ack)", err)
	}
}
