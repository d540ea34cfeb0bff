// Package sqlitesent is the embedded stripeexport.Sent, the durable record
// of the meter events Stripe accepted: a SQLite database file of its own
// (modernc.org/sqlite through internal/sqlitedb) in serve's data
// directory, so that its schema version and its writes are apart from the
// store's and the ledger's.
//
// # Layout
//
//	stripe_sent (id PRIMARY KEY, recorded_at, expire_at)
//	    one row per meter event identifier Stripe accepted; recorded_at
//	    is the time of its latest MarkSent and expire_at that time plus
//	    the retention it was given (Unix microseconds); indexed by
//	    expire_at
//
// Sent is one read per 500 ids on the read-only pool, of the rows whose
// expire_at is still ahead: an expired row not yet deleted reads as not
// sent. MarkSent is one IMMEDIATE transaction: it deletes up to 2n+100
// expired rows (n ids in the call), as sqliteledger's Count does for its
// event ids, so that the table shrinks to what retention keeps without a
// sweep of its own, then inserts a row per id (INSERT … ON CONFLICT DO
// UPDATE, which renews the retention of an id recorded before). Either
// every id of a call is recorded or none is.
package sqlitesent
