// Package redislimiter is the limiter.Limiter that counts in Redis
// (Memorystore in production), so that per-minute limits are exact across
// instances. It owns the counters' key layout, the one script that checks
// and charges a request's buckets atomically, the per-call timeout and
// the circuit breaker that makes calls fail fast while Redis is down.
//
// # Keys
//
// A bucket of minute M is the key <Prefix>{<Group>}:<M>:<bucket key>,
// holding its count, expiring TTL (2 min) after its first charge, so a
// minute's counts outlive it by at least a minute (for late Admits) and
// then vanish; the minute comes from Admit's now, so tests drive it.
//
// The hash tag {<Group>} puts all of a group's counters (keyplane: an
// owner's) in one slot, because on a Redis Cluster (Memorystore for Redis
// Cluster) one script may only touch keys of one slot. The cost is that
// one owner's traffic goes to one shard; Memorystore's non-cluster tiers
// ignore the tag.
//
// # Failures
//
// Each Admit is bounded by Options.Timeout (50 ms). Any Redis error or
// timeout is returned as errs.Unavailable, and opens the breaker: for
// Options.Cooldown (1 s) every Admit fails at once with ErrOpen, without
// touching Redis; then one Admit probes, and its success closes the
// breaker. A caller's own cancelled context does not open it.
package redislimiter

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/limiter"
)

// TTL is how long a counter lives after its first charge.
const TTL = 2 * time.Minute

// ErrOpen is wrapped by the errs.Unavailable error of an Admit refused
// without trying because the breaker is open.
var ErrOpen = errors.New("redislimiter: Redis failed recently; not trying until the cooldown ends")

// Options configure a Limiter. A nil *Options means the defaults.
type Options struct {
	Prefix   string        // prefix of every key; default "kp:lim:"
	Timeout  time.Duration // bound on each Admit's Redis call; default 50 ms
	Cooldown time.Duration // how long Admits fail fast after a failure; default 1 s
	Clock    clock.Clock   // the breaker's clock; default clock.Real
}

// Limiter is the Redis limiter.Limiter. It is safe for concurrent use.
type Limiter struct {
	c redis.Scripter
	o Options
	// openUntil is 0 while the breaker is closed, else the UnixNano
	// until which Admits fail fast.
	openUntil atomic.Int64
}

var _ limiter.Limiter = (*Limiter)(nil)

// New returns a Limiter on c (a *redis.Client or *redis.ClusterClient,
// created once per instance). c must have ContextTimeoutEnabled, or a
// hung Redis would hold each Admit for the client's ReadTimeout instead
// of Options.Timeout; New returns an errs.Invalid error otherwise.
// MaxRetries: -1 is advised: a failed Admit is better refused at once
// (the caller falls back) than retried.
func New(c redis.Scripter, o *Options) (*Limiter, error) {
	switch cl := c.(type) {
	case *redis.Client:
		if !cl.Options().ContextTimeoutEnabled {
			return nil, errs.E(errs.Invalid, "redislimiter: the client must set ContextTimeoutEnabled")
		}
	case *redis.ClusterClient:
		if !cl.Options().ContextTimeoutEnabled {
			return nil, errs.E(errs.Invalid, "redislimiter: the client must set ContextTimeoutEnabled")
		}
	}
	l := &Limiter{c: c}
	if o != nil {
		l.o = *o
	}
	if l.o.Prefix == "" {
		l.o.Prefix = "kp:lim:"
	}
	if l.o.Timeout <= 0 {
		l.o.Timeout = 50 * time.Millisecond
	}
	if l.o.Cooldown <= 0 {
		l.o.Cooldown = time.Second
	}
	if l.o.Clock == nil {
		l.o.Clock = clock.Real{}
	}
	return l, nil
}

// admitScript checks every bucket, then charges every bucket, atomically.
// KEYS: the counters. ARGV[1]: the expiry in ms; ARGV[2i], ARGV[2i+1]:
// bucket i's limit (< 0 unlimited) and cost. It returns {refused,
// count_1, …, count_n}: refused is the 0-based index of the first bucket
// the request would take over its limit, or -1; the counts are after the
// call (unchanged when refused).
var admitScript = redis.NewScript(`
local counts = redis.call('MGET', unpack(KEYS))
local refused = -1
for i = 1, #KEYS do
  local c = tonumber(counts[i]) or 0
  counts[i] = c
  local limit = tonumber(ARGV[2*i])
  if refused < 0 and limit >= 0 and c + tonumber(ARGV[2*i+1]) > limit then
    refused = i - 1
  end
end
if refused < 0 then
  for i = 1, #KEYS do
    local cost = tonumber(ARGV[2*i+1])
    if cost > 0 then
      counts[i] = redis.call('INCRBY', KEYS[i], cost)
      if counts[i] == cost then
        redis.call('PEXPIRE', KEYS[i], ARGV[1])
      end
    end
  end
end
table.insert(counts, 1, refused)
return counts
`)

// Admit implements limiter.Limiter.
func (l *Limiter) Admit(ctx context.Context, now time.Time, req limiter.Request) (limiter.Result, error) {
	if err := req.Check(); err != nil {
		return limiter.Result{}, err
	}
	if err := limiter.Cancelled(ctx); err != nil {
		return limiter.Result{}, err
	}
	if !req.Used() {
		var counts [limiter.MaxBuckets]int64
		return limiter.NewResult(now, &req, -1, &counts), nil
	}
	probe, err := l.enter()
	if err != nil {
		return limiter.Result{}, err
	}
	res, err := l.run(ctx, now, &req)
	switch {
	case err == nil:
		if probe != 0 {
			l.openUntil.CompareAndSwap(probe, 0)
		}
		return res, nil
	case ctx.Err() != nil: // the caller gave up; Redis is not to blame
		return limiter.Result{}, errs.Wrap(errs.Unavailable, err, "limiter: the request was cancelled")
	default:
		l.openUntil.Store(l.o.Clock.Now().Add(l.o.Cooldown).UnixNano())
		return limiter.Result{}, errs.Wrap(errs.Unavailable, err, "limiter: Redis did not answer")
	}
}

// enter lets an Admit through the breaker. While it is open it returns
// ErrOpen; once the cooldown has passed, exactly one Admit gets through
// as the probe (probe != 0, the breaker's value it claimed), the others
// keep failing fast until it succeeds or fails.
func (l *Limiter) enter() (probe int64, err error) {
	u := l.openUntil.Load()
	if u == 0 {
		return 0, nil
	}
	now := l.o.Clock.Now()
	if now.UnixNano() >= u {
		probe = now.Add(l.o.Cooldown).UnixNano()
		if l.openUntil.CompareAndSwap(u, probe) {
			return probe, nil
		}
	}
	e := errs.Wrap(errs.Unavailable, ErrOpen, "limiter: Redis is unavailable")
	e.RetryAfter = l.o.Cooldown
	return 0, e
}

func (l *Limiter) run(ctx context.Context, now time.Time, req *limiter.Request) (limiter.Result, error) {
	minute := strconv.FormatInt(limiter.Minute(now), 10)
	base := l.o.Prefix + "{" + req.Group + "}:" + minute + ":"
	keys := make([]string, 0, limiter.MaxBuckets)
	args := make([]any, 1, 1+2*limiter.MaxBuckets)
	args[0] = TTL.Milliseconds()
	var index [limiter.MaxBuckets]int // position in keys → index in req.Buckets
	for i := range req.Buckets {
		b := &req.Buckets[i]
		if b.Key == "" {
			continue
		}
		index[len(keys)] = i
		keys = append(keys, base+b.Key)
		args = append(args, b.Limit, b.Cost)
	}
	ctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	vals, err := admitScript.Run(ctx, l.c, keys, args...).Int64Slice()
	if err != nil {
		return limiter.Result{}, err
	}
	if len(vals) != 1+len(keys) {
		return limiter.Result{}, errs.E(errs.Internal, "redislimiter: the script returned %d values for %d buckets", len(vals), len(keys))
	}
	refused := -1
	if vals[0] >= 0 {
		if int(vals[0]) >= len(keys) {
			return limiter.Result{}, errs.E(errs.Internal, "redislimiter: the script refused bucket %d of %d", vals[0], len(keys))
		}
		refused = index[vals[0]]
	}
	var counts [limiter.MaxBuckets]int64
	for j, v := range vals[1:] {
		counts[index[j]] = v
	}
	return limiter.NewResult(now, req, refused, &counts), nil
}
