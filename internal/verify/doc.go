// Package verify decides, on the hot path of every API request, whether a
// key may be used: authentication (format, existence), authorization
// (status, expiry, IP and referrer restrictions, scope), quota state and
// per-minute admission control. A decision is a value (VALID, DISABLED, …);
// an error means the decision could not be made safely and the caller
// must refuse (fail closed).
//
// # Cache and revocation
//
// Each Verifier keeps a bounded LRU cache of lookup hash → key record and a
// bounded negative cache of hashes that match no key, and loads misses
// through single-flight, so a burst of requests for one uncached key reads
// the datastore once. Cached records are kept fresh by polling the
// datastore's change feed (store.ChangedKeys) every SyncInterval (1 s):
// a disable, revoke or rotation changes the key's UpdatedAt, the next poll
// carries it, and the cached record is replaced. Each poll reads the
// changes stamped since the previous poll began, less FeedOverlap (5 s), so
// a change whose transaction committed late, or whose writer's clock lags
// by less than that, is still picked up; each change is read by about
// FeedOverlap/SyncInterval polls and then no more.
//
// Cloud Functions may throttle an instance's CPU between requests, so the
// background poller cannot be trusted alone: a request that finds the last
// successful poll older than SyncInterval polls first (once for all
// concurrent requests). Hence the bound: a change reaches every verifier
// within SyncInterval plus one feed query, under 2 s. A change made in the
// verifier's own process is applied at once: keys.Service calls
// KeyChanged (its Observer) after the write commits, which applies the
// record exactly as a poll would.
//
// A key that does not change is read from the datastore at most once per
// TTL (10 min) per instance: entries older than that are re-read, as a
// safety net behind the feed.
//
// # Outages
//
// With the datastore unreachable, a key that is not cached gets an error
// (503: never VALID). Cached keys keep verifying while the last successful
// poll is younger than MaxStale (5 min), because refusing every request of
// a paying customer's API for a short datastore blip is worse than letting
// a key disabled during that blip work a little longer; after MaxStale
// every verify fails closed.
//
// # Per-minute limits
//
// A request counts against the key's, its owner's and the owner's
// feature's per-minute limits, all or nothing. By default they are counted
// in this process (exact on one instance). With Options.Limiter (Redis)
// they are counted there, one Admit per verify in the owner's group, exact
// across instances; the request is also counted here, so that while the
// shared limiter fails the verify falls back to these counts and each
// instance admits at most each limit per minute (limiter.go).
package verify
