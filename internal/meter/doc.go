// Package meter carries usage from the edge into the ledger: Publish puts
// a validated webhook batch on the usage topic, and the Consumer turns the
// topic's messages into counted events (acking poison into dead letters,
// asking for redelivery on transient failures). The Verify function's
// client IPs travel the same topic (ClientIPPublisher), so that the
// consumer is the only writer of the ledger in production.
package meter
