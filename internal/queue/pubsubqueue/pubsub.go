package pubsubqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/queue"
)

// PublishSettings control how a Topic batches messages into publish
// requests. Zero fields take the defaults.
type PublishSettings struct {
	CountThreshold int           // send a batch at this many messages; default 100, at most 1000
	ByteThreshold  int           // send a batch at this many bytes; default 1 MB
	DelayThreshold time.Duration // send a non-empty batch this long after its first message; default 10 ms
	Timeout        time.Duration // give up on a batch, retries included, after this; default 60 s
}

// Topic publishes to a Pub/Sub topic.
type Topic struct {
	p *ps.Publisher
}

var _ queue.Topic = (*Topic)(nil)

// NewTopic returns a Topic publishing to topicID in c's project. The topic
// must exist (EnsureTopic); c must outlive the Topic.
func NewTopic(c *ps.Client, topicID string, s PublishSettings) *Topic {
	p := c.Publisher(topicID)
	set := &p.PublishSettings // starts as ps.DefaultPublishSettings
	set.CountThreshold = orDefault(s.CountThreshold, 100)
	set.ByteThreshold = orDefault(s.ByteThreshold, 1_000_000)
	set.DelayThreshold = orDefault(s.DelayThreshold, 10*time.Millisecond)
	set.Timeout = orDefault(s.Timeout, 60*time.Second)
	return &Topic{p: p}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Publish hands every message to the publisher's batches and waits until
// Pub/Sub has acknowledged each. If any was not, it returns an error for
// the first failure; others may have been published. A message over
// Pub/Sub's documented limits is refused with Invalid before anything is
// sent: Pub/Sub would fail the whole batch that carried it, other callers'
// messages included, and the emulator enforces none of the attribute
// limits, so only production would notice.
func (t *Topic) Publish(ctx context.Context, msgs ...queue.Message) error {
	for i, m := range msgs {
		if err := queue.Validate(m); err != nil {
			return errs.E(errs.Invalid, "pubsub: message %d of %d: %v", i+1, len(msgs), err)
		}
	}
	results := make([]*ps.PublishResult, len(msgs))
	for i, m := range msgs {
		results[i] = t.p.Publish(ctx, &ps.Message{Data: m.Data, Attributes: m.Attributes})
	}
	var first error
	failed := 0
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		return nil
	}
	msg := fmt.Sprintf("pubsub: %d of %d messages to %s were not published", failed, len(msgs), t.p.ID())
	err := translate(first, msg)
	if k := errs.KindOf(err); k != errs.Invalid && k != errs.Unavailable {
		return errs.Wrap(errs.Internal, first, msg) // e.g. a missing topic: a deployment problem
	}
	return err
}

// Close sends any batched messages and stops the publisher.
func (t *Topic) Close() error {
	t.p.Stop()
	return nil
}

// Subscription pulls from a Pub/Sub subscription.
type Subscription struct {
	c  *ps.Client
	id string
}

var _ queue.Subscription = (*Subscription)(nil)

// NewSubscription returns a Subscription of subID in c's project. The
// subscription must exist (EnsureSubscription); c must outlive it.
func NewSubscription(c *ps.Client, subID string) *Subscription {
	return &Subscription{c: c, id: subID}
}

// Receive pulls messages with the client's default flow control (at most
// 1000 outstanding) and calls h for each, concurrently, extending their
// ack deadlines while h runs; it acks a message when h returns nil and
// nacks it otherwise. When ctx ends it waits for running handlers and
// returns nil. Any number of Receive calls may run at once, each with its
// own stream. An error means Pub/Sub refused to deliver, e.g. NotFound for
// a missing subscription.
func (s *Subscription) Receive(ctx context.Context, h queue.Handler) error {
	err := s.c.Subscriber(s.id).Receive(ctx, func(ctx context.Context, m *ps.Message) {
		qm := queue.Message{ID: m.ID, Data: m.Data, Attributes: m.Attributes, PublishTime: m.PublishTime}
		if m.DeliveryAttempt != nil {
			qm.DeliveryAttempt = *m.DeliveryAttempt
		}
		if h(ctx, qm) == nil {
			m.Ack()
		} else {
			m.Nack()
		}
	})
	return translate(err, "pubsub: receive from "+s.id)
}

// EnsureTopic creates topicID in c's project unless it exists.
func EnsureTopic(ctx context.Context, c *ps.Client, topicID string) error {
	_, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName(c, topicID)})
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return translate(err, fmt.Sprintf("pubsub: create topic %s", topicID))
}

// EnsureSubscription creates the pull subscription subID on topicID, or
// updates an existing one, so that it has policy's backoffs and, if
// deadLetterTopicID is not "", dead-letters after policy.MaxAttempts
// deliveries (5 to 100). A zero MinBackoff and MaxBackoff mean Pub/Sub's
// default: redeliver at once. Both topics must exist. Pub/Sub forwards dead
// letters with its own service account, which needs the publisher role on
// the dead-letter topic and the subscriber role on the subscription; the
// emulator needs neither. Errors: Invalid for a policy Pub/Sub refuses,
// NotFound for a missing topic, FailedPrecondition if the subscription
// exists on another topic.
func EnsureSubscription(ctx context.Context, c *ps.Client, subID, topicID string, policy queue.RetryPolicy, deadLetterTopicID string) error {
	want := &pubsubpb.Subscription{
		Name:  subscriptionName(c, subID),
		Topic: topicName(c, topicID),
	}
	if policy.MinBackoff != 0 || policy.MaxBackoff != 0 {
		want.RetryPolicy = &pubsubpb.RetryPolicy{
			MinimumBackoff: durationpb.New(policy.MinBackoff),
			MaximumBackoff: durationpb.New(policy.MaxBackoff),
		}
	}
	if deadLetterTopicID != "" {
		want.DeadLetterPolicy = &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     topicName(c, deadLetterTopicID),
			MaxDeliveryAttempts: int32(policy.MaxAttempts),
		}
	}
	what := fmt.Sprintf("pubsub: ensure subscription %s on %s", subID, topicID)
	_, err := c.SubscriptionAdminClient.CreateSubscription(ctx, want)
	if status.Code(err) != codes.AlreadyExists {
		return translate(err, what)
	}
	got, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: want.Name})
	if err != nil {
		return translate(err, what)
	}
	if got.Topic != want.Topic {
		return errs.E(errs.FailedPrecondition, "%s: the subscription exists on %s", what, got.Topic)
	}
	_, err = c.SubscriptionAdminClient.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: want,
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"retry_policy", "dead_letter_policy"}},
	})
	return translate(err, what)
}

func topicName(c *ps.Client, id string) string {
	return "projects/" + c.Project() + "/topics/" + id
}

func subscriptionName(c *ps.Client, id string) string {
	return "projects/" + c.Project() + "/subscriptions/" + id
}

// translate classifies a Pub/Sub client error; msg says what failed and is
// safe to show.
func translate(err error, msg string) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, ps.ErrOversizedMessage):
		return errs.Wrap(errs.Invalid, err, msg+": a message is over Pub/Sub's 10 MB limit")
	case errors.Is(err, ps.ErrPublisherStopped):
		return errs.Wrap(errs.Unavailable, err, msg+": the topic is closed")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, err, msg)
	}
	st, ok := status.FromError(err)
	if !ok {
		return errs.Wrap(errs.Internal, err, msg)
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return errs.Wrap(errs.Invalid, err, msg)
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.Internal, codes.Unknown, codes.Canceled:
		return errs.Wrap(errs.Unavailable, err, msg)
	case codes.NotFound:
		return errs.Wrap(errs.NotFound, err, msg+": not found")
	case codes.AlreadyExists:
		return errs.Wrap(errs.Exists, err, msg+": already exists")
	case codes.FailedPrecondition:
		return errs.Wrap(errs.FailedPrecondition, err, msg)
	}
	return errs.Wrap(errs.Internal, err, msg)
}
