// Package pubsubqueue is the queue contract on Google Cloud Pub/Sub, through
// the v2 client (cloud.google.com/go/pubsub/v2): a Topic publishes with
// the client's batching and returns once Pub/Sub has acknowledged every
// message; a Subscription pulls with the client's streaming Receive, acks
// a message whose handler returns nil and nacks it otherwise. Redelivery
// backoff, the delivery count and dead-lettering are the subscription's
// own retry and dead-letter policies, which EnsureSubscription sets from a
// queue.RetryPolicy. EnsureTopic and EnsureSubscription are the admin
// helpers tests and `keyplane serve` use to create what they need;
// production resources come from Terraform.
//
// MessagePublished is the one declaration of a push subscription's
// message as a CloudEvent function receives it (the data of a
// google.cloud.pubsub.topic.v1.messagePublished event);
// DecodeMessagePublished turns it into a queue.Message.
//
// Message.DeliveryAttempt is Pub/Sub's delivery count, which Pub/Sub keeps
// only for subscriptions with a dead-letter policy; without one it is 0.
// Pub/Sub counts deliveries on a best-effort basis, so at-least-once
// consumers must not rely on it being exact.
//
// Publish checks messages against Pub/Sub's documented limits (data or
// attributes present; at most 10 MB, 100 attributes, keys of 1 to 256 bytes
// not starting with "goog", values of at most 1024 bytes) before sending
// anything, as the embedded queue does: Pub/Sub fails a whole batch for one
// bad message, and the emulator enforces none of the attribute limits.
//
// Errors are errs kinds: InvalidArgument becomes Invalid; Unavailable,
// DeadlineExceeded, ResourceExhausted, Aborted, Internal, Unknown and an
// ended context become Unavailable (retry later); NotFound, AlreadyExists
// and FailedPrecondition keep their kinds, except from Publish, whose
// contract allows only Invalid, Unavailable and Internal; anything else,
// including permission errors, is Internal (a deployment problem a caller
// cannot fix).
//
// On the emulator (gcloud beta emulators pubsub start, emulator 0.8.20),
// measured: dead-letter policies are honoured — a message is forwarded
// after exactly MaxDeliveryAttempts deliveries, with Pub/Sub's
// CloudPubSubDeadLetterSource* attributes added to its own — and
// DeliveryAttempt counts 1, 2, 3… Retry policies are only approximated:
// the first redelivery after a nack comes at once (about 0.1 s) whatever
// MinimumBackoff says, and later ones on a coarse schedule — about 2 s
// apart for a policy of 0.1 to 1 s, about 5 s for 3 to 6 s. With the
// suite's policy a message is dead-lettered about 8 s after its first
// delivery. The emulator enforces none of the attribute limits.
package pubsubqueue
