package stripeexport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/stripeexport/sqlitesent"
	"github.com/keyplane/keyplane/internal/usage"
)

// keys is a key store of fixed keys.
type keys map[string]string // key id → owner

func (k keys) GetKey(_ context.Context, id string) (*store.Key, error) {
	o, ok := k[id]
	if !ok {
		return nil, errs.E(errs.NotFound, "no key %s", id)
	}
	return &store.Key{ID: id, Owner: o, Plan: "free"}, nil
}

func (k keys) GetOwner(_ context.Context, id string) (*store.Owner, error) {
	return nil, errs.E(errs.NotFound, "no owner %s", id)
}

func (k keys) MarkUsed(context.Context, map[string]time.Time) error { return nil }

const (
	keyA     = "key_AAAAAAAAAAAAAAAA" // owner acme, a Stripe customer
	keyB     = "key_BBBBBBBBBBBBBBBB" // owner nobill, none
	keyC     = "key_CCCCCCCCCCCCCCCC" // no owner
	keyGhost = "key_GGGGGGGGGGGGGGGG" // unknown
)

var testKeys = keys{keyA: "acme", keyB: "nobill", keyC: ""}

type env struct {
	stripe   *fakeStripe
	ledger   *sqliteledger.Ledger
	clk      *clock.Fake
	sentPath string
	sent     *sqlitesent.Sent // the durable record every exporter of env shares
	x        *Exporter
}

func newEnv(t *testing.T, meters string) *env {
	t.Helper()
	dir := t.TempDir()
	l, err := sqliteledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	clk := clock.NewFake(time.Now())
	f := newFakeStripe(t)
	f.customers["acme"] = "cus_acme"
	f.now = clk.Now // Stripe's 24 h dedupe runs on the test's clock
	e := &env{stripe: f, ledger: l, clk: clk, sentPath: filepath.Join(dir, "stripe-sent.db")}
	e.openSent(t)
	e.x = e.exporter(t, meters)
	return e
}

// openSent opens the durable record of sent meter events from its file.
func (e *env) openSent(t *testing.T) {
	t.Helper()
	s, err := sqlitesent.OpenWith(e.sentPath, sqlitesent.Options{Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.sent = s
}

// restart is a new process: the durable record closed and opened again
// from its file, and a new exporter on it (nothing cached).
func (e *env) restart(t *testing.T, meters string) *Exporter {
	t.Helper()
	if err := e.sent.Close(); err != nil {
		t.Fatal(err)
	}
	e.openSent(t)
	return e.exporter(t, meters)
}

// exporter returns a new exporter (another instance: nothing cached) on
// env's durable record.
func (e *env) exporter(t *testing.T, meters string) *Exporter {
	return e.exporterOn(t, meters, e.sent)
}

func (e *env) exporterOn(t *testing.T, meters string, sent Sent) *Exporter {
	m, err := ParseMeters(meters)
	if err != nil {
		t.Fatal(err)
	}
	x := New(e.stripe.client(), testKeys, e.ledger, sent, m, e.clk, slog.New(slog.NewTextHandler(io.Discard, nil)))
	x.Retry = Retry{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	return x
}

// recorded returns the ids among ids that env's durable record has.
func (e *env) recorded(t *testing.T, ids ...string) map[string]bool {
	t.Helper()
	got, err := e.sent.Sent(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func batch(t *testing.T, evs ...usage.Event) queue.Message {
	data, err := json.Marshal(usage.Batch{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	return queue.Message{ID: fmt.Sprint(time.Now().UnixNano()), Data: data, Attributes: map[string]string{"type": "usage.batch"}}
}

func (e *env) events(n int, key string) []usage.Event {
	out := make([]usage.Event, n)
	for i := range out {
		out[i] = usage.Event{ID: fmt.Sprintf("ev-%s-%d", key[4:8], i), KeyID: key, Time: e.clk.Now().Add(-time.Minute).Truncate(time.Second),
			Requests: 1, Units: int64(10 + i)}
	}
	return out
}

func TestParseMeters(t *testing.T) {
	m, err := ParseMeters(" requests=api_requests, units=api_tokens,units@search=search_tokens ")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ metric, feature, want string }{
		{"requests", "", "api_requests"}, {"requests", "search", "api_requests"},
		{"units", "", "api_tokens"}, {"units", "search", "search_tokens"}, {"bytes", "", ""},
	} {
		if got, _ := m.EventName(c.metric, c.feature); got != c.want {
			t.Errorf("EventName(%s, %s) = %q, want %q", c.metric, c.feature, got, c.want)
		}
	}
	if m.String() != "requests=api_requests,units=api_tokens,units@search=search_tokens" {
		t.Errorf("String() = %s", m)
	}
	if m, err := ParseMeters(""); err != nil || len(m) != 0 {
		t.Errorf("ParseMeters(\"\") = %v, %v", m, err)
	}
	for _, bad := range []string{"requests", "calls=x", "units@=x", "units@bad feature=x", "units=", "units=a b",
		"units=a,units=b", "units=" + strings.Repeat("x", 101)} {
		if _, err := ParseMeters(bad); !errs.Is(err, errs.Invalid) {
			t.Errorf("ParseMeters(%q) = %v, want Invalid", bad, err)
		}
	}
}

func TestIdentifierIsStableAndFitsStripe(t *testing.T) {
	if got := Identifier("ev1", "units", false); got != "ev1" {
		t.Errorf("one meter event: %s", got)
	}
	if got := Identifier("ev1", "units", true); got != "ev1:units" {
		t.Errorf("several: %s", got)
	}
	long := strings.Repeat("x", 128)
	a, b := Identifier(long, "units", true), Identifier(long, "requests", true)
	if len(a) > 100 || a == b || a != Identifier(long, "units", true) || !strings.HasPrefix(a, "kp_") {
		t.Errorf("long ids: %s, %s", a, b)
	}
}

func TestBatchIsExported(t *testing.T) {
	e := newEnv(t, "requests=api_requests,units=api_tokens")
	evs := e.events(20, keyA)
	evs[3].Units = 0 // a zero is not sent
	if err := e.x.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatal(err)
	}
	sent := e.stripe.sent()
	if len(sent) != 39 {
		t.Fatalf("Stripe has %d meter events, want 39", len(sent))
	}
	for _, ev := range evs {
		r, u := sent[ev.ID+":requests"], sent[ev.ID+":units"]
		if r.EventName != "api_requests" || r.Value != 1 || r.Customer != "cus_acme" || r.Timestamp != ev.Time.Unix() {
			t.Errorf("%s: requests sent as %v", ev.ID, r)
		}
		if ev.Units == 0 {
			if _, ok := sent[ev.ID+":units"]; ok {
				t.Errorf("%s: zero units were sent", ev.ID)
			}
			continue
		}
		if u.EventName != "api_tokens" || u.Value != ev.Units {
			t.Errorf("%s: units sent as %v", ev.ID, u)
		}
	}
	if c := e.x.Counts(); c.Sent != 39 || c.DeadLetters != 0 || c.Retries != 0 {
		t.Errorf("counts %+v", c)
	}
}

func TestOneMeterSendsTheEventID(t *testing.T) {
	e := newEnv(t, "units=api_tokens,units@search=search_tokens")
	evs := e.events(2, keyA)
	evs[1].Feature = "search"
	if err := e.x.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatal(err)
	}
	sent := e.stripe.sent()
	if sent[evs[0].ID].EventName != "api_tokens" || sent[evs[1].ID].EventName != "search_tokens" || len(sent) != 2 {
		t.Errorf("sent %v", sent)
	}
}

func TestStripeDownThenRecoversSendsEachEventOnce(t *testing.T) {
	e := newEnv(t, "requests=api_requests,units=api_tokens")
	e.x.Concurrency = 2
	evs := e.events(10, keyA)
	m := batch(t, evs...)
	e.stripe.set(func(f *fakeStripe) { f.down = 1 << 30 })
	err := e.x.Handle(context.Background(), m)
	if !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Stripe down: Handle = %v, want Unavailable (redeliver)", err)
	}
	if len(e.stripe.sent()) != 0 || e.x.Counts().Retries == 0 {
		t.Fatalf("Stripe down: sent %d, counts %+v", len(e.stripe.sent()), e.x.Counts())
	}
	// Stripe comes back partway through a redelivery: some requests of
	// it fail, the rest go through.
	e.stripe.set(func(f *fakeStripe) { f.down = 7 })
	e.x.Retry.Attempts = 1
	if err := e.x.Handle(context.Background(), m); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("partly down: Handle = %v, want Unavailable", err)
	}
	partial := len(e.stripe.sent())
	if partial != 20-7 {
		t.Fatalf("partly down: Stripe has %d, want 13", partial)
	}
	// The next redelivery sends only what is missing.
	before := e.stripe.requests
	if err := e.x.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requests - before; got != 7 {
		t.Errorf("recovery sent %d requests, want the 7 missing", got)
	}
	// Another instance handling the same message again finds every
	// event in the durable record and sends nothing.
	before = e.stripe.requestCount()
	other := e.exporter(t, "requests=api_requests,units=api_tokens")
	if err := other.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requestCount() - before; got != 0 || other.Counts().Already != 20 {
		t.Errorf("another instance made %d requests, counts %+v; want none, 20 already", got, other.Counts())
	}
	if twice := e.stripe.billedTwice(); len(twice) != 0 {
		t.Errorf("billed twice: %v", twice)
	}
	sent := e.stripe.sent()
	if len(sent) != 20 {
		t.Errorf("Stripe has %d meter events, want 20", len(sent))
	}
	for _, ev := range evs {
		if sent[ev.ID+":units"].Value != ev.Units {
			t.Errorf("%s: units %v", ev.ID, sent[ev.ID+":units"])
		}
	}
}

func TestRejectedEventIsAVisibleDeadLetter(t *testing.T) {
	e := newEnv(t, "units=api_tokens")
	e.stripe.set(func(f *fakeStripe) { f.reject["cus_acme"] = true })
	evs := e.events(2, keyA)
	if err := e.x.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatalf("a refusal must not be redelivered: %v", err)
	}
	dls, _, err := e.ledger.ListDeadLetters(context.Background(), 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("dead letters %+v, want 2", dls)
	}
	for _, d := range dls {
		if d.Reason != ReasonRejected || !strings.HasPrefix(d.ID, "stripe:ev-") || !strings.Contains(d.Detail, "No such customer") ||
			!strings.Contains(string(d.Payload), `"stripe_customer_id":"cus_acme"`) {
			t.Errorf("dead letter %+v", d)
		}
		if strings.Contains(d.Detail, fakeKey) {
			t.Errorf("the API key is in a dead letter: %s", d.Detail)
		}
	}
	if c := e.x.Counts(); c.DeadLetters != 2 || c.Retries != 0 || c.Sent != 0 {
		t.Errorf("counts %+v (a 400 is not retried)", c)
	}
}

func TestOwnersWithoutACustomerAreSkipped(t *testing.T) {
	e := newEnv(t, "units=api_tokens")
	evs := append(e.events(1, keyA), e.events(2, keyB)...)
	evs = append(evs, e.events(1, keyC)...)
	evs = append(evs, e.events(1, keyGhost)...)
	if err := e.x.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatal(err)
	}
	if sent := e.stripe.sent(); len(sent) != 1 || sent[evs[0].ID].Customer != "cus_acme" {
		t.Errorf("sent %v", sent)
	}
	if c := e.x.Counts(); c.Skipped != 3 || c.Sent != 1 {
		t.Errorf("counts %+v, want 3 skipped (2 of nobill, 1 without owner)", c)
	}
	// The customer appears: after CustomerTTL, nobill's new usage goes out.
	e.stripe.set(func(f *fakeStripe) { f.customers["nobill"] = "cus_nobill" })
	e.clk.Advance(CustomerTTL)
	ev := e.events(1, keyB)[0]
	ev.ID = "ev-later"
	if err := e.x.Handle(context.Background(), batch(t, ev)); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.sent()["ev-later"].Customer; got != "cus_nobill" {
		t.Errorf("after the customer appeared: %q", got)
	}
}

func TestReplayedUsageIsNotSentTwice(t *testing.T) {
	e := newEnv(t, "requests=api_requests")
	evs := e.events(5, keyA)
	if err := e.x.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatal(err)
	}
	// The gateway sends the same events again, in a new message.
	before := e.stripe.requests
	if err := e.x.Handle(context.Background(), batch(t, evs[1:3]...)); err != nil {
		t.Fatal(err)
	}
	if e.stripe.requests != before {
		t.Errorf("a replay this instance had sent made %d requests", e.stripe.requests-before)
	}
	if c := e.x.Counts(); c.Already != 2 || c.Sent != 5 {
		t.Errorf("counts %+v", c)
	}
	// Another instance finds them in the durable record.
	other := e.exporter(t, "requests=api_requests")
	if err := other.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatal(err)
	}
	if e.stripe.requests != before {
		t.Errorf("a replay another instance had sent made %d requests", e.stripe.requests-before)
	}
	if n := len(e.stripe.sent()); n != 5 {
		t.Errorf("Stripe has %d meter events, want 5", n)
	}
}

func TestOtherMessagesAreAcked(t *testing.T) {
	e := newEnv(t, "requests=api_requests")
	ctx := context.Background()
	for _, m := range []queue.Message{
		{ID: "1", Data: []byte(`{"day":"2030-01-01T00:00:00Z","ips":{}}`), Attributes: map[string]string{"type": "client_ips"}},
		{ID: "2", Data: []byte(`{"uses":{}}`), Attributes: map[string]string{"type": "key_uses"}},
		{ID: "3", Data: []byte(`not json`)},
		batch(t, usage.Event{ID: "bad", KeyID: keyA}), // no time: invalid
	} {
		if err := e.x.Handle(ctx, m); err != nil {
			t.Errorf("message %s: %v", m.ID, err)
		}
	}
	if e.stripe.requests != 0 {
		t.Errorf("%d requests", e.stripe.requests)
	}
}

func TestTransportDeadLetterIsRecorded(t *testing.T) {
	e := newEnv(t, "requests=api_requests")
	m := batch(t, e.events(1, keyA)...)
	m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = "20"
	if err := e.x.HandleDeadLetter(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	dls, _, err := e.ledger.ListDeadLetters(context.Background(), 10, "")
	if err != nil || len(dls) != 1 {
		t.Fatalf("%v %v", dls, err)
	}
	if d := dls[0]; d.ID != "stripe:message:"+m.ID || d.Reason != ReasonDeliveryFailed || string(d.Payload) != string(m.Data) || !strings.Contains(d.Detail, "20 deliveries") {
		t.Errorf("dead letter %+v", d)
	}
}

var _ ledger.Ledger = (*sqliteledger.Ledger)(nil)

func TestOwnerWithSeveralCustomersIsADeadLetter(t *testing.T) {
	e := newEnv(t, "units=api_tokens")
	e.stripe.set(func(f *fakeStripe) { f.customers["acme"] = "cus_1,cus_2" })
	evs := e.events(3, keyA)
	if err := e.x.Handle(context.Background(), batch(t, evs...)); err != nil {
		t.Fatal(err)
	}
	dls, _, err := e.ledger.ListDeadLetters(context.Background(), 10, "")
	if err != nil || len(dls) != 3 {
		t.Fatalf("%+v %v", dls, err)
	}
	if d := dls[0]; d.Reason != ReasonAmbiguousCustomer || !strings.Contains(d.Detail, "cus_1 and cus_2") {
		t.Errorf("dead letter %+v", d)
	}
	if len(e.stripe.sent()) != 0 {
		t.Errorf("sent %v", e.stripe.sent())
	}
}

func TestWrongAPIKeyIsARejection(t *testing.T) {
	e := newEnv(t, "units=api_tokens")
	m, _ := ParseMeters("units=api_tokens")
	x := New(NewClient("sk_test_wrong", e.stripe.srv.URL, nil), testKeys, e.ledger, e.sent, m, e.clk, slog.New(slog.DiscardHandler))
	x.Retry = e.x.Retry
	if err := x.Handle(context.Background(), batch(t, e.events(1, keyA)...)); err != nil {
		t.Fatal(err)
	}
	dls, _, err := e.ledger.ListDeadLetters(context.Background(), 10, "")
	if err != nil || len(dls) != 1 {
		t.Fatalf("%+v %v", dls, err)
	}
	if d := dls[0]; d.Reason != ReasonRejected || !strings.Contains(d.Detail, "401") || strings.Contains(d.Detail, "sk_test_wrong") {
		t.Errorf("dead letter %+v", d)
	}
	if c := x.Counts(); c.Retries != 0 {
		t.Errorf("a 401 was retried: %+v", c)
	}
}
