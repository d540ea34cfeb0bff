package stripeexport

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

// TestRedeliveryAfterRestartPastStripesDedupeIsNotBilledAgain: an event
// exported, then the process restarted (nothing cached) and the same
// message delivered again more than 24 h later, when Stripe would take
// the identifier as a new event, is not sent again: the durable record
// has it.
func TestRedeliveryAfterRestartPastStripesDedupeIsNotBilledAgain(t *testing.T) {
	const meters = "requests=api_requests,units=api_tokens"
	e := newEnv(t, meters)
	evs := e.events(10, keyA)
	m := batch(t, evs...)
	if err := e.x.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n := len(e.stripe.sent()); n != 20 {
		t.Fatalf("first export: Stripe has %d meter events, want 20", n)
	}
	e.clk.Advance(25 * time.Hour)
	x := e.restart(t, meters)
	before := e.stripe.requestCount()
	if err := x.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requestCount() - before; got != 0 {
		t.Errorf("the redelivery after a restart and 25 h made %d requests, want none", got)
	}
	if twice := e.stripe.billedTwice(); len(twice) != 0 {
		t.Errorf("billed twice: %v", twice)
	}
	if c := x.Counts(); c.Already != 20 || c.Sent != 0 {
		t.Errorf("counts after the redelivery %+v, want 20 already, none sent", c)
	}
}

// TestFailedSendDoesNotMarkTheID: a meter event Stripe did not take (down,
// or refused) is not in the durable record, so that a later delivery
// sends it; one it took is, even when others of the message failed.
func TestFailedSendDoesNotMarkTheID(t *testing.T) {
	const meters = "units=api_tokens"
	e := newEnv(t, meters)
	evs := e.events(4, keyA)
	ids := []string{evs[0].ID, evs[1].ID, evs[2].ID, evs[3].ID}
	m := batch(t, evs...)
	e.x.Concurrency = 1 // the events go in order, so the first one fails
	e.x.Retry.Attempts = 1
	e.stripe.set(func(f *fakeStripe) { f.down = 1 })
	if err := e.x.Handle(context.Background(), m); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Stripe down for one request: Handle = %v, want Unavailable (redeliver)", err)
	}
	got := e.recorded(t, ids...)
	if got[ids[0]] || !got[ids[1]] || !got[ids[2]] || !got[ids[3]] || len(got) != 3 {
		t.Fatalf("after the first send failed: recorded %v, want the three Stripe took", got)
	}
	// The redelivery, on a new instance a day later, sends the one that
	// failed and only it.
	e.clk.Advance(25 * time.Hour)
	before := e.stripe.requestCount()
	x := e.restart(t, meters)
	if err := x.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requestCount() - before; got != 1 {
		t.Errorf("the redelivery made %d requests, want the 1 that failed", got)
	}
	if len(e.recorded(t, ids...)) != 4 {
		t.Errorf("after the redelivery: recorded %v, want all 4", e.recorded(t, ids...))
	}

	// A refusal (a 400) is a dead letter, not a record: once the cause
	// is fixed, a replay sends it.
	e.stripe.set(func(f *fakeStripe) { f.reject["cus_acme"] = true })
	later := e.events(1, keyA)
	later[0].ID = "ev-refused"
	if err := x.Handle(context.Background(), batch(t, later...)); err != nil {
		t.Fatalf("a refusal is acked: %v", err)
	}
	if got := e.recorded(t, "ev-refused"); len(got) != 0 {
		t.Errorf("a refused meter event is recorded as sent: %v", got)
	}
	e.stripe.set(func(f *fakeStripe) { f.reject["cus_acme"] = false })
	if err := x.Handle(context.Background(), batch(t, later...)); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.stripe.sent()["ev-refused"]; !ok {
		t.Errorf("the replay after the fix was not sent")
	}
}

// breakingSent is a durable record whose MarkSent fails while broken: a
// process that dies, or whose database fails, after Stripe took a meter
// event and before it was recorded.
type breakingSent struct {
	inner  Sent
	mu     sync.Mutex
	broken bool
}

func (b *breakingSent) Sent(ctx context.Context, ids []string) (map[string]bool, error) {
	return b.inner.Sent(ctx, ids)
}

func (b *breakingSent) MarkSent(ctx context.Context, ids []string, retention time.Duration) error {
	b.mu.Lock()
	broken := b.broken
	b.mu.Unlock()
	if broken {
		return errs.E(errs.Unavailable, "breakingSent: the record is broken")
	}
	return b.inner.MarkSent(ctx, ids, retention)
}

func (b *breakingSent) set(broken bool) {
	b.mu.Lock()
	b.broken = broken
	b.mu.Unlock()
}

// TestUnrecordedSendIsAbsorbedByStripesDedupe: when Stripe took meter
// events but recording them failed, the message is delivered again (Handle
// fails), and the redelivery, which comes within the queue's retry policy
// (hours), resends them inside Stripe's 24-hour identifier dedupe: Stripe
// bills them once, and this time they are recorded, so that a redelivery
// after Stripe forgot them is not billed either.
func TestUnrecordedSendIsAbsorbedByStripesDedupe(t *testing.T) {
	const meters = "requests=api_requests"
	e := newEnv(t, meters)
	rec := &breakingSent{inner: e.sent, broken: true}
	x := e.exporterOn(t, meters, rec)
	evs := e.events(3, keyA)
	ids := []string{evs[0].ID, evs[1].ID, evs[2].ID}
	m := batch(t, evs...)
	if err := x.Handle(context.Background(), m); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("with the record broken: Handle = %v, want Unavailable (redeliver)", err)
	}
	if n := len(e.stripe.sent()); n != 3 {
		t.Fatalf("Stripe has %d meter events, want 3", n)
	}
	if got := e.recorded(t, ids...); len(got) != 0 {
		t.Fatalf("recorded %v although MarkSent failed", got)
	}
	// The same instance gets the redelivery an hour later: what it did
	// not record it has not cached either, so it sends and records them.
	rec.set(false)
	e.clk.Advance(time.Hour)
	before := e.stripe.requestCount()
	if err := x.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requestCount() - before; got != 3 {
		t.Errorf("the redelivery made %d requests, want the 3 unrecorded", got)
	}
	if got := e.recorded(t, ids...); len(got) != 3 {
		t.Errorf("after the redelivery: recorded %v, want all 3", got)
	}
	// A delivery after Stripe's dedupe has passed, on a new process.
	e.clk.Advance(25 * time.Hour)
	before = e.stripe.requestCount()
	if err := e.restart(t, meters).Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requestCount() - before; got != 0 {
		t.Errorf("a delivery 26 h later made %d requests, want none", got)
	}
	if twice := e.stripe.billedTwice(); len(twice) != 0 {
		t.Errorf("billed twice: %v", twice)
	}
}

// TestEventTwiceInAMessageIsSentOnce: a message that carries one event id
// twice (a publisher that does not validate like the webhook) sends it
// once.
func TestEventTwiceInAMessageIsSentOnce(t *testing.T) {
	e := newEnv(t, "requests=api_requests")
	evs := e.events(2, keyA)
	if err := e.x.Handle(context.Background(), batch(t, evs[0], evs[1], evs[0])); err != nil {
		t.Fatal(err)
	}
	if got := e.stripe.requestCount(); got != 2 {
		t.Errorf("%d requests, want 2", got)
	}
	if c := e.x.Counts(); c.Sent != 2 || c.Already != 1 {
		t.Errorf("counts %+v, want 2 sent, 1 already", c)
	}
	if got := e.recorded(t, evs[0].ID, evs[1].ID); !slices.Equal([]bool{got[evs[0].ID], got[evs[1].ID]}, []bool{true, true}) {
		t.Errorf("recorded %v", got)
	}
}

// cancelAfterSend is a Stripe that takes each meter event and then cancels
// the delivery's context: the push deadline or a shutdown arriving just
// after Stripe answered.
type cancelAfterSend struct {
	Stripe
	cancel context.CancelFunc
}

func (c cancelAfterSend) Send(ctx context.Context, ev MeterEvent) error {
	err := c.Stripe.Send(ctx, ev)
	c.cancel()
	return err
}

// TestAcceptedEventIsRecordedAfterTheDeliveryIsCancelled: a meter event
// Stripe took is recorded even when the delivery's context ends right
// after, so that the window Stripe's 24-hour dedupe must cover does not
// open on every shutdown.
func TestAcceptedEventIsRecordedAfterTheDeliveryIsCancelled(t *testing.T) {
	e := newEnv(t, "requests=api_requests")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, _ := ParseMeters("requests=api_requests")
	x := New(cancelAfterSend{Stripe: e.stripe.client(), cancel: cancel}, testKeys, e.ledger, e.sent, m, e.clk, e.x.log)
	evs := e.events(1, keyA)
	if err := x.Handle(ctx, batch(t, evs...)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if got := e.recorded(t, evs[0].ID); !got[evs[0].ID] {
		t.Errorf("the meter event Stripe took before the cancellation is not recorded")
	}
}
