package clientips

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

const (
	// maxClientIPEntries bounds the (key, day) entries a recorder holds.
	maxClientIPEntries = 100_000
	// maxClientIPLimit caps Saw's limit: the distinct-IP rule never needs
	// to know of more IPs than its largest threshold allows, plus one.
	maxClientIPLimit = plan.MaxDistinctIPsPerDay + 1
	// maxClientIPsPerCall bounds the IPs of one AddClientIPs call of a
	// flush, across its keys.
	maxClientIPsPerCall = 20_000
	// clientIPFlushTimeout bounds a background flush and the last flush of
	// Run.
	clientIPFlushTimeout = 30 * time.Second
	// maxUsedKeys bounds the keys whose last use a recorder holds between
	// two flushes.
	maxUsedKeys = 100_000
	// clientIPShards is the number of independently locked parts of a
	// recorder's table.
	clientIPShards = 64
)

// Writer records client IPs and key uses: the ledger and the store of the
// process (keyplane serve), or a meter.ClientIPPublisher that sends both
// through the usage topic to the usage consumer, which writes them.
type Writer interface {
	AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error
	// MarkUsed is store.Store's: it raises each key's last use to the
	// given time, never lowering it.
	MarkUsed(ctx context.Context, uses map[string]time.Time) error
}

// Recorder collects (key, client IP) sightings and the latest use of
// each key from verify in memory, and flushes new ones: the IPs to the
// ledger, the uses to the store (Writer.MarkUsed).
//
// Uses: per key, the time of its latest use since the last flush, for at
// most 100,000 keys (uses of further keys are dropped and counted, and the
// count logged by the next flush). A flush hands them all to MarkUsed in
// calls of at most store.MaxMarkUsed keys; a call that fails puts its uses
// back for the next flush (the store keeps the later of two times, so a
// use written twice does no harm). A key's last_used_at thus trails its
// latest verify by at most about one flush interval while flushes run.
//
// It holds, per key and UTC day, the distinct IPs seen (at most the limit
// Saw is given), each marked once a flush wrote it, in a table of at most
// 100,000 (key, day) entries split into independently locked shards.
// Sightings of a key that would need a new entry when the table is full
// are dropped and counted; each flush logs that count at warn level. A
// flush forgets the days before yesterday, written or not, which frees
// their entries. A flush that fails keeps what it did not write for the
// next one; IPs that the ledger rejects as invalid are dropped instead,
// and logged, since writing them again would fail again.
type Recorder struct {
	ledger   Writer
	clk      clock.Clock
	interval time.Duration
	log      *slog.Logger
	seed     maphash.Seed

	shards [clientIPShards]ipShard

	entries     atomic.Int64 // (key, day) entries in the table
	dropped     atomic.Int64 // sightings dropped for a full table since the last flush
	usedKeys    atomic.Int64 // keys in the shards' used maps
	droppedUses atomic.Int64 // uses dropped for a full used table since the last flush
	lastFlush   atomic.Int64 // Unix nanoseconds at which the last flush started
	flushing    atomic.Bool  // a background flush is running or starting
	flushMu     sync.Mutex   // one flush at a time

	bgMu    sync.Mutex     // guards stopped and the Add of background
	stopped bool           // Run has ended: Saw starts no flush
	bg      sync.WaitGroup // background flushes started by Saw
}

type ipShard struct {
	mu   sync.RWMutex
	m    map[ipDayKey]*ipSet
	used map[string]*atomic.Int64 // key id → Unix nanoseconds of its latest use since the last flush
	_    [24]byte                 // with the fields above, a 64-byte cache line per shard
}

// ipDayKey names a key's sightings on one UTC day.
type ipDayKey struct {
	id  string
	day int64 // days since the Unix epoch
}

// ipSet is a key's distinct IPs on one day, each true once written.
type ipSet struct {
	ips     map[netip.Addr]bool
	pending int // IPs not written yet
}

// New returns a recorder that writes to l. Flushes happen
// at most about every interval (one minute if interval <= 0) while Saw is
// called, and every interval while Run runs. A nil log discards.
func New(l Writer, clk clock.Clock, interval time.Duration, log *slog.Logger) *Recorder {
	if interval <= 0 {
		interval = time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{ledger: l, clk: clk, interval: interval, log: log, seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m = map[ipDayKey]*ipSet{}
		r.shards[i].used = map[string]*atomic.Int64{}
	}
	r.lastFlush.Store(clk.Now().UnixNano())
	return r
}

// unixDay returns the number of the UTC day containing t, counted from
// the Unix epoch.
func unixDay(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d--
	}
	return d
}

func (r *Recorder) shard(id string) *ipShard {
	return &r.shards[maphash.String(r.seed, id)%clientIPShards]
}

// Saw records that key id was used from ip at now; it remembers at most
// limit distinct IPs per key and day (the rule needs to know only whether
// a key passed its threshold, so limit = threshold + 1). It never blocks
// on I/O: when the last flush is older than interval it starts one in the
// background. Safe for concurrent use; cheap when the IP was seen already.
//
// An IPv4-mapped IPv6 address counts as its IPv4 address and a zone is
// ignored. An ip that does not parse, an empty id and a limit below 1 are
// ignored; a limit above plan.MaxDistinctIPsPerDay + 1 counts as that.
func (r *Recorder) Saw(id, ip string, limit int, now time.Time) {
	defer r.maybeFlush(now)
	if id == "" || limit < 1 {
		return
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return
	}
	a = a.Unmap().WithZone("")
	limit = min(limit, maxClientIPLimit)
	k := ipDayKey{id, unixDay(now)}
	sh := r.shard(id)

	sh.mu.RLock()
	s := sh.m[k]
	seen, full := false, false
	if s != nil {
		_, seen = s.ips[a]
		full = len(s.ips) >= limit
	}
	sh.mu.RUnlock()
	if seen || full {
		return
	}

	sh.mu.Lock()
	defer sh.mu.Unlock()
	s = sh.m[k]
	if s == nil {
		if r.entries.Add(1) > maxClientIPEntries {
			r.entries.Add(-1)
			r.dropped.Add(1)
			return
		}
		s = &ipSet{ips: make(map[netip.Addr]bool, min(limit, 8))}
		k.id = strings.Clone(id) // keep no larger string the id may be part of
		sh.m[k] = s
	}
	if _, ok := s.ips[a]; !ok && len(s.ips) < limit {
		s.ips[a] = false
		s.pending++
	}
}

// Used records that key id was used at now (a verify of an existing
// key, whatever its decision). Like Saw it never blocks on I/O and may
// start a background flush. It allocates only for the first use of a key
// since the last flush; later ones take a shard's read lock and raise an
// atomic. An empty id is ignored.
func (r *Recorder) Used(id string, now time.Time) {
	defer r.maybeFlush(now)
	if id == "" {
		return
	}
	t := now.UnixNano()
	sh := r.shard(id)
	// The raise happens under the shard lock, read side, so that a flush,
	// which takes the map under the write side, never misses one.
	sh.mu.RLock()
	if u := sh.used[id]; u != nil {
		raise(u, t)
		sh.mu.RUnlock()
		return
	}
	sh.mu.RUnlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r.addUse(sh, id, t)
}

// addUse raises id's latest use in sh to t, adding id if it is missing and
// the table has room. The caller holds sh.mu for writing.
func (r *Recorder) addUse(sh *ipShard, id string, t int64) {
	u := sh.used[id]
	if u == nil {
		if r.usedKeys.Add(1) > maxUsedKeys {
			r.usedKeys.Add(-1)
			r.droppedUses.Add(1)
			return
		}
		u = new(atomic.Int64)
		sh.used[strings.Clone(id)] = u // keep no larger string the id may be part of
	}
	raise(u, t)
}

// raise sets u to t if t is later.
func raise(u *atomic.Int64, t int64) {
	for {
		old := u.Load()
		if old >= t || u.CompareAndSwap(old, t) {
			return
		}
	}
}

// flushUses hands the uses recorded since the last flush to MarkUsed;
// those of a call that fails are put back, and the error of the first
// failure is returned. A call rejected as Invalid cannot succeed later:
// its uses are dropped and logged.
func (r *Recorder) flushUses(ctx context.Context) error {
	if n := r.droppedUses.Swap(0); n > 0 {
		r.log.Warn("key uses: the recorder is full; uses of keys it holds no entry for were dropped",
			"dropped", n, "max_keys", maxUsedKeys)
	}
	var batches []map[string]time.Time
	for i := range r.shards {
		sh := &r.shards[i]
		// Only a map swapped out is read after the lock is released: an
		// empty one left in place is Used's to write.
		var taken map[string]*atomic.Int64
		sh.mu.Lock()
		if len(sh.used) > 0 {
			taken = sh.used
			sh.used = make(map[string]*atomic.Int64, len(taken))
			r.usedKeys.Add(-int64(len(taken)))
		}
		sh.mu.Unlock()
		for id, u := range taken {
			if len(batches) == 0 || len(batches[len(batches)-1]) == store.MaxMarkUsed {
				batches = append(batches, make(map[string]time.Time, min(len(taken), store.MaxMarkUsed)))
			}
			batches[len(batches)-1][id] = time.Unix(0, u.Load()).UTC()
		}
	}
	var first error
	for _, b := range batches {
		if first == nil {
			err := r.ledger.MarkUsed(ctx, b)
			if err == nil {
				continue
			}
			if errs.Is(err, errs.Invalid) {
				r.log.Error("key uses: the store rejected a batch of uses; they are dropped", "keys", len(b), "err", err)
				continue
			}
			first = err
		}
		r.putBack(b)
	}
	return first
}

// putBack records uses again, for the next flush.
func (r *Recorder) putBack(uses map[string]time.Time) {
	for id, t := range uses {
		sh := r.shard(id)
		sh.mu.Lock()
		r.addUse(sh, id, t.UnixNano())
		sh.mu.Unlock()
	}
}

// maybeFlush starts a background flush if the last one started interval
// or longer before now, none is running and Run has not ended.
//
// The flush writes the sightings of every request since the last one, not
// the current request's: it runs on a context of its own, bounded by
// clientIPFlushTimeout, not on the context of the request whose Saw
// happened to start it.
func (r *Recorder) maybeFlush(now time.Time) {
	if now.UnixNano()-r.lastFlush.Load() < int64(r.interval) || r.flushing.Load() || !r.flushing.CompareAndSwap(false, true) {
		return
	}
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.stopped {
		r.flushing.Store(false)
		return
	}
	r.bg.Go(func() {
		defer r.flushing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), clientIPFlushTimeout)
		defer cancel()
		r.flushLogged(ctx)
	})
}

func (r *Recorder) flushLogged(ctx context.Context) {
	if err := r.Flush(ctx); err != nil {
		level := slog.LevelError
		if errs.Is(err, errs.Unavailable) {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "client IPs and key uses: flush failed; what was not written is kept for the next one", "err", err)
	}
}

// Run calls Flush every interval until ctx ends. Then it waits for a
// background flush that Saw started, flushes once more (on ctx without its
// cancellation, for up to 30 seconds) and returns: when it returns, every
// sighting recorded before ctx ended has been written or its write has
// failed, and no flush starts any more, so the writer can be closed. Errors
// are logged. Run is called at most once.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.flushLogged(ctx)
		case <-ctx.Done():
			r.bgMu.Lock()
			r.stopped = true
			r.bgMu.Unlock()
			r.bg.Wait()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), clientIPFlushTimeout)
			defer cancel()
			r.flushLogged(fctx)
			return
		}
	}
}

// pendingIPs are a key's IPs of one day that one call writes.
type pendingIPs struct {
	key ipDayKey
	set *ipSet
	ips []netip.Addr
}

// Flush writes the key uses (see flushUses) and the sightings not yet
// written; it returns the errors of both. Run calls it every interval until
// ctx ends, and once more then.
//
// For the sightings, it first forgets the days before yesterday (by the recorder's clock)
// and logs how many sightings were dropped for a full table, then writes
// each day's new IPs in AddClientIPs calls of at most 1,000 keys. It stops
// at the first call that fails with anything but errs.Invalid and returns
// its error; what it did not write is written by a later flush. A call
// rejected as Invalid is retried one key at a time, and the keys rejected
// then are dropped and logged.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	now := r.clk.Now()
	r.lastFlush.Store(now.UnixNano())
	usesErr := r.flushUses(ctx)
	return errors.Join(usesErr, r.flushIPs(ctx, now))
}

func (r *Recorder) flushIPs(ctx context.Context, now time.Time) error {
	if n := r.dropped.Swap(0); n > 0 {
		r.log.Warn("client IPs: the recorder is full; sightings of keys it holds no entry for were dropped",
			"dropped", n, "max_entries", maxClientIPEntries)
	}
	oldest := unixDay(now) - 1
	byDay := map[int64][]pendingIPs{}
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for k, s := range sh.m {
			if k.day < oldest {
				delete(sh.m, k)
				r.entries.Add(-1)
				continue
			}
			if s.pending == 0 {
				continue
			}
			ips := make([]netip.Addr, 0, s.pending)
			for a, written := range s.ips {
				if !written {
					ips = append(ips, a)
				}
			}
			byDay[k.day] = append(byDay[k.day], pendingIPs{k, s, ips})
		}
		sh.mu.Unlock()
	}
	for day, ps := range byDay {
		slices.SortFunc(ps, func(a, b pendingIPs) int { return strings.Compare(a.key.id, b.key.id) })
		for _, batch := range clientIPBatches(ps) {
			if err := r.write(ctx, time.Unix(day*86400, 0).UTC(), batch); err != nil {
				return err
			}
		}
	}
	return nil
}

// clientIPBatches cuts ps into the batches of AddClientIPs calls: at most
// ledger.MaxClientIPKeys keys, ledger.MaxClientIPsPerKey IPs of a key, and
// maxClientIPsPerCall IPs in all. A key with more IPs than a call takes
// is split over several batches.
func clientIPBatches(ps []pendingIPs) [][]pendingIPs {
	var (
		out  [][]pendingIPs
		cur  []pendingIPs
		ips  int
		todo = ps
	)
	for len(todo) > 0 {
		var rest []pendingIPs
		for _, p := range todo {
			if len(p.ips) > ledger.MaxClientIPsPerKey {
				rest = append(rest, pendingIPs{p.key, p.set, p.ips[ledger.MaxClientIPsPerKey:]})
				p.ips = p.ips[:ledger.MaxClientIPsPerKey]
			}
			if len(cur) > 0 && (len(cur) == ledger.MaxClientIPKeys || ips+len(p.ips) > maxClientIPsPerCall) {
				out, cur, ips = append(out, cur), nil, 0
			}
			cur = append(cur, p)
			ips += len(p.ips)
		}
		if len(cur) > 0 {
			out, cur, ips = append(out, cur), nil, 0 // a key's rest goes into later batches
		}
		todo = rest
	}
	return out
}

// write writes one batch of day's IPs and marks what it wrote. If the
// ledger rejects the batch as Invalid, it writes the keys one at a time
// and drops those rejected again.
func (r *Recorder) write(ctx context.Context, day time.Time, batch []pendingIPs) error {
	err := r.ledger.AddClientIPs(ctx, day, clientIPArgs(batch))
	switch {
	case err == nil:
		r.markWritten(batch)
		return nil
	case !errs.Is(err, errs.Invalid):
		return err
	case len(batch) > 1:
		for i := range batch {
			if err := r.write(ctx, day, batch[i:i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	r.log.Error("client IPs: the ledger rejected a key's IPs; they are dropped", "key_id", batch[0].key.id,
		"day", day.Format(time.DateOnly), "ips", len(batch[0].ips), "err", err)
	r.markWritten(batch)
	return nil
}

func clientIPArgs(batch []pendingIPs) map[string][]string {
	m := make(map[string][]string, len(batch))
	for _, p := range batch {
		ips := make([]string, len(p.ips))
		for i, a := range p.ips {
			ips[i] = a.String()
		}
		m[p.key.id] = ips
	}
	return m
}

func (r *Recorder) markWritten(batch []pendingIPs) {
	for _, p := range batch {
		sh := r.shard(p.key.id)
		sh.mu.Lock()
		for _, a := range p.ips {
			if !p.set.ips[a] {
				p.set.ips[a] = true
				p.set.pending--
			}
		}
		sh.mu.Unlock()
	}
}
