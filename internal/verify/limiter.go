package verify

import (
	"context"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/limiter"
)

// window counts admissions in one fixed UTC minute. It is shared by every
// version of a cache entry (a key's, an owner's, an owner's feature's), so
// a reload does not reset the count.
type window struct {
	mu    sync.Mutex
	start int64 // unix minute of the counts
	reqs  int64
	units int64
}

// level is one set of per-minute limits a request counts against: the
// key's, its owner's, or its owner's for one feature.
type level struct {
	win            *window
	scope, feature string
	rpm, upm       int64 // -1: unlimited
	rpmSrc, upmSrc string
	// The keys of the level's buckets in the shared limiter, within the
	// owner's group: the same on every instance (they name the key id,
	// the owner or the feature, never anything of this process).
	reqBucket, unitsBucket string

	// Set by admitAll.
	reqsLeft, unitsLeft       int64
	refusedReqs, refusedUnits bool
}

// The prefixes of the shared limiter's bucket keys (level.reqBucket and
// level.unitsBucket), in the group of the key's owner.
const (
	bucketKey     = "key:"     // + key id
	bucketOwner   = "owner"    // the owner's own limits
	bucketFeature = "feature:" // + feature name
)

// buckets sets l's shared limiter bucket keys from its name.
func (l *level) buckets(name string) {
	l.reqBucket, l.unitsBucket = name+":requests", name+":units"
}

// limited reports whether l limits anything.
func (l *level) limited() bool { return l.win != nil && (l.rpm >= 0 || l.upm >= 0) }

// admitLevels admits one request of units against ls, all or nothing: on
// the shared limiter if one is configured, else (and while it fails) on
// this process's windows. units above limiter.MaxValue count as
// limiter.MaxValue, which no limit a plan can usefully set admits.
func (v *Verifier) admitLevels(ctx context.Context, ls []level, group string, now time.Time, units int64) bool {
	units = min(units, limiter.MaxValue)
	if v.opt.Limiter == nil {
		return admitAll(ls, now, units)
	}
	return v.admitShared(ctx, ls, group, now, units)
}

// admitAll admits one request of units if no level's limit would be
// exceeded, counting it in every level, and sets each level's remaining
// budget and which of its limits refused. A refused request consumes
// nothing anywhere. The windows are locked in the order of ls (key, owner,
// feature, the same for every request), so concurrent requests of one
// owner cannot both pass a check the other's count would fail.
func admitAll(ls []level, now time.Time, units int64) bool {
	minute := now.Unix() / 60
	for i := range ls {
		w := ls[i].win
		w.mu.Lock()
		if w.start != minute {
			w.start, w.reqs, w.units = minute, 0, 0
		}
	}
	ok := true
	for i := range ls {
		l := &ls[i]
		l.refusedReqs = l.rpm >= 0 && l.win.reqs+1 > l.rpm
		l.refusedUnits = l.upm >= 0 && l.win.units+units > l.upm
		ok = ok && !l.refusedReqs && !l.refusedUnits
	}
	for i := range ls {
		l := &ls[i]
		if ok {
			l.win.reqs++
			l.win.units += units
		}
		l.reqsLeft, l.unitsLeft = l.rpm-l.win.reqs, l.upm-l.win.units
		l.win.mu.Unlock()
	}
	return ok
}

// admitShared admits one request of units against the limited buckets of
// ls in one Admit of the shared limiter, in the group of the key's owner
// (one hash slot, so one atomic script), and sets each level's remaining
// budget and refusal from its answer.
//
// A request the shared limiter admits is also counted in this process's
// windows, without a check: if the shared limiter fails later in the
// minute, the fallback to those windows (admitAll) starts from what this
// instance has already admitted, so that each instance admits at most
// each limit in the minute, Redis and fallback together.
func (v *Verifier) admitShared(ctx context.Context, ls []level, group string, now time.Time, units int64) bool {
	req := limiter.Request{Group: group}
	// Where each used bucket came from: its level, and whether it is the
	// units bucket.
	var from [limiter.MaxBuckets]struct {
		level int
		units bool
	}
	n := 0
	add := func(i int, key string, limit, cost int64, isUnits bool) {
		if limit >= 0 && n < limiter.MaxBuckets {
			// A limit above MaxValue is one no minute's count can reach
			// without overflowing a Redis number: MaxValue says the same.
			req.Buckets[n] = limiter.Bucket{Key: key, Limit: min(limit, limiter.MaxValue), Cost: cost}
			from[n].level, from[n].units = i, isUnits
			n++
		}
	}
	for i := range ls {
		l := &ls[i]
		add(i, l.reqBucket, l.rpm, 1, false)
		add(i, l.unitsBucket, l.upm, units, true)
	}
	if n == 0 {
		return admitAll(ls, now, units) // nothing is limited: nothing to share
	}
	res, err := v.opt.Limiter.Admit(ctx, now, req)
	if err != nil {
		v.sharedFailed(ctx, err)
		return admitAll(ls, now, units)
	}
	v.sharedAnswered()
	if res.OK {
		charge(ls, now, units)
	}
	for i := range ls {
		ls[i].refusedReqs, ls[i].refusedUnits = false, false
	}
	for j := range n {
		l := &ls[from[j].level]
		if from[j].units {
			l.unitsLeft, l.refusedUnits = res.Remaining[j], res.Refused == j
		} else {
			l.reqsLeft, l.refusedReqs = res.Remaining[j], res.Refused == j
		}
	}
	return res.OK
}

// charge counts one request of units in every level's window, without a
// check: the shared limiter has admitted it.
func charge(ls []level, now time.Time, units int64) {
	minute := now.Unix() / 60
	for i := range ls {
		w := ls[i].win
		w.mu.Lock()
		if w.start != minute {
			w.start, w.reqs, w.units = minute, 0, 0
		}
		w.reqs++
		w.units += units
		w.mu.Unlock()
	}
}

// sharedFailed counts a verify decided without the shared limiter, and
// logs the first of a run of them.
func (v *Verifier) sharedFailed(ctx context.Context, err error) {
	v.fallbacks.Add(1)
	if ctx.Err() != nil {
		return // the caller gave up; the limiter is not to blame
	}
	if v.sharedDown.CompareAndSwap(false, true) {
		v.opt.Logger.Warn("the shared limiter is unavailable: per-minute limits are counted on this instance only "+
			"(each instance admits at most each limit per minute) until it answers again", "error", err)
	}
}

// sharedAnswered logs the end of a run of fallbacks.
func (v *Verifier) sharedAnswered() {
	if v.sharedDown.Load() && v.sharedDown.CompareAndSwap(true, false) {
		v.opt.Logger.Info("the shared limiter answers again: per-minute limits are counted across instances")
	}
}
