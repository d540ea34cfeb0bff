package verify

import (
	"strconv"
	"sync"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"
)

func TestCacheKeepsItsBound(t *testing.T) {
	for _, size := range []int{1, 2, 15, 100, 1000, 100_000} {
		c := newCache[string, int](size, stringHasher())
		total := 0
		for i := range c.shards {
			total += c.shards[i].max
		}
		if total != size {
			t.Fatalf("size %d: the shards hold %d", size, total)
		}
		for i := range 3 * size {
			c.add(strconv.Itoa(i), i)
			if n := c.len(); n > size {
				t.Fatalf("size %d: %d entries after %d adds", size, n, i+1)
			}
		}
		// The last key added is always kept, with its value.
		last := strconv.Itoa(3*size - 1)
		if v, ok := c.get(last); !ok || v != 3*size-1 {
			t.Fatalf("size %d: get(%s) = %d, %v", size, last, v, ok)
		}
	}
}

func TestCacheEvictsUnreferencedFirst(t *testing.T) {
	c := newCache[string, int](4, stringHasher()) // one shard
	if len(c.shards) != 1 {
		t.Fatalf("%d shards for 4 entries", len(c.shards))
	}
	for i := range 4 {
		c.add(strconv.Itoa(i), i)
	}
	// One full turn of the hand clears every bit and evicts "0"; "1" is
	// next unless it is hit again.
	c.add("4", 4)
	if _, ok := c.peek("0"); ok {
		t.Fatal("0 was not evicted")
	}
	c.get("1")
	c.add("5", 5)
	if _, ok := c.peek("1"); !ok {
		t.Fatal("1 was evicted although it was hit")
	}
	if _, ok := c.peek("2"); ok {
		t.Fatal("2 was kept although not hit since the hand passed it")
	}
	for _, k := range []string{"1", "3", "4", "5"} {
		if v, ok := c.peek(k); !ok || strconv.Itoa(v) != k {
			t.Fatalf("peek(%s) = %d, %v", k, v, ok)
		}
	}
}

func TestCacheRemoveAndReplace(t *testing.T) {
	c := newCache[string, int](1000, stringHasher()) // room to spare in every shard
	for i := range 100 {
		c.add(strconv.Itoa(i), i)
	}
	for i := 0; i < 100; i += 2 {
		c.remove(strconv.Itoa(i))
	}
	c.remove("absent")
	if n := c.len(); n != 50 {
		t.Fatalf("len = %d after removing 50 of 100", n)
	}
	for i := range 100 {
		v, ok := c.get(strconv.Itoa(i))
		if ok != (i%2 == 1) || (ok && v != i) {
			t.Fatalf("get(%d) = %d, %v", i, v, ok)
		}
	}
	c.add("1", -1)
	if v, _ := c.get("1"); v != -1 || c.len() != 50 {
		t.Fatalf("replacing: get(1) = %d, len %d", v, c.len())
	}
}

// TestCacheConcurrent is for -race: hits, adds, evictions and removals of
// overlapping keys at once.
func TestCacheConcurrent(t *testing.T) {
	c := newCache[string, int](64, stringHasher())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := strconv.Itoa((i * (g + 1)) % 200)
				switch i % 4 {
				case 0:
					c.add(k, i)
				case 1:
					c.remove(k)
				default:
					if v, ok := c.get(k); ok && v < 0 {
						t.Errorf("get(%s) = %d", k, v)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > 64 {
		t.Fatalf("len = %d, bound 64", n)
	}
}

// BenchmarkCacheHitParallel is a hit of one hot key from GOMAXPROCS
// goroutines, on this cache and on the golang-lru cache it replaced
// (whose Get takes an exclusive lock to move the key to the front).
//
//	go test -run '^$' -bench CacheHitParallel -cpu 1,2 ./internal/verify
func BenchmarkCacheHitParallel(b *testing.B) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "key_" + strconv.Itoa(i)
	}
	b.Run("sharded", func(b *testing.B) {
		c := newCache[string, int](100_000, stringHasher())
		for i, k := range keys {
			c.add(k, i)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := c.get(keys[7]); !ok {
					b.Error("miss")
					return
				}
			}
		})
	})
	b.Run("golang-lru", func(b *testing.B) {
		c, _ := lru.New[string, int](100_000)
		for i, k := range keys {
			c.Add(k, i)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := c.Get(keys[7]); !ok {
					b.Error("miss")
					return
				}
			}
		})
	})
}
