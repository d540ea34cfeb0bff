// Package stripeexport pushes metered usage to Stripe Billing as meter
// events (POST /v1/billing/meter_events), as an optional second consumer of
// the usage topic: the ledger counts usage whatever Stripe does, and the
// exporter only reads the same messages.
//
// Each counted metric of a usage event (requests, units, bytes) that the
// meter mapping (ParseMeters) names becomes one meter event for the Stripe
// customer of the event's owner. Its identifier is derived from the
// keyplane event id alone (Identifier), so every retry and every redelivery
// of the same event sends the same identifier and the same Idempotency-Key:
// Stripe accepts an identifier once within at least 24 hours, and the
// usage topic's export subscription stops redelivering long before that
// (its retry policy spans under three hours).
//
// An owner's Stripe customer is the customer whose metadata keyplane_owner
// is the owner id (found with Stripe's customer search, cached). An owner
// without one is skipped and counted. A 429, a 5xx or a network error is
// retried with exponential backoff and jitter, then handed back to the
// queue for redelivery; any other 4xx is a ledger dead letter (reason
// stripe_rejected), listed with the others by GET /v1/usage/dead-letters.
package stripeexport
