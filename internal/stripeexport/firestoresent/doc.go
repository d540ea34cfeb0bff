// Package firestoresent is the production stripeexport.Sent, the durable
// record of the meter events Stripe accepted, on Cloud Firestore in native
// mode, in a collection of its own.
//
// # Layout
//
//	stripe_sent/{hex SHA-256 of the identifier}
//	    id, recorded_at (the latest MarkSent), expire_at (recorded_at +
//	    the retention it was given, the TTL field). Hashing makes any
//	    identifier a valid document id and spreads sequential ones
//	    (evt_000001, evt_000002, …) over the key space instead of
//	    hot-spotting one tablet.
//
// Sent drops repeated ids and reads the documents with GetAll, 500 per
// call and up to 4 calls at once; a document whose expire_at has passed
// reads as not sent, so the record's answers do not depend on when
// Firestore's TTL policy gets to it. MarkSent drops repeated ids and
// writes the documents with Set (a later MarkSent renews the record),
// 500 per commit (Firestore's limit of writes per commit) and up to 4
// commits at once. Each commit is a transaction of writes only, applied
// whole or not at all; a failed call may have applied some of its commits,
// and calling it again with the same ids does no harm.
//
// # Cost
//
// The exporter reads each meter event's document once per first delivery
// of a usage message (a message of 1,000 events feeding one meter: 1,000
// reads in 2 RPCs) and writes it once after Stripe accepted it (1,000
// writes in 2 commits). Redeliveries to the same instance read nothing
// more: the exporter caches what the record has.
//
// # Deployment
//
// TTL policy: collection group stripe_sent, field expire_at. Firestore
// deletes an expired document within about a day; until then Sent
// ignores it. No query runs on the collection, so no composite index is
// needed and every field is exempted from single-field indexing
// (recorded_at and expire_at grow monotonically, which would cap the
// collection near 500 writes/s). infra/firestore.tf sets both.
package firestoresent
