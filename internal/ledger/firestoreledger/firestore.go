package firestoreledger

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/firestoredb"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/pagetoken"
	"github.com/keyplane/keyplane/internal/plan"
)

// Collection names; see the package comment for the layout.
const (
	eventsColl      = "usage_events"
	countersColl    = "usage_counters"
	ownersColl      = "usage_owner_counters"
	deadLettersColl = "usage_dead_letters"
	clientIPsColl   = "usage_client_ips"
	adjustmentsColl = "usage_adjustments"
)

const (
	// DefaultShards is the number of counter documents per key and window
	// when Options.Shards is not set.
	DefaultShards = 8
	// maxWrites bounds the writes of one commit: Firestore allows 500.
	maxWrites = 450
	// chunkRounds bounds how often Count re-commits the rest of a chunk
	// that found some of its events already counted before it falls back
	// to committing the rest one event at a time.
	chunkRounds = 3
	// txAttempts bounds the attempts of a commit that Firestore aborts
	// for contention.
	txAttempts = 5
	// maxKeyID bounds a key id's length, leaving room in the 1500 bytes
	// of a counter's document id.
	maxKeyID = 1024
	// maxPayload is the most of a dead letter's payload that is kept.
	maxPayload = 64 << 10
)

// Options are the optional settings of a Ledger. The zero value means the
// defaults.
type Options struct {
	// Shards is the number of counter documents per key, window kind and
	// window start (default DefaultShards). Each commit adds to one shard
	// of each of its keys' counters, so a key's counters take about Shards
	// sustained commits per second. Shards may be raised but never
	// lowered: Totals reads shards 0 to Shards-1 only.
	Shards int
	// Clock tells the time from which an event id's retention runs.
	// Default: the wall clock.
	Clock clock.Clock
}

// Ledger is a ledger.Ledger on Firestore. It is safe for concurrent use.
type Ledger struct {
	c      *firestore.Client
	shards int
	clock  clock.Clock
	// failCommit, set by this package's tests, is called before each
	// commit of Count and AddDeadLetter and before the writes of
	// AddClientIPs; a non-nil error aborts the commit and is returned.
	failCommit func() error

	commits, writes, counted atomic.Int64
}

var _ ledger.Ledger = (*Ledger)(nil)

// NewFromClient returns a Ledger on c, a client of the Firestore database
// that the process's other Firestore adapters may share.
func NewFromClient(c *firestore.Client, opts Options) *Ledger {
	l := &Ledger{c: c, shards: opts.Shards, clock: opts.Clock}
	if l.shards <= 0 {
		l.shards = DefaultShards
	}
	if l.clock == nil {
		l.clock = clock.Real{}
	}
	return l
}

// Close does nothing: the client's owner closes it.
func (l *Ledger) Close() error { return nil }

// Stats are what Count has written since the Ledger was made.
type Stats struct {
	Commits int64 // commits that succeeded
	Writes  int64 // document writes in those commits: event Creates and counter increments
	Counted int64 // events counted
}

// Stats returns what Count has written so far. Writes/Counted is the
// number of Firestore writes per counted event.
func (l *Ledger) Stats() Stats {
	return Stats{Commits: l.commits.Load(), Writes: l.writes.Load(), Counted: l.counted.Load()}
}

// translate classifies a Firestore (gRPC) error into the kinds the Ledger
// contract allows (firestoredb.Translate, with contention Unavailable);
// msg says what failed and is safe to show. Errors that are already
// classified pass through. NotFound and AlreadyExists, which the contract
// does not allow, are Internal.
func translate(err error, msg string) error {
	if _, ok := errs.As(err); !ok {
		switch status.Code(err) {
		case codes.NotFound, codes.AlreadyExists:
			return errs.Wrap(errs.Internal, err, msg)
		}
	}
	return firestoredb.Translate(err, msg, errs.Unavailable)
}

// checkCount is ledger.CheckCount and the rule of this ledger's
// documents: a key id must be able to start a document id.
func checkCount(events []ledger.Counted, retention time.Duration) error {
	if err := ledger.CheckCount(events, retention); err != nil {
		return err
	}
	for _, e := range events {
		if !validKeyID(e.KeyID) {
			return errs.E(errs.Invalid, "event %s: key id %q cannot name a Firestore document", e.ID, e.KeyID)
		}
	}
	return nil
}

// validKeyID reports whether a counter document id can start with id.
func validKeyID(id string) bool {
	return firestoredb.ValidID(id) && len(id) <= maxKeyID && !strings.HasPrefix(id, "__")
}

// hashID is the document id of an event or dead letter id: any string is
// a valid id this way, and the ids spread evenly over the key space
// instead of hot-spotting on sequential event ids.
func hashID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func (l *Ledger) event(id string) *firestore.DocumentRef {
	return l.c.Collection(eventsColl).Doc(hashID(id))
}

// counter names one counter: a key's window of kind w starting at start.
type counter struct {
	key   string
	w     plan.Window
	start time.Time
}

func (l *Ledger) counterShard(c counter, shard int) *firestore.DocumentRef {
	return l.c.Collection(countersColl).Doc(fmt.Sprintf("%s_%s_%d_%d", c.key, c.w, c.start.Unix(), shard))
}

// ownerCounter names one owner counter: an owner's window of kind w
// starting at start.
type ownerCounter struct {
	owner string
	w     plan.Window
	start time.Time
}

// ownerShard is the document of one shard of an owner counter. Owner ids
// may hold characters a document id may not, so the id spells the owner
// in hex: unambiguous, and its last three parts have fixed forms.
func (l *Ledger) ownerShard(c ownerCounter, shard int) *firestore.DocumentRef {
	return l.c.Collection(ownersColl).Doc(fmt.Sprintf("%x_%s_%d_%d", c.owner, c.w, c.start.Unix(), shard))
}

// adjustment names one adjustment: the part of a key's month counted in
// the month starting at countedIn.
type adjustment struct {
	key       string
	month     time.Time
	countedIn time.Time
}

func (l *Ledger) adjustmentShard(a adjustment, shard int) *firestore.DocumentRef {
	return l.c.Collection(adjustmentsColl).Doc(fmt.Sprintf("%s_%d_%d_%d", a.key, a.month.Unix(), a.countedIn.Unix(), shard))
}

type adjustmentDoc struct {
	KeyID     string               `firestore:"key_id"`
	Owner     string               `firestore:"owner"`
	Month     time.Time            `firestore:"month"`
	CountedIn time.Time            `firestore:"counted_in"`
	Requests  int64                `firestore:"requests"`
	Units     int64                `firestore:"units"`
	Bytes     int64                `firestore:"bytes"`
	Cost      int64                `firestore:"cost"`
	Features  map[string]totalsDoc `firestore:"features"`
}

type totalsDoc struct {
	Requests int64 `firestore:"requests"`
	Units    int64 `firestore:"units"`
	Bytes    int64 `firestore:"bytes"`
	Cost     int64 `firestore:"cost"`
}

type ownerDoc struct {
	Owner    string               `firestore:"owner"`
	Window   string               `firestore:"window"`
	Start    time.Time            `firestore:"start"`
	Shard    int                  `firestore:"shard"`
	Requests int64                `firestore:"requests"`
	Units    int64                `firestore:"units"`
	Bytes    int64                `firestore:"bytes"`
	Cost     int64                `firestore:"cost"`
	Features map[string]totalsDoc `firestore:"features"`
}

// addTo adds the document's totals to u.
func (d *ownerDoc) addTo(u *ledger.Usage) {
	u.Add(ledger.Totals{Requests: d.Requests, Units: d.Units, Bytes: d.Bytes, Cost: d.Cost})
	for f, t := range d.Features {
		u.AddFeature(f, ledger.Totals{Requests: t.Requests, Units: t.Units, Bytes: t.Bytes, Cost: t.Cost})
	}
}

type eventDoc struct {
	ID       string    `firestore:"id"`
	KeyID    string    `firestore:"key_id"`
	Time     time.Time `firestore:"time"`
	ExpireAt time.Time `firestore:"expire_at"`
}

type counterDoc struct {
	KeyID    string    `firestore:"key_id"`
	Owner    string    `firestore:"owner"`
	Window   string    `firestore:"window"`
	Start    time.Time `firestore:"start"`
	Shard    int       `firestore:"shard"`
	Requests int64     `firestore:"requests"`
	Units    int64     `firestore:"units"`
	Bytes    int64     `firestore:"bytes"`
	Cost     int64     `firestore:"cost"`
}

type deadLetterDoc struct {
	ID      string    `firestore:"id"`
	Time    time.Time `firestore:"time"`
	Reason  string    `firestore:"reason"`
	Detail  string    `firestore:"detail"`
	Payload []byte    `firestore:"payload"`
}

// windowStart returns the start of the window of kind w containing t, as
// Firestore stores it.
func windowStart(w plan.Window, t time.Time) time.Time {
	s, _ := w.Bounds(t)
	return firestoredb.Time(s)
}

// addSat returns a+b for b >= 0, saturating at math.MaxInt64 instead of
// wrapping around.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// increment is what one commit adds to one shard of one counter.
type increment struct {
	counter
	owner string
	shard int
	ledger.Totals
}

// ownerIncrement is what one commit adds to one shard of one owner
// counter: its totals and those of each feature.
type ownerIncrement struct {
	ownerCounter
	shard int
	ledger.Totals
	features map[string]*ledger.Totals
}

// adjustmentIncrement is what one commit adds to one shard of one
// adjustment.
type adjustmentIncrement struct {
	adjustment
	owner string
	shard int
	ledger.Totals
	features map[string]*ledger.Totals
}

// chunk is the events of one commit and the increments they add up to.
type chunk struct {
	events []ledger.Counted
	incs   []*increment
	oincs  []*ownerIncrement
	aincs  []*adjustmentIncrement
}

func (c *chunk) writes() int { return len(c.events) + len(c.incs) + len(c.oincs) + len(c.aincs) }

// addFeature adds e's amounts to (*features)[e.Feature], making the map
// when needed; an event without a feature adds nothing.
func addFeature(features *map[string]*ledger.Totals, e ledger.Counted) {
	if e.Feature == "" {
		return
	}
	if *features == nil {
		*features = map[string]*ledger.Totals{}
	}
	ft := (*features)[e.Feature]
	if ft == nil {
		ft = &ledger.Totals{}
		(*features)[e.Feature] = ft
	}
	addTo(ft, e)
}

// incrementDoc is a document that adds t, and features' totals under
// "features", to the document it is merged into; fields are its other
// fields.
func incrementDoc(fields map[string]any, t ledger.Totals, features map[string]*ledger.Totals) map[string]any {
	fields["requests"] = firestore.Increment(t.Requests)
	fields["units"] = firestore.Increment(t.Units)
	fields["bytes"] = firestore.Increment(t.Bytes)
	fields["cost"] = firestore.Increment(t.Cost)
	if len(features) > 0 {
		fs := make(map[string]any, len(features))
		for f, ft := range features {
			fs[f] = incrementDoc(map[string]any{}, *ft, nil)
		}
		fields["features"] = fs
	}
	return fields
}

// addTo adds e's amounts to t, saturating.
func addTo(t *ledger.Totals, e ledger.Counted) {
	t.Requests = addSat(t.Requests, e.Requests)
	t.Units = addSat(t.Units, e.Units)
	t.Bytes = addSat(t.Bytes, e.Bytes)
	t.Cost = addSat(t.Cost, e.Cost)
}

// chunks splits events (sorted by owner and key, so that an owner's and a
// key's events share increments) into chunks of at most maxWrites writes:
// one Create per event and one increment per key counter and owner
// counter the chunk touches. A key whose events fit in one chunk is not
// split between two. Each chunk adds to one shard, chosen at random, of
// all of a key's counters (and adjustments: an event counted at now
// after its month ended adds to one), and likewise of an owner's.
func (l *Ledger) chunks(events []ledger.Counted, now time.Time) []*chunk {
	var (
		out    []*chunk
		cur    *chunk
		incs   map[counter]*increment
		oincs  map[ownerCounter]*ownerIncrement
		aincs  map[adjustment]*adjustmentIncrement
		shards map[string]int // "k" + key id, "o" + owner
	)
	shard := func(id string) int {
		s, ok := shards[id]
		if !ok {
			s = rand.IntN(l.shards)
			shards[id] = s
		}
		return s
	}
	for i, e := range events {
		// A key's events (its run) start a new chunk when they would
		// not fit in the current one but fit in a new one, so that
		// its counters are not written by two commits.
		if i == 0 || e.KeyID != events[i-1].KeyID {
			run := 1
			for run < len(events)-i && events[i+run].KeyID == e.KeyID {
				run++
			}
			// Its counters, its owner's, and an adjustment of each
			// of the (at most two) months usage.MaxAge reaches back.
			if need := run + 2*len(plan.Windows) + 2; cur != nil && cur.writes()+need > maxWrites && need <= maxWrites {
				cur = nil
			}
		}
		cs := make([]counter, len(plan.Windows))
		ocs := make([]ownerCounter, len(plan.Windows))
		need := 1
		for i, w := range plan.Windows {
			cs[i] = counter{e.KeyID, w, windowStart(w, e.Time)}
			if _, ok := incs[cs[i]]; !ok {
				need++
			}
			ocs[i] = ownerCounter{e.Owner, w, cs[i].start}
			if _, ok := oincs[ocs[i]]; !ok && e.Owner != "" {
				need++
			}
		}
		in, late := ledger.Late(e.Time, now)
		a := adjustment{e.KeyID, windowStart(plan.Month, e.Time), firestoredb.Time(in)}
		if _, ok := aincs[a]; late && !ok {
			need++
		}
		if cur == nil || cur.writes()+need > maxWrites {
			cur = &chunk{}
			out = append(out, cur)
			incs, oincs, shards = map[counter]*increment{}, map[ownerCounter]*ownerIncrement{}, map[string]int{}
			aincs = map[adjustment]*adjustmentIncrement{}
		}
		cur.events = append(cur.events, e)
		for _, c := range cs {
			inc := incs[c]
			if inc == nil {
				inc = &increment{counter: c, owner: e.Owner, shard: shard("k" + e.KeyID)}
				incs[c] = inc
				cur.incs = append(cur.incs, inc)
			}
			addTo(&inc.Totals, e)
		}
		if late {
			inc := aincs[a]
			if inc == nil {
				inc = &adjustmentIncrement{adjustment: a, owner: e.Owner, shard: shard("k" + e.KeyID)}
				aincs[a] = inc
				cur.aincs = append(cur.aincs, inc)
			}
			addTo(&inc.Totals, e)
			addFeature(&inc.features, e)
		}
		if e.Owner == "" {
			continue
		}
		for _, c := range ocs {
			inc := oincs[c]
			if inc == nil {
				inc = &ownerIncrement{ownerCounter: c, shard: shard("o" + e.Owner)}
				oincs[c] = inc
				cur.oincs = append(cur.oincs, inc)
			}
			addTo(&inc.Totals, e)
			addFeature(&inc.features, e)
		}
	}
	return out
}

// commit writes a chunk in one transaction of writes only: a Create of
// each event's document and an increment of each counter shard. Firestore
// applies all of them or none: if an event document exists, the commit
// fails with codes.AlreadyExists and no increment is applied.
func (l *Ledger) commit(ctx context.Context, ch *chunk, expireAt time.Time) error {
	err := l.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		for _, e := range ch.events {
			doc := &eventDoc{ID: e.ID, KeyID: e.KeyID, Time: firestoredb.Time(e.Time), ExpireAt: expireAt}
			if err := tx.Create(l.event(e.ID), doc); err != nil {
				return err
			}
		}
		for _, inc := range ch.incs {
			err := tx.Set(l.counterShard(inc.counter, inc.shard), map[string]any{
				"key_id":   inc.key,
				"owner":    inc.owner,
				"window":   string(inc.w),
				"start":    inc.start,
				"shard":    inc.shard,
				"requests": firestore.Increment(inc.Requests),
				"units":    firestore.Increment(inc.Units),
				"bytes":    firestore.Increment(inc.Bytes),
				"cost":     firestore.Increment(inc.Cost),
			}, firestore.MergeAll)
			if err != nil {
				return err
			}
		}
		for _, inc := range ch.oincs {
			doc := incrementDoc(map[string]any{
				"owner":  inc.owner,
				"window": string(inc.w),
				"start":  inc.start,
				"shard":  inc.shard,
			}, inc.Totals, inc.features)
			if err := tx.Set(l.ownerShard(inc.ownerCounter, inc.shard), doc, firestore.MergeAll); err != nil {
				return err
			}
		}
		for _, inc := range ch.aincs {
			doc := incrementDoc(map[string]any{
				"key_id":     inc.key,
				"owner":      inc.owner,
				"month":      inc.month,
				"counted_in": inc.countedIn,
				"shard":      inc.shard,
			}, inc.Totals, inc.features)
			if err := tx.Set(l.adjustmentShard(inc.adjustment, inc.shard), doc, firestore.MergeAll); err != nil {
				return err
			}
		}
		if l.failCommit != nil {
			return l.failCommit()
		}
		return nil
	}, firestore.MaxAttempts(txAttempts))
	if err == nil {
		l.commits.Add(1)
		l.writes.Add(int64(ch.writes()))
		l.counted.Add(int64(len(ch.events)))
	}
	return err
}

// uncounted returns the events whose documents do not exist.
func (l *Ledger) uncounted(ctx context.Context, events []ledger.Counted) ([]ledger.Counted, error) {
	refs := make([]*firestore.DocumentRef, len(events))
	for i, e := range events {
		refs[i] = l.event(e.ID)
	}
	snaps, err := l.c.GetAll(ctx, refs)
	if err != nil {
		return nil, translate(err, "firestore: read usage events")
	}
	var out []ledger.Counted
	for i, snap := range snaps {
		if !snap.Exists() {
			out = append(out, events[i])
		}
	}
	return out, nil
}

// Count counts the events not counted before. It drops repeated ids, sorts
// the events by key and time and commits them in chunks of at most 450 writes, each
// chunk atomically (see commit). When a chunk fails because some of its
// events were counted before (or concurrently), Count reads which, and
// commits the rest again, in new chunks; after a few such rounds it
// commits what is left one event at a time, where AlreadyExists means
// exactly that the event was counted. If Count fails, it returns the
// events it did count before the failure with the error.
func (l *Ledger) Count(ctx context.Context, events []ledger.Counted, retention time.Duration) (int, error) {
	if err := checkCount(events, retention); err != nil {
		return 0, err
	}
	if len(events) == 0 {
		return 0, nil
	}
	now := l.clock.Now()
	expireAt := firestoredb.Time(now.Add(retention))
	seen := make(map[string]bool, len(events))
	todo := make([]ledger.Counted, 0, len(events))
	for _, e := range events {
		if !seen[e.ID] {
			seen[e.ID] = true
			todo = append(todo, e)
		}
	}
	slices.SortStableFunc(todo, func(a, b ledger.Counted) int {
		return cmp.Or(cmp.Compare(a.Owner, b.Owner), cmp.Compare(a.KeyID, b.KeyID), a.Time.Compare(b.Time))
	})

	counted := 0
	for round := 0; len(todo) > 0 && round < chunkRounds; round++ {
		var rest []ledger.Counted
		for _, ch := range l.chunks(todo, now) {
			err := l.commit(ctx, ch, expireAt)
			switch {
			case err == nil:
				counted += len(ch.events)
			case status.Code(err) == codes.AlreadyExists:
				fresh, err := l.uncounted(ctx, ch.events)
				if err != nil {
					return counted, err
				}
				rest = append(rest, fresh...)
			default:
				return counted, translate(err, "firestore: count usage events")
			}
		}
		todo = rest
	}
	for _, e := range todo {
		err := l.commit(ctx, l.chunks([]ledger.Counted{e}, now)[0], expireAt)
		switch {
		case err == nil:
			counted++
		case status.Code(err) != codes.AlreadyExists:
			return counted, translate(err, "firestore: count usage event")
		}
	}
	return counted, nil
}

// Totals returns key id's totals in the window of kind w containing start:
// the sum of its counter's shards, read by id in one call.
func (l *Ledger) Totals(ctx context.Context, keyID string, w plan.Window, start time.Time) (ledger.Totals, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return ledger.Totals{}, err
	}
	if !validKeyID(keyID) {
		return ledger.Totals{}, nil // nothing can have been counted for it
	}
	c := counter{keyID, w, windowStart(w, start)}
	var t ledger.Totals
	err := l.readShards(ctx, "usage counter", func(i int) *firestore.DocumentRef { return l.counterShard(c, i) },
		func(snap *firestore.DocumentSnapshot) error {
			var d counterDoc
			if err := snap.DataTo(&d); err != nil {
				return err
			}
			t.Add(ledger.Totals{Requests: d.Requests, Units: d.Units, Bytes: d.Bytes, Cost: d.Cost})
			return nil
		})
	if err != nil {
		return ledger.Totals{}, err
	}
	return t, nil
}

// readShards reads the Shards documents of one counter (ref(i) is shard
// i) in one call and passes each that exists to add; what names the
// counter in errors.
func (l *Ledger) readShards(ctx context.Context, what string, ref func(int) *firestore.DocumentRef, add func(*firestore.DocumentSnapshot) error) error {
	refs := make([]*firestore.DocumentRef, l.shards)
	for i := range refs {
		refs[i] = ref(i)
	}
	snaps, err := l.c.GetAll(ctx, refs)
	if err != nil {
		return translate(err, "firestore: read "+what+"s")
	}
	for _, snap := range snaps {
		if !snap.Exists() {
			continue
		}
		if err := add(snap); err != nil {
			return errs.Wrap(errs.Internal, err, "firestore: decode "+what+" "+snap.Ref.ID)
		}
	}
	return nil
}

// keyPage returns one page of per-key totals of the window (w, start), of
// owner's keys unless owner is "", ordered by key id. It queries the
// counter shards ordered by (key_id, document id) and sums each key's
// shards; it stops when it meets the first key past the page, so a page
// never splits a key's shards. The first query asks for size+1 documents
// (one per key); each further one for as many as the keys still needed
// take at the shards per key seen so far, so that few documents past the
// page are read.
func (l *Ledger) keyPage(ctx context.Context, owner string, w plan.Window, start time.Time, size int, token string, fields ...string) ([]ledger.KeyTotals, string, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return nil, "", err
	}
	if err := ledger.CheckPageSize(size); err != nil {
		return nil, "", err
	}
	q := l.c.Collection(countersColl).Select(fields...).
		Where("window", "==", string(w)).Where("start", "==", windowStart(w, start))
	if owner != "" {
		q = q.Where("owner", "==", owner)
	}
	if token != "" {
		_, after, err := pagetoken.Decode(token, firestoredb.ValidID)
		if err != nil {
			return nil, "", err
		}
		q = q.Where("key_id", ">", after)
	}
	q = q.OrderBy("key_id", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	var (
		out   []ledger.KeyTotals
		docs  int
		limit = size + 1
	)
	for {
		snaps, err := q.Limit(limit).Documents(ctx).GetAll()
		if err != nil {
			return nil, "", translate(err, "firestore: list usage counters")
		}
		for _, snap := range snaps {
			var d counterDoc
			if err := snap.DataTo(&d); err != nil {
				return nil, "", errs.Wrap(errs.Internal, err, "firestore: decode usage counter "+snap.Ref.ID)
			}
			if len(out) == 0 || out[len(out)-1].KeyID != d.KeyID {
				if len(out) == size {
					return out, pagetoken.Encode(time.Time{}, out[len(out)-1].KeyID), nil
				}
				out = append(out, ledger.KeyTotals{KeyID: d.KeyID, Owner: d.Owner})
			}
			out[len(out)-1].Add(ledger.Totals{Requests: d.Requests, Units: d.Units, Bytes: d.Bytes, Cost: d.Cost})
			docs++
		}
		if len(snaps) < limit {
			return out, "", nil
		}
		q = q.StartAfter(snaps[len(snaps)-1])
		perKey := (docs + len(out) - 1) / len(out)
		limit = (size + 2 - len(out)) * perKey // the current key's rest, and the keys up to the one past the page
	}
}

// OwnerTotals returns one page of per-key totals of owner's keys (every
// key if owner is "") in the window of kind w containing start, ordered by
// key id.
func (l *Ledger) OwnerTotals(ctx context.Context, owner string, w plan.Window, start time.Time, pageSize int, pageToken string) ([]ledger.KeyTotals, string, error) {
	return l.keyPage(ctx, owner, w, start, pageSize, pageToken, "key_id", "owner", "requests", "units", "bytes", "cost")
}

// ActiveKeys returns one page of ids of keys with usage in the window of
// kind w containing start, ordered by key id.
func (l *Ledger) ActiveKeys(ctx context.Context, w plan.Window, start time.Time, pageSize int, pageToken string) ([]string, string, error) {
	kts, next, err := l.keyPage(ctx, "", w, start, pageSize, pageToken, "key_id")
	if err != nil {
		return nil, "", err
	}
	ids := make([]string, len(kts))
	for i, kt := range kts {
		ids[i] = kt.KeyID
	}
	return ids, next, nil
}

// OwnerUsage returns owner's usage in the window of kind w containing
// start: the sum of its owner counter's shards, read by id in one call.
func (l *Ledger) OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (ledger.Usage, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return ledger.Usage{}, err
	}
	if owner == "" {
		return ledger.Usage{}, nil // events without an owner have no owner counters
	}
	c := ownerCounter{owner, w, windowStart(w, start)}
	var u ledger.Usage
	err := l.readShards(ctx, "owner usage counter", func(i int) *firestore.DocumentRef { return l.ownerShard(c, i) },
		func(snap *firestore.DocumentSnapshot) error {
			var d ownerDoc
			if err := snap.DataTo(&d); err != nil {
				return err
			}
			d.addTo(&u)
			return nil
		})
	if err != nil {
		return ledger.Usage{}, err
	}
	return u, nil
}

// Adjustments returns one page of the adjustments of the month starting
// at month, of owner's keys unless owner is "", ordered by key id and
// then the month they were counted in: one query of the adjustment
// shards ordered the same way, summed per adjustment. A page of n
// adjustments spans at most n×Shards documents, so a query of
// (n+1)×Shards that comes back full holds more than n of them.
func (l *Ledger) Adjustments(ctx context.Context, owner string, month time.Time, pageSize int, pageToken string) ([]ledger.Adjustment, string, error) {
	if err := ledger.CheckPageSize(pageSize); err != nil {
		return nil, "", err
	}
	m := windowStart(plan.Month, month)
	q := l.c.Collection(adjustmentsColl).Where("month", "==", m)
	if owner != "" {
		q = q.Where("owner", "==", owner)
	}
	var (
		in    time.Time
		after string
	)
	if pageToken != "" {
		var err error
		if in, after, err = pagetoken.Decode(pageToken, firestoredb.ValidID); err != nil {
			return nil, "", err
		}
		if in.IsZero() { // a token of OwnerTotals: after its key
			q = q.Where("key_id", ">", after)
		}
	}
	q = q.OrderBy("key_id", firestore.Asc).OrderBy("counted_in", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	if !in.IsZero() {
		// After every shard of the token's adjustment: "~" sorts after
		// the digits of a shard number.
		past := strings.TrimSuffix(l.adjustmentShard(adjustment{after, m, firestoredb.Time(in)}, 0).ID, "0") + "~"
		q = q.StartAfter(after, firestoredb.Time(in), l.c.Collection(adjustmentsColl).Doc(past))
	}
	snaps, err := q.Limit((pageSize + 1) * l.shards).Documents(ctx).GetAll()
	if err != nil {
		return nil, "", translate(err, "firestore: list usage adjustments")
	}
	var out []ledger.Adjustment
	for _, snap := range snaps {
		var d adjustmentDoc
		if err := snap.DataTo(&d); err != nil {
			return nil, "", errs.Wrap(errs.Internal, err, "firestore: decode usage adjustment "+snap.Ref.ID)
		}
		if n := len(out); n == 0 || out[n-1].KeyID != d.KeyID || !out[n-1].CountedIn.Equal(d.CountedIn) {
			if n == pageSize {
				last := out[n-1]
				return out, pagetoken.Encode(last.CountedIn, last.KeyID), nil
			}
			out = append(out, ledger.Adjustment{KeyID: d.KeyID, Owner: d.Owner, CountedIn: d.CountedIn.UTC()})
		}
		a := &out[len(out)-1]
		a.Add(ledger.Totals{Requests: d.Requests, Units: d.Units, Bytes: d.Bytes, Cost: d.Cost})
		for f, t := range d.Features {
			a.AddFeature(f, ledger.Totals{Requests: t.Requests, Units: t.Units, Bytes: t.Bytes, Cost: t.Cost})
		}
	}
	return out, "", nil
}

// OwnerSeries returns owner's usage in each window of kind w starting in
// [from, to) that has usage, ordered by start: one query of the owner
// counter shards in the range, summed per window.
func (l *Ledger) OwnerSeries(ctx context.Context, owner string, w plan.Window, from, to time.Time) ([]ledger.Point, error) {
	if err := ledger.CheckSeries(w, from, to); err != nil {
		return nil, err
	}
	snaps, err := l.c.Collection(ownersColl).
		Where("owner", "==", owner).Where("window", "==", string(w)).
		Where("start", ">=", firestoredb.Time(from)).Where("start", "<", firestoredb.Time(to)).
		OrderBy("start", firestore.Asc).Documents(ctx).GetAll()
	if err != nil {
		return nil, translate(err, "firestore: list owner usage counters")
	}
	var out []ledger.Point
	for _, snap := range snaps {
		var d ownerDoc
		if err := snap.DataTo(&d); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "firestore: decode owner usage counter "+snap.Ref.ID)
		}
		if len(out) == 0 || !out[len(out)-1].Start.Equal(d.Start) {
			out = append(out, ledger.Point{Start: d.Start.UTC()})
		}
		d.addTo(&out[len(out)-1].Usage)
	}
	return out, nil
}

// KeySeries returns the totals of owner's keys in each window of kind w
// starting in [from, to), ordered by start and key id, at most limit: one
// query of the key counter shards in the range, summed per key and
// window. It reads at most limit×Shards+1 documents: more than that many
// shards hold more than limit points.
func (l *Ledger) KeySeries(ctx context.Context, owner string, w plan.Window, from, to time.Time, limit int) ([]ledger.KeyPoint, bool, error) {
	if err := ledger.CheckSeries(w, from, to); err != nil {
		return nil, false, err
	}
	if err := ledger.CheckSeriesLimit(limit); err != nil {
		return nil, false, err
	}
	maxDocs := limit*l.shards + 1
	snaps, err := l.c.Collection(countersColl).Select("key_id", "start", "requests", "units", "bytes", "cost").
		Where("owner", "==", owner).Where("window", "==", string(w)).
		Where("start", ">=", firestoredb.Time(from)).Where("start", "<", firestoredb.Time(to)).
		OrderBy("start", firestore.Asc).OrderBy("key_id", firestore.Asc).
		Limit(maxDocs).Documents(ctx).GetAll()
	if err != nil {
		return nil, false, translate(err, "firestore: list usage counters")
	}
	var out []ledger.KeyPoint
	for _, snap := range snaps {
		var d counterDoc
		if err := snap.DataTo(&d); err != nil {
			return nil, false, errs.Wrap(errs.Internal, err, "firestore: decode usage counter "+snap.Ref.ID)
		}
		if n := len(out); n == 0 || out[n-1].KeyID != d.KeyID || !out[n-1].Start.Equal(d.Start) {
			out = append(out, ledger.KeyPoint{KeyID: d.KeyID, Start: d.Start.UTC()})
		}
		out[len(out)-1].Add(ledger.Totals{Requests: d.Requests, Units: d.Units, Bytes: d.Bytes, Cost: d.Cost})
	}
	if len(out) > limit || len(snaps) == maxDocs {
		return out[:min(limit, len(out))], true, nil
	}
	return out, false, nil
}

// ActiveOwners returns one page of the owners with usage in the window of
// kind w containing start, ordered by owner id. It queries the owner
// counter shards ordered by (owner, document id), as many as the owners
// still needed could have, and skips each owner's other shards.
func (l *Ledger) ActiveOwners(ctx context.Context, w plan.Window, start time.Time, pageSize int, pageToken string) ([]string, string, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return nil, "", err
	}
	if err := ledger.CheckPageSize(pageSize); err != nil {
		return nil, "", err
	}
	q := l.c.Collection(ownersColl).Select("owner").
		Where("window", "==", string(w)).Where("start", "==", windowStart(w, start))
	if pageToken != "" {
		_, after, err := pagetoken.Decode(pageToken, nil)
		if err != nil {
			return nil, "", err
		}
		q = q.Where("owner", ">", after)
	}
	q = q.OrderBy("owner", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	var out []string
	for {
		limit := (pageSize + 1 - len(out)) * l.shards
		snaps, err := q.Limit(limit).Documents(ctx).GetAll()
		if err != nil {
			return nil, "", translate(err, "firestore: list owners with usage")
		}
		for _, snap := range snaps {
			var d ownerDoc
			if err := snap.DataTo(&d); err != nil {
				return nil, "", errs.Wrap(errs.Internal, err, "firestore: decode owner usage counter "+snap.Ref.ID)
			}
			if len(out) > 0 && out[len(out)-1] == d.Owner {
				continue
			}
			if len(out) == pageSize {
				return out, pagetoken.Encode(time.Time{}, out[len(out)-1]), nil
			}
			out = append(out, d.Owner)
		}
		if len(snaps) < limit {
			return out, "", nil
		}
		q = q.StartAfter(snaps[len(snaps)-1])
	}
}

// AddDeadLetter records d unless a dead letter with its ID exists, in which
// case the first one is kept. A payload over 64 KiB is truncated.
func (l *Ledger) AddDeadLetter(ctx context.Context, d ledger.DeadLetter) error {
	if err := ledger.CheckDeadLetter(d); err != nil {
		return err
	}
	if len(d.Payload) > maxPayload {
		d.Payload = d.Payload[:maxPayload]
	}
	ref := l.c.Collection(deadLettersColl).Doc(hashID(d.ID))
	err := l.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		doc := &deadLetterDoc{ID: d.ID, Time: firestoredb.Time(d.Time), Reason: d.Reason, Detail: d.Detail, Payload: d.Payload}
		if err := tx.Create(ref, doc); err != nil {
			return err
		}
		if l.failCommit != nil {
			return l.failCommit()
		}
		return nil
	}, firestore.MaxAttempts(txAttempts))
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return translate(err, "firestore: record dead letter")
}

// ListDeadLetters returns one page of dead letters, newest first (ties by
// document id, descending).
func (l *Ledger) ListDeadLetters(ctx context.Context, pageSize int, pageToken string) ([]ledger.DeadLetter, string, error) {
	if err := ledger.CheckPageSize(pageSize); err != nil {
		return nil, "", err
	}
	q := l.c.Collection(deadLettersColl).OrderBy("time", firestore.Desc).OrderBy(firestore.DocumentID, firestore.Desc)
	if pageToken != "" {
		t, id, err := pagetoken.Decode(pageToken, firestoredb.ValidID)
		if err != nil {
			return nil, "", err
		}
		q = q.StartAfter(firestoredb.Time(t), id)
	}
	snaps, err := q.Limit(pageSize + 1).Documents(ctx).GetAll()
	if err != nil {
		return nil, "", translate(err, "firestore: list dead letters")
	}
	more := len(snaps) > pageSize
	if more {
		snaps = snaps[:pageSize]
	}
	out := make([]ledger.DeadLetter, 0, len(snaps))
	for _, snap := range snaps {
		var d deadLetterDoc
		if err := snap.DataTo(&d); err != nil {
			return nil, "", errs.Wrap(errs.Internal, err, "firestore: decode dead letter "+snap.Ref.ID)
		}
		out = append(out, ledger.DeadLetter{ID: d.ID, Time: d.Time, Reason: d.Reason, Detail: d.Detail, Payload: d.Payload})
	}
	var next string
	if more {
		next = pagetoken.Encode(out[len(out)-1].Time, snaps[len(snaps)-1].Ref.ID)
	}
	return out, next, nil
}

// clientIPsDoc is a key's client IPs on one UTC day.
type clientIPsDoc struct {
	KeyID    string    `firestore:"key_id"`
	Day      time.Time `firestore:"day"`
	IPs      []string  `firestore:"ips"`
	ExpireAt time.Time `firestore:"expire_at"`
}

// clientIPs returns the document of key id's client IPs on the UTC day
// starting at day.
func (l *Ledger) clientIPs(keyID string, day time.Time) *firestore.DocumentRef {
	return l.c.Collection(clientIPsColl).Doc(fmt.Sprintf("%s_%d", keyID, day.Unix()))
}

// AddClientIPs adds the client IPs of each key to its document of the UTC
// day containing day with a Set-merge of firestore.ArrayUnion, which
// Firestore applies on the server: concurrent writers add to the array and
// lose nothing, and an IP already there is not added again. The documents
// are written through a BulkWriter (batches of 20 writes, retried on
// contention); the writes are independent, so a failure may leave some
// keys' IPs written, which a retry writes again at no harm.
func (l *Ledger) AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error {
	clean, err := ledger.CleanClientIPs(day, ips)
	if err != nil {
		return err
	}
	for id := range clean {
		if !validKeyID(id) {
			return errs.E(errs.Invalid, "client IPs: key id %.64q cannot name a Firestore document", id)
		}
	}
	if len(clean) == 0 {
		return nil
	}
	if l.failCommit != nil {
		if err := l.failCommit(); err != nil {
			return err
		}
	}
	d := windowStart(plan.Day, day)
	expireAt := d.Add(ledger.ClientIPRetention)
	bw := l.c.BulkWriter(ctx)
	jobs := make([]*firestore.BulkWriterJob, 0, len(clean))
	var enqueueErr error
	for _, id := range slices.Sorted(maps.Keys(clean)) {
		union := make([]any, len(clean[id]))
		for i, ip := range clean[id] {
			union[i] = ip
		}
		job, err := bw.Set(l.clientIPs(id, d), map[string]any{
			"key_id":    id,
			"day":       d,
			"ips":       firestore.ArrayUnion(union...),
			"expire_at": expireAt,
		}, firestore.MergeAll)
		if err != nil {
			enqueueErr = err
			break
		}
		jobs = append(jobs, job)
	}
	bw.End()
	if enqueueErr != nil {
		return translate(enqueueErr, "firestore: record client IPs")
	}
	for _, job := range jobs {
		if _, err := job.Results(); err != nil {
			return translate(err, "firestore: record client IPs")
		}
	}
	return nil
}

// ClientIPs reads key id's document of the UTC day containing day: the
// count is the length of its array, the sample its first IPs in byte
// order.
func (l *Ledger) ClientIPs(ctx context.Context, keyID string, day time.Time, sample int) (int, []string, error) {
	if err := ledger.CheckClientIPsQuery(keyID, day, sample); err != nil {
		return 0, nil, err
	}
	if !validKeyID(keyID) {
		return 0, nil, nil // nothing can have been recorded for it
	}
	snap, err := l.clientIPs(keyID, windowStart(plan.Day, day)).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, translate(err, "firestore: read client IPs")
	}
	var d clientIPsDoc
	if err := snap.DataTo(&d); err != nil {
		return 0, nil, errs.Wrap(errs.Internal, err, "firestore: decode client IPs "+snap.Ref.ID)
	}
	if sample == 0 {
		return len(d.IPs), nil, nil
	}
	slices.Sort(d.IPs)
	return len(d.IPs), d.IPs[:min(sample, len(d.IPs))], nil
}
