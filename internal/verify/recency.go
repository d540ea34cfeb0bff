package verify

import (
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// recency, embedded in a cache entry, lets a hit move the entry to the
// front of its LRU at most once per touchEvery instead of on every hit.
// The LRU's Get takes its lock exclusively to move the entry, so a hot
// key's requests queued on it one by one; a hit now reads under the read
// lock (Peek). Eviction stays least-recently-used to within touchEvery,
// which for caches of thousands of entries, each trusted for minutes,
// evicts the same entries.
type recency struct {
	touched atomic.Int64 // unix nanoseconds of the last move to the front
}

const touchEvery = time.Second

func (r *recency) recent() *recency { return r }

// cached returns c's value for k, moving it to the front if it was not
// moved within touchEvery of now.
func cached[K comparable, V interface{ recent() *recency }](c *lru.Cache[K, V], k K, now time.Time) (V, bool) {
	v, ok := c.Peek(k)
	if !ok {
		return v, false
	}
	r, n := v.recent(), now.UnixNano()
	if last := r.touched.Load(); n-last >= int64(touchEvery) && r.touched.CompareAndSwap(last, n) {
		c.Get(k)
	}
	return v, true
}
