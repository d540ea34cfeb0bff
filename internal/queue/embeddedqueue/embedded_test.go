package embeddedqueue

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/queuetest"
)

// wait bounds every wait for something another goroutine does; in a
// synctest bubble it is the bubble's time, which passes only while every
// goroutine is blocked.
const wait = 20 * time.Second

var base = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

var testPolicy = queue.RetryPolicy{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, MaxAttempts: 5}

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, policy queue.RetryPolicy) queuetest.Env {
		path := filepath.Join(t.TempDir(), "queue.db")
		log := failOnErrorLogs(t)
		var open func(t *testing.T) queuetest.Env
		open = func(t *testing.T) queuetest.Env {
			q := openQueue(t, path, Options{Logger: log})
			env := queuetest.Env{
				Topic:       q.Topic("events"),
				Sub:         declare(t, q, "events", "events-sub", policy, "events-dead"),
				DeadLetters: declare(t, q, "events-dead", "events-dead-sub", queue.RetryPolicy{}, ""),
			}
			env.Reopen = func(t *testing.T) queuetest.Env {
				if err := q.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return open(t)
			}
			return env
		}
		return open(t)
	}, &queuetest.Options{Synctest: true})
}

func TestBackoffDoublesFromMinToMaxWithBoundedJitter(t *testing.T) {
	p := queue.RetryPolicy{MinBackoff: time.Second, MaxBackoff: 10 * time.Second}
	tests := []struct {
		policy  queue.RetryPolicy
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{p, 1, 0, time.Second},
		{p, 2, 0, 2 * time.Second},
		{p, 4, 0, 8 * time.Second},
		{p, 5, 0, 10 * time.Second},
		{p, 1000, 0, 10 * time.Second},
		{p, 1, 0.5, 1100 * time.Millisecond},
		{p, 4, 0.5, 8800 * time.Millisecond},
		{p, 4, 0.99, 9584 * time.Millisecond},
		{queue.RetryPolicy{MinBackoff: time.Second, MaxBackoff: 9 * time.Second}, 4, 0.99, 6416 * time.Millisecond}, // 8 s + 1.584 s would pass the cap: taken off instead
		{p, 5, 0.5, 9 * time.Second},
		{queue.RetryPolicy{MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Second}, 3, 0.9, 5 * time.Second},
		{queue.RetryPolicy{}, 3, 0.9, 0},
	}
	for _, tt := range tests {
		got := backoff(tt.policy, tt.attempt, tt.jitter)
		if d := got - tt.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("backoff(%v, attempt %d, jitter %v): got %v, want %v", tt.policy, tt.attempt, tt.jitter, got, tt.want)
		}
		if got < tt.policy.MinBackoff || got > tt.policy.MaxBackoff {
			t.Errorf("backoff(%v, attempt %d, jitter %v) = %v: outside [MinBackoff, MaxBackoff]", tt.policy, tt.attempt, tt.jitter, got)
		}
	}
}

func TestFailedMessageIsDueAfterItsBackoff(t *testing.T) {
	ctx := t.Context()
	clk := clock.NewFake(base)
	q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Clock: clk, Logger: failOnErrorLogs(t)})
	policy := queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: time.Minute, MaxAttempts: 5}
	sub := declare(t, q, "events", "events-sub", policy, "events-dead")
	publishOne(t, q.Topic("events"), "m")

	first := claimOne(t, q, sub)
	if err := q.nack(ctx, sub, first); err != nil {
		t.Fatalf("nack: %v", err)
	}
	msgs, next, _, err := q.claim(ctx, sub, 10)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("claim right after a failure: got %d messages (%v), want none", len(msgs), err)
	}
	if lo, hi := base.Add(10*time.Second), base.Add(12*time.Second); next.Before(lo) || next.After(hi) {
		t.Fatalf("next due: got %v, want within [%v, %v]", next, lo, hi)
	}
	clk.Set(next.Add(-time.Microsecond))
	if msgs, _, _, err := q.claim(ctx, sub, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("claim just before the backoff ends: got %d messages (%v), want none", len(msgs), err)
	}
	clk.Set(next)
	second := claimOne(t, q, sub)
	if second.msg.ID != first.msg.ID || second.msg.DeliveryAttempt != 2 {
		t.Errorf("redelivery: got ID %q attempt %d, want ID %q attempt 2", second.msg.ID, second.msg.DeliveryAttempt, first.msg.ID)
	}
}

func TestOutcomeUnderAnExpiredLeaseIsIgnored(t *testing.T) {
	ctx := t.Context()
	clk := clock.NewFake(base)
	q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Clock: clk, Logger: failOnErrorLogs(t)})
	sub := declare(t, q, "events", "events-sub", testPolicy, "events-dead")
	publishOne(t, q.Topic("events"), "m")

	stale := claimOne(t, q, sub)
	clk.Advance(time.Minute) // the default visibility timeout
	current := claimOne(t, q, sub)
	if current.msg.DeliveryAttempt != 2 {
		t.Fatalf("after the lease expired: got attempt %d, want 2", current.msg.DeliveryAttempt)
	}
	if err := q.ack(ctx, stale); err != nil {
		t.Fatalf("ack under the expired lease: %v", err)
	}
	if err := q.nack(ctx, sub, stale); err != nil {
		t.Fatalf("nack under the expired lease: %v", err)
	}
	if n := countMessages(t, q, "events-sub"); n != 1 {
		t.Fatalf("after outcomes under an expired lease: got %d messages, want the redelivered one", n)
	}
	if err := q.ack(ctx, current); err != nil {
		t.Fatalf("ack: %v", err)
	}
	clk.Advance(time.Hour)
	if msgs, _, _, err := q.claim(ctx, sub, 10); err != nil || len(msgs) != 0 {
		t.Errorf("an hour after the ack: got %d messages (%v), want none", len(msgs), err)
	}
	if n := countMessages(t, q, "events-sub"); n != 0 {
		t.Errorf("after the ack: got %d messages stored, want 0", n)
	}
}

// TestLeaseOfACrashedProcessExpires kills a queue while its handler runs —
// its database handle goes away, as with a killed process, so it records
// nothing — and opens the file again as the restarted process would. It
// runs in a synctest bubble, where time.Sleep moves the bubble's clock
// (which the queue reads) as soon as every goroutine is blocked.
func TestLeaseOfACrashedProcessExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		path := filepath.Join(t.TempDir(), "queue.db")
		opt := Options{Logger: slog.New(slog.DiscardHandler)}
		dead := openQueue(t, path, opt)
		sub := declare(t, dead, "events", "events-sub", testPolicy, "events-dead")
		publishOne(t, dead.Topic("events"), "m")

		started, release := make(chan queue.Message, 1), make(chan struct{})
		stopDead := receive(t, sub, func(ctx context.Context, m queue.Message) error {
			started <- m
			<-release
			return nil
		})
		first := await(t, started, "the first delivery") // leased at start: nothing has waited yet
		if err := dead.db.Close(); err != nil {          // the crash
			t.Fatalf("closing the database: %v", err)
		}

		q := openQueue(t, path, opt)
		sub = declare(t, q, "events", "events-sub", testPolicy, "events-dead")
		msgs, next, _, err := q.claim(t.Context(), sub, 10)
		if err != nil || len(msgs) != 0 {
			t.Fatalf("claim while the dead process's lease holds: got %d messages (%v), want none", len(msgs), err)
		}
		if want := start.Add(time.Minute); !next.Equal(want) {
			t.Errorf("next due: got %v, want the lease's expiry %v", next, want)
		}
		time.Sleep(time.Until(next) - time.Microsecond)
		if msgs, _, _, err := q.claim(t.Context(), sub, 10); err != nil || len(msgs) != 0 {
			t.Fatalf("claim just before the lease expires: got %d messages (%v), want none", len(msgs), err)
		}
		time.Sleep(time.Microsecond)
		redelivered := make(chan queue.Message, 1)
		stop := receive(t, sub, func(ctx context.Context, m queue.Message) error {
			redelivered <- m
			return nil
		})
		second := await(t, redelivered, "the redelivery after the lease expired")
		stop()
		if second.ID != first.ID || second.DeliveryAttempt != 2 || string(second.Data) != "m" {
			t.Errorf("redelivery: got ID %q attempt %d data %q, want ID %q attempt 2 data m",
				second.ID, second.DeliveryAttempt, second.Data, first.ID)
		}
		close(release) // the dead process's handler can record nothing
		stopDead()
		if n := countMessages(t, q, "events-sub"); n != 0 {
			t.Errorf("after the redelivery was acknowledged: got %d messages stored, want 0", n)
		}
	})
}

func TestMessageInFlightAtCloseIsDeliveredAfterReopen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queue.db")
		policy := queue.RetryPolicy{MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Second, MaxAttempts: 5}
		log := failOnErrorLogs(t)
		q := openQueue(t, path, Options{Logger: log})
		sub := declare(t, q, "events", "events-sub", policy, "events-dead")
		publishOne(t, q.Topic("events"), "m")

		started := make(chan queue.Message, 1)
		returned := make(chan error, 1)
		go func() {
			returned <- sub.Receive(context.Background(), func(ctx context.Context, m queue.Message) error {
				started <- m
				<-ctx.Done()
				return ctx.Err()
			})
		}()
		first := await(t, started, "the first delivery")
		if err := q.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := await(t, returned, "Receive to return after Close"); err != nil {
			t.Errorf("Receive after Close: got %v, want nil", err)
		}

		q = openQueue(t, path, Options{Logger: log})
		sub = declare(t, q, "events", "events-sub", policy, "events-dead")
		again := make(chan queue.Message, 1)
		receive(t, sub, func(ctx context.Context, m queue.Message) error {
			again <- m
			return nil
		})
		if m := await(t, again, "the redelivery after reopening"); m.ID != first.ID || m.DeliveryAttempt != 2 {
			t.Errorf("after reopening: got ID %q attempt %d, want ID %q attempt 2", m.ID, m.DeliveryAttempt, first.ID)
		}
	})
}

// TestRunningHandlerKeepsItsLease runs a handler for 100 s, past the 60 s
// visibility timeout, in a synctest bubble: Receive's timers fire on the
// bubble's clock while the test sleeps. Had Receive not extended the lease,
// the message would be due again after 60 s and delivered a second time,
// to this Receive or to another claim.
func TestRunningHandlerKeepsItsLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Logger: failOnErrorLogs(t)})
		sub := declare(t, q, "events", "events-sub", testPolicy, "events-dead")
		publishOne(t, q.Topic("events"), "long")

		var calls atomic.Int32
		started, release := make(chan struct{}, 1), make(chan struct{})
		stop := receive(t, sub, func(ctx context.Context, m queue.Message) error {
			calls.Add(1)
			started <- struct{}{}
			<-release
			return nil
		})
		await(t, started, "the handler to be called")
		time.Sleep(100 * time.Second)
		other := &Subscription{q: q, name: sub.name, policy: sub.policy, deadLetter: sub.deadLetter}
		if msgs, _, _, err := q.claim(t.Context(), other, 10); err != nil || len(msgs) != 0 {
			t.Errorf("claim while the handler runs past the visibility timeout: got %d messages (%v), want none", len(msgs), err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("while the first call ran past the visibility timeout: the handler was called %d times, want once", n)
		}
		close(release)
		stop()
		if n := countMessages(t, q, "events-sub"); n != 0 {
			t.Errorf("after the handler returned nil: got %d messages stored, want 0", n)
		}
	})
}

func TestLastAttemptWithExpiredLeaseIsDeadLettered(t *testing.T) {
	ctx := t.Context()
	clk := clock.NewFake(base)
	q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Clock: clk, Logger: failOnErrorLogs(t)})
	policy := queue.RetryPolicy{MaxAttempts: 5} // retry at once
	sub := declare(t, q, "events", "events-sub", policy, "events-dead")
	dead := declare(t, q, "events-dead", "events-dead-sub", queue.RetryPolicy{}, "")
	if err := q.Topic("events").Publish(ctx, queue.Message{Data: []byte("m"), Attributes: map[string]string{"k": "v"}}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for range 4 {
		if err := q.nack(ctx, sub, claimOne(t, q, sub)); err != nil {
			t.Fatalf("nack: %v", err)
		}
	}
	last := claimOne(t, q, sub)
	clk.Advance(time.Minute) // its handler never returned
	if msgs, _, _, err := q.claim(ctx, sub, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("claim after the last attempt's lease expired: got %d messages (%v), want none", len(msgs), err)
	}
	got := claimOne(t, q, dead)
	want := map[string]string{
		"k": "v",
		"CloudPubSubDeadLetterSourceSubscription":     "events-sub",
		"CloudPubSubDeadLetterSourceDeliveryCount":    "5",
		"CloudPubSubDeadLetterSourceTopicPublishTime": "2031-03-04T05:06:07.000Z",
	}
	if string(got.msg.Data) != "m" || !maps.Equal(got.msg.Attributes, want) {
		t.Errorf("dead letter: got %q %v, want %q %v", got.msg.Data, got.msg.Attributes, "m", want)
	}
	if got.msg.ID == last.msg.ID {
		t.Errorf("dead letter: got the source message's ID %q, want a new one", got.msg.ID)
	}
}

func TestPublishFansOutToDeclaredSubscriptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Logger: failOnErrorLogs(t)})
		topic := q.Topic("events")
		publishOne(t, topic, "before-any") // dropped: no subscription yet
		a := declare(t, q, "events", "a", testPolicy, "")
		publishOne(t, topic, "before-b")
		b := declare(t, q, "events", "b", testPolicy, "")
		publishOne(t, topic, "after-both")

		for _, tt := range []struct {
			sub  *Subscription
			want []string
		}{
			{a, []string{"before-b", "after-both"}},
			{b, []string{"after-both"}},
		} {
			if n := countMessages(t, q, tt.sub.name); n != len(tt.want) {
				t.Errorf("subscription %s: got %d messages stored, want %d", tt.sub.name, n, len(tt.want))
			}
			got := make(chan string, len(tt.want))
			stop := receive(t, tt.sub, func(ctx context.Context, m queue.Message) error {
				got <- string(m.Data)
				return nil
			})
			seen := map[string]bool{}
			for len(seen) < len(tt.want) {
				seen[await(t, got, "subscription "+tt.sub.name+"'s messages")] = true
			}
			stop()
			for _, w := range tt.want {
				if !seen[w] {
					t.Errorf("subscription %s: got %v, want %v", tt.sub.name, seen, tt.want)
				}
			}
		}
	})
}

// TestSubscriptionDeclaration checks each declaration's outcome where
// Subscription reports it: in the log, and from Receive.
func TestSubscriptionDeclaration(t *testing.T) {
	log := &recordingHandler{}
	q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Logger: slog.New(log)})
	declare(t, q, "events", "events-sub", testPolicy, "events-dead")
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name        string
		topic, sub  string
		policy      queue.RetryPolicy
		deadLetters string
		want        errs.Kind
	}{
		{"SameTopicNewPolicy", "events", "events-sub", queue.RetryPolicy{MinBackoff: time.Second, MaxBackoff: time.Minute, MaxAttempts: 10}, "events-dead", -1},
		{"NoDeadLetterTopic", "events", "plain", queue.RetryPolicy{}, "", -1},
		{"OtherTopic", "other", "events-sub", testPolicy, "events-dead", errs.FailedPrecondition},
		{"NoName", "events", "", testPolicy, "", errs.Invalid},
		{"NoTopic", "", "s", testPolicy, "", errs.Invalid},
		{"DeadLettersToItself", "events", "s", testPolicy, "events", errs.Invalid},
		{"TooFewAttempts", "events", "s", queue.RetryPolicy{MaxAttempts: 4}, "events-dead", errs.Invalid},
		{"TooManyAttempts", "events", "s", queue.RetryPolicy{MaxAttempts: 101}, "events-dead", errs.Invalid},
		{"MinAboveMax", "events", "s", queue.RetryPolicy{MinBackoff: 2 * time.Second, MaxBackoff: time.Second}, "", errs.Invalid},
		{"NegativeMin", "events", "s", queue.RetryPolicy{MinBackoff: -1, MaxBackoff: time.Second}, "", errs.Invalid},
		{"MaxOver600s", "events", "s", queue.RetryPolicy{MaxBackoff: 601 * time.Second}, "", errs.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := q.Subscription(tt.topic, tt.sub, tt.policy, tt.deadLetters)
			logged := len(log.take())
			err := s.Receive(ended, func(context.Context, queue.Message) error { return nil })
			switch {
			case tt.want == -1 && (err != nil || logged != 0):
				t.Errorf("Receive: got %v with %d errors logged, want nil and none", err, logged)
			case tt.want != -1 && (!errs.Is(err, tt.want) || logged == 0):
				t.Errorf("Receive: got %v with %d errors logged, want kind %v and the failure logged", err, logged, tt.want)
			}
		})
	}
	var minBackoff, maxAttempts int64
	if err := q.db.QueryRow("SELECT min_backoff, max_attempts FROM subscriptions WHERE name = 'events-sub'").Scan(&minBackoff, &maxAttempts); err != nil {
		t.Fatalf("reading the subscription: %v", err)
	}
	if minBackoff != time.Second.Microseconds() || maxAttempts != 10 {
		t.Errorf("redeclared subscription: got min_backoff %d µs, max_attempts %d; want the new policy's %d µs, 10",
			minBackoff, maxAttempts, time.Second.Microseconds())
	}
}

func TestClosedQueueRefusesWork(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Logger: slog.New(slog.DiscardHandler)})
	sub := declare(t, q, "events", "events-sub", testPolicy, "")
	topic := q.Topic("events")
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := topic.Publish(t.Context(), queue.Message{Data: []byte("m")}); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Publish: got %v, want Unavailable", err)
	}
	if err := sub.Receive(t.Context(), func(context.Context, queue.Message) error { return nil }); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Receive: got %v, want Unavailable", err)
	}
	if err := q.Subscription("events", "other", testPolicy, "").Receive(t.Context(), nil); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Receive of a Subscription declared after Close: got %v, want Unavailable", err)
	}
}

func TestDepthCountsHeldMessagesBySubscription(t *testing.T) {
	q := openQueue(t, ":memory:", Options{})
	declare(t, q, "events", "a", testPolicy, "")
	declare(t, q, "events", "b", testPolicy, "")
	declare(t, q, "other", "c", testPolicy, "")
	for range 3 {
		publishOne(t, q.Topic("events"), "x")
	}
	publishOne(t, q.Topic("other"), "y")
	got, err := q.Depth(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"a": 3, "b": 3, "c": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Depth = %v, want %v", got, want)
	}
	q.Close()
	if _, err := q.Depth(t.Context()); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Depth of a closed queue: %v, want Unavailable", err)
	}
}

// helpers

func openQueue(t *testing.T, path string, opt Options) *Queue {
	t.Helper()
	q, err := Open(path, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func declare(t *testing.T, q *Queue, topic, name string, policy queue.RetryPolicy, deadLetters string) *Subscription {
	t.Helper()
	s := q.Subscription(topic, name, policy, deadLetters)
	if err := s.declare(t.Context()); err != nil {
		t.Fatalf("Subscription(%q, %q): %v", topic, name, err)
	}
	return s
}

func publishOne(t *testing.T, topic *Topic, data string) {
	t.Helper()
	if err := topic.Publish(t.Context(), queue.Message{Data: []byte(data)}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func claimOne(t *testing.T, q *Queue, s *Subscription) leased {
	t.Helper()
	msgs, _, _, err := q.claim(t.Context(), s, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("claim: got %d messages (%v), want 1", len(msgs), err)
	}
	return msgs[0]
}

func countMessages(t *testing.T, q *Queue, sub string) int {
	t.Helper()
	var n int
	if err := q.db.QueryRow("SELECT COUNT(*) FROM messages WHERE subscription = ?", sub).Scan(&n); err != nil {
		t.Fatalf("counting messages: %v", err)
	}
	return n
}

// receive runs s.Receive(h) until the returned stop is called or the test
// ends; stop waits for Receive to return nil.
func receive(t *testing.T, s *Subscription, h queue.Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Receive(ctx, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := await(t, done, "Receive to return"); err != nil {
				t.Errorf("Receive: got %v, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("gave up after %v waiting for %s", wait, what)
		panic("unreachable")
	}
}

// failOnErrorLogs returns a logger that fails t for every ERROR record
// logged until t's cleanup runs.
func failOnErrorLogs(t *testing.T) *slog.Logger {
	h := &recordingHandler{}
	t.Cleanup(func() {
		for _, r := range h.take() {
			t.Errorf("logged an error: %s", r.Message)
		}
	})
	return slog.New(h)
}

type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) take() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.records
	h.records = nil
	return r
}

// TestDeletedSubscriptionKeepsNothing: deleting a subscription drops the
// messages it held and stops new ones reaching it, and leaves the topic's
// other subscriptions alone.
func TestDeletedSubscriptionKeepsNothing(t *testing.T) {
	ctx := t.Context()
	q := openQueue(t, filepath.Join(t.TempDir(), "queue.db"), Options{Clock: clock.NewFake(base), Logger: failOnErrorLogs(t)})
	policy := queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: time.Minute, MaxAttempts: 5}
	declare(t, q, "events", "events-sub", policy, "events-dead")
	declare(t, q, "events", "export-sub", policy, "export-dead")
	publishOne(t, q.Topic("events"), "before")
	if err := q.DeleteSubscription(ctx, "export-sub"); err != nil {
		t.Fatal(err)
	}
	if err := q.DeleteSubscription(ctx, "no-such-sub"); err != nil {
		t.Errorf("deleting a missing subscription: %v, want nil", err)
	}
	publishOne(t, q.Topic("events"), "after")
	d, err := q.Depth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d["events-sub"] != 2 || d["export-sub"] != 0 {
		t.Errorf("depths %v, want 2 on events-sub and none on export-sub", d)
	}
}
