// Package queue defines keyplane's message transport contract: topics that
// publish durably and subscriptions that deliver at least once, retry
// failed messages with backoff, and move a message to a dead-letter topic
// after MaxAttempts — the semantics of a Pub/Sub push subscription with a
// dead-letter policy. Adapters: pubsubqueue (Google Cloud Pub/Sub) and
// embeddedqueue (a durable single-process queue for `keyplane serve`);
// both pass the suite in queuetest.
//
// Delivery is at least once and unordered: consumers deduplicate on an id
// inside the message data, never on Message.ID (a publisher retry gets a
// new one).
package queue

import (
	"context"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
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

// Pub/Sub's limits on a message (cloud.google.com/pubsub/quotas).
const (
	maxMessageBytes = 10_000_000
	maxAttributes   = 100
	maxKeyBytes     = 256
	maxValueBytes   = 1024
)

// Validate checks m against Pub/Sub's limits on a message, which every
// adapter's Publish enforces so that a message one transport accepts is
// not refused by another: it needs data or attributes; it has at most 100
// attributes, each key 1 to 256 bytes and not starting with "goog", each
// value at most 1024 bytes; data and attributes together are at most 10 MB.
// A message outside them gets an errs.Invalid error saying which limit it
// breaks.
func Validate(m Message) error {
	if len(m.Data) == 0 && len(m.Attributes) == 0 {
		return errs.E(errs.Invalid, "a message needs data or attributes")
	}
	if len(m.Attributes) > maxAttributes {
		return errs.E(errs.Invalid, "%d attributes; the limit is %d", len(m.Attributes), maxAttributes)
	}
	size := len(m.Data)
	for k, v := range m.Attributes {
		switch {
		case k == "" || len(k) > maxKeyBytes:
			return errs.E(errs.Invalid, "attribute key %.20q: keys are 1 to %d bytes", k, maxKeyBytes)
		case strings.HasPrefix(k, "goog"):
			return errs.E(errs.Invalid, "attribute key %.20q: keys starting with goog are reserved", k)
		case len(v) > maxValueBytes:
			return errs.E(errs.Invalid, "attribute %.20q: values are at most %d bytes", k, maxValueBytes)
		}
		size += len(k) + len(v)
	}
	if size > maxMessageBytes {
		return errs.E(errs.Invalid, "%d bytes of data and attributes; the limit is %d", size, maxMessageBytes)
	}
	return nil
}
