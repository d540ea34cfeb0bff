package verify

import (
	"testing"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// A hit moves its entry to the front at most once per touchEvery: a second
// hit within it leaves the order as it is, one after it moves the entry.
func TestCachedMovesAnEntryAtMostOncePerInterval(t *testing.T) {
	c, _ := lru.New[string, *entry](2)
	t0 := time.Unix(1_000_000, 0)
	c.Add("a", &entry{})
	c.Add("b", &entry{})
	oldest := func() string { k, _, _ := c.GetOldest(); return k }

	if _, ok := cached(c, "a", t0); !ok {
		t.Fatal("a: not found")
	}
	if got := oldest(); got != "b" {
		t.Fatalf("after the first hit on a, oldest is %q, want b", got)
	}
	cached(c, "b", t0)
	if got := oldest(); got != "a" {
		t.Fatalf("after the first hit on b, oldest is %q, want a", got)
	}
	cached(c, "a", t0.Add(touchEvery/2))
	if got := oldest(); got != "a" {
		t.Errorf("a hit within %v of the last move moved a (oldest is %q)", touchEvery, got)
	}
	cached(c, "a", t0.Add(touchEvery))
	if got := oldest(); got != "b" {
		t.Errorf("a hit %v after the last move left a the oldest", touchEvery)
	}
	if _, ok := cached(c, "c", t0); ok {
		t.Error("c: found in a cache without it")
	}
}
