package wire

import (
	"context"
	"time"

	gpubsub "cloud.google.com/go/pubsub/v2"

	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
)

// A TopicSpec declares how keyplane consumes a topic: the subscription
// that delivers its messages, with its redelivery and dead-letter policy,
// and the subscription of its dead-letter topic (DeadLetterTopic). The
// topic's own name is configured (config.Config.UsageTopic,
// NotificationsTopic).
//
// The embedded queue declares the subscriptions under these names;
// keyplane serve on Pub/Sub creates pull subscriptions named
// <topic>-<subscription>. In production, infra/pubsub.tf creates push
// subscriptions of those names instead (with their push endpoint, ack
// deadline and OIDC token, which only Terraform knows), whose retry and
// dead-letter policies infra's TestPushRetryPoliciesMatchWire keeps equal
// to Retry.
type TopicSpec struct {
	Subscription           string            // delivers the topic's messages
	Retry                  queue.RetryPolicy // its backoffs, and the deliveries before a message is dead-lettered
	DeadLetterSubscription string            // delivers the dead-letter topic's messages
	DeadLetterRetry        queue.RetryPolicy // its backoffs; it dead-letters nothing
	// DeadLetterSuffix names the dead-letter topic, topic+suffix; ""
	// means "-dead-letter" (DeadLetterTopic). A second subscription of a
	// topic needs a dead-letter topic of its own, or each subscription's
	// dead letters would reach the other's dead-letter handler too.
	DeadLetterSuffix string
}

// DeadLetterTopic names the topic that receives topic's dead letters.
func DeadLetterTopic(topic string) string { return topic + "-dead-letter" }

// deadLetterTopic names the topic that receives the dead letters of s's
// subscription of topic.
func (s TopicSpec) deadLetterTopic(topic string) string {
	if s.DeadLetterSuffix != "" {
		return topic + s.DeadLetterSuffix
	}
	return DeadLetterTopic(topic)
}

var (
	// UsageTopic is consumed by RecordUsage (in serve, the usage
	// consumer); a dead-lettered usage message is recorded as a ledger
	// dead letter.
	UsageTopic = TopicSpec{
		Subscription:           "record-usage",
		Retry:                  queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: 10 * time.Minute, MaxAttempts: 10},
		DeadLetterSubscription: "record-dead-letters",
	}

	// NotificationsTopic is consumed by DeliverNotification (in serve,
	// the deliverer). The queue is only the alarm clock of internal/notify's
	// retry schedule (see its package comment): 5 s is the schedule's first
	// retry, 600 s is Pub/Sub's cap and bounds how late a retry is made, and
	// 100 deliveries outlast the schedule's longest gap (10 h, 67 to 82
	// deliveries). A dead-lettered notification message whose handling
	// failed (the store was unreachable) is redelivered without spinning.
	NotificationsTopic = TopicSpec{
		Subscription:           "deliver-notifications",
		Retry:                  queue.RetryPolicy{MinBackoff: 5 * time.Second, MaxBackoff: 600 * time.Second, MaxAttempts: 100},
		DeadLetterSubscription: "notification-dead-letters",
		DeadLetterRetry:        queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: 600 * time.Second},
	}

	// StripeExportTopic is the usage topic's second subscription, consumed
	// by ExportStripe (in serve, the Stripe exporter) when the export is
	// configured. Its 20 deliveries, 10 s doubling to 600 s, span under
	// three hours: every redelivery of an event falls within the 24 hours
	// in which Stripe dedupes its identifier. A message dead-lettered here
	// is counted in the ledger all the same; only its export is missing.
	StripeExportTopic = TopicSpec{
		Subscription:           "export-stripe",
		Retry:                  queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: 10 * time.Minute, MaxAttempts: 20},
		DeadLetterSubscription: "stripe-dead-letters",
		DeadLetterSuffix:       "-stripe-dead-letter",
	}
)

// declare declares both subscriptions of topic on the embedded queue and
// returns them. Declaring them as soon as the topic is opened matters: a
// message published to a topic with no subscription is dropped.
func (s TopicSpec) declare(q *embeddedqueue.Queue, topic string) (events, deadLetters queue.Subscription) {
	dl := s.deadLetterTopic(topic)
	return q.Subscription(topic, s.Subscription, s.Retry, dl),
		q.Subscription(dl, s.DeadLetterSubscription, s.DeadLetterRetry, "")
}

// ensure creates topic, its dead-letter topic and both pull subscriptions
// on Pub/Sub unless they exist (updating the subscriptions' policies), and
// returns the subscriptions.
func (s TopicSpec) ensure(ctx context.Context, c *gpubsub.Client, topic string) (events, deadLetters queue.Subscription, err error) {
	dl := s.deadLetterTopic(topic)
	for _, t := range []string{topic, dl} {
		if err := pubsubqueue.EnsureTopic(ctx, c, t); err != nil {
			return nil, nil, err
		}
	}
	sub, dlSub := topic+"-"+s.Subscription, dl+"-"+s.DeadLetterSubscription
	if err := pubsubqueue.EnsureSubscription(ctx, c, sub, topic, s.Retry, dl); err != nil {
		return nil, nil, err
	}
	if err := pubsubqueue.EnsureSubscription(ctx, c, dlSub, dl, s.DeadLetterRetry, ""); err != nil {
		return nil, nil, err
	}
	return pubsubqueue.NewSubscription(c, sub), pubsubqueue.NewSubscription(c, dlSub), nil
}
