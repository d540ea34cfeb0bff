package redislimiter

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/limiter/limitertest"
	"github.com/keyplane/keyplane/internal/testenv"
)

func client(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

func open(t testing.TB, c redis.Scripter, o Options) *Limiter {
	t.Helper()
	l, err := New(c, &o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

func TestConformance(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr)
	limitertest.Run(t, func(t *testing.T) limiter.Limiter {
		// A second's timeout: the suite's concurrent bursts queue on
		// the pool of a shared 2-CPU machine.
		return open(t, c, Options{Prefix: limitertest.Name("t"), Timeout: time.Second})
	})
}

var one = func() limiter.Request {
	r := limiter.Request{Group: "owner"}
	r.Buckets[0] = limiter.Bucket{Key: "k", Limit: 100, Cost: 1}
	return r
}()

func TestBreakerFailsFastWhileRedisIsDownAndProbesAfterCooldown(t *testing.T) {
	srv := testenv.Redis(t)
	clk := clock.NewFake(limitertest.T0)
	l := open(t, client(t, srv.Addr), Options{Timeout: time.Second, Clock: clk})
	ctx := context.Background()
	if _, err := l.Admit(ctx, limitertest.T0, one); err != nil {
		t.Fatalf("Admit with Redis up: %v", err)
	}
	srv.Stop()
	_, err := l.Admit(ctx, limitertest.T0, one)
	if !errs.Is(err, errs.Unavailable) || errors.Is(err, ErrOpen) {
		t.Fatalf("first Admit with Redis down: err = %v, want Unavailable from Redis", err)
	}
	srv.Start()
	if _, err := l.Admit(ctx, limitertest.T0, one); !errors.Is(err, ErrOpen) {
		t.Fatalf("Admit within the cooldown: err = %v, want ErrOpen (no attempt)", err)
	}
	clk.Advance(time.Second)
	if _, err := l.Admit(ctx, limitertest.T0, one); err != nil {
		t.Fatalf("probe after the cooldown: %v", err)
	}
	if _, err := l.Admit(ctx, limitertest.T0, one); err != nil {
		t.Fatalf("Admit after a successful probe: %v", err)
	}
}

func TestFailedProbeReopensTheBreaker(t *testing.T) {
	srv := testenv.Redis(t)
	clk := clock.NewFake(limitertest.T0)
	l := open(t, client(t, srv.Addr), Options{Timeout: time.Second, Clock: clk})
	ctx := context.Background()
	srv.Stop()
	l.Admit(ctx, limitertest.T0, one)
	clk.Advance(time.Second)
	if _, err := l.Admit(ctx, limitertest.T0, one); err == nil || errors.Is(err, ErrOpen) {
		t.Fatalf("probe with Redis down: err = %v, want a Redis error", err)
	}
	if _, err := l.Admit(ctx, limitertest.T0, one); !errors.Is(err, ErrOpen) {
		t.Fatalf("after a failed probe: err = %v, want ErrOpen", err)
	}
}

func TestCancelledCallerDoesNotOpenTheBreaker(t *testing.T) {
	srv := testenv.Redis(t)
	l := open(t, client(t, srv.Addr), Options{Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Admit(ctx, limitertest.T0, one); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := l.Admit(context.Background(), limitertest.T0, one); err != nil {
		t.Fatalf("Admit after a cancelled one: %v", err)
	}
}

// A server that accepts connections and never answers stands for a hung
// Redis: the per-call timeout, not the client's (disabled) read timeout,
// must end the Admit.
func TestTimeoutBoundsAHungRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan []net.Conn, 1)
	go func() { // holds what it accepts open, unanswered, until ln closes
		var conns []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				accepted <- conns
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range <-accepted {
			c.Close()
		}
	})
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ContextTimeoutEnabled: true, MaxRetries: -1, ReadTimeout: -1, WriteTimeout: -1, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	l := open(t, c, Options{Timeout: 50 * time.Millisecond})
	_, err = l.Admit(context.Background(), limitertest.T0, one)
	var ne net.Error
	if !errs.Is(err, errs.Unavailable) || !(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("err = %v, want an Unavailable timeout", err)
	}
}

func TestNewRefusesAClientWithoutContextTimeouts(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { c.Close() })
	if _, err := New(c, nil); !errs.Is(err, errs.Invalid) {
		t.Errorf("err = %v, want Invalid", err)
	}
}

func TestCountersExpireAndShareTheGroupsHashTag(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr)
	l := open(t, c, Options{Prefix: "p:"})
	if _, err := l.Admit(context.Background(), limitertest.T0, one); err != nil {
		t.Fatal(err)
	}
	key := "p:{owner}:" + strconv.FormatInt(limiter.Minute(limitertest.T0), 10) + ":k"
	ttl, err := c.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > TTL {
		t.Errorf("PTTL(%s) = %v, want in (0, %v]", key, ttl, TTL)
	}
}
