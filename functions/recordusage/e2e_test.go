package recordusage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keyplane/keyplane/functions/recordusage"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/webhook"
	"github.com/keyplane/keyplane/internal/wire"
)

// The end-to-end tests below run the metering path of production on the
// emulators, with nothing faked:
//
//	POST /v1/usage (signed) → Pub/Sub emulator topic usage-events
//	  → push subscription → the Functions Framework serving recordusage.Handle
//	  → Firestore emulator → GET /v1/keys/{id}/usage and POST /v1/verify
//
// RecordUsage builds its App from the environment once per process, as a
// Cloud Functions instance does, and the Functions Framework serves until
// the process exits. So the Pub/Sub topology, the framework server and the
// emulator project are built once per test binary (pipelineOnce) and every
// test (or -count repetition) works on keys of its own.

const (
	usageTopic        = "usage-events"
	deadLetter        = usageTopic + "-dead-letter"
	pushSub           = usageTopic + "-record-usage" // as infra/pubsub.tf names it
	waitFor           = 30 * time.Second             // delivery is asynchronous; every wait is bounded by this
	pollEvery         = 20 * time.Millisecond
	e2eAdminToken     = "e2e-admin-token-0123456789"
	e2eRequestsPerDay = 5
	e2eOwner          = "e2e-owner"
	e2eUnitsPerEvt    = 7
)

// pipeline is the process-wide part: one emulator project, its Pub/Sub
// topology, and the Functions Framework serving RecordUsage.
type pipeline struct {
	project  string
	endpoint string // the push endpoint
	err      error
}

var (
	pipelineOnce sync.Once
	shared       pipeline
	deliveries   = &recorder{byEvent: map[string]*eventDeliveries{}}
)

// eventDeliveries is what the function did with the messages carrying one
// event id.
type eventDeliveries struct {
	firstArrival time.Time
	source, typ  string          // the first delivery's CloudEvent source and type
	acked        int             // deliveries RecordUsage returned nil for
	ackedMsgs    map[string]bool // their Pub/Sub message ids (the CloudEvent ids)
	failed       []string
}

// recorder observes RecordUsage from the outside: it wraps the function the
// framework serves, without changing what it does, so that a test can tell
// when a given message has been processed (the emulator exposes no backlog)
// and how long delivery took.
type recorder struct {
	mu      sync.Mutex
	byEvent map[string]*eventDeliveries
	other   []string // deliveries that did not hold a usage batch
}

func (r *recorder) wrap(fn func(context.Context, event.Event) error) func(context.Context, event.Event) error {
	return func(ctx context.Context, e event.Event) error {
		arrived := time.Now()
		var b usage.Batch
		if m, err := pubsubqueue.DecodeMessagePublished(e.Data()); err == nil {
			_ = json.Unmarshal(m.Data, &b)
		}
		r.mu.Lock()
		for _, ev := range b.Events {
			if d := r.byEvent[ev.ID]; d == nil {
				r.byEvent[ev.ID] = &eventDeliveries{firstArrival: arrived, source: e.Source(), typ: e.Type(), ackedMsgs: map[string]bool{}}
			}
		}
		r.mu.Unlock()

		err := fn(ctx, e)

		r.mu.Lock()
		defer r.mu.Unlock()
		if len(b.Events) == 0 {
			r.other = append(r.other, fmt.Sprintf("CloudEvent %s (type %s, source %s): %v", e.ID(), e.Type(), e.Source(), err))
		}
		for _, ev := range b.Events {
			d := r.byEvent[ev.ID]
			if err == nil {
				d.acked++
				d.ackedMsgs[e.ID()] = true
			} else {
				d.failed = append(d.failed, err.Error())
			}
		}
		return err
	}
}

// get returns a copy of what happened to an event id's deliveries.
func (r *recorder) get(id string) eventDeliveries {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.byEvent[id]; d != nil {
		c := *d
		c.ackedMsgs = maps.Clone(d.ackedMsgs)
		c.failed = slices.Clone(d.failed)
		return c
	}
	return eventDeliveries{}
}

// summary describes the deliveries of ids, for failure messages.
func (r *recorder) summary(ids ...string) string {
	var sb strings.Builder
	for _, id := range ids {
		d := r.get(id)
		fmt.Fprintf(&sb, "\n  event %s: acked %d deliveries of %d messages, failed %d %q", id, d.acked, len(d.ackedMsgs), len(d.failed), d.failed)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.other) > 0 {
		fmt.Fprintf(&sb, "\n  deliveries without a usage batch: %q", r.other)
	}
	return sb.String()
}

// startPipeline builds the process-wide part on first use.
func startPipeline(tb testing.TB) pipeline {
	tb.Helper()
	testenv.Firestore(tb)
	testenv.PubSub(tb)
	pipelineOnce.Do(func() { shared = buildPipeline() })
	if shared.err != nil {
		tb.Fatalf("starting the pipeline: %v", shared.err)
	}
	return shared
}

func buildPipeline() pipeline {
	p := pipeline{project: testenv.ProjectID()}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	// The Functions Framework, as the Cloud Functions runtime runs it:
	// registered at "/", which net/http matches for every path, so the push
	// path can name the topic. The framework's converter reads the topic
	// from that path (projects/<p>/topics/<t>) to build the CloudEvent's
	// source; the function itself does not depend on it.
	if err := funcframework.RegisterCloudEventFunctionContext(ctx, "/", deliveries.wrap(recordusage.Handle)); err != nil {
		p.err = fmt.Errorf("registering RecordUsage: %w", err)
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.err = err
		return p
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	served := make(chan error, 1)
	// StartHostPort cannot be stopped: the server lives until the test
	// binary exits, on a port of its own.
	go func() { served <- funcframework.StartHostPort("127.0.0.1", port) }()
	if err := waitListening(net.JoinHostPort("127.0.0.1", port), served); err != nil {
		p.err = fmt.Errorf("the Functions Framework did not start: %w", err)
		return p
	}
	p.endpoint = "http://127.0.0.1:" + port + "/projects/" + p.project + "/topics/" + usageTopic

	c, err := ps.NewClient(ctx, p.project)
	if err != nil {
		p.err = err
		return p
	}
	defer c.Close()
	for _, topic := range []string{usageTopic, deadLetter} {
		if err := pubsubqueue.EnsureTopic(ctx, c, topic); err != nil {
			p.err = err
			return p
		}
	}
	// The production subscription (infra/pubsub.tf) is a push subscription
	// with a dead-letter policy; EnsureSubscription makes pull ones. The
	// retry backoff is shorter than production's 10 s so that a transient
	// failure does not outlast the test's deadlines.
	_, err = c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:               "projects/" + p.project + "/subscriptions/" + pushSub,
		Topic:              "projects/" + p.project + "/topics/" + usageTopic,
		PushConfig:         &pubsubpb.PushConfig{PushEndpoint: p.endpoint},
		AckDeadlineSeconds: 10,
		RetryPolicy: &pubsubpb.RetryPolicy{
			MinimumBackoff: durationpb.New(500 * time.Millisecond),
			MaximumBackoff: durationpb.New(5 * time.Second),
		},
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     "projects/" + p.project + "/topics/" + deadLetter,
			MaxDeliveryAttempts: 5,
		},
	})
	if err != nil {
		p.err = fmt.Errorf("creating the push subscription: %w", err)
	}
	return p
}

func waitListening(addr string, served <-chan error) error {
	deadline := time.Now().Add(waitFor)
	for {
		select {
		case err := <-served:
			return err
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollEvery)
	}
}

// flow is one test's view: the management, webhook and verify API built
// in-process as `keyplane serve` builds it, on the emulators.
type flow struct {
	tb     testing.TB
	app    *wire.App
	url    string
	secret webhook.Secret
	http   *http.Client
}

func newFlow(tb testing.TB) *flow {
	tb.Helper()
	p := startPipeline(tb)
	secret := webhook.NewSecret()
	for k, v := range map[string]string{
		"GOOGLE_CLOUD_PROJECT":    p.project,
		"KEYPLANE_STORE":          config.StoreFirestore,
		"KEYPLANE_QUEUE":          config.QueuePubSub,
		"KEYPLANE_SECRETS":        config.SecretsFile, // no Secret Manager emulator exists
		"KEYPLANE_DATA":           tb.TempDir(),
		"KEYPLANE_ADMIN_TOKEN":    e2eAdminToken,
		"KEYPLANE_WEBHOOK_SECRET": secret,
		"KEYPLANE_USAGE_TOPIC":    usageTopic,
	} {
		tb.Setenv(k, v)
	}
	cfg, err := config.FromEnv(config.Cloud(), os.Getenv)
	if err != nil {
		tb.Fatalf("config.FromEnv: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app, err := wire.ServeAll(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		tb.Fatalf("wire.ServeAll: %v", err)
	}
	// Keep the key cache fresh as the Verify function does. Not
	// app.Start: that would also count usage from a pull subscription, and
	// this test proves the push path alone.
	polled := make(chan struct{})
	go func() {
		app.Verifier.Run(ctx)
		close(polled)
	}()
	srv := httptest.NewServer(app.Handler)
	tb.Cleanup(func() {
		srv.Close()
		cancel()
		<-polled
		if err := app.Close(); err != nil {
			tb.Errorf("closing the app: %v", err)
		}
	})
	s, err := webhook.ParseSecret(secret)
	if err != nil {
		tb.Fatal(err)
	}
	return &flow{tb: tb, app: app, url: srv.URL, secret: s, http: srv.Client()}
}

// call sends a request with the admin token and decodes the answer into
// out, failing unless the status is want.
func (f *flow) call(method, path string, body any, want int, out any) {
	f.tb.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.tb.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.url+path, r)
	if err != nil {
		f.tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	f.do(req, want, out)
}

func (f *flow) do(req *http.Request, want int, out any) {
	f.tb.Helper()
	res, err := f.http.Do(req)
	if err != nil {
		f.tb.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.tb.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	if res.StatusCode != want {
		f.tb.Fatalf("%s %s: got status %d, want %d; body %s", req.Method, req.URL.Path, res.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.tb.Fatalf("%s %s: decoding %s: %v", req.Method, req.URL.Path, b, err)
		}
	}
}

type createdKey struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

func (f *flow) createKey(req map[string]any) createdKey {
	f.tb.Helper()
	var k createdKey
	f.call("POST", "/v1/keys", req, http.StatusCreated, &k)
	if k.ID == "" || k.Secret == "" {
		f.tb.Fatalf("POST /v1/keys: got id %q and a secret of %d characters", k.ID, len(k.Secret))
	}
	return k
}

// sendUsage posts events to the usage webhook, signed, and checks the 202.
// webhookID is the message id a gateway keeps across its own retries.
func (f *flow) sendUsage(webhookID string, events ...usage.Event) {
	f.tb.Helper()
	body, err := json.Marshal(usage.Batch{Events: events})
	if err != nil {
		f.tb.Fatal(err)
	}
	req, err := http.NewRequest("POST", f.url+"/v1/usage", bytes.NewReader(body))
	if err != nil {
		f.tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	f.secret.SetHeaders(req.Header, webhookID, time.Now(), body)
	var got struct {
		Accepted int `json:"accepted"`
	}
	f.do(req, http.StatusAccepted, &got)
	if got.Accepted != len(events) {
		f.tb.Fatalf("POST /v1/usage: got accepted %d, want %d", got.Accepted, len(events))
	}
}

type limitJSON struct {
	Limit int64  `json:"limit"`
	Used  *int64 `json:"used"`
}

type usageJSON struct {
	Requests int64                `json:"requests"`
	Units    int64                `json:"units"`
	Limits   map[string]limitJSON `json:"limits"`
}

func (f *flow) usage(keyID string) usageJSON {
	f.tb.Helper()
	var u usageJSON
	f.call("GET", "/v1/keys/"+keyID+"/usage?window=day", nil, http.StatusOK, &u)
	return u
}

type decisionJSON struct {
	Code   string               `json:"code"`
	KeyID  string               `json:"key_id"`
	Limits map[string]limitJSON `json:"limits"`
}

func (f *flow) verify(secret string) decisionJSON {
	f.tb.Helper()
	var d decisionJSON
	f.call("POST", "/v1/verify", map[string]string{"key": secret}, http.StatusOK, &d)
	return d
}

// eventually polls cond until it reports done, failing after waitFor with
// what it was waiting for, its last state and explain().
func eventually(tb testing.TB, what string, cond func() (done bool, state string), explain func() string) {
	tb.Helper()
	start := time.Now()
	for {
		done, state := cond()
		if done {
			tb.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > waitFor {
			tb.Fatalf("waiting for %s: not so after %v; last state: %s%s", what, waitFor, state, explain())
		}
		time.Sleep(pollEvery)
	}
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func used(l map[string]limitJSON, name string) string {
	if u := l[name].Used; u != nil {
		return fmt.Sprint(*u)
	}
	return "absent"
}

// TestUsageFlowsEndToEndOnEmulators is issue 4's proof: signed webhook →
// Pub/Sub emulator push subscription → RecordUsage served by the Functions
// Framework → Firestore emulator, with redelivered events counted once, an
// event of an unknown key dead-lettered, and the usage query and verify
// agreeing on the count that exhausts the key's daily quota.
func TestUsageFlowsEndToEndOnEmulators(t *testing.T) {
	f := newFlow(t)
	run := randomHex(12)
	key := f.createKey(map[string]any{
		"owner": e2eOwner, "plan": "free", "name": "e2e " + run,
		"limits": map[string]int64{"requests_per_day": e2eRequestsPerDay},
	})
	if d := f.verify(key.Secret); d.Code != "VALID" || used(d.Limits, "requests_per_day") != "0" {
		t.Fatalf("verify before any usage: got %s with requests_per_day used %s, want VALID with 0", d.Code, used(d.Limits, "requests_per_day"))
	}

	now := time.Now().UTC()
	ev := func(i int) usage.Event {
		return usage.Event{ID: fmt.Sprintf("e2e-%s-%d", run, i), KeyID: key.ID, Time: now, Requests: 1, Units: e2eUnitsPerEvt}
	}
	first := []usage.Event{ev(1), ev(2), ev(3)}
	unknown := usage.Event{ID: "e2e-" + run + "-unknown", KeyID: "key_" + randomHex(16), Time: now, Requests: 1}
	f.sendUsage("msg_"+run+"_1", first...)
	f.sendUsage("msg_"+run+"_1", first...) // the gateway's retry: same events, same ids
	f.sendUsage("msg_"+run+"_2", unknown)
	ids := []string{first[0].ID, unknown.ID}

	// Both messages carrying the first three events have been processed
	// once RecordUsage has acked two distinct Pub/Sub messages holding
	// them (a redelivery of one message by Pub/Sub keeps its id); only then
	// can the count prove the duplicates were dropped.
	eventually(t, "RecordUsage acked the batch and its redelivery", func() (bool, string) {
		d := deliveries.get(first[0].ID)
		return len(d.ackedMsgs) >= 2, fmt.Sprintf("acked %d messages", len(d.ackedMsgs))
	}, func() string { return deliveries.summary(ids...) })
	// The framework built the CloudEvent from the plain push envelope,
	// naming the topic from the push path.
	p := startPipeline(t)
	if d, want := deliveries.get(first[0].ID), "//pubsub.googleapis.com/projects/"+p.project+"/topics/"+usageTopic; d.source != want || d.typ != "google.cloud.pubsub.topic.v1.messagePublished" {
		t.Errorf("RecordUsage received a CloudEvent of source %q and type %q, want %q and google.cloud.pubsub.topic.v1.messagePublished", d.source, d.typ, want)
	}
	u := f.usage(key.ID)
	if u.Requests != 3 || u.Units != 3*e2eUnitsPerEvt {
		t.Fatalf("usage after 3 events sent twice: got requests %d units %d, want 3 and %d (each event counted once)%s",
			u.Requests, u.Units, 3*e2eUnitsPerEvt, deliveries.summary(ids...))
	}

	eventually(t, "the unknown key's event is a dead letter", func() (bool, string) {
		d, ok := findDeadLetter(t, f, unknown.ID)
		if !ok {
			return false, "not recorded"
		}
		if d.Reason != meter.ReasonUnknownKey {
			t.Fatalf("dead letter %s: got reason %q, want %q (detail %q)", unknown.ID, d.Reason, meter.ReasonUnknownKey, d.Detail)
		}
		return true, ""
	}, func() string { return deliveries.summary(ids...) })

	more := []usage.Event{ev(4), ev(5)}
	f.sendUsage("msg_"+run+"_3", more...)
	ids = append(ids, more[0].ID, more[1].ID)
	var last usageJSON
	eventually(t, "usage reaches 5 requests", func() (bool, string) {
		last = f.usage(key.ID)
		return last.Requests >= e2eRequestsPerDay, fmt.Sprintf("requests %d", last.Requests)
	}, func() string { return deliveries.summary(ids...) })
	if last.Requests != e2eRequestsPerDay || last.Units != e2eRequestsPerDay*e2eUnitsPerEvt {
		t.Fatalf("usage after 5 distinct events: got requests %d units %d, want %d and %d%s",
			last.Requests, last.Units, e2eRequestsPerDay, e2eRequestsPerDay*e2eUnitsPerEvt, deliveries.summary(ids...))
	}
	if got := used(last.Limits, "requests_per_day"); got != fmt.Sprint(e2eRequestsPerDay) || last.Limits["requests_per_day"].Limit != e2eRequestsPerDay {
		t.Fatalf("usage query: got requests_per_day %+v used %s, want limit and used %d", last.Limits["requests_per_day"], got, e2eRequestsPerDay)
	}

	// Verify reads quotas from a cache refreshed every 5 s (verify.Quotas),
	// so it agrees after at most that. Until then a poll may also be
	// RATE_LIMITED (the free plan admits 15 requests a minute).
	var d decisionJSON
	eventually(t, "verify answers USAGE_EXCEEDED", func() (bool, string) {
		d = f.verify(key.Secret)
		return d.Code == "USAGE_EXCEEDED", fmt.Sprintf("%s, requests_per_day used %s", d.Code, used(d.Limits, "requests_per_day"))
	}, func() string { return "" })
	if got, want := used(d.Limits, "requests_per_day"), used(last.Limits, "requests_per_day"); got != want || d.KeyID != key.ID {
		t.Errorf("verify and the usage query disagree: verify says key %s used %s, the usage query %s used %s", d.KeyID, got, key.ID, want)
	}
	if u := f.usage(key.ID); u.Requests != e2eRequestsPerDay {
		t.Errorf("usage after verify: got requests %d, want %d", u.Requests, e2eRequestsPerDay)
	}
}

func findDeadLetter(tb testing.TB, f *flow, id string) (ledger.DeadLetter, bool) {
	tb.Helper()
	token := ""
	for {
		page, next, err := f.app.Ledger.ListDeadLetters(context.Background(), 100, token)
		if err != nil {
			tb.Fatalf("ListDeadLetters: %v", err)
		}
		for _, d := range page {
			if d.ID == id {
				return d, true
			}
		}
		if next == "" {
			return ledger.DeadLetter{}, false
		}
		token = next
	}
}

// BenchmarkWebhookToVisibleUsage measures the metering lag on the
// emulators: from the webhook's 202 to the event being visible in GET
// /v1/keys/{id}/usage (polled every 2 ms), one single-event webhook call
// at a time. It reports the median and 99th percentile of that lag, and
// the median of its first part, 202 → RecordUsage invoked by the push
// subscription:
//
//	go test -run '^$' -bench WebhookToVisibleUsage -benchtime=50x ./functions/recordusage/
func BenchmarkWebhookToVisibleUsage(b *testing.B) {
	f := newFlow(b)
	run := randomHex(12)
	key := f.createKey(map[string]any{"owner": e2eOwner, "plan": "pro", "name": "lag " + run})
	var visible, pushed []time.Duration
	// Event 0 warms up: RecordUsage builds its App on its first message
	// (a cold start), which is not the steady-state lag measured.
	for i := range b.N + 1 {
		if i == 1 {
			b.ResetTimer()
		}
		e := usage.Event{ID: fmt.Sprintf("lag-%s-%d", run, i), KeyID: key.ID, Time: time.Now().UTC(), Requests: 1}
		f.sendUsage(fmt.Sprintf("msg_%s_%d", run, i), e)
		accepted := time.Now()
		for {
			if f.usage(key.ID).Requests >= int64(i+1) {
				break
			}
			if time.Since(accepted) > waitFor {
				b.Fatalf("event %d not visible after %v%s", i, waitFor, deliveries.summary(e.ID))
			}
			time.Sleep(2 * time.Millisecond)
		}
		if i > 0 {
			visible = append(visible, time.Since(accepted))
			pushed = append(pushed, deliveries.get(e.ID).firstArrival.Sub(accepted))
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(visible, 50)), "p50-visible-ms")
	b.ReportMetric(ms(percentile(visible, 99)), "p99-visible-ms")
	b.ReportMetric(ms(percentile(pushed, 50)), "p50-pushed-ms")
}

// percentile returns the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (len(s)*p + 99) / 100 // ceil(n·p/100), 1-based
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
