package queuetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/queue"
)

// Env is one backend under test: a topic, a subscription of it with the
// suite's RetryPolicy and a dead-letter topic, and a subscription of that
// dead-letter topic. Every subscription must exist before open returns, so
// that nothing the suite publishes is dropped for want of a subscriber.
type Env struct {
	Topic       queue.Topic
	Sub         queue.Subscription
	DeadLetters queue.Subscription
	// Reopen stops the backend as a process exit would — without
	// acknowledging anything — and returns a new Env on the same durable
	// state, releasing it through t.Cleanup. The suite closes Topic and
	// stops every Receive before calling it. Nil if the backend has no
	// durability of its own to test (Pub/Sub's is the service's).
	Reopen func(t *testing.T) Env
}

// policy is the RetryPolicy the suite gives open: short backoffs, so that a
// message is dead-lettered in well under a second by a backend that honours
// them, and Pub/Sub's smallest MaxAttempts.
var policy = queue.RetryPolicy{
	MinBackoff:  50 * time.Millisecond,
	MaxBackoff:  time.Second,
	MaxAttempts: 5,
}

// timeout bounds every wait for an asynchronous delivery. It is generous:
// reaching it means the delivery is not coming, not that it is slow. In a
// synctest bubble (Options.Synctest) it is the bubble's time, which passes
// only while every goroutine is blocked, so a slow machine cannot reach it.
const timeout = 20 * time.Second

// Options are Run's optional settings; nil means every default.
type Options struct {
	// Synctest runs each case, open and cleanups included, in a
	// testing/synctest bubble, so that the backend's timers (retry
	// backoffs, polls, leases) and the suite's timeouts run on the bubble's
	// clock: a case waits no real time, and nothing depends on how fast the
	// machine is. Only for a backend whose goroutines wait on channels,
	// timers, mutexes and local files; one that waits on a network (the
	// Pub/Sub emulator) would keep the bubble's clock from advancing.
	// Default false: cases run in real time.
	Synctest bool
}

// Run runs the suite. open is called once per case, concurrently, and
// must return a fresh Env whose subscription has the given policy; it
// releases what it made (a client, a database) through t.Cleanup. With
// Options.Synctest, open and the case run inside the case's bubble, and t
// is the bubble's (so t.Run and t.Parallel are not available to open).
// Run closes Env.Topic when the case ends. opt nil means every default.
func Run(t *testing.T, open func(t *testing.T, policy queue.RetryPolicy) Env, opt *Options) {
	if opt == nil {
		opt = &Options{}
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Env)
	}{
		{"PublishedMessagesAreDeliveredAtLeastOnce", testPublishedMessagesAreDeliveredAtLeastOnce},
		{"HandlersRunConcurrently", testHandlersRunConcurrently},
		{"FailedMessageIsRedeliveredWithHigherAttempt", testFailedMessageIsRedeliveredWithHigherAttempt},
		{"MessageFailingEveryAttemptIsDeadLettered", testMessageFailingEveryAttemptIsDeadLettered},
		{"AckedMessageIsNotRedelivered", testAckedMessageIsNotRedelivered},
		{"IdleReceiveReturnsWhenContextEnds", testIdleReceiveReturnsWhenContextEnds},
		{"ReceiveReturnsWhenContextEndsAfterRunningHandlers", testReceiveReturnsWhenContextEndsAfterRunningHandlers},
		{"UnsendableMessageIsInvalid", testUnsendableMessageIsInvalid},
		{"DurableAcrossReopen", testDurableAcrossReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			run := func(t *testing.T) {
				env := open(t, policy)
				closeOnCleanup(t, env.Topic)
				tt.fn(t, env)
			}
			if opt.Synctest {
				synctest.Test(t, run)
			} else {
				run(t)
			}
		})
	}
}

func closeOnCleanup(t *testing.T, topic queue.Topic) {
	t.Cleanup(func() {
		if err := topic.Close(); err != nil {
			t.Errorf("Topic.Close: %v", err)
		}
	})
}

// recorder records the messages a handler sees and lets a test wait until they
// satisfy a condition.
type recorder struct {
	mu      sync.Mutex
	msgs    []queue.Message
	changed chan struct{} // closed and replaced on every add
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

// add records m and returns how many deliveries of m's Data it has seen,
// this one included.
func (r *recorder) add(m queue.Message) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	close(r.changed)
	r.changed = make(chan struct{})
	n := 0
	for _, o := range r.msgs {
		if string(o.Data) == string(m.Data) {
			n++
		}
	}
	return n
}

// all returns a copy of the deliveries so far, in the order they were seen.
func (r *recorder) all() []queue.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// of returns the deliveries of the message whose Data is data.
func (r *recorder) of(data string) []queue.Message {
	var out []queue.Message
	for _, m := range r.all() {
		if string(m.Data) == data {
			out = append(out, m)
		}
	}
	return out
}

// waitFor blocks until cond holds for the deliveries seen, failing t if it
// does not within the timeout.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]queue.Message) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, changed := cond(r.msgs), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("after %v: still waiting for %s; saw %s", timeout, what, describe(r.all()))
		}
	}
}

// seen returns a condition that holds once every data has been delivered.
func seen(data ...string) func([]queue.Message) bool {
	return func(msgs []queue.Message) bool {
		got := map[string]bool{}
		for _, m := range msgs {
			got[string(m.Data)] = true
		}
		for _, d := range data {
			if !got[d] {
				return false
			}
		}
		return true
	}
}

// seenTimes returns a condition that holds once data has been delivered n
// times.
func seenTimes(data string, n int) func([]queue.Message) bool {
	return func(msgs []queue.Message) bool {
		c := 0
		for _, m := range msgs {
			if string(m.Data) == data {
				c++
			}
		}
		return c >= n
	}
}

func describe(msgs []queue.Message) string {
	if len(msgs) > 10 {
		return fmt.Sprintf("%d deliveries", len(msgs))
	}
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q (attempt %d)", m.Data, m.DeliveryAttempt)
	}
	return "[" + b.String() + "]"
}

// receiving runs sub.Receive(h) in the background until the returned stop
// is called or the test ends. stop cancels Receive's context, waits for
// Receive to return and checks that it returned nil; it may be called more
// than once.
func receiving(t *testing.T, sub queue.Subscription, h queue.Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Receive(ctx, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Receive: got %v, want nil after its context ended", err)
				}
			case <-time.After(timeout):
				t.Errorf("Receive did not return %v after its context ended", timeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// ack is a handler that records m and acknowledges it.
func (r *recorder) ack(_ context.Context, m queue.Message) error {
	r.add(m)
	return nil
}

func publish(t *testing.T, topic queue.Topic, msgs ...queue.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := topic.Publish(ctx, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func msg(data string, attrs ...string) queue.Message {
	m := queue.Message{Data: []byte(data), Attributes: map[string]string{}}
	for i := 0; i+1 < len(attrs); i += 2 {
		m.Attributes[attrs[i]] = attrs[i+1]
	}
	return m
}

var errTransient = errors.New("queuetest: transient failure")

func testPublishedMessagesAreDeliveredAtLeastOnce(t *testing.T, env Env) {
	const n, batch = 200, 50
	want := map[string]map[string]string{} // Data → Attributes
	var batches [][]queue.Message
	for i := range n {
		m := msg(fmt.Sprintf("msg-%03d", i), "n", fmt.Sprint(i), "kind", "bulk")
		want[string(m.Data)] = m.Attributes
		if i%batch == 0 {
			batches = append(batches, nil)
		}
		batches[len(batches)-1] = append(batches[len(batches)-1], m)
	}
	start := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(batches))
	for _, b := range batches {
		wg.Go(func() { errc <- env.Topic.Publish(ctx, b...) })
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}

	got := newRecorder()
	stop := receiving(t, env.Sub, got.ack)
	got.waitFor(t, fmt.Sprintf("all %d messages", n), seen(slices.Collect(maps.Keys(want))...))
	stop()

	ids := map[string]string{} // ID → Data
	for _, m := range got.all() {
		attrs, ok := want[string(m.Data)]
		if !ok {
			t.Errorf("delivered %q, which was never published", m.Data)
			continue
		}
		if !maps.Equal(m.Attributes, attrs) {
			t.Errorf("%q: got attributes %v, want %v", m.Data, m.Attributes, attrs)
		}
		if m.DeliveryAttempt < 1 {
			t.Errorf("%q: got DeliveryAttempt %d, want ≥ 1", m.Data, m.DeliveryAttempt)
		}
		if m.ID == "" {
			t.Errorf("%q: got an empty ID", m.Data)
		} else if d, dup := ids[m.ID]; dup && d != string(m.Data) {
			t.Errorf("ID %q was given to both %q and %q", m.ID, d, m.Data)
		}
		ids[m.ID] = string(m.Data)
		// PublishTime comes from the transport's clock; allow for skew.
		if m.PublishTime.Before(start.Add(-time.Minute)) || m.PublishTime.After(time.Now().Add(time.Minute)) {
			t.Errorf("%q: got PublishTime %v, want about %v", m.Data, m.PublishTime, start)
		}
	}
}

// testHandlersRunConcurrently holds the first message's handler until the
// second message's handler has started: a Receive that called handlers one
// at a time would never get there.
func testHandlersRunConcurrently(t *testing.T, env Env) {
	publish(t, env.Topic, msg("first"), msg("second"))
	all := make(chan struct{})
	var calls sync.Map // Data → struct{}: count each message's first call only
	var arrived atomic.Int32
	got := newRecorder()
	stop := receiving(t, env.Sub, func(ctx context.Context, m queue.Message) error {
		if _, again := calls.LoadOrStore(string(m.Data), struct{}{}); !again && arrived.Add(1) == 2 {
			close(all)
		}
		select {
		case <-all:
			got.add(m)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	got.waitFor(t, "both handlers to run at the same time", seen("first", "second"))
	stop()
}

func testFailedMessageIsRedeliveredWithHigherAttempt(t *testing.T, env Env) {
	got := newRecorder()
	stop := receiving(t, env.Sub, func(_ context.Context, m queue.Message) error {
		if got.add(m) == 1 {
			return errTransient
		}
		return nil
	})
	publish(t, env.Topic, msg("retry-me", "k", "v"))
	got.waitFor(t, "a redelivery of the failed message", seenTimes("retry-me", 2))
	stop()

	d := got.of("retry-me")
	first, second := d[0], d[1]
	if first.DeliveryAttempt != 1 {
		t.Errorf("first delivery: got DeliveryAttempt %d, want 1", first.DeliveryAttempt)
	}
	if second.DeliveryAttempt <= first.DeliveryAttempt {
		t.Errorf("redelivery: got DeliveryAttempt %d, want more than the first delivery's %d",
			second.DeliveryAttempt, first.DeliveryAttempt)
	}
	if second.ID != first.ID || !maps.Equal(second.Attributes, first.Attributes) ||
		!second.PublishTime.Equal(first.PublishTime) {
		t.Errorf("redelivery: got ID %q, attributes %v, published %v; want the first delivery's %q, %v, %v",
			second.ID, second.Attributes, second.PublishTime, first.ID, first.Attributes, first.PublishTime)
	}
}

func testMessageFailingEveryAttemptIsDeadLettered(t *testing.T, env Env) {
	main, dead := newRecorder(), newRecorder()
	receiving(t, env.Sub, func(_ context.Context, m queue.Message) error {
		main.add(m)
		if string(m.Data) == "poison" {
			return errTransient
		}
		return nil
	})
	receiving(t, env.DeadLetters, dead.ack)
	publish(t, env.Topic, msg("healthy-1"), msg("poison", "reason", "bad"), msg("healthy-2"))
	dead.waitFor(t, "the poison message on the dead-letter topic", seen("poison"))
	// Anything delivered after the dead-lettering would have come before a
	// message published after it.
	publish(t, env.Topic, msg("sentinel"))
	main.waitFor(t, "the sentinel", seen("sentinel", "healthy-1", "healthy-2"))

	var attempts []int
	for _, m := range main.of("poison") {
		attempts = append(attempts, m.DeliveryAttempt)
	}
	want := make([]int, policy.MaxAttempts)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(attempts, want) {
		t.Errorf("poison message: got delivery attempts %v, want %v, then dead-lettering", attempts, want)
	}
	for _, m := range dead.all() {
		if string(m.Data) != "poison" {
			t.Errorf("dead-letter topic: got %q, want only the poison message", m.Data)
			continue
		}
		if m.Attributes["reason"] != "bad" {
			t.Errorf("dead-lettered message: got attributes %v, want the original reason=bad among them", m.Attributes)
		}
	}
	for _, h := range []string{"healthy-1", "healthy-2"} {
		if d := main.of(h); d[0].DeliveryAttempt != 1 {
			t.Errorf("%s: got DeliveryAttempt %d, want 1: a poison message must not affect others", h, d[0].DeliveryAttempt)
		}
	}
}

// testAckedMessageIsNotRedelivered acknowledges one message while another
// fails twice and then succeeds, and judges after a sentinel published
// later has been handled. The window spans two retry backoffs, in which a
// backend that treated an ack as a failure, or forgot a message's state
// between deliveries, would redeliver it. A lost ack shows only after a
// lease or ack deadline expires, far beyond any test's patience; the
// embedded queue tests that with a fake clock. Pub/Sub itself may, rarely,
// redeliver an acknowledged message; its emulator does not, so the suite is
// strict.
func testAckedMessageIsNotRedelivered(t *testing.T, env Env) {
	got := newRecorder()
	receiving(t, env.Sub, func(_ context.Context, m queue.Message) error {
		if n := got.add(m); string(m.Data) == "flaky" && n < 3 {
			return errTransient
		}
		return nil
	})
	publish(t, env.Topic, msg("ack-me"), msg("flaky"))
	got.waitFor(t, "the flaky message to succeed on its third delivery", seenTimes("flaky", 3))
	publish(t, env.Topic, msg("sentinel"))
	got.waitFor(t, "the sentinel", seen("sentinel"))

	if n := len(got.of("ack-me")); n != 1 {
		t.Errorf("acknowledged message: delivered %d times, want 1", n)
	}
	if n := len(got.of("flaky")); n != 3 {
		t.Errorf("message acknowledged on its third delivery: delivered %d times, want 3", n)
	}
}

func testIdleReceiveReturnsWhenContextEnds(t *testing.T, env Env) {
	stop := receiving(t, env.DeadLetters, func(context.Context, queue.Message) error { return nil })
	stop() // fails t unless Receive returns nil
}

func testReceiveReturnsWhenContextEndsAfterRunningHandlers(t *testing.T, env Env) {
	started := make(chan struct{})
	var once sync.Once
	handlerCtxEnded := make(chan struct{}, 1)
	stop := receiving(t, env.Sub, func(ctx context.Context, m queue.Message) error {
		once.Do(func() { close(started) })
		<-ctx.Done()
		select {
		case handlerCtxEnded <- struct{}{}:
		default:
		}
		return ctx.Err()
	})
	publish(t, env.Topic, msg("slow"))
	select {
	case <-started:
	case <-time.After(timeout):
		t.Fatalf("the handler was not called within %v", timeout)
	}
	stop() // fails t unless Receive returns nil
	select {
	case <-handlerCtxEnded:
	default:
		t.Errorf("Receive returned before the running handler's context ended and it returned")
	}
}

// testUnsendableMessageIsInvalid holds both adapters to Pub/Sub's
// documented limits on a message, which the Pub/Sub emulator does not
// enforce, and checks that a message at every limit goes through intact.
func testUnsendableMessageIsInvalid(t *testing.T, env Env) {
	withAttrs := func(n, keyLen, valueLen int) map[string]string {
		a := map[string]string{}
		for i := range n {
			k := fmt.Sprintf("k%03d", i)
			a[k+strings.Repeat("k", max(keyLen-len(k), 0))] = strings.Repeat("v", valueLen)
		}
		return a
	}
	tests := []struct {
		name string
		m    queue.Message
	}{
		{"Empty", queue.Message{Attributes: map[string]string{}}},
		{"DataOver10MB", queue.Message{Data: make([]byte, 10_000_001)}},
		{"AttributesPushOver10MB", queue.Message{Data: make([]byte, 9_999_999), Attributes: map[string]string{"k": "v"}}},
		{"Over100Attributes", queue.Message{Data: []byte("m"), Attributes: withAttrs(101, 4, 1)}},
		{"EmptyAttributeKey", queue.Message{Data: []byte("m"), Attributes: map[string]string{"": "v"}}},
		{"AttributeKeyOver256Bytes", queue.Message{Data: []byte("m"), Attributes: withAttrs(1, 257, 1)}},
		{"ReservedAttributeKey", queue.Message{Data: []byte("m"), Attributes: map[string]string{"googclient_x": "v"}}},
		{"AttributeValueOver1024Bytes", queue.Message{Data: []byte("m"), Attributes: withAttrs(1, 4, 1025)}},
	}
	// Not subtests: a case in a synctest bubble cannot start any.
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		if err := env.Topic.Publish(ctx, msg("valid"), tt.m); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Publish: got %v (kind %v), want an Invalid error", tt.name, err, errs.KindOf(err))
		}
		cancel()
	}

	got := newRecorder()
	receiving(t, env.Sub, got.ack)
	atLimits := queue.Message{Data: []byte("at-limits"), Attributes: withAttrs(100, 256, 1024)}
	attrsOnly := queue.Message{Attributes: map[string]string{"only": "attributes"}}
	publish(t, env.Topic, atLimits, attrsOnly)
	got.waitFor(t, "the messages at the limits", func(msgs []queue.Message) bool {
		return seen("at-limits")(msgs) && slices.ContainsFunc(msgs, func(m queue.Message) bool { return len(m.Data) == 0 })
	})
	for _, m := range got.all() {
		want := attrsOnly.Attributes
		if len(m.Data) > 0 {
			want = atLimits.Attributes
		}
		if !maps.Equal(m.Attributes, want) {
			t.Errorf("%q: got %d attributes, want %d, unchanged", m.Data, len(m.Attributes), len(want))
		}
	}
}

func testDurableAcrossReopen(t *testing.T, env Env) {
	if env.Reopen == nil {
		t.Skip("the backend has no durable state of its own to reopen")
	}
	nacked := newRecorder()
	stop := receiving(t, env.Sub, func(_ context.Context, m queue.Message) error {
		nacked.add(m)
		return errTransient
	})
	publish(t, env.Topic, msg("nacked", "k", "v"))
	nacked.waitFor(t, "the message to fail once", seen("nacked"))
	stop() // Receive returns after the handler's failure is recorded

	var want []string
	for i := range 10 {
		d := fmt.Sprintf("unreceived-%d", i)
		want = append(want, d)
		publish(t, env.Topic, msg(d, "i", fmt.Sprint(i)))
	}
	if err := env.Topic.Close(); err != nil {
		t.Fatalf("Topic.Close: %v", err)
	}

	env = env.Reopen(t)
	closeOnCleanup(t, env.Topic)
	got := newRecorder()
	stop = receiving(t, env.Sub, got.ack)
	got.waitFor(t, "every message published before the restart", seen(append(want, "nacked")...))
	stop()
	for i, d := range want {
		if m := got.of(d)[0]; m.Attributes["i"] != fmt.Sprint(i) {
			t.Errorf("%s after reopen: got attributes %v, want i=%d", d, m.Attributes, i)
		}
	}
	if m := got.of("nacked")[0]; m.DeliveryAttempt != 2 || m.Attributes["k"] != "v" {
		t.Errorf("message failed before the restart: got DeliveryAttempt %d, attributes %v; want 2, k=v",
			m.DeliveryAttempt, m.Attributes)
	}
}
