// Package embeddedqueue is the queue for `keyplane serve`: durable, at least
// once, single process, in its own SQLite database file
// (modernc.org/sqlite, pure Go), with the semantics of a Pub/Sub
// subscription that has a retry policy and a dead-letter topic.
//
// # Topics and subscriptions
//
// A topic is a name; it needs no declaration. A subscription is declared
// with Queue.Subscription, which records it in the database (a declaration
// that fails is logged, and Receive declares again and returns the error),
// and from then on every message published to its topic is copied to it:
// each subscription of a topic gets every message (fan-out), and a message
// published to a topic that has no subscription yet is dropped, as Pub/Sub
// drops it. Declare subscriptions before publishing. The same holds for
// dead-letter topics: a message dead-lettered to a topic without a
// subscription is gone.
//
// # Delivery
//
// Publish commits every message to the database before it returns. Receive
// leases due messages to itself — each delivery counts as an attempt — and
// calls the handler for up to Options.Concurrency of them at a time. A nil
// return deletes the message (ack); an error schedules the next attempt
// after MinBackoff·2^(attempt-1), capped at MaxBackoff, with up to 20%
// jitter that keeps the delay within [MinBackoff, MaxBackoff]. A message
// whose attempt MaxAttempts fails is moved, in the same transaction, to the
// dead-letter topic, with its data, its attributes and the attributes
// Pub/Sub adds (CloudPubSubDeadLetterSourceSubscription,
// CloudPubSubDeadLetterSourceDeliveryCount,
// CloudPubSubDeadLetterSourceTopicPublishTime). Without a dead-letter
// topic a failing message is retried forever, as in Pub/Sub.
//
// A lease lasts Options.VisibilityTimeout and Receive extends the leases of
// its running handlers while they run. If the process dies, its leases
// simply expire and the messages are delivered again — with the next
// attempt number, and dead-lettered instead if that lease was their last
// attempt. An outcome is recorded only while the lease that delivered the
// message is still held, so a handler that returns after its lease expired
// cannot delete or reschedule the redelivered message.
//
// Receive finds due messages when a Publish in this process wakes it, when
// a retry or lease comes due, and at least every Options.PollInterval,
// which covers messages published by another process into the same file
// and clocks that do not run in real time (Options.Clock). Receive returns
// nil when its context ends or the queue is closed, after its running
// handlers have returned and their outcomes are recorded.
//
// Close stops every Receive (cancelling the contexts of running handlers
// and waiting for them; their outcomes are recorded as usual, so one that
// fails because its context ended is retried after its backoff) and then
// closes the database. A handler that ignores its context holds Close up.
//
// # Storage
//
// The database runs in WAL mode with synchronous=NORMAL: a committed
// Publish survives the process crashing, and the last commits before a
// power loss may not. Everything goes through one connection whose
// transactions begin IMMEDIATE. Each subscription's copy of a message is a
// row holding the data, the attributes as JSON, the attempts made and the
// time (Unix microseconds) at which it is next due — its retry time, or
// while it is leased its lease expiry; the lease is a random token
// recorded with it. Message IDs are 128-bit random hex strings, shared by a
// message's copies and kept across redeliveries. The schema version is
// kept in PRAGMA user_version.
//
// Messages are checked against Pub/Sub's limits, so that what works
// locally works in production: a message needs data or attributes; at most
// 10 MB of data and attributes together, 100 attributes, keys of 1 to 256
// bytes not starting with "goog", values of at most 1024 bytes. A message
// over a limit is refused with errs.Invalid.
package embeddedqueue
