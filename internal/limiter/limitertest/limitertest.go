// Package limitertest is the conformance suite of the limiter.Limiter
// contract. Every implementation's test calls Run with a function that
// returns a fresh limiter (no counts); the suite checks exact admission
// under concurrency, all-or-nothing charging, remaining budgets, units,
// the UTC-minute window (driven through now, never by sleeping),
// unlimited buckets, malformed requests and a done context.
package limitertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/limiter"
)

// T0 is the start of the minute the suite admits in.
var T0 = time.Date(2031, time.March, 4, 12, 30, 0, 0, time.UTC)

func req(group string, bs ...limiter.Bucket) limiter.Request {
	r := limiter.Request{Group: group}
	copy(r.Buckets[:], bs)
	return r
}

func admit(t *testing.T, l limiter.Limiter, now time.Time, r limiter.Request) limiter.Result {
	t.Helper()
	res, err := l.Admit(context.Background(), now, r)
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	return res
}

// Run runs the suite; open returns a fresh limiter for each test.
func Run(t *testing.T, open func(t *testing.T) limiter.Limiter) {
	t.Run("ExactUnderConcurrency", func(t *testing.T) {
		l := open(t)
		const n, extra = 40, 20
		r := req("g", limiter.Bucket{Key: "k", Limit: n, Cost: 1})
		var ok atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n + extra {
			wg.Go(func() {
				<-start
				res, err := l.Admit(context.Background(), T0.Add(10*time.Second), r)
				if err != nil {
					t.Errorf("Admit: %v", err)
					return
				}
				if res.OK {
					ok.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if got := ok.Load(); got != n {
			t.Errorf("admitted %d of %d concurrent requests, want exactly %d", got, n+extra, n)
		}
	})
	t.Run("SharedBucketExactUnderConcurrency", func(t *testing.T) {
		// Two keys of one owner: key a is limited to 15, the owner to 20.
		l := open(t)
		owner := limiter.Bucket{Key: "owner", Limit: 20, Cost: 1}
		ra := req("o", limiter.Bucket{Key: "key:a", Limit: 15, Cost: 1}, owner)
		rb := req("o", limiter.Bucket{Key: "key:b", Limit: 100, Cost: 1}, owner)
		var okA, okB atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 60 {
			r, n := ra, &okA
			if i%2 == 1 {
				r, n = rb, &okB
			}
			wg.Go(func() {
				<-start
				res, err := l.Admit(context.Background(), T0, r)
				if err != nil {
					t.Errorf("Admit: %v", err)
					return
				}
				if res.OK {
					n.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if a, b := okA.Load(), okB.Load(); a > 15 || a+b != 20 {
			t.Errorf("admitted a=%d b=%d, want a <= 15 and a+b = 20 (the owner's limit)", a, b)
		}
	})
	t.Run("RefusalConsumesNothing", func(t *testing.T) {
		l := open(t)
		big := limiter.Bucket{Key: "big", Limit: 10, Cost: 1}
		small := limiter.Bucket{Key: "small", Limit: 1, Cost: 1}
		if res := admit(t, l, T0, req("g", big, small)); !res.OK || res.Remaining != [6]int64{9, 0, -1, -1, -1, -1} {
			t.Fatalf("first Admit = %+v, want OK with remaining 9, 0", res)
		}
		res := admit(t, l, T0, req("g", big, small))
		if res.OK || res.Refused != 1 || res.Remaining[0] != 9 || res.Remaining[1] != 0 {
			t.Fatalf("second Admit = %+v, want refused by bucket 1 with remaining 9, 0", res)
		}
		if res := admit(t, l, T0, req("g", big)); !res.OK || res.Remaining[0] != 8 {
			t.Errorf("bucket 0 alone = %+v, want OK with remaining 8 (the refusal charged nothing)", res)
		}
		if res := admit(t, l, T0, req("g", small, big)); res.Refused != 0 {
			t.Errorf("Refused = %d, want 0 (the first refusing bucket)", res.Refused)
		}
	})
	t.Run("UnitsCost", func(t *testing.T) {
		l := open(t)
		steps := []struct {
			cost      int64
			ok        bool
			remaining int64
		}{
			{40, true, 60}, {40, true, 20}, {30, false, 20}, {20, true, 0}, {0, true, 0}, {1, false, 0},
		}
		for i, s := range steps {
			res := admit(t, l, T0, req("g", limiter.Bucket{Key: "units", Limit: 100, Cost: s.cost}))
			if res.OK != s.ok || res.Remaining[0] != s.remaining {
				t.Errorf("step %d (cost %d): got OK=%v remaining %d, want OK=%v remaining %d", i, s.cost, res.OK, res.Remaining[0], s.ok, s.remaining)
			}
		}
		if res := admit(t, l, T0, req("g", limiter.Bucket{Key: "other", Limit: 5, Cost: 6})); res.OK {
			t.Errorf("a cost above the limit was admitted in an empty bucket")
		}
	})
	t.Run("WindowResetsAtNextUTCMinute", func(t *testing.T) {
		l := open(t)
		b := limiter.Bucket{Key: "k", Limit: 2, Cost: 1}
		late := T0.Add(50 * time.Second)
		for range 2 {
			admit(t, l, late, req("g", b))
		}
		res := admit(t, l, T0.Add(time.Minute-time.Nanosecond), req("g", b))
		if res.OK || !res.ResetAt.Equal(T0.Add(time.Minute)) {
			t.Fatalf("last instant of the minute = %+v, want refused, reset at %v", res, T0.Add(time.Minute))
		}
		next := T0.Add(time.Minute + 5*time.Second)
		if res := admit(t, l, next, req("g", b)); !res.OK || res.Remaining[0] != 1 || !res.ResetAt.Equal(T0.Add(2*time.Minute)) {
			t.Errorf("next minute = %+v, want OK with remaining 1", res)
		}
		// A late Admit still in the previous minute counts against it.
		if res := admit(t, l, late, req("g", b)); res.OK {
			t.Errorf("a late Admit in the full previous minute was admitted")
		}
		if res := admit(t, l, next, req("g", b)); !res.OK || res.Remaining[0] != 0 {
			t.Errorf("next minute after the late Admit = %+v, want OK with remaining 0", res)
		}
	})
	t.Run("Unlimited", func(t *testing.T) {
		l := open(t)
		free := limiter.Bucket{Key: "free", Limit: -1, Cost: 1000}
		for range 50 {
			if res := admit(t, l, T0, req("g", free)); !res.OK || res.Remaining[0] != -1 {
				t.Fatalf("unlimited bucket = %+v, want OK with remaining -1", res)
			}
		}
		if res := admit(t, l, T0, req("g", free, limiter.Bucket{Key: "zero", Limit: 0, Cost: 1})); res.OK || res.Refused != 1 {
			t.Errorf("limit 0 beside an unlimited bucket = %+v, want refused by 1", res)
		}
	})
	t.Run("GroupsAndUnusedSlots", func(t *testing.T) {
		l := open(t)
		b := limiter.Bucket{Key: "k", Limit: 1, Cost: 1}
		admit(t, l, T0, req("g1", b))
		if res := admit(t, l, T0, req("g2", b)); !res.OK {
			t.Errorf("the same key in another group shares its count")
		}
		var r limiter.Request
		r.Group, r.Buckets[3] = "g1", b
		if res := admit(t, l, T0, r); res.OK || res.Refused != 3 || res.Remaining != [6]int64{-1, -1, -1, 0, -1, -1} {
			t.Errorf("bucket in slot 3 = %+v, want refused by 3", res)
		}
		if res := admit(t, l, T0, limiter.Request{Group: "g1"}); !res.OK {
			t.Errorf("a request with no bucket was refused")
		}
	})
	t.Run("MalformedRequestCountsNothing", func(t *testing.T) {
		l := open(t)
		b := limiter.Bucket{Key: "k", Limit: 1, Cost: 1}
		for name, r := range map[string]limiter.Request{
			"no group":      req("", b),
			"negative cost": req("g", b, limiter.Bucket{Key: "n", Limit: 5, Cost: -1}),
			"huge cost":     req("g", b, limiter.Bucket{Key: "n", Limit: -1, Cost: limiter.MaxValue + 1}),
			"huge limit":    req("g", b, limiter.Bucket{Key: "n", Limit: limiter.MaxValue + 1, Cost: 1}),
			"duplicate key": req("g", b, b),
		} {
			if _, err := l.Admit(context.Background(), T0, r); !errs.Is(err, errs.Invalid) {
				t.Errorf("%s: err = %v, want Invalid", name, err)
			}
		}
		if res := admit(t, l, T0, req("g", b)); !res.OK {
			t.Errorf("a malformed request was counted")
		}
	})
	t.Run("DoneContextCountsNothing", func(t *testing.T) {
		l := open(t)
		b := limiter.Bucket{Key: "k", Limit: 1, Cost: 1}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := l.Admit(ctx, T0, req("g", b))
		if !errs.Is(err, errs.Unavailable) || !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want Unavailable wrapping context.Canceled", err)
		}
		if res := admit(t, l, T0, req("g", b)); !res.OK {
			t.Errorf("a cancelled Admit was counted")
		}
	})
}

// Name returns a name no other caller in this process gets, for prefixes.
func Name(base string) string { return fmt.Sprintf("%s%d:", base, seq.Add(1)) }

var seq atomic.Int64
