package firestoreledger

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/ledgertest"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/usage"
)

// TestConformance runs the suite on the emulator, each subtest in a project
// of its own. The harness has no Advance: expired event documents are
// deleted by Firestore's TTL policy, which the emulator does not run.
func TestConformance(t *testing.T) {
	testenv.Firestore(t)
	ledgertest.Run(t, func(t *testing.T) ledgertest.Harness {
		var b ledgertest.Breaker
		c := clock.NewFake(time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC))
		l := NewFromClient(testenv.FirestoreClient(t), Options{Clock: c})
		l.failCommit = b.Hook
		return ledgertest.Harness{Ledger: l, Break: b.Break, Repair: b.Repair, SetClock: c.Set}
	})
}

var at = time.Date(2031, time.January, 31, 23, 59, 30, 0, time.UTC)

func events(prefix, key string, n int) []ledger.Counted {
	var out []ledger.Counted
	for i := range n {
		out = append(out, ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("%s-%d", prefix, i), KeyID: key, Time: at,
			Requests: 1, Units: int64(10 * (i + 1)), Bytes: 100}, Owner: "owner-1"})
	}
	return out
}

// TestChunkCommitIsAtomic proves on the emulator what exactly-once rests
// on: a commit of event Creates and counter increments in which one event
// document already exists fails with AlreadyExists and applies nothing,
// not the other events' documents and not the increments.
func TestChunkCommitIsAtomic(t *testing.T) {
	c := testenv.FirestoreClient(t)
	l := NewFromClient(c, Options{})
	ctx := t.Context()
	evs := events("evt", "key-1", 5)
	if _, err := l.event("evt-3").Create(ctx, &eventDoc{ID: "evt-3", KeyID: "key-1", Time: at, ExpireAt: at.Add(time.Hour)}); err != nil {
		t.Fatalf("create evt-3's document: %v", err)
	}
	chunks := l.chunks(evs, at)
	if len(chunks) != 1 {
		t.Fatalf("chunks: got %d, want 1", len(chunks))
	}
	err := l.commit(ctx, chunks[0], at.Add(time.Hour))
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("commit with evt-3 present: got %v, want code AlreadyExists", err)
	}
	for _, e := range evs {
		snap, err := l.event(e.ID).Get(ctx)
		if e.ID == "evt-3" {
			continue
		}
		if status.Code(err) != codes.NotFound {
			t.Errorf("event %s after the failed commit: got %v (exists %v), want NotFound", e.ID, err, snap.Exists())
		}
	}
	counters, err := c.Collection(countersColl).Documents(ctx).GetAll()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	if len(counters) != 0 {
		t.Errorf("counter documents after the failed commit: got %d, want 0 (increments rolled back)", len(counters))
	}

	// Count recovers: it counts the four others, once.
	for _, want := range []int{4, 0} {
		if n, err := l.Count(ctx, evs, time.Hour); n != want || err != nil {
			t.Errorf("Count: got %d, %v; want %d, nil", n, err, want)
		}
	}
	got, err := l.Totals(ctx, "key-1", plan.Minute, at)
	if err != nil {
		t.Fatalf("Totals: %v", err)
	}
	if want := (ledger.Totals{Requests: 4, Units: 10 + 20 + 30 + 50, Bytes: 400}); got != want {
		t.Errorf("Totals: got %+v, want %+v", got, want)
	}
}

// TestCountSurvivesRacingDeliveries has another ledger count one of the
// events just before each of the first four commits, as a concurrent
// delivery might: the first three make whole chunks fail (the bounded
// rounds), the fourth races a one-event commit of the fallback. Every event
// is counted once.
func TestCountSurvivesRacingDeliveries(t *testing.T) {
	c := testenv.FirestoreClient(t)
	evs := events("evt", "key-1", 10)
	other := NewFromClient(c, Options{})
	var (
		raced   int
		hookErr error
	)
	l := NewFromClient(c, Options{})
	l.failCommit = func() error {
		if raced < 4 {
			_, hookErr = other.Count(context.Background(), evs[raced:raced+1], time.Hour)
			raced++
		}
		return hookErr
	}
	n, err := l.Count(t.Context(), evs, time.Hour)
	if n != 6 || err != nil {
		t.Errorf("Count racing 4 deliveries: got %d, %v; want 6, nil", n, err)
	}
	if s := other.Stats(); s.Counted != 4 {
		t.Errorf("events the racing ledger counted: got %d, want 4", s.Counted)
	}
	got, err := l.Totals(t.Context(), "key-1", plan.Day, at)
	if want := (ledger.Totals{Requests: 10, Units: 550, Bytes: 1000}); got != want || err != nil {
		t.Errorf("Totals: got %+v, %v; want %+v", got, err, want)
	}
}

// TestCountPreAggregatesCounterWrites checks the write budget: a webhook
// batch of 1,000 events of one owner's 20 keys and 5 features in one
// minute costs at most 1.1 writes per event, in commits of at most 450
// writes.
func TestCountPreAggregatesCounterWrites(t *testing.T) {
	l := NewFromClient(testenv.FirestoreClient(t), Options{})
	var evs []ledger.Counted
	for k := range 20 {
		for i, e := range events(fmt.Sprint("evt-", k), fmt.Sprintf("key-%02d", k), 50) {
			e.Feature = fmt.Sprint("model-", i%5)
			evs = append(evs, e)
		}
	}
	if n, err := l.Count(t.Context(), evs, time.Hour); n != len(evs) || err != nil {
		t.Fatalf("Count: got %d, %v; want %d, nil", n, err, len(evs))
	}
	s := l.Stats()
	if s.Counted != 1000 || s.Commits != 3 {
		t.Errorf("Stats: got %+v, want 1000 counted in 3 commits", s)
	}
	// 1,000 Creates, 4 increments per key (minute, hour, day, month),
	// no key split between chunks, and 4 owner increments (holding the
	// features) per chunk.
	if max := int64(1000 + 4*20 + 4*3); s.Writes > max {
		t.Errorf("writes: got %d, want at most %d", s.Writes, max)
	}
	t.Logf("%d writes for %d events: %.3f writes/event", s.Writes, s.Counted, float64(s.Writes)/float64(s.Counted))
	u, err := l.OwnerUsage(t.Context(), "owner-1", plan.Minute, at)
	if err != nil || u.Requests != 1000 || len(u.Features) != 5 || u.Features["model-3"].Requests != 200 {
		t.Errorf("OwnerUsage: got %+v, %v; want 1000 requests, 200 of each of 5 features", u, err)
	}
}

// TestCountSpreadsCommitsOverShards checks that a key's commits land on
// several shards, never more than Options.Shards, and that Totals and
// OwnerTotals sum them.
func TestCountSpreadsCommitsOverShards(t *testing.T) {
	c := testenv.FirestoreClient(t)
	l := NewFromClient(c, Options{Shards: 3})
	evs := events("evt", "key-1", 40)
	for _, e := range evs {
		if n, err := l.Count(t.Context(), []ledger.Counted{e}, time.Hour); n != 1 || err != nil {
			t.Fatalf("Count(%s): got %d, %v; want 1, nil", e.ID, n, err)
		}
	}
	docs, err := c.Collection(countersColl).Where("window", "==", "minute").Documents(t.Context()).GetAll()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	if len(docs) < 2 || len(docs) > 3 {
		t.Errorf("minute counter shards after 40 commits: got %d documents, want 2 or 3", len(docs))
	}
	want := ledger.Totals{Requests: 40, Units: 10 * 40 * 41 / 2, Bytes: 4000}
	got, err := l.Totals(t.Context(), "key-1", plan.Minute, at)
	if err != nil || got != want {
		t.Errorf("Totals: got %+v, %v; want %+v", got, err, want)
	}
	kts, next, err := l.OwnerTotals(t.Context(), "owner-1", plan.Minute, at, 1, "")
	if err != nil || next != "" || len(kts) != 1 || kts[0].Totals != want {
		t.Errorf("OwnerTotals: got %+v, %q, %v; want one key with %+v", kts, next, err, want)
	}
}

// TestDocumentLayout pins the layout the package comment documents and the
// deployment's indexes and TTL policy name.
func TestDocumentLayout(t *testing.T) {
	c := testenv.FirestoreClient(t)
	now := time.Date(2031, time.March, 1, 0, 0, 0, 0, time.UTC)
	l := NewFromClient(c, Options{Clock: fakeClock{now}})
	e := events("evt", "key_with_underscores", 1)[0]
	e.Feature = "pro.model"
	if n, err := l.Count(t.Context(), []ledger.Counted{e}, time.Hour); n != 1 || err != nil {
		t.Fatalf("Count: got %d, %v; want 1, nil", n, err)
	}
	snap, err := c.Collection("usage_events").Doc(hashID("evt-0")).Get(t.Context())
	if err != nil {
		t.Fatalf("read the event document: %v", err)
	}
	wantEvent := map[string]any{"id": "evt-0", "key_id": "key_with_underscores", "time": at, "expire_at": now.Add(time.Hour)}
	for f, want := range wantEvent {
		if got := snap.Data()[f]; got != want {
			t.Errorf("event field %s: got %v, want %v", f, got, want)
		}
	}
	docs, err := c.Collection("usage_counters").Documents(t.Context()).GetAll()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	if len(docs) != len(plan.Windows) {
		t.Fatalf("counter documents: got %d, want %d (%v)", len(docs), len(plan.Windows), plan.Windows)
	}
	idRE := regexp.MustCompile(`^key_with_underscores_(minute|hour|day|month)_(\d+)_([0-7])$`)
	for _, d := range docs {
		m := idRE.FindStringSubmatch(d.Ref.ID)
		if m == nil {
			t.Errorf("counter document id %q does not match %s", d.Ref.ID, idRE)
			continue
		}
		data := d.Data()
		start, _ := plan.Window(m[1]).Bounds(at)
		want := map[string]any{"key_id": "key_with_underscores", "owner": "owner-1", "window": m[1], "start": start,
			"shard": int64(m[3][0] - '0'), "requests": int64(1), "units": int64(10), "bytes": int64(100)}
		for f, w := range want {
			if got := data[f]; got != w {
				t.Errorf("counter %s field %s: got %v (%T), want %v (%T)", d.Ref.ID, f, got, got, w, w)
			}
		}
		if m[2] != fmt.Sprint(start.Unix()) {
			t.Errorf("counter %s: start in the id is %s, want %d", d.Ref.ID, m[2], start.Unix())
		}
	}
	docs, err = c.Collection("usage_owner_counters").Documents(t.Context()).GetAll()
	if err != nil {
		t.Fatalf("read owner counters: %v", err)
	}
	if len(docs) != len(plan.Windows) {
		t.Fatalf("owner counter documents: got %d, want %d", len(docs), len(plan.Windows))
	}
	ownerRE := regexp.MustCompile(`^6f776e65722d31_(minute|hour|day|month)_(\d+)_([0-7])$`) // "owner-1" in hex
	for _, d := range docs {
		m := ownerRE.FindStringSubmatch(d.Ref.ID)
		if m == nil {
			t.Errorf("owner counter document id %q does not match %s", d.Ref.ID, ownerRE)
			continue
		}
		start, _ := plan.Window(m[1]).Bounds(at)
		want := map[string]any{"owner": "owner-1", "window": m[1], "start": start, "shard": int64(m[3][0] - '0'),
			"requests": int64(1), "units": int64(10), "bytes": int64(100), "cost": int64(0),
			"features": map[string]any{"pro.model": map[string]any{"requests": int64(1), "units": int64(10), "bytes": int64(100), "cost": int64(0)}}}
		if diff := gocmp.Diff(want, d.Data()); diff != "" {
			t.Errorf("owner counter %s mismatch (-want +got):\n%s", d.Ref.ID, diff)
		}
	}
}

// TestClientIPsDocumentLayout pins the client IP document the package
// comment documents: one per key and UTC day, its IPs in an array, and
// expire_at (the TTL field) ClientIPRetention after the day's start.
func TestClientIPsDocumentLayout(t *testing.T) {
	c := testenv.FirestoreClient(t)
	l := NewFromClient(c, Options{})
	day := time.Date(2031, time.March, 1, 0, 0, 0, 0, time.UTC)
	for _, ips := range [][]string{{"2001:DB8::1", "192.0.2.1"}, {"192.0.2.1", "198.51.100.7"}} {
		if err := l.AddClientIPs(t.Context(), day.Add(17*time.Hour), map[string][]string{"key_with_underscores": ips}); err != nil {
			t.Fatalf("AddClientIPs: %v", err)
		}
	}
	docs, err := c.Collection("usage_client_ips").Documents(t.Context()).GetAll()
	if err != nil {
		t.Fatalf("read client IP documents: %v", err)
	}
	if len(docs) != 1 {
		t.Fatalf("client IP documents: got %d, want 1", len(docs))
	}
	if got, want := docs[0].Ref.ID, fmt.Sprintf("key_with_underscores_%d", day.Unix()); got != want {
		t.Errorf("document id: got %q, want %q", got, want)
	}
	data := docs[0].Data()
	want := map[string]any{"key_id": "key_with_underscores", "day": day, "expire_at": day.Add(ledger.ClientIPRetention)}
	for f, w := range want {
		if got := data[f]; got != w {
			t.Errorf("field %s: got %v (%T), want %v (%T)", f, got, got, w, w)
		}
	}
	// The array keeps the order of first recording; ClientIPs sorts.
	if got, want := fmt.Sprint(data["ips"]), "[192.0.2.1 2001:db8::1 198.51.100.7]"; got != want {
		t.Errorf("field ips: got %s, want %s", got, want)
	}
	if len(data) != 4 {
		t.Errorf("fields: got %v, want key_id, day, ips, expire_at", data)
	}
}

// TestClientIPsOfKeyIDsThatCannotNameADocument checks that a batch with a
// key id Firestore cannot use in a document id is rejected whole, and
// that reading such a key finds nothing.
func TestClientIPsOfKeyIDsThatCannotNameADocument(t *testing.T) {
	c := testenv.FirestoreClient(t)
	l := NewFromClient(c, Options{})
	day := time.Date(2031, time.March, 1, 0, 0, 0, 0, time.UTC)
	for _, bad := range []string{"a/b", "__key", strings.Repeat("k", maxKeyID+1)} {
		err := l.AddClientIPs(t.Context(), day, map[string][]string{"key-1": {"192.0.2.1"}, bad: {"192.0.2.2"}})
		if !errs.Is(err, errs.Invalid) {
			t.Errorf("AddClientIPs with key id %.20q: got %v, want kind Invalid", bad, err)
		}
		if n, ips, err := l.ClientIPs(t.Context(), bad, day, 10); n != 0 || ips != nil || err != nil {
			t.Errorf("ClientIPs(%.20q): got %d, %q, %v; want 0, nil, nil", bad, n, ips, err)
		}
	}
	docs, err := c.Collection("usage_client_ips").Documents(t.Context()).GetAll()
	if err != nil || len(docs) != 0 {
		t.Errorf("client IP documents after rejected calls: got %d, %v; want none", len(docs), err)
	}
}

type fakeClock struct{ t time.Time }

func (c fakeClock) Now() time.Time { return c.t }

// BenchmarkCount measures Count with webhook-sized batches of 1,000 new
// events of 20 keys, interleaved with a baseline that writes the same
// events' documents and nothing else, in atomic commits of 450 Creates (the
// same kind of transaction of writes only). It reports the ledger's
// events/s, the baseline's, the ledger's time over the baseline's, and the
// Firestore writes per counted event.
func BenchmarkCount(b *testing.B) {
	const batch, keys = 1000, 20
	c := testenv.FirestoreClient(b)
	l := NewFromClient(c, Options{})
	ctx := b.Context()
	base := time.Now().UTC()
	var (
		seq             int
		counting, plain time.Duration
	)
	for b.Loop() {
		evs := make([]ledger.Counted, batch)
		for i := range evs {
			seq++
			evs[i] = ledger.Counted{Event: usage.Event{ID: fmt.Sprintf("evt-%09d", seq), KeyID: fmt.Sprintf("key-%02d", seq%keys),
				Time: base.Add(time.Duration(seq) * time.Millisecond), Requests: 1, Units: 350, Bytes: 2048}, Owner: "owner-1"}
		}
		start := time.Now()
		if n, err := l.Count(ctx, evs, 35*24*time.Hour); err != nil || n != batch {
			b.Fatalf("Count: got %d, %v; want %d, nil", n, err, batch)
		}
		mid := time.Now()
		for i := 0; i < len(evs); i += maxWrites {
			part := evs[i:min(i+maxWrites, len(evs))]
			err := c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
				for _, e := range part {
					doc := c.Collection("baseline").Doc(hashID(e.ID))
					if err := tx.Create(doc, &eventDoc{ID: e.ID, KeyID: e.KeyID, Time: e.Time, ExpireAt: e.Time}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatalf("baseline commit: %v", err)
			}
		}
		counting += mid.Sub(start)
		plain += time.Since(mid)
	}
	s := l.Stats()
	events := float64(b.N * batch)
	b.ReportMetric(events/counting.Seconds(), "events/s")
	b.ReportMetric(events/plain.Seconds(), "baseline-events/s")
	b.ReportMetric(counting.Seconds()/plain.Seconds(), "time/baseline")
	b.ReportMetric(float64(s.Writes)/float64(s.Counted), "writes/event")
	b.ReportMetric(0, "ns/op") // covers the ledger and the baseline: see the metrics above
}
