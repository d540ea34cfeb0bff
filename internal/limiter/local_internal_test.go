package limiter

import (
	"context"
	"testing"
	"time"
)

func TestLocalDropsMinutesBeforeThePrevious(t *testing.T) {
	var l Local
	t0 := time.Date(2031, time.March, 4, 12, 0, 0, 0, time.UTC)
	r := Request{Group: "g"}
	r.Buckets[0] = Bucket{Key: "k", Limit: 5, Cost: 1}
	for i := range 10 {
		if _, err := l.Admit(context.Background(), t0.Add(time.Duration(i)*time.Minute), r); err != nil {
			t.Fatal(err)
		}
		if got := len(l.windows); got > 2 {
			t.Fatalf("minute %d: %d windows kept, want at most 2", i, got)
		}
	}
}
