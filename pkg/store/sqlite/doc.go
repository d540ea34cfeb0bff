// Package sqlite is the embedded store.Store: one SQLite database file
// (modernc.org/sqlite, pure Go) used when keyplane runs as one process
// without Google Cloud.
//
// The database runs in WAL mode. All writes go through a single connection
// whose transactions begin IMMEDIATE, so read-modify-write operations
// (UpdateKey, ReserveIdempotency) are serialised without retries; reads use
// a separate pool of read-only connections and never wait for writers. A
// second process writing the same file waits up to busy_timeout (5 s) for
// the lock and then gets errs.Conflict.
//
// Because of that single writer connection, the mutate function given to
// UpdateKey must not call the store.
//
// Times are stored as Unix microseconds (INTEGER, NULL for an unset
// *time.Time), maps and slices as JSON text, the key hash as a 32-byte BLOB
// with a UNIQUE index. Expired idempotency records are deleted by
// ReserveIdempotency, which stands in for Firestore's TTL policy. The schema
// version is kept in PRAGMA user_version; Open migrates older databases and
// refuses newer ones.
package sqlite
