// Package sqlitestore is the embedded store.Store: one SQLite database file
// (modernc.org/sqlite, pure Go) used when keyplane runs as one process
// without Google Cloud.
//
// The database runs in WAL mode. All writes go through a single connection
// whose transactions begin IMMEDIATE, so read-modify-write operations
// (UpdateKey, ReserveIdempotency, SaveCheckpoint's compare-and-set) are
// serialised without retries; reads use a separate pool of read-only
// connections and never wait for writers. A second process writing the
// same file waits up to busy_timeout (5 s) for the lock and then gets
// errs.Conflict.
//
// Because of that single writer connection, the mutate functions given to
// UpdateKey and UpdateOwner must not call the store.
//
// Times are stored as Unix microseconds (INTEGER, NULL for an unset
// *time.Time), maps and slices as JSON text, the key hash as a 32-byte BLOB
// with a UNIQUE index. Expired idempotency records are deleted by
// ReserveIdempotency, which stands in for Firestore's TTL policy.
//
// DueSuspensions reads the partial index keys_by_suspension, which holds
// only disabled keys with disabled_until set, so its cost follows the
// number of suspended keys, not of all keys. GetKeys is one SELECT … WHERE
// id IN (…). Checkpoints are rows of the checkpoints table. Owners are rows
// of the owners table; ChangedOwners reads its index owners_by_update.
//
// The schema version is kept in PRAGMA user_version; Open migrates older
// databases (version 3 added keys_by_suspension and checkpoints, version 4 owners) and
// refuses newer ones.
package sqlitestore
