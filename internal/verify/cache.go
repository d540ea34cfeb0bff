package verify

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/keyplane/keyplane/internal/apikey"
)

// cache is a bounded map for verify's caches (keys by lookup hash, misses,
// owners, quota totals) whose hits take no exclusive lock: concurrent
// verifies of one hot key read it together.
//
// It is split into shards by a hash of the key; each is a map under a
// sync.RWMutex with a fixed share of the bound. A hit (get) holds the
// shard's read lock and sets the slot's referenced bit (an atomic, written
// only when not already set, so a hot slot's cache line stays shared).
// When a full shard takes a new key it evicts by CLOCK (second chance):
// the hand clears referenced bits until it finds a slot whose bit is
// clear. That approximates LRU: a key hit since the hand last passed it is
// kept. The bound is exact (the shards' shares sum to it); eviction is
// per shard, so a shard may evict while others have room, which a uniform
// hash makes rare.
type cache[K comparable, V any] struct {
	shards []cacheShard[K, V]
	mask   uint64
	hash   func(K) uint64
}

type cacheShard[K comparable, V any] struct {
	mu    sync.RWMutex
	index map[K]int32 // key → position in slots
	slots []cacheSlot[K, V]
	max   int
	hand  int // next slot CLOCK considers
	_     [64]byte
}

type cacheSlot[K comparable, V any] struct {
	key K
	val V
	ref atomic.Bool // hit since the hand last passed
}

// maxCacheShards is the most shards a cache has; minShardSize the fewest
// entries a shard holds (a small bound gets fewer shards).
const (
	maxCacheShards = 64
	minShardSize   = 16
)

// newCache returns a cache of at most size entries (size >= 1), sharded
// by hash.
func newCache[K comparable, V any](size int, hash func(K) uint64) *cache[K, V] {
	size = max(size, 1)
	n := maxCacheShards
	for n > 1 && size/n < minShardSize {
		n /= 2
	}
	c := &cache[K, V]{shards: make([]cacheShard[K, V], n), mask: uint64(n - 1), hash: hash}
	for i := range c.shards {
		s := &c.shards[i]
		s.max = size / n
		if i < size%n {
			s.max++
		}
		s.index = make(map[K]int32)
	}
	return c
}

// hashKeys hashes lookup hashes: they are HMAC outputs, uniformly
// distributed already, so their first bytes are a good hash.
func hashKeys(h apikey.Hash) uint64 {
	return uint64(h[0]) | uint64(h[1])<<8 | uint64(h[2])<<16 | uint64(h[3])<<24 |
		uint64(h[4])<<32 | uint64(h[5])<<40 | uint64(h[6])<<48 | uint64(h[7])<<56
}

// stringHasher returns a hash of strings (ids chosen by callers, so
// seeded).
func stringHasher() func(string) uint64 {
	seed := maphash.MakeSeed()
	return func(s string) uint64 { return maphash.String(seed, s) }
}

func (c *cache[K, V]) shard(k K) *cacheShard[K, V] {
	h := c.hash(k)
	// Fold the high half in, so that a hash weak in its low bits still
	// spreads; the shard maps hash the key again with their own seed.
	return &c.shards[(h>>32^h)&c.mask]
}

// get returns the value of k and marks it referenced.
func (c *cache[K, V]) get(k K) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	i, ok := s.index[k]
	if !ok {
		s.mu.RUnlock()
		var zero V
		return zero, false
	}
	sl := &s.slots[i]
	v := sl.val
	if !sl.ref.Load() {
		sl.ref.Store(true)
	}
	s.mu.RUnlock()
	return v, true
}

// peek returns the value of k without marking it referenced (the change
// feed's and the loads' reads, which say nothing about use).
func (c *cache[K, V]) peek(k K) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i, ok := s.index[k]; ok {
		return s.slots[i].val, true
	}
	var zero V
	return zero, false
}

// add sets k to v, evicting another key of its shard if the shard is
// full. A key added is referenced: it survives the hand's next pass.
func (c *cache[K, V]) add(k K, v V) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[k]; ok {
		s.slots[i].val = v
		s.slots[i].ref.Store(true)
		return
	}
	if len(s.slots) < s.max {
		s.slots = append(s.slots, cacheSlot[K, V]{key: k, val: v})
		s.slots[len(s.slots)-1].ref.Store(true)
		s.index[k] = int32(len(s.slots) - 1)
		return
	}
	// CLOCK: at most two turns, since the first clears every bit.
	for {
		if s.hand >= len(s.slots) {
			s.hand = 0
		}
		sl := &s.slots[s.hand]
		if sl.ref.Load() {
			sl.ref.Store(false)
			s.hand++
			continue
		}
		delete(s.index, sl.key)
		sl.key, sl.val = k, v
		sl.ref.Store(true)
		s.index[k] = int32(s.hand)
		s.hand++
		return
	}
}

// remove forgets k.
func (c *cache[K, V]) remove(k K) {
	s := c.shard(k)
	s.mu.RLock()
	_, ok := s.index[k]
	s.mu.RUnlock()
	if !ok {
		return // the common case (put forgetting a miss never recorded): no exclusive lock
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[k]
	if !ok {
		return
	}
	delete(s.index, k)
	last := len(s.slots) - 1
	if int(i) != last {
		// Move the last slot into the hole.
		s.slots[i].key, s.slots[i].val = s.slots[last].key, s.slots[last].val
		s.slots[i].ref.Store(s.slots[last].ref.Load())
		s.index[s.slots[i].key] = i
	}
	s.slots[last] = cacheSlot[K, V]{} // drop the references it held
	s.slots = s.slots[:last]
}

// len returns how many keys are cached.
func (c *cache[K, V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.slots)
		s.mu.RUnlock()
	}
	return n
}
