package pubsubqueue_test

import (
	"context"
	"testing"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/queue/queuetest"
	"github.com/keyplane/keyplane/internal/testenv"
)

var testPolicy = queue.RetryPolicy{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, MaxAttempts: 5}

// newClient returns a client of a fresh emulator project, so that the test
// starts with no topics or subscriptions.
func newClient(t *testing.T) *ps.Client {
	t.Helper()
	testenv.PubSub(t)
	c, err := ps.NewClient(context.Background(), testenv.ProjectID())
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustEnsure(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("ensuring a topic or subscription: %v", err)
	}
}

// TestConformance runs the suite on the emulator, which honours dead-letter
// policies and delivery counts exactly (the suite checks both) but only
// approximates retry backoff (see the package comment); the suite asserts
// no backoff timing, so that it holds for the emulator and real Pub/Sub.
// It runs in real time, not in synctest bubbles: the client waits on the
// emulator over the network, and a bubble's clock stands still while any
// of its goroutines does.
func TestConformance(t *testing.T) {
	testenv.PubSub(t)
	queuetest.Run(t, func(t *testing.T, policy queue.RetryPolicy) queuetest.Env {
		c := newClient(t)
		ctx := t.Context()
		mustEnsure(t, pubsubqueue.EnsureTopic(ctx, c, "events"))
		mustEnsure(t, pubsubqueue.EnsureTopic(ctx, c, "events-dead"))
		mustEnsure(t, pubsubqueue.EnsureSubscription(ctx, c, "events-sub", "events", policy, "events-dead"))
		mustEnsure(t, pubsubqueue.EnsureSubscription(ctx, c, "events-dead-sub", "events-dead", queue.RetryPolicy{}, ""))
		return queuetest.Env{
			Topic:       pubsubqueue.NewTopic(c, "events", pubsubqueue.PublishSettings{}),
			Sub:         pubsubqueue.NewSubscription(c, "events-sub"),
			DeadLetters: pubsubqueue.NewSubscription(c, "events-dead-sub"),
		}
	}, nil)
}

func TestEnsureIsIdempotentAndConverges(t *testing.T) {
	c := newClient(t)
	ctx := t.Context()
	for range 2 {
		mustEnsure(t, pubsubqueue.EnsureTopic(ctx, c, "events"))
		mustEnsure(t, pubsubqueue.EnsureTopic(ctx, c, "events-dead"))
		mustEnsure(t, pubsubqueue.EnsureSubscription(ctx, c, "events-sub", "events", testPolicy, "events-dead"))
	}
	changed := queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: 600 * time.Second, MaxAttempts: 20}
	mustEnsure(t, pubsubqueue.EnsureSubscription(ctx, c, "events-sub", "events", changed, "events-dead"))

	got, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{
		Subscription: "projects/" + c.Project() + "/subscriptions/events-sub"})
	if err != nil {
		t.Fatalf("GetSubscription: %v", err)
	}
	rp, dl := got.GetRetryPolicy(), got.GetDeadLetterPolicy()
	if rp.GetMinimumBackoff().AsDuration() != changed.MinBackoff || rp.GetMaximumBackoff().AsDuration() != changed.MaxBackoff ||
		dl.GetMaxDeliveryAttempts() != int32(changed.MaxAttempts) ||
		dl.GetDeadLetterTopic() != "projects/"+c.Project()+"/topics/events-dead" {
		t.Errorf("after ensuring a changed policy: got retry policy %v, dead-letter policy %v; want %+v to events-dead", rp, dl, changed)
	}

	mustEnsure(t, pubsubqueue.EnsureSubscription(ctx, c, "events-sub", "events", queue.RetryPolicy{}, ""))
	got, err = c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: got.Name})
	if err != nil {
		t.Fatalf("GetSubscription: %v", err)
	}
	if got.DeadLetterPolicy != nil || got.RetryPolicy != nil {
		t.Errorf("after ensuring no policies: got retry policy %v, dead-letter policy %v; want neither", got.RetryPolicy, got.DeadLetterPolicy)
	}
}

func TestBackendErrorsBecomeKinds(t *testing.T) {
	c := newClient(t)
	ctx := t.Context()
	mustEnsure(t, pubsubqueue.EnsureTopic(ctx, c, "events"))
	mustEnsure(t, pubsubqueue.EnsureTopic(ctx, c, "other"))
	mustEnsure(t, pubsubqueue.EnsureSubscription(ctx, c, "events-sub", "events", testPolicy, ""))

	tests := []struct {
		name string
		err  func() error
		want errs.Kind
	}{
		{"PublishToMissingTopicIsInternal", func() error {
			topic := pubsubqueue.NewTopic(c, "missing", pubsubqueue.PublishSettings{})
			defer topic.Close()
			return topic.Publish(ctx, queue.Message{Data: []byte("m")})
		}, errs.Internal},
		{"PublishAfterCloseIsUnavailable", func() error {
			topic := pubsubqueue.NewTopic(c, "events", pubsubqueue.PublishSettings{})
			topic.Close()
			return topic.Publish(ctx, queue.Message{Data: []byte("m")})
		}, errs.Unavailable},
		{"PublishWithEndedContextIsUnavailable", func() error {
			topic := pubsubqueue.NewTopic(c, "events", pubsubqueue.PublishSettings{})
			defer topic.Close()
			ended, cancel := context.WithCancel(ctx)
			cancel()
			return topic.Publish(ended, queue.Message{Data: []byte("m")})
		}, errs.Unavailable},
		{"ReceiveFromMissingSubscriptionIsNotFound", func() error {
			return pubsubqueue.NewSubscription(c, "missing").Receive(ctx, func(context.Context, queue.Message) error { return nil })
		}, errs.NotFound},
		{"SubscriptionOnMissingTopicIsNotFound", func() error {
			return pubsubqueue.EnsureSubscription(ctx, c, "orphan", "missing", testPolicy, "")
		}, errs.NotFound},
		{"SubscriptionOnAnotherTopicIsFailedPrecondition", func() error {
			return pubsubqueue.EnsureSubscription(ctx, c, "events-sub", "other", testPolicy, "")
		}, errs.FailedPrecondition},
		{"TooFewMaxAttemptsIsInvalid", func() error {
			return pubsubqueue.EnsureSubscription(ctx, c, "few", "events", queue.RetryPolicy{MaxAttempts: 4}, "other")
		}, errs.Invalid},
		{"BadTopicIDIsInvalid", func() error {
			return pubsubqueue.EnsureTopic(ctx, c, "x")
		}, errs.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.err(); !errs.Is(err, tt.want) {
				t.Errorf("got %v (kind %v), want kind %v", err, errs.KindOf(err), tt.want)
			}
		})
	}
}
