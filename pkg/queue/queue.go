// Package queue defines keyplane's message transport contract: topics that
// publish durably and subscriptions that deliver at least once, retry
// failed messages with backoff, and move a message to a dead-letter topic
// after MaxAttempts — the semantics of a Pub/Sub push subscription with a
// dead-letter policy. Adapters: pubsub (Google Cloud Pub/Sub) and embedded
// (a durable single-process queue for `keyplane serve`); both pass the
// suite in queuetest.
//
// Delivery is at least once and unordered: consumers deduplicate on an id
// inside the message data, never on Message.ID (a publisher retry gets a
// new one).
package queue

import (
	"context"
	"time"
)

// Message is one message.
type Message struct {
	ID              string // set by the transport; unique per publish, not per payload
	Data            []byte
	Attributes      map[string]string
	PublishTime     time.Time // set by the transport
	DeliveryAttempt int       // 1 on first delivery; set by the transport
}

// Topic publishes messages.
type Topic interface {
	// Publish returns once the transport has durably accepted every
	// message, or an error if any may not have been (the caller retries;
	// duplicates are the consumer's to drop). Errors are errs kinds:
	// Unavailable (retry), Invalid (a message the transport refuses, e.g.
	// too large), Internal.
	Publish(ctx context.Context, msgs ...Message) error
	// Close flushes and releases the topic.
	Close() error
}

// Handler processes one message. Returning nil acknowledges it (done, or
// recorded as poison by the handler); returning an error asks for a
// redelivery after a backoff.
type Handler func(ctx context.Context, m Message) error

// Subscription delivers a topic's messages.
type Subscription interface {
	// Receive calls h for messages, concurrently, until ctx ends; then it
	// returns nil. A message h fails is redelivered with exponential
	// backoff; after the subscription's maximum attempts it is published to
	// the dead-letter topic instead.
	Receive(ctx context.Context, h Handler) error
}

// RetryPolicy is a subscription's redelivery policy.
type RetryPolicy struct {
	MinBackoff  time.Duration // first retry delay (10 s in production; tests use less)
	MaxBackoff  time.Duration // cap of the exponential backoff (600 s)
	MaxAttempts int           // deliveries before dead-lettering (5..100; Pub/Sub's range)
}
