package wire

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	gpubsub "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/stripeexport/firestoresent"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/usage"
)

// stripeStandIn answers POST /v1/billing/meter_events (503 while down,
// then each identifier once, like Stripe) and the customer search (every
// owner is cus_wire).
type stripeStandIn struct {
	mu       sync.Mutex
	down     bool
	refused  int
	requests int               // meter-event requests
	accepted map[string]string // identifier → form
}

func (s *stripeStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method == "GET" && r.URL.Path == "/v1/customers/search" {
		fmt.Fprint(w, `{"object":"search_result","has_more":false,"data":[{"id":"cus_wire","object":"customer"}]}`)
		return
	}
	r.ParseForm()
	s.mu.Lock()
	defer s.mu.Unlock()
	id := r.PostForm.Get("identifier")
	s.requests++
	switch {
	case s.down:
		s.refused++
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"type":"api_error","message":"down"}}`)
	case s.accepted[id] != "":
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"type":"invalid_request_error","code":"resource_already_exists","message":"duplicate"}}`)
	default:
		s.accepted[id] = r.PostForm.Encode()
		fmt.Fprint(w, `{"object":"billing.meter_event"}`)
	}
}

// TestServeExportsUsageToStripeWithoutHoldingUpTheLedger: with the export
// configured, serve's usage messages reach both the ledger and Stripe; while
// Stripe is down the ledger counts at once and the export waits, then each
// event is sent once.
func TestServeExportsUsageToStripeWithoutHoldingUpTheLedger(t *testing.T) {
	serveExports(t, embedded(t))
}

// TestServeOnPubSubExportsToStripeThroughItsOwnSubscription: serve on Pub/Sub
// creates the export's pull subscription, with its own dead-letter topic,
// and exports through it as on the embedded queue.
func TestServeOnPubSubExportsToStripeThroughItsOwnSubscription(t *testing.T) {
	testenv.PubSub(t)
	cfg := embedded(t)
	cfg.Queue, cfg.Project = config.QueuePubSub, testenv.ProjectID()
	suffix := fmt.Sprint(time.Now().UnixNano())
	cfg.UsageTopic, cfg.NotificationsTopic = "usage-"+suffix, "notifications-"+suffix
	serveExports(t, cfg)

	c, err := gpubsub.NewClient(t.Context(), cfg.Project)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.SubscriptionAdminClient.GetSubscription(t.Context(), &pubsubpb.GetSubscriptionRequest{
		Subscription: "projects/" + cfg.Project + "/subscriptions/" + cfg.UsageTopic + "-export-stripe"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sub.GetDeadLetterPolicy().GetDeadLetterTopic(), "projects/"+cfg.Project+"/topics/"+cfg.UsageTopic+"-stripe-dead-letter"; got != want {
		t.Errorf("the export's dead-letter topic is %s, want %s", got, want)
	}
	if n := sub.GetDeadLetterPolicy().GetMaxDeliveryAttempts(); int(n) != StripeExportTopic.Retry.MaxAttempts {
		t.Errorf("dead letter after %d deliveries, want %d", n, StripeExportTopic.Retry.MaxAttempts)
	}
}

func serveExports(t *testing.T, cfg config.Config) {
	st := &stripeStandIn{down: true, accepted: map[string]string{}}
	srv := httptest.NewServer(st)
	defer srv.Close()
	cfg.StripeAPIKey, cfg.StripeMeters, cfg.StripeURL = "sk_test_wire", "units=api_tokens", srv.URL
	app, err := ServeAll(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if app.StripeExporter == nil {
		t.Fatal("the export is configured but serve has no exporter")
	}
	app.StripeExporter.Retry = stripeexport.Retry{Attempts: 1 << 20, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	k, err := app.Keys.Create(t.Context(), "test", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var evs []usage.Event
	for i := range 5 {
		evs = append(evs, usage.Event{ID: fmt.Sprintf("wire-%d", i), KeyID: k.Key.ID, Time: now, Requests: 1, Units: 3})
	}
	data, _ := json.Marshal(usage.Batch{Events: evs})
	if err := app.Topic.Publish(t.Context(), queue.Message{Data: data, Attributes: map[string]string{"type": "usage.batch"}}); err != nil {
		t.Fatal(err)
	}
	day, _ := plan.Day.Bounds(now)
	waitFor(t, "the ledger to count the events while Stripe is down", func() bool {
		tot, err := app.Ledger.Totals(t.Context(), k.Key.ID, plan.Day, day)
		return err == nil && tot.Units == 15
	})
	waitFor(t, "the exporter to try Stripe", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.refused > 3
	})
	st.mu.Lock()
	sent := len(st.accepted)
	st.down = false
	st.mu.Unlock()
	if sent != 0 {
		t.Fatalf("while down: %d accepted", sent)
	}
	waitFor(t, "the export after Stripe recovered", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.accepted) == 5
	})
	time.Sleep(100 * time.Millisecond)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, e := range evs {
		if f := st.accepted[e.ID]; f == "" {
			t.Errorf("%s not sent", e.ID)
		}
	}
	if len(st.accepted) != 5 {
		t.Errorf("%d meter events, want 5", len(st.accepted))
	}
	if c := app.StripeExporter.Counts(); c.Sent != 5 || c.DeadLetters != 0 {
		t.Errorf("exporter counts %+v", c)
	}
}

// TestServeRestartedDoesNotExportAgain: serve records the meter events
// Stripe accepted in its data directory, so that after a restart (nothing
// cached) the same usage delivered again a day later, past Stripe's
// 24-hour identifier dedupe, is not sent to Stripe again.
func TestServeRestartedDoesNotExportAgain(t *testing.T) {
	st := &stripeStandIn{accepted: map[string]string{}}
	srv := httptest.NewServer(st)
	defer srv.Close()
	cfg := embedded(t)
	cfg.StripeAPIKey, cfg.StripeMeters, cfg.StripeURL = "sk_test_wire", "units=api_tokens", srv.URL
	log := slog.New(slog.DiscardHandler)
	app, err := ServeAll(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	k, err := app.Keys.Create(t.Context(), "test", keys.CreateRequest{Owner: "acme"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var evs []usage.Event
	for i := range 5 {
		evs = append(evs, usage.Event{ID: fmt.Sprintf("restart-%d", i), KeyID: k.Key.ID, Time: time.Now().UTC(), Requests: 1, Units: 3})
	}
	data, _ := json.Marshal(usage.Batch{Events: evs})
	msg := queue.Message{Data: data, Attributes: map[string]string{"type": "usage.batch"}}
	if err := app.Topic.Publish(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first export", func() bool { return app.StripeExporter.Counts().Sent == 5 })
	app.Close()

	cfg.ClockOffset = 25 * time.Hour
	app, err = ServeAll(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	before := st.requests
	st.mu.Unlock()
	if err := app.Topic.Publish(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted exporter to handle the message", func() bool {
		c := app.StripeExporter.Counts()
		return c.Sent+c.Already == 5
	})
	st.mu.Lock()
	defer st.mu.Unlock()
	if got := st.requests - before; got != 0 {
		t.Errorf("after the restart the same usage made %d meter-event requests, want none", got)
	}
	if c := app.StripeExporter.Counts(); c.Sent != 0 {
		t.Errorf("restarted exporter counts %+v, want nothing sent", c)
	}
}

// TestExportStripeRecordsSentMeterEventsInFirestore: the cloud build of
// ExportStripe keeps its record of sent meter events in Firestore, in the
// stripe_sent collection, where every instance finds it.
func TestExportStripeRecordsSentMeterEventsInFirestore(t *testing.T) {
	testenv.Firestore(t)
	cfg := embedded(t)
	cfg.Store, cfg.Project = config.StoreFirestore, testenv.ProjectID()
	cfg.StripeAPIKey, cfg.StripeMeters = "sk_test_wire", "requests=api_requests"
	app, err := ExportStripe(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if _, ok := app.StripeSent.(*firestoresent.Sent); !ok {
		t.Fatalf("ExportStripe on Firestore records sent meter events in a %T", app.StripeSent)
	}
	if err := app.StripeSent.MarkSent(t.Context(), []string{"wire-1"}, stripeexport.SentRetention); err != nil {
		t.Fatal(err)
	}
	docs, err := testenv.FirestoreClientFor(t, cfg.Project).Collection(firestoresent.Collection).Documents(t.Context()).GetAll()
	if err != nil || len(docs) != 1 {
		t.Fatalf("%s holds %d documents (%v), want 1", firestoresent.Collection, len(docs), err)
	}
	if id, _ := docs[0].DataAt("id"); id != "wire-1" {
		t.Errorf("the record's id is %v, want wire-1", id)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestExportStripeNeedsTheExportConfigured: the ExportStripe function
// does not start without the export's settings, and with them opens the
// store, the ledger and its record of sent meter events only.
func TestExportStripeNeedsTheExportConfigured(t *testing.T) {
	cfg := embedded(t)
	if _, err := ExportStripe(t.Context(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "KEYPLANE_STRIPE_API_KEY") {
		t.Errorf("unconfigured: %v, want an error naming KEYPLANE_STRIPE_API_KEY", err)
	}
	cfg.StripeAPIKey, cfg.StripeMeters = "sk_test_wire", "requests=api_requests"
	app, err := ExportStripe(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if app.StripeExporter == nil || app.StripeSent == nil || app.Store == nil || app.Ledger == nil || app.Vault != nil || app.Topic != nil || app.Consumer != nil || app.Handler != nil {
		t.Errorf("ExportStripe opened %+v", app)
	}
	off, err := ServeAll(t.Context(), embedded(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if off.StripeExporter != nil {
		t.Errorf("serve without the export's settings has an exporter")
	}
}

// TestServeWithoutTheExportDropsItsSubscription: a serve with the export
// off deletes the export subscriptions an earlier serve declared, so that
// they do not keep a copy of every usage message for ever.
func TestServeWithoutTheExportDropsItsSubscription(t *testing.T) {
	cfg := embedded(t)
	on := cfg
	on.StripeAPIKey, on.StripeMeters, on.StripeURL = "sk_test_wire", "units=api_tokens", "http://127.0.0.1:1"
	log := slog.New(slog.DiscardHandler)
	app, err := ServeAll(t.Context(), on, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Topic.Publish(t.Context(), queue.Message{Data: []byte(`{"events":[]}`)}); err != nil {
		t.Fatal(err)
	}
	d, err := app.queue.Depth(t.Context())
	if err != nil || d[StripeExportTopic.Subscription] != 1 {
		t.Fatalf("with the export on: depths %v (%v), want one message for %s", d, err, StripeExportTopic.Subscription)
	}
	app.Close()

	app, err = ServeAll(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.Topic.Publish(t.Context(), queue.Message{Data: []byte(`{"events":[]}`)}); err != nil {
		t.Fatal(err)
	}
	d, err = app.queue.Depth(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d[StripeExportTopic.Subscription]; ok {
		t.Errorf("with the export off: depths %v, want no %s", d, StripeExportTopic.Subscription)
	}
	if d[UsageTopic.Subscription] != 2 {
		t.Errorf("the usage consumer's subscription holds %d, want both messages", d[UsageTopic.Subscription])
	}
}
