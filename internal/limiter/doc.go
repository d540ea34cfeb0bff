// Package limiter owns the per-minute admission contract: a request counts
// against up to MaxBuckets counters (per key, per owner, per owner and
// feature; requests and units), each limited per fixed UTC minute, and is
// admitted only if every counter has room, in which case all of them are
// charged; a refused request consumes nothing. These are the semantics of
// keyplane's in-process limiter (internal/verify), stated once so that a
// shared backend can give the same answers across instances.
//
// Local is the in-process implementation: exact within one process, and
// the reference every adapter is checked against (limitertest). The
// redislimiter adapter counts in Redis (Memorystore in production), exact
// across instances.
//
// # Windows
//
// A bucket's count covers the UTC minute that contains the now passed to
// Admit, not the minute of the caller's wall clock, so the window can be
// driven in tests. Each minute is counted apart: an Admit whose now is
// late (still in the previous minute when another caller has moved on)
// counts against its own minute. A minute's counts are kept at least
// until the end of the minute after it.
//
// # Errors
//
// An error means no decision was made: Invalid for a malformed Request
// (nothing was counted), Unavailable when the backend could not answer in
// time or the context was done. After an Unavailable error the buckets
// may or may not have been charged; the caller decides without the shared
// limiter (keyplane falls back to its in-process one).
package limiter
