// Package stripeexport pushes metered usage to Stripe Billing as meter
// events (POST /v1/billing/meter_events), as an optional second consumer of
// the usage topic: the ledger counts usage whatever Stripe does, and the
// exporter only reads the same messages.
//
// Each counted metric of a usage event (requests, units, bytes) that the
// meter mapping (ParseMeters) names becomes one meter event for the Stripe
// customer of the event's owner. Its identifier is derived from the
// keyplane event id alone (Identifier), so every retry and every redelivery
// of the same event sends the same identifier and the same Idempotency-Key.
//
// # Sent once
//
// Stripe accepts an identifier once within at least 24 hours only, so the
// exporter keeps a durable record of the identifiers Stripe accepted
// (Sent; sqlitesent in serve's data directory, firestoresent in
// production), for SentRetention (usage.Retention, 40 days: an event
// delivered again after that is past usage.MaxAge and dropped as
// invalid). Before sending it drops the identifiers the record has; after
// Stripe answered 2xx (or resource_already_exists: it had the identifier)
// it records them, including those of a message whose other meter events
// failed, and only then caches them in memory (an LRU that spares a
// redelivery to the same instance the read). A failed or refused send is
// not recorded. So a redelivery, an operator's replay, a restart or
// another instance never bill an event twice, however late they come.
//
// The one gap is between Stripe's answer and the record's write: a crash
// there, or a failed write, makes Handle fail (or the message go
// unacknowledged), and the queue delivers it again within its retry
// policy (under three hours, well inside Stripe's 24 hours), which sends
// the unrecorded identifiers again; Stripe drops them by identifier (or
// replays the Idempotency-Key) and this time they are recorded. Only a
// message that then never reaches Stripe again within 24 hours (every
// later delivery fails, it is dead-lettered, and an operator replays it
// after a day) could bill the meter events of that one crash twice.
//
// An owner's Stripe customer is the customer whose metadata keyplane_owner
// is the owner id (found with Stripe's customer search, cached). An owner
// without one is skipped and counted. A 429, a 5xx or a network error is
// retried with exponential backoff and jitter, then handed back to the
// queue for redelivery; any other 4xx is a ledger dead letter (reason
// stripe_rejected), listed with the others by GET /v1/usage/dead-letters.
package stripeexport
