// Package sqliteledger is the embedded ledger.Ledger: a SQLite database file
// (modernc.org/sqlite, pure Go) used when keyplane runs as one process
// without Google Cloud.
//
// The ledger needs a database file of its own, not the store's: each keeps
// its schema version in PRAGMA user_version, and a separate file also keeps
// metering writes from queueing behind key writes. The database runs in WAL
// mode; every write goes through a single connection whose transactions
// begin IMMEDIATE, reads through a pool of read-only connections.
//
// # Layout
//
//	usage_events (id PRIMARY KEY, key_id, time, expire_at)
//	    one row per counted event id, kept until expire_at (count time +
//	    retention); indexed by expire_at
//	usage_counters ((key_id, win, start) PRIMARY KEY, owner, requests, units, bytes, cost)
//	    pre-aggregated totals per key and UTC minute, hour, day and month
//	    window; indexed by (win, start, key_id) for ActiveKeys and by
//	    (owner, win, start, key_id) for OwnerTotals
//	usage_owner_counters ((owner, win, start, feature) PRIMARY KEY, requests, units, bytes, cost)
//	    pre-aggregated totals per owner and window (feature "") and the
//	    part of them of each feature; indexed by (win, start, feature,
//	    owner) for ActiveOwners
//	usage_dead_letters (id PRIMARY KEY, time, reason, detail, payload)
//	    indexed by (time DESC, id DESC)
//	usage_client_ips ((key_id, day, ip) PRIMARY KEY)
//	    one row per client IP a key was used from on a UTC day (day is
//	    the day's start, ip canonical); indexed by day
//
// # Exactly once
//
// Count is one transaction: INSERT … ON CONFLICT (id) DO NOTHING for each
// event, then one UPSERT per (key, window, start) and per (owner, window,
// start, feature) adding the amounts of the events whose insert took. Either both the ids and the increments commit
// or neither does, so a failed Count burns no id, and the single writer
// makes concurrent Counts of overlapping events exact. Each Count first
// deletes up to 2n+100 expired event rows (n events in the call), which
// stands in for Firestore's TTL policy and keeps usage_events near what
// retention requires. Counters saturate at math.MaxInt64 rather than wrap.
//
// Times are stored as Unix microseconds. A window start passed to a query
// is rounded down to the start of its window. Open migrates older schemas
// and refuses newer ones.
//
// # Client IPs
//
// AddClientIPs is one transaction: it deletes up to 2n+100 rows of days
// that started more than ledger.ClientIPRetention ago (n rows in the call),
// then inserts a row per (key, day, IP) with ON CONFLICT DO NOTHING, so an
// IP recorded again, or concurrently, is one row. ClientIPs is one query:
// the rows of the key and day ordered by ip with LIMIT, and count(*) OVER
// () for their number, read from one snapshot. A day passed to either is
// rounded down to its UTC start.
package sqliteledger
