// Package sqlitenotify is the embedded notify.Store — the owner webhook
// registry and the delivery records — in one SQLite database file
// (modernc.org/sqlite, pure Go), used when keyplane runs as one process
// without Google Cloud.
//
// It needs a database file of its own, not the key store's or the usage
// ledger's: each keeps its schema version in PRAGMA user_version. The
// database runs in WAL mode; every write goes through a single connection
// whose transactions begin IMMEDIATE, so UpdateDelivery's read-modify-write
// is serialised without retries (its mutate function must not call the
// store); reads use a pool of read-only connections.
//
// # Layout
//
//	owner_webhooks (owner PRIMARY KEY, url, events JSON, secret_fingerprint, updated_at)
//	notifications  (id PRIMARY KEY, owner, type, payload, status, attempts,
//	                enqueued, next_attempt_at, lease, lease_until,
//	                last_attempt_at, last_status, last_error, reason,
//	                created_at, updated_at, expire_at), indexed by expire_at
//
// Times are Unix microseconds, the zero time 0. CreateDelivery deletes a
// bounded batch of records past expire_at before it inserts, which stands
// in for Firestore's TTL policy. Open migrates older schemas and refuses
// newer ones.
package sqlitenotify
