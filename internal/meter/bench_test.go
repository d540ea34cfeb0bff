package meter_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	ps "cloud.google.com/go/pubsub/v2"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/firestoreledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/usage"
)

// The shape of the benchmarked traffic: webhook batches of benchBatch
// events of benchKeys keys, benchMessages of them per iteration, handled
// benchConcurrency at a time.
const (
	benchBatch       = 500
	benchKeys        = 20
	benchMessages    = 20
	benchConcurrency = 8
)

// benchPipeline is the metering pipeline end to end: meter.Publish (the
// webhook's validation and publish) onto the embedded queue, whose Receive
// calls Consumer.Handle, which counts into a ledger.
type benchPipeline struct {
	topic    queue.Topic
	keys     []*store.Key
	acked    atomic.Int64 // messages Handle acked
	failures atomic.Int64 // Handle errors (redelivered)
	ackedNow chan struct{}
	seq      int
}

// benchPolicy is the usage subscription's retry policy in the benchmarks.
var benchPolicy = queue.RetryPolicy{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, MaxAttempts: 100}

// embeddedQueue opens an embedded queue with a usage topic, its
// subscription (benchConcurrency handlers at a time) and a dead-letter
// topic.
func embeddedQueue(b *testing.B) (queue.Topic, queue.Subscription) {
	b.Helper()
	q, err := embeddedqueue.Open(filepath.Join(b.TempDir(), "queue.db"), embeddedqueue.Options{Logger: discard, Concurrency: benchConcurrency})
	if err != nil {
		b.Fatalf("open the queue: %v", err)
	}
	b.Cleanup(func() { q.Close() })
	q.Subscription("usage-dead-letter", "usage-dead-letter-sub", queue.RetryPolicy{}, "")
	return q.Topic("usage"), q.Subscription("usage", "usage-sub", benchPolicy, "usage-dead-letter")
}

// pubsubQueue creates the same on the Pub/Sub emulator, in a new project.
// The subscription is pulled with the client's default flow control.
func pubsubQueue(b *testing.B) (queue.Topic, queue.Subscription) {
	b.Helper()
	testenv.PubSub(b)
	ctx := context.Background()
	c, err := ps.NewClient(ctx, testenv.ProjectID())
	if err != nil {
		b.Fatalf("pubsubqueue.NewClient: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	for _, err := range []error{
		pubsubqueue.EnsureTopic(ctx, c, "usage"),
		pubsubqueue.EnsureTopic(ctx, c, "usage-dead-letter"),
		pubsubqueue.EnsureSubscription(ctx, c, "usage-sub", "usage", benchPolicy, "usage-dead-letter"),
	} {
		if err != nil {
			b.Fatalf("create the topics and subscription: %v", err)
		}
	}
	t := pubsubqueue.NewTopic(c, "usage", pubsubqueue.PublishSettings{})
	b.Cleanup(func() { t.Close() })
	return t, pubsubqueue.NewSubscription(c, "usage-sub")
}

// newBenchPipeline makes benchKeys keys in st and starts consuming sub
// into l until b ends.
func newBenchPipeline(b *testing.B, st store.Store, l ledger.Ledger, topic queue.Topic, sub queue.Subscription) *benchPipeline {
	b.Helper()
	p := &benchPipeline{topic: topic, keys: createKeys(b, st, benchKeys), ackedNow: make(chan struct{}, 1)}
	c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		err := sub.Receive(ctx, func(ctx context.Context, m queue.Message) error {
			if err := c.Handle(ctx, m); err != nil {
				p.failures.Add(1)
				return err
			}
			p.acked.Add(1)
			select {
			case p.ackedNow <- struct{}{}:
			default:
			}
			return nil
		})
		if err != nil {
			b.Errorf("Receive: %v", err)
		}
	})
	b.Cleanup(func() { // before the queue's cleanup, registered earlier
		cancel()
		wg.Wait()
	})
	return p
}

// batches returns benchMessages webhook bodies of benchBatch new events
// each, of every key in turn, within t0's minute, and the events.
func (p *benchPipeline) batches(b *testing.B) ([][]byte, [][]usage.Event) {
	b.Helper()
	bodies := make([][]byte, benchMessages)
	events := make([][]usage.Event, benchMessages)
	for i := range bodies {
		events[i] = make([]usage.Event, benchBatch)
		for j := range events[i] {
			p.seq++
			events[i][j] = usage.Event{ID: fmt.Sprintf("evt_%09d", p.seq), KeyID: p.keys[p.seq%benchKeys].ID,
				Time: t0.Add(time.Duration(p.seq%60_000) * time.Millisecond), Requests: 1, Units: 350, Bytes: 2048, Feature: "generate"}
		}
		bodies[i] = batchJSON(b, events[i])
	}
	return bodies, events
}

// run publishes bodies, benchConcurrency at a time as concurrent webhook
// requests do, and returns once the consumer has acked all of them: their
// events are in the ledger.
func (p *benchPipeline) run(b *testing.B, bodies [][]byte) {
	want := p.acked.Load() + int64(len(bodies))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range benchConcurrency {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(bodies)); i = next.Add(1) - 1 {
				if _, err := meter.Publish(context.Background(), p.topic, bodies[i], t0); err != nil {
					b.Errorf("Publish: %v", err)
				}
			}
		})
	}
	wg.Wait()
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for p.acked.Load() < want {
		select {
		case <-p.ackedNow:
		case <-deadline.C:
			b.Fatalf("the consumer acked %d of %d messages in 2 minutes (%d Handle failures)", p.acked.Load(), want, p.failures.Load())
		}
	}
}

// checkTotals checks that the ledger holds exactly the events published:
// each is one request.
func (p *benchPipeline) checkTotals(b *testing.B, l ledger.Ledger) {
	b.Helper()
	var requests int64
	for _, k := range p.keys {
		t, err := l.Totals(context.Background(), k.ID, plan.Month, t0)
		if err != nil {
			b.Fatalf("Totals: %v", err)
		}
		requests += t.Requests
	}
	if requests != int64(p.seq) {
		b.Errorf("requests in the ledger: got %d, want %d (one per event published)", requests, p.seq)
	}
}

// report reports the pipeline's and the baseline's throughput and their
// ratio (the target is at least 0.5).
func report(b *testing.B, events int, pipeline, baseline time.Duration, failures int64) {
	b.ReportMetric(float64(events)/pipeline.Seconds(), "events/s")
	b.ReportMetric(float64(events)/baseline.Seconds(), "baseline-events/s")
	b.ReportMetric(baseline.Seconds()/pipeline.Seconds(), "ratio")
	b.ReportMetric(float64(failures), "handle-errors")
	b.ReportMetric(0, "ns/op") // covers the pipeline and the baseline: see the metrics above
}

// BenchmarkMeteringEmbedded measures events/s from meter.Publish through
// the embedded queue and Consumer.Handle into the SQLite ledger, until
// the consumer has acked every message (so the ledger's totals hold every
// event; checked at the end). Each iteration is benchMessages webhook
// batches of benchBatch events of benchKeys real keys. It is interleaved
// with the baseline: the raw batched-write rate of SQLite on the same
// machine, writing the same event rows with a multi-row INSERT per batch
// (one transaction each, the ledger's pragmas: WAL, synchronous=NORMAL)
// into a table of the ledger's usage_events shape, and nothing else.
// ratio is the pipeline's events/s over the baseline's. ledger-events/s
// is the SQLite ledger's Count alone on the same batches (into a ledger
// of its own), which tells the ledger's share of the gap from the rest
// (JSON, validation, the queue).
//
//	go test -run '^$' -bench BenchmarkMeteringEmbedded -benchtime 20x ./internal/meter/
func BenchmarkMeteringEmbedded(b *testing.B) {
	st, l := openSQLite(b, nil)
	topic, sub := embeddedQueue(b)
	p := newBenchPipeline(b, st, l, topic, sub)
	raw, err := sql.Open("sqlite", filepath.Join(b.TempDir(), "raw.db")+"?_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	if _, err := raw.Exec(`CREATE TABLE raw (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, time INTEGER NOT NULL,
		expire_at INTEGER NOT NULL) STRICT, WITHOUT ROWID`); err != nil {
		b.Fatalf("create the baseline table: %v", err)
	}
	alone, err := sqliteledger.Open(filepath.Join(b.TempDir(), "alone.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer alone.Close()
	owners := map[string]string{}
	for _, k := range p.keys {
		owners[k.ID] = k.Owner
	}
	insert := "INSERT INTO raw (id, key_id, time, expire_at) VALUES (?, ?, ?, ?)" + strings.Repeat(", (?, ?, ?, ?)", benchBatch-1)
	expire := t0.Add(usage.Retention).UnixMicro()

	var pipeline, baseline, countOnly time.Duration
	for b.Loop() {
		bodies, events := p.batches(b)
		start := time.Now()
		p.run(b, bodies)
		mid := time.Now()
		for _, batch := range events {
			args := make([]any, 0, 4*len(batch))
			for _, e := range batch {
				args = append(args, e.ID, e.KeyID, e.Time.UnixMicro(), expire)
			}
			if _, err := raw.Exec(insert, args...); err != nil {
				b.Fatalf("baseline insert: %v", err)
			}
		}
		pipeline += mid.Sub(start)
		baseline += time.Since(mid)

		counted := make([][]ledger.Counted, len(events))
		for i, batch := range events {
			for _, e := range batch {
				counted[i] = append(counted[i], ledger.Counted{Event: e, Owner: owners[e.KeyID]})
			}
		}
		start = time.Now()
		for _, batch := range counted {
			if n, err := alone.Count(context.Background(), batch, usage.Retention); n != len(batch) || err != nil {
				b.Fatalf("Count: got %d, %v; want %d, nil", n, err, len(batch))
			}
		}
		countOnly += time.Since(start)
	}
	p.checkTotals(b, l)
	report(b, p.seq, pipeline, baseline, p.failures.Load())
	b.ReportMetric(float64(p.seq)/countOnly.Seconds(), "ledger-events/s")
}

// BenchmarkMeteringFirestore is BenchmarkMeteringEmbedded with the
// Firestore ledger and key store on the emulator, and either the embedded
// queue or Pub/Sub on its emulator. The baseline writes the same events'
// documents and nothing else, in atomic commits of up to 450 Creates (a
// transaction of writes only, as the ledger's), benchConcurrency batches
// at a time. writes/event is the ledger's Firestore writes per counted
// event (Stats).
//
//	go test -run '^$' -bench BenchmarkMeteringFirestore -benchtime 5x ./internal/meter/
func BenchmarkMeteringFirestore(b *testing.B) {
	for _, q := range []struct {
		name string
		open func(*testing.B) (queue.Topic, queue.Subscription)
	}{{"embedded", embeddedQueue}, {"pubsub", pubsubQueue}} {
		b.Run("queue="+q.name, func(b *testing.B) {
			topic, sub := q.open(b)
			benchFirestore(b, topic, sub)
		})
	}
}

func benchFirestore(b *testing.B, topic queue.Topic, sub queue.Subscription) {
	testenv.Firestore(b)
	ctx := context.Background()
	c, err := firestore.NewClient(ctx, testenv.ProjectID())
	if err != nil {
		b.Fatalf("firestore.NewClient: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	st := firestorestore.NewFromClient(c)
	l := firestoreledger.NewFromClient(c, firestoreledger.Options{})
	p := newBenchPipeline(b, st, l, topic, sub)
	base := c.Collection("baseline")
	type doc struct {
		ID       string    `firestore:"id"`
		KeyID    string    `firestore:"key_id"`
		Time     time.Time `firestore:"time"`
		ExpireAt time.Time `firestore:"expire_at"`
	}
	commit := func(events []usage.Event) error {
		for len(events) > 0 {
			part := events[:min(450, len(events))]
			events = events[len(part):]
			err := c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
				for _, e := range part {
					sum := sha256.Sum256([]byte(e.ID))
					if err := tx.Create(base.Doc(hex.EncodeToString(sum[:])), &doc{e.ID, e.KeyID, e.Time, t0.Add(usage.Retention)}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}

	var pipeline, baseline time.Duration
	for b.Loop() {
		bodies, events := p.batches(b)
		start := time.Now()
		p.run(b, bodies)
		mid := time.Now()
		var (
			next atomic.Int64
			wg   sync.WaitGroup
		)
		for range benchConcurrency {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(len(events)); i = next.Add(1) - 1 {
					if err := commit(events[i]); err != nil {
						b.Errorf("baseline commit: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		pipeline += mid.Sub(start)
		baseline += time.Since(mid)
	}
	p.checkTotals(b, l)
	report(b, p.seq, pipeline, baseline, p.failures.Load())
	s := l.Stats()
	b.ReportMetric(float64(s.Writes)/float64(s.Counted), "writes/event")
}
