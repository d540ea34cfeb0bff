// Package queuetest is the conformance suite of the queue contract. Every
// adapter's test calls Run, so that the embedded queue and the Pub/Sub
// adapter are held to the same documented outcomes: at-least-once delivery
// with attributes intact, concurrent handlers, redelivery of failed
// messages with a growing DeliveryAttempt, dead-lettering after
// MaxAttempts, no redelivery of acknowledged messages, Receive returning
// when its context ends, refusal of messages the transport cannot carry,
// and, for backends with state of their own, durability across a restart.
//
// Delivery is asynchronous, so the suite waits for it — on channels, never
// with fixed sleeps — and fails a test that has not seen what it waits for
// within a generous timeout. Negative guarantees ("not redelivered") are
// checked over a window that a sentinel message closes: the suite publishes
// the sentinel after the fact it checks and judges once the sentinel has
// been handled, by which time a wrong redelivery would have shown in the
// backends the suite runs on (see testAckedMessageIsNotRedelivered).
//
// The subtests run in parallel, each on a fresh Env, and all give open the
// same short RetryPolicy (50 ms to 1 s, 5 attempts), so that the suite
// takes seconds per backend. A backend that does no network I/O runs each
// subtest in a testing/synctest bubble (Options.Synctest): its backoffs
// and polls, and the suite's timeouts, then run on the bubble's clock, so
// the outcome does not depend on the machine's speed or load. The Pub/Sub
// adapter cannot: time in a bubble stands still while a goroutine waits on
// the network.
package queuetest
