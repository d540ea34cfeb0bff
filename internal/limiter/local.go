package limiter

import (
	"context"
	"sync"
	"time"
)

// Local is the in-process Limiter: exact within one process, and the
// reference the shared backends are checked against. It keeps the counts
// of the latest minute it has seen and of the minute before it (for late
// Admits); older minutes are dropped when a new minute begins, so its
// memory is bounded by the buckets used since the start of the previous
// minute. The zero value is ready to use.
type Local struct {
	mu      sync.Mutex
	latest  int64 // the latest minute admitted in; 0 before the first Admit
	windows map[int64]map[bucketID]int64
}

type bucketID struct{ group, key string }

var _ Limiter = (*Local)(nil)

// Admit implements Limiter. Its only errors are a malformed req and a done
// ctx, and neither counts anything.
func (l *Local) Admit(ctx context.Context, now time.Time, req Request) (Result, error) {
	if err := req.Check(); err != nil {
		return Result{}, err
	}
	if err := Cancelled(ctx); err != nil {
		return Result{}, err
	}
	minute := Minute(now)
	var counts [MaxBuckets]int64
	refused := -1
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.window(minute)
	for i := range req.Buckets {
		b := &req.Buckets[i]
		if b.Key == "" {
			continue
		}
		counts[i] = w[bucketID{req.Group, b.Key}]
		if refused < 0 && b.Limit >= 0 && counts[i]+b.Cost > b.Limit {
			refused = i
		}
	}
	if refused < 0 {
		for i := range req.Buckets {
			if b := &req.Buckets[i]; b.Key != "" && b.Cost > 0 {
				counts[i] += b.Cost
				w[bucketID{req.Group, b.Key}] = counts[i]
			}
		}
	}
	return NewResult(now, &req, refused, &counts), nil
}

// window returns the counts of minute, first dropping the minutes before
// the previous one if minute is a new latest. l.mu is held.
func (l *Local) window(minute int64) map[bucketID]int64 {
	if l.windows == nil {
		l.windows = make(map[int64]map[bucketID]int64)
	}
	if minute > l.latest || len(l.windows) == 0 {
		l.latest = minute
		for m := range l.windows {
			if m < minute-1 {
				delete(l.windows, m)
			}
		}
	}
	w := l.windows[minute]
	if w == nil {
		w = make(map[bucketID]int64)
		l.windows[minute] = w
	}
	return w
}
