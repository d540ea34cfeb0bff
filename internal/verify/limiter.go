package verify

import (
	"sync"
	"time"
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

	// Set by admitAll.
	reqsLeft, unitsLeft       int64
	refusedReqs, refusedUnits bool
}

// limited reports whether l limits anything.
func (l *level) limited() bool { return l.win != nil && (l.rpm >= 0 || l.upm >= 0) }

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
