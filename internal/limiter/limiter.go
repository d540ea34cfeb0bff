package limiter

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

// MaxBuckets is the most buckets one request counts against: requests
// and units, each per key, per owner and per owner and feature.
const MaxBuckets = 6

// MaxValue is the largest Limit and the largest Cost a Bucket may have:
// 2^53, the largest integer a Redis script's numbers (doubles) hold
// exactly, so that every backend compares the same way.
const MaxValue = 1 << 53

// Bucket is one per-minute counter a request counts against.
type Bucket struct {
	// Key names the counter within its Request's Group. An empty Key
	// marks an unused slot of Request.Buckets.
	Key string
	// Limit is the most the bucket admits in one UTC minute, counted in
	// Cost; < 0 is unlimited (the bucket is still counted).
	Limit int64
	// Cost is what this request adds to the bucket: 1 for a requests
	// bucket, the request's units for a units bucket. 0..MaxValue.
	Cost int64
}

// Request is what one Admit counts against: up to MaxBuckets buckets of
// one Group. It is passed by value so that an Admit through the Limiter
// interface allocates nothing for its argument.
type Request struct {
	// Group is the scope every bucket of the request belongs to; keyplane
	// uses the key's owner id. A bucket is identified by Group and Key
	// together. The Redis adapter keeps a group's counters in one hash
	// slot, so that one atomic script can check and charge them all.
	// Required.
	Group string
	// Buckets are the counters, in the caller's order; Result.Refused
	// and Result.Remaining index this array. Used keys must be distinct.
	Buckets [MaxBuckets]Bucket
}

// Result is the outcome of an Admit.
type Result struct {
	// OK reports whether the request was admitted, and so counted in
	// every bucket.
	OK bool
	// Refused is the index in Request.Buckets of the first bucket that
	// refused the request (its count plus Cost would exceed its Limit),
	// or -1 when OK.
	Refused int
	// Remaining is, for each bucket, its Limit less its count after the
	// Admit (after charging it when OK, unchanged when refused), at
	// least 0. It is -1 for an unlimited bucket and an unused slot.
	Remaining [MaxBuckets]int64
	// ResetAt is the start of the next UTC minute, when every bucket's
	// count starts again from zero.
	ResetAt time.Time
}

// Limiter admits requests against per-minute buckets.
type Limiter interface {
	// Admit counts req in the UTC minute containing now if every bucket
	// has room (a limited bucket's count plus its Cost is at most its
	// Limit), and then charges every bucket its Cost; otherwise it
	// charges nothing and reports the first bucket that refused. It is
	// atomic: concurrent Admits, in this process or (for a shared
	// backend) another, never admit more than a bucket's Limit in one
	// minute. A request with no used bucket is admitted and counts
	// nothing.
	//
	// An error means no decision was made (see the package comment):
	// errs.Invalid if req fails Check (nothing counted); errs.Unavailable
	// wrapping ctx.Err() if ctx was done before the Admit started
	// (nothing counted), or when the backend failed (the buckets may have
	// been charged). The Result is then the zero value.
	Admit(ctx context.Context, now time.Time, req Request) (Result, error)
}

// Check reports, as an errs.Invalid error, what makes req malformed: an
// empty Group, a Cost outside 0..MaxValue, a Limit above MaxValue, or a
// used Key twice.
func (req *Request) Check() error {
	if req.Group == "" {
		return errs.E(errs.Invalid, "limiter: the request has no group")
	}
	for i := range req.Buckets {
		b := &req.Buckets[i]
		if b.Key == "" {
			continue
		}
		if b.Cost < 0 || b.Cost > MaxValue {
			return errs.E(errs.Invalid, "limiter: bucket %d costs %d, outside 0..%d", i, b.Cost, int64(MaxValue))
		}
		if b.Limit > MaxValue {
			return errs.E(errs.Invalid, "limiter: bucket %d has limit %d, above %d", i, b.Limit, int64(MaxValue))
		}
		for j := range i {
			if req.Buckets[j].Key == b.Key {
				return errs.E(errs.Invalid, "limiter: buckets %d and %d have the same key", j, i)
			}
		}
	}
	return nil
}

// Used reports whether req has at least one used bucket.
func (req *Request) Used() bool {
	for i := range req.Buckets {
		if req.Buckets[i].Key != "" {
			return true
		}
	}
	return false
}

// Minute returns the UTC minute containing t, as minutes since the Unix
// epoch (rounded down, also before 1970).
func Minute(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s%60 < 0 {
		m--
	}
	return m
}

// NewResult builds the Result of an Admit of req at now from the index of
// the first bucket that refused it (-1 if admitted) and each used
// bucket's count after the Admit. Adapters decide; this computes what
// the caller sees, the same way for all of them.
func NewResult(now time.Time, req *Request, refused int, counts *[MaxBuckets]int64) Result {
	r := Result{
		OK:      refused < 0,
		Refused: refused,
		ResetAt: time.Unix((Minute(now)+1)*60, 0).UTC(),
	}
	for i := range req.Buckets {
		b := &req.Buckets[i]
		switch {
		case b.Key == "" || b.Limit < 0:
			r.Remaining[i] = -1
		default:
			r.Remaining[i] = max(b.Limit-counts[i], 0)
		}
	}
	return r
}

// Cancelled returns the error an Admit returns when ctx was done before it
// started, or nil.
func Cancelled(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "limiter: the request was cancelled")
	}
	return nil
}
