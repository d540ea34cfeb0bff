package wire

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/verify"
)

// TestRedisAddrCountsPerMinuteLimitsInRedis: with KEYPLANE_REDIS_ADDR the
// Verifier counts a key's per-minute limits in that Redis; without it,
// nothing reaches Redis.
func TestRedisAddrCountsPerMinuteLimitsInRedis(t *testing.T) {
	srv := testenv.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	ctx := context.Background()
	for _, shared := range []bool{false, true} {
		cfg := embedded(t)
		if shared {
			// The most a verify may wait for Redis: the test is of the
			// wiring, and on a loaded machine (under -race) the first
			// call, which dials, may take longer than the default 50 ms.
			cfg.RedisAddr, cfg.RedisTimeout = srv.Addr, time.Second
		}
		app, err := ServeAll(ctx, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		c, err := app.Keys.Create(ctx, "test", keys.CreateRequest{Owner: "acct_wire", Plan: "free"}, "")
		if err != nil {
			t.Fatal(err)
		}
		d, err := app.Verifier.Verify(ctx, verify.Request{Key: c.Secret})
		if err != nil || d.Code != verify.Valid {
			t.Fatalf("Verify = %s, %v; want VALID", d.Code, err)
		}
		app.Close()
		n, err := rc.DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := n > 0; got != shared {
			t.Errorf("RedisAddr set: %v; %d Redis keys after a verify, want some only with it", shared, n)
		}
		if n := app.Verifier.Counts().LimiterFallbacks; n != 0 {
			t.Errorf("%d limiter fallbacks, want none", n)
		}
	}
}
