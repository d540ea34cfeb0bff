package redislimiter

import (
	"context"
	"testing"

	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/limiter/limitertest"
	"github.com/keyplane/keyplane/internal/testenv"
)

// BenchmarkAdmit measures one Admit of six buckets (requests and units ×
// key, owner, owner+feature) on Local and on Redis over loopback, in the
// same run, for docs/benchmarks.md's ratio.
func BenchmarkAdmit(b *testing.B) {
	srv := testenv.Redis(b)
	r := limiter.Request{Group: "owner"}
	for i, k := range []string{"key:req", "key:units", "owner:req", "owner:units", "feat:req", "feat:units"} {
		r.Buckets[i] = limiter.Bucket{Key: k, Limit: limiter.MaxValue, Cost: 1}
	}
	for _, c := range []struct {
		name string
		l    limiter.Limiter
	}{
		{"local", &limiter.Local{}},
		{"redis", open(b, client(b, srv.Addr), Options{})},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if _, err := c.l.Admit(ctx, limitertest.T0, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
