package verify

import (
	"sync"
	"time"
)

// window counts admissions in one fixed UTC minute. It is shared by every
// version of a key's cache entry, so a reload does not reset the count.
type window struct {
	mu    sync.Mutex
	start int64 // unix minute of the counts
	reqs  int64
	units int64
}

// admit admits one request of units if neither per-minute limit would be
// exceeded (a limit < 0 is unlimited), and reports the remaining budget.
// A refused request consumes nothing.
func (w *window) admit(now time.Time, units, rpm, upm int64) (ok bool, reqsLeft, unitsLeft int64) {
	minute := now.Unix() / 60
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.start != minute {
		w.start, w.reqs, w.units = minute, 0, 0
	}
	ok = (rpm < 0 || w.reqs+1 <= rpm) && (upm < 0 || w.units+units <= upm)
	if ok {
		w.reqs++
		w.units += units
	}
	return ok, rpm - w.reqs, upm - w.units
}
