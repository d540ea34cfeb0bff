// Package firestorenotify is the production notify.Store — the owner webhook
// registry and the delivery records — on Cloud Firestore in native mode.
//
// # Layout
//
//	owner_webhooks/{owner}   owner, url, events, secret_fingerprint,
//	                         updated_at
//	notifications/{id}       one delivery record per webhook-id ("ntf_…"):
//	                         id, owner, type, payload (bytes), status,
//	                         attempts, enqueued, next_attempt_at, lease,
//	                         lease_until, last_attempt_at, last_status,
//	                         last_error, reason, created_at, updated_at,
//	                         expire_at
//
// A document id is the owner or notification id itself when Firestore
// accepts it; an owner such as "." or "__x__" that Firestore does not is
// stored under "~" followed by its hex (owner and notification ids never
// contain '~', so the two forms cannot collide). The owner is also kept in
// a field.
//
// CreateDelivery is a Create, so an existing id is errs.Exists and nothing
// changes. UpdateDelivery is a transaction (read, mutate, Set), which
// Firestore retries on contention; a transaction still contended after its
// attempts returns errs.Conflict. UpdateDelivery calls on the same record
// from one Store queue on an in-process lock first, so only other
// processes contend in Firestore. Times are truncated to the microsecond,
// Firestore's precision; zero times are stored as 0001-01-01T00:00:00Z and
// read back as zero.
//
// # Deployment
//
// No query runs on these collections, so no composite index is needed, and
// every field can be exempted from single-field indexing (saving write
// cost; next_attempt_at, lease_until and updated_at change on every
// attempt).
//
// TTL policy: collection group "notifications", field "expire_at"
// (created_at + notify.Retention). Firestore deletes expired records within
// about a day; until then a repeated event is still deduplicated.
// owner_webhooks has no TTL.
package firestorenotify
