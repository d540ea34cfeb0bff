// Package firestore is the production usage.Ledger, on Cloud Firestore in
// native mode.
//
// # Layout
//
//	usage_events/{hex SHA-256 of the event id}
//	    id, key_id, time, expire_at: the mark that an event id was counted.
//	    Hashing makes any event id a valid document id and spreads
//	    sequential ids (evt_000001, evt_000002, …) over the key space
//	    instead of hot-spotting one tablet. expire_at is count time +
//	    retention, the TTL field.
//	usage_counters/{key id}_{window}_{window start, Unix seconds}_{shard}
//	    key_id, owner, window ("minute", "day", "month"), start (timestamp),
//	    shard (0 to Shards-1), requests, units, bytes (integers, added to
//	    with firestore.Increment). A key's totals in a window are the sum
//	    of its up to Shards shard documents; a missing shard is zero. The
//	    id is unambiguous although key ids may contain '_': its last three
//	    parts have fixed forms.
//	usage_dead_letters/{hex SHA-256 of the dead letter id}
//	    id, time, reason, detail, payload (bytes, at most 64 KiB). The
//	    first record of an id is kept.
//
// # Exactly once
//
// Count drops repeated ids, sorts the events by key and time, and cuts
// them into chunks of at most 450 writes: a Create of each event's document
// plus one increment per (key, window, window start) the chunk touches,
// with the chunk's events pre-aggregated into it. Each chunk picks one random shard
// per key, so it adds to at most three counter documents per key (minute,
// day, month) unless its events span windows. A chunk is committed in one
// transaction of writes only (RunTransaction with Create and Set-merge of
// increments, no reads), which Firestore applies whole or not at all: if
// any event document exists the commit fails with ALREADY_EXISTS and none
// of its increments are applied (TestChunkCommitIsAtomic proves it on the
// emulator). Count then reads the chunk's event documents (one GetAll),
// drops those that exist, and commits the rest in new chunks; after three
// such rounds, which only concurrent deliveries of the same events cause,
// it commits what is left one event at a time, where ALREADY_EXISTS means
// exactly "counted already". So a failed commit burns no id, a retry counts
// exactly what is not yet counted, and any number of concurrent Counts of
// overlapping events count each id once.
//
// # Cost
//
// Writes per counted event: 1 + (counter increments in the chunk) / (events
// in the chunk). A webhook batch of 1,000 events of 20 keys in one minute
// is 3 commits and 1,066 writes: 1.066 writes per event (Stats reports
// them; TestCountPreAggregatesCounterWrites checks the bound). The worst
// case, every event of a different key or minute, is 4 writes per event.
// Each commit is two RPCs (BeginTransaction, Commit). A redelivered batch
// costs a failed commit, one document read per event of the chunk, and a
// commit of what remains. Totals reads Shards documents by id; OwnerTotals
// and ActiveKeys read each listed key's shard documents and a few more
// (each query is sized from the shards per key seen so far).
//
// # Throughput limits
//
// Firestore sustains about one write per second per document. Every
// commit adds to one shard of each of its keys' counters, so one key's
// commits are spread over Shards documents per window: about Shards
// (default 8) commits per second per key sustained, each of up to ~440
// events. Past that, commits are aborted for contention, attempted up to
// five times with backoff, and then reported as errs.Unavailable, which the
// consumer retries. Raise Options.Shards for hotter keys (never lower it:
// Totals reads shards 0 to Shards-1 only). Each new minute creates new
// minute counter documents for every active key; their window and start
// are the same for all of them, so keep the single-field index on start
// exempted (below) and expect the composite indexes to take that burst.
//
// # Deployment
//
// Composite indexes (the emulator does not need them; production rejects
// the queries without them):
//
//	collection usage_counters: window ASC, start ASC, key_id ASC, __name__ ASC          (ActiveKeys, OwnerTotals without an owner)
//	collection usage_counters: owner ASC, window ASC, start ASC, key_id ASC, __name__ ASC (OwnerTotals with an owner)
//
// ListDeadLetters uses the automatic single-field index on
// usage_dead_letters.time (descending).
//
// TTL policy: collection group usage_events, field expire_at. Firestore
// deletes an expired event document within about a day; until then a
// redelivery of its id is still a duplicate, which errs on the safe side.
// The emulator does not run TTL policies.
//
// Single-field index exemptions (nothing queries these fields; they save
// index writes, and time, expire_at and start grow monotonically, which
// would cap the collection near 500 writes/s):
//
//	usage_events:       id, key_id, time, expire_at
//	usage_counters:     requests, units, bytes (rewritten by every increment), shard, start
//	usage_dead_letters: id, reason, detail, payload
package firestore
