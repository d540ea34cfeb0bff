package limiter_test

import (
	"context"
	"testing"

	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/limiter/limitertest"
	"github.com/keyplane/keyplane/internal/race"
)

func TestLocalConformance(t *testing.T) {
	limitertest.Run(t, func(t *testing.T) limiter.Limiter { return &limiter.Local{} })
}

func TestLocalAdmitAllocatesNothingForAKnownBucket(t *testing.T) {
	if race.Enabled {
		return
	}
	var l limiter.Limiter = &limiter.Local{}
	r := limiter.Request{Group: "owner"}
	r.Buckets[0] = limiter.Bucket{Key: "key:req", Limit: -1, Cost: 1}
	r.Buckets[1] = limiter.Bucket{Key: "key:units", Limit: -1, Cost: 3}
	ctx, now := context.Background(), limitertest.T0
	if _, err := l.Admit(ctx, now, r); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { l.Admit(ctx, now, r) }); n != 0 {
		t.Errorf("Admit allocated %v times, want 0", n)
	}
}
