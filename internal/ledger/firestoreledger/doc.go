// Package firestoreledger is the production ledger.Ledger, on Cloud
// Firestore in native mode.
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
//	    key_id, owner, window ("minute", "hour", "day", "month"), start (timestamp),
//	    shard (0 to Shards-1), requests, units, bytes, cost (integers; cost in
//	    micro-units of the owner's currency; added to
//	    with firestore.Increment). A key's totals in a window are the sum
//	    of its up to Shards shard documents; a missing shard is zero. The
//	    id is unambiguous although key ids may contain '_': its last three
//	    parts have fixed forms.
//	usage_owner_counters/{owner id in hex}_{window}_{window start, Unix seconds}_{shard}
//	    owner, window, start, shard, requests, units, bytes, cost (an owner's
//	    totals in the window), features (a map of feature name to
//	    {requests, units, bytes, cost}: the part of them of events that named
//	    the feature). Every field is added to with firestore.Increment, so
//	    the features of concurrent commits merge. A document holds about
//	    10,000 features within Firestore's 1 MiB, far more than a plan
//	    offers (plan.MaxFeatures); an owner reporting more distinct
//	    feature names than that in one window fails its commits
//	    (errs.Internal, dead-lettered after the queue's retries).
//	usage_dead_letters/{hex SHA-256 of the dead letter id}
//	    id, time, reason, detail, payload (bytes, at most 64 KiB). The
//	    first record of an id is kept.
//	usage_client_ips/{key id}_{UTC day start, Unix seconds}
//	    key_id, day (timestamp), ips (array of canonical IP strings, in
//	    the order they were first recorded), expire_at (day +
//	    ledger.ClientIPRetention, the TTL field): the distinct client IPs a
//	    key was used from on a day. The id is unambiguous: its last part
//	    is digits.
//
// # Exactly once
//
// Count drops repeated ids, sorts the events by owner, key and time, and
// cuts them into chunks of at most 450 writes: a Create of each event's
// document plus one increment per (key, window, window start) and per
// (owner, window, window start) the chunk touches, with the chunk's events
// pre-aggregated into it. A key's events that fit in one chunk are not
// split between two. Each chunk picks one random shard per key and per
// owner, so it adds to at most four counter documents per key and four per
// owner (minute, hour, day, month) unless its events span windows. A chunk is committed in one
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
// # Client IPs
//
// AddClientIPs writes each key's document of the day with a Set-merge of
// key_id, day, expire_at and firestore.ArrayUnion of its IPs. Firestore
// applies the union on the server, so concurrent writers (verify
// instances flushing the same key) lose no IP and need no transaction,
// and an IP already in the array is not added again. The keys of a call
// are written through a BulkWriter, in requests of up to 20 writes sent
// in parallel, well under the 500 writes a batch allows; the writes are
// independent, so a failed call may have written some keys, and writing
// them again on retry does no harm. ClientIPs is one document read: the
// count is the array's length, the sample its first IPs once sorted.
//
// A document holds at most 1 MiB, some 25,000 IPv6 addresses; a write
// past that fails (errs.Internal). The distinct-IP rule needs at most
// plan.MaxDistinctIPsPerDay + 1 per key, and each flushing instance sends
// at most that many, so only tens of instances each seeing a thousand
// other IPs of one key in a day come near it. Each document takes about
// one write per second sustained: instances / flush interval per key.
//
// # Cost
//
// Writes per counted event: 1 + (counter increments in the chunk) / (events
// in the chunk). A webhook batch of 1,000 events of one owner's 20 keys and
// 5 features in one minute is 3 commits and 1,092 writes: 1,000 Creates, 80
// key increments and 12 owner increments (features ride in the owner's
// documents), 1.092 writes per event (Stats reports them;
// TestCountPreAggregatesCounterWrites checks the bound of 1.1). The worst
// case, every event of a different key and owner, is 9 writes per event;
// events of different keys of one owner cost 5 plus 4 per chunk.
// Each commit is two RPCs (BeginTransaction, Commit). A redelivered batch
// costs a failed commit, one document read per event of the chunk, and a
// commit of what remains. Totals reads Shards documents by id; OwnerTotals
// and ActiveKeys read each listed key's shard documents and a few more
// (each query is sized from the shards per key seen so far).
// AddClientIPs is one write per key in the call; ClientIPs one read.
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
//	collection usage_counters: owner ASC, window ASC, start ASC, key_id ASC, __name__ ASC (OwnerTotals with an owner, KeySeries)
//	collection usage_owner_counters: owner ASC, window ASC, start ASC, __name__ ASC      (OwnerSeries)
//	collection usage_owner_counters: window ASC, start ASC, owner ASC, __name__ ASC      (ActiveOwners)
//
// ListDeadLetters uses the automatic single-field index on
// usage_dead_letters.time (descending).
//
// TTL policies: collection group usage_events, field expire_at. Firestore
// deletes an expired event document within about a day; until then a
// redelivery of its id is still a duplicate, which errs on the safe side.
// Collection group usage_client_ips, field expire_at: a day's client IPs
// are kept at least ledger.ClientIPRetention after the day's start, and
// deleted within about a day after that. The emulator does not run TTL
// policies.
//
// Single-field index exemptions (nothing queries these fields; they save
// index writes, and time, expire_at, start and day grow monotonically,
// which would cap the collection near 500 writes/s):
//
//	usage_events:       id, key_id, time, expire_at
//	usage_counters:     requests, units, bytes, cost (rewritten by every increment), shard, start
//	usage_owner_counters: requests, units, bytes, cost, features, shard, start
//	usage_dead_letters: id, reason, detail, payload
//	usage_client_ips:   key_id, day, expire_at, ips (an array field would
//	                    otherwise get an array-contains index entry per IP)
package firestoreledger
