package meter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/firestoreledger"
	"github.com/keyplane/keyplane/internal/ledger/ledgertest"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/usage"
)

// t0 is the consumer's fixed "now" and the start of the minute every test
// event falls in, so that minute, day and month totals are all exact.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

var seedFlag = flag.Uint64("usage.seed", 0, "seed of the randomised consumer tests (0: a new one each run)")

// newRand returns a seeded generator and logs the seed, so that a failure
// can be replayed with -usage.seed.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("random seed %d (replay with -usage.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x6b6579706c616e65))
}

var discard = slog.New(slog.DiscardHandler)

// backend opens a key store and a usage ledger of one kind; hook, if not
// nil, is called before each write to the ledger, and its error fails the
// write (see failingLedger). Both are closed when t ends.
type backend struct {
	name string
	open func(t testing.TB, hook func() error) (store.Store, ledger.Ledger)
}

var backends = []backend{{"sqlite", openSQLite}, {"firestore", openFirestore}}

func openSQLite(t testing.TB, hook func() error) (store.Store, ledger.Ledger) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatalf("open the key store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := sqliteledger.Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatalf("open the ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return st, withHook(l, hook)
}

// failingLedger fails the writes the consumer makes (Count, AddDeadLetter,
// AddClientIPs) whenever hook returns an error, before they reach the
// ledger: the adapters' own tests prove that a commit failing part way
// writes nothing, so here failing before the write is the same failure.
type failingLedger struct {
	ledger.Ledger
	hook func() error
}

func withHook(l ledger.Ledger, hook func() error) ledger.Ledger {
	if hook == nil {
		return l
	}
	return failingLedger{l, hook}
}

func (f failingLedger) Count(ctx context.Context, events []ledger.Counted, retention time.Duration) (int, error) {
	if err := f.hook(); err != nil {
		return 0, err
	}
	return f.Ledger.Count(ctx, events, retention)
}

func (f failingLedger) AddDeadLetter(ctx context.Context, d ledger.DeadLetter) error {
	if err := f.hook(); err != nil {
		return err
	}
	return f.Ledger.AddDeadLetter(ctx, d)
}

func (f failingLedger) AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error {
	if err := f.hook(); err != nil {
		return err
	}
	return f.Ledger.AddClientIPs(ctx, day, ips)
}

// openFirestore opens both on the emulator, each in a project no other
// test uses. The clients dial FIRESTORE_EMULATOR_HOST as it is when they
// are made.
func openFirestore(t testing.TB, hook func() error) (store.Store, ledger.Ledger) {
	t.Helper()
	testenv.Firestore(t)
	st := firestorestore.NewFromClient(testenv.FirestoreClient(t))
	t.Cleanup(func() { st.Close() })
	l := firestoreledger.NewFromClient(testenv.FirestoreClient(t), firestoreledger.Options{})
	t.Cleanup(func() { l.Close() })
	return st, withHook(l, hook)
}

// createKeys provisions n keys through the keys service, with owners
// acct-0 to acct-2.
func createKeys(t testing.TB, st store.Store, n int) []*store.Key {
	t.Helper()
	return createKeysOf(t, st, n, 3)
}

// createKeysOf provisions n keys of plan free, with owners acct-0 to
// acct-(owners-1) in turn.
func createKeysOf(t testing.TB, st store.Store, n, owners int) []*store.Key {
	t.Helper()
	v, err := filevault.Open(filepath.Join(t.TempDir(), "vault"), bytes.Repeat([]byte{1}, filevault.KeySize))
	if err != nil {
		t.Fatalf("open the vault: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	h, err := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	svc := &keys.Service{Store: st, Vault: v, Hasher: h, Plans: plan.Builtin(), Prefix: "kp_test",
		Clock: clock.NewFake(t0.Add(-time.Hour)), Logger: discard}
	out := make([]*store.Key, n)
	for i := range out {
		c, err := svc.Create(context.Background(), "test", keys.CreateRequest{Owner: fmt.Sprintf("acct-%d", i%owners), Plan: "free"}, "")
		if err != nil {
			t.Fatalf("create key %d: %v", i, err)
		}
		out[i] = c.Key
	}
	return out
}

// randomEvents returns n events with ids prefix-0000…, of random keys, at
// random seconds of t0's minute.
func randomEvents(rng *rand.Rand, prefix string, n int, ks []*store.Key) []usage.Event {
	events := make([]usage.Event, n)
	for i := range events {
		events[i] = usage.Event{
			ID:       fmt.Sprintf("%s-%04d", prefix, i),
			KeyID:    ks[rng.IntN(len(ks))].ID,
			Time:     t0.Add(time.Duration(rng.IntN(60_000)) * time.Millisecond),
			Requests: 1 + rng.Int64N(3),
			Units:    rng.Int64N(10_000),
			Bytes:    rng.Int64N(1 << 20),
			Feature:  "generate",
		}
	}
	return events
}

// batchJSON is a usage message's data, as meter.Publish makes it.
func batchJSON(t testing.TB, events []usage.Event) []byte {
	t.Helper()
	b, err := json.Marshal(usage.Batch{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wrap cuts events into messages of 1 to maxSize events (random sizes),
// with transport ids prefix-0, prefix-1, ….
func wrap(t testing.TB, rng *rand.Rand, prefix string, events []usage.Event, maxSize int) []queue.Message {
	t.Helper()
	var msgs []queue.Message
	for len(events) > 0 {
		k := min(len(events), 1+rng.IntN(maxSize))
		msgs = append(msgs, queue.Message{ID: fmt.Sprintf("%s-%d", prefix, len(msgs)), Data: batchJSON(t, events[:k]),
			Attributes: map[string]string{"type": "usage.batch"}, PublishTime: t0, DeliveryAttempt: 1})
		events = events[k:]
	}
	return msgs
}

// counter names one counter: a key's window of kind w starting at start.
type counter struct {
	key   string
	w     plan.Window
	start time.Time
}

// model holds the totals a correct pipeline reaches.
type model map[counter]ledger.Totals

func (m model) add(events ...usage.Event) {
	for _, e := range events {
		for _, w := range plan.Windows {
			start, _ := w.Bounds(e.Time)
			c := counter{e.KeyID, w, start}
			t := m[c]
			t.Add(ledger.Totals{Requests: e.Requests, Units: e.Units, Bytes: e.Bytes})
			m[c] = t
		}
	}
}

// check compares the ledger with m for every key in ks and every window
// m has a counter in: a key m has nothing for must read zero.
func (m model) check(t testing.TB, l ledger.Ledger, ks []*store.Key) {
	t.Helper()
	windows := map[counter]bool{}
	for c := range m {
		windows[counter{w: c.w, start: c.start}] = true
	}
	bad := 0
	for _, k := range ks {
		for w := range windows {
			got, err := l.Totals(context.Background(), k.ID, w.w, w.start)
			if err != nil {
				t.Fatalf("Totals(%s, %s, %v): %v", k.ID, w.w, w.start, err)
			}
			if want := m[counter{k.ID, w.w, w.start}]; got != want {
				bad++
				t.Errorf("Totals(%s, %s, %s): got %+v, want %+v", k.ID, w.w, w.start.Format(time.RFC3339), got, want)
			}
		}
	}
	if bad == 0 && len(windows) == 0 {
		t.Errorf("the model is empty: the test counted nothing")
	}
}

// deadLetters lists every dead letter of l.
func deadLetters(t testing.TB, l ledger.Ledger) []ledger.DeadLetter {
	t.Helper()
	var out []ledger.DeadLetter
	token := ""
	for {
		page, next, err := l.ListDeadLetters(context.Background(), 1000, token)
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		token = next
	}
}

func wantNoDeadLetters(t testing.TB, l ledger.Ledger) {
	t.Helper()
	if dls := deadLetters(t, l); len(dls) > 0 {
		t.Errorf("dead letters: got %d, want none; the first: %+v", len(dls), dls[0])
	}
}

// deliver calls c.Handle on every message from workers goroutines, in the
// order given, each message once, as a transport would, redelivering a
// message whose Handle fails (up to 20 attempts). It returns how many
// deliveries failed.
func deliver(t testing.TB, c *meter.Consumer, msgs []queue.Message, workers int) int {
	t.Helper()
	var (
		next     atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(msgs)); i = next.Add(1) - 1 {
				m := msgs[i]
				for attempt := 1; ; attempt++ {
					m.DeliveryAttempt = attempt
					err := c.Handle(context.Background(), m)
					if err == nil {
						break
					}
					failures.Add(1)
					if attempt == 20 {
						t.Errorf("Handle(%s) failed %d times; the last: %v", m.ID, attempt, err)
						break
					}
				}
			}
		})
	}
	wg.Wait()
	return int(failures.Load())
}

// TestStreamDeliveredThreeTimesInRandomOrderIsExact is the consumer-level
// exactly-once proof on real backends: 1,000 events of 20 real keys, in
// messages of 1 to 100 events, each message delivered three times (as
// Pub/Sub redelivers), plus the whole stream once more cut into other
// messages (as a gateway that retries with its events batched differently
// sends them, so that messages overlap in part), all deliveries shuffled
// and handled by 4 concurrent workers, count exactly into every key's
// minute, day and month totals, and nothing is dead-lettered.
func TestStreamDeliveredThreeTimesInRandomOrderIsExact(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st, l := b.open(t, nil)
			ks := createKeys(t, st, 20)
			rng := newRand(t)
			events := randomEvents(rng, "evt", 1000, ks)
			msgs := wrap(t, rng, "msg", events, 100)
			var deliveries []queue.Message
			for range 3 {
				deliveries = append(deliveries, msgs...)
			}
			deliveries = append(deliveries, wrap(t, rng, "rebatched", events, 100)...)
			rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

			c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
			if n := deliver(t, c, deliveries, 4); n > 0 {
				t.Logf("%d deliveries failed and were redelivered", n)
			}
			m := model{}
			m.add(events...)
			m.check(t, l, ks)
			wantNoDeadLetters(t, l)
		})
	}
}

// TestMalformedMessagesAreDeadLetteredAndValidOnesCounted delivers 1,000
// malformed messages of every kind (undecodable data, invalid events,
// events of unknown keys, and messages mixing those with valid events)
// shuffled among valid messages: Handle acks every one of them (returns
// nil: never retried), records one dead letter per poison message or
// event with the right reason, and counts the valid events exactly.
func TestMalformedMessagesAreDeadLetteredAndValidOnesCounted(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st, l := b.open(t, nil)
			ks := createKeys(t, st, 5)
			rng := newRand(t)
			valid := randomEvents(rng, "ok", 1000, ks)
			msgs := wrap(t, rng, "ok", valid, 20)
			m := model{}
			m.add(valid...)

			type want struct{ reason, detail string }
			wants := map[string]want{}
			good := func(id string) usage.Event {
				return usage.Event{ID: id, KeyID: ks[rng.IntN(len(ks))].ID, Time: t0.Add(time.Second), Requests: 1, Units: 7, Bytes: 9}
			}
			raw := func(v any) []byte {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			unknownKey := "key_" + apikey.RandomString(16)
			kinds := []func(mid string) []byte{
				// Undecodable data: the message is the dead letter.
				func(mid string) []byte {
					wants["message:"+mid] = want{meter.ReasonUndecodable, "invalid JSON"}
					return append([]byte{0xff, 0xfe, byte(rng.IntN(256))}, []byte(mid)...)
				},
				func(mid string) []byte {
					wants["message:"+mid] = want{meter.ReasonUndecodable, "invalid JSON"}
					full := batchJSON(t, []usage.Event{good("never-" + mid)})
					return full[:len(full)/2]
				},
				func(mid string) []byte {
					wants["message:"+mid] = want{meter.ReasonUndecodable, "wrong type"}
					return []byte(`{"events": 5}`)
				},
				func(mid string) []byte {
					wants["message:"+mid] = want{meter.ReasonUndecodable, "not a JSON usage batch"}
					return []byte([]string{`null`, `{}`, `{"events": null}`}[rng.IntN(3)])
				},
				func(mid string) []byte {
					wants["message:"+mid] = want{meter.ReasonUndecodable, "wrong type"}
					return []byte(`[{"id": "x"}]`)
				},
				// Invalid events: each event is a dead letter under its id.
				func(mid string) []byte {
					e := good("neg-units-" + mid)
					e.Units = -1
					wants[e.ID] = want{meter.ReasonInvalid, "units must be >= 0"}
					return batchJSON(t, []usage.Event{e})
				},
				func(mid string) []byte {
					e, f := good("neg-req-"+mid), good("neg-bytes-"+mid)
					e.Requests, f.Bytes = -3, -5
					wants[e.ID] = want{meter.ReasonInvalid, "requests must be >= 0"}
					wants[f.ID] = want{meter.ReasonInvalid, "bytes must be >= 0"}
					return batchJSON(t, []usage.Event{e, f})
				},
				func(mid string) []byte {
					e, f := good("bad-key-"+mid), good("short-key-"+mid)
					e.KeyID, f.KeyID = "nope", "key_abc"
					wants[e.ID] = want{meter.ReasonInvalid, "key_id must be a key id"}
					wants[f.ID] = want{meter.ReasonInvalid, "key_id must be a key id"}
					return batchJSON(t, []usage.Event{e, f})
				},
				func(mid string) []byte {
					e := good("old-" + mid)
					e.Time = t0.Add(-36 * 24 * time.Hour)
					wants[e.ID] = want{meter.ReasonInvalid, "time is more than 35 days old"}
					return batchJSON(t, []usage.Event{e})
				},
				func(mid string) []byte {
					e := good("future-" + mid)
					e.Time = t0.Add(6 * time.Minute)
					wants[e.ID] = want{meter.ReasonInvalid, "time is more than 5 minutes in the future"}
					return batchJSON(t, []usage.Event{e})
				},
				func(mid string) []byte {
					e := good("no-time-" + mid)
					wants[e.ID] = want{meter.ReasonInvalid, "time is required"}
					return raw(map[string]any{"events": []map[string]any{{"id": e.ID, "key_id": e.KeyID, "requests": 1}}})
				},
				func(mid string) []byte {
					e := good("")
					wants["message:"+mid+":0"] = want{meter.ReasonInvalid, "id must be 1-128 characters"}
					return batchJSON(t, []usage.Event{e})
				},
				func(mid string) []byte {
					e := good(strings.Repeat("x", usage.MaxIDLen-len(mid)) + mid + "y")
					wants["message:"+mid+":0"] = want{meter.ReasonInvalid, "id must be 1-128 characters"}
					return batchJSON(t, []usage.Event{e})
				},
				func(mid string) []byte {
					e := good("feature-" + mid)
					e.Feature = strings.Repeat("f", usage.MaxFeatureLen+1)
					wants[e.ID] = want{meter.ReasonInvalid, "feature must be a feature name"}
					return batchJSON(t, []usage.Event{e})
				},
				// An event of a well-formed but unknown key.
				func(mid string) []byte {
					e := good("unknown-" + mid)
					e.KeyID = unknownKey
					wants[e.ID] = want{meter.ReasonUnknownKey, unknownKey}
					return batchJSON(t, []usage.Event{e})
				},
				// Valid events mixed with poison: the valid ones count.
				func(mid string) []byte {
					ok1, bad, unk, ok2 := good("mixed-ok1-"+mid), good("mixed-bad-"+mid), good("mixed-unknown-"+mid), good("mixed-ok2-"+mid)
					bad.Units = -1
					unk.KeyID = unknownKey
					wants[bad.ID] = want{meter.ReasonInvalid, "units must be >= 0"}
					wants[unk.ID] = want{meter.ReasonUnknownKey, unknownKey}
					m.add(ok1, ok2)
					return batchJSON(t, []usage.Event{ok1, bad, unk, ok2})
				},
			}
			var poison []queue.Message
			for i := range 1000 {
				mid := fmt.Sprintf("poison-%04d", i)
				poison = append(poison, queue.Message{ID: mid, Data: kinds[i%len(kinds)](mid), PublishTime: t0})
			}
			// Every message is delivered twice; on the emulator, which
			// takes ~4 ms per dead letter here, once (recording a dead
			// letter twice keeps one: the ledger suite proves it there).
			all := slices.Concat(msgs, poison)
			if b.name != "firestore" {
				all = slices.Concat(all, all)
			}
			rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

			c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
			var (
				next atomic.Int64
				wg   sync.WaitGroup
			)
			for range 8 {
				wg.Go(func() {
					for i := next.Add(1) - 1; i < int64(len(all)); i = next.Add(1) - 1 {
						if err := c.Handle(context.Background(), all[i]); err != nil {
							t.Errorf("Handle(%s) = %v, want nil (acked: poison is dead-lettered, never retried)", all[i].ID, err)
						}
					}
				})
			}
			wg.Wait()

			got := map[string]ledger.DeadLetter{}
			for _, d := range deadLetters(t, l) {
				if _, dup := got[d.ID]; dup {
					t.Errorf("dead letter %s listed twice", d.ID)
				}
				got[d.ID] = d
			}
			for id, w := range wants {
				d, ok := got[id]
				switch {
				case !ok:
					t.Errorf("no dead letter %s (want reason %s)", id, w.reason)
				case d.Reason != w.reason || !strings.Contains(d.Detail, w.detail):
					t.Errorf("dead letter %s: got reason %q, detail %q; want reason %q, detail containing %q", id, d.Reason, d.Detail, w.reason, w.detail)
				case len(d.Payload) == 0 || !d.Time.Equal(t0):
					t.Errorf("dead letter %s: got payload %q at %v, want the poison payload at %v", id, d.Payload, d.Time, t0)
				}
			}
			for id, d := range got {
				if _, ok := wants[id]; !ok {
					t.Errorf("unexpected dead letter %s: %+v", id, d)
				}
			}
			if len(got) != len(wants) {
				t.Errorf("dead letters: got %d, want %d", len(got), len(wants))
			}
			m.check(t, l, ks)
		})
	}
}

// TestTransientErrorIsRetriedNotAcked: while the ledger's commits fail, or
// the key store cannot be read, Handle returns an error (the transport
// redelivers) and records nothing; once repaired, the redelivered message
// counts exactly once, however often it is delivered again.
func TestTransientErrorIsRetriedNotAcked(t *testing.T) {
	t.Run("ledger", func(t *testing.T) {
		var br ledgertest.Breaker
		st, l := openSQLite(t, br.Hook)
		ks := createKeys(t, st, 3)
		rng := newRand(t)
		events := randomEvents(rng, "evt", 300, ks)
		msg := queue.Message{ID: "msg-1", Data: batchJSON(t, events), PublishTime: t0}
		// A message with poison in it too: its dead letter cannot be
		// recorded either, so it must not be acked.
		bad := usage.Event{ID: "neg", KeyID: ks[0].ID, Time: t0, Units: -1}
		mixed := queue.Message{ID: "msg-2", Data: batchJSON(t, []usage.Event{bad}), PublishTime: t0}
		c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)

		br.Break(0)
		for attempt := 1; attempt <= 3; attempt++ {
			for _, m := range []queue.Message{msg, mixed} {
				m.DeliveryAttempt = attempt
				err := c.Handle(context.Background(), m)
				if err == nil {
					t.Fatalf("Handle(%s) while the ledger's commits fail: got nil (acked: lost), want an error", m.ID)
				}
				if !errs.Is(err, errs.Unavailable) {
					t.Errorf("Handle(%s) while the ledger's commits fail: got %v (kind %v), want kind Unavailable", m.ID, err, errs.KindOf(err))
				}
			}
		}
		for _, k := range ks { // nothing counted…
			got, err := l.Totals(context.Background(), k.ID, plan.Day, t0)
			if err != nil || got != (ledger.Totals{}) {
				t.Errorf("Totals(%s) while broken: got %+v, %v; want zero", k.ID, got, err)
			}
		}
		wantNoDeadLetters(t, l) // …and no dead letter recorded

		br.Repair()
		for attempt := 4; attempt <= 6; attempt++ {
			for _, m := range []queue.Message{msg, mixed} {
				m.DeliveryAttempt = attempt
				if err := c.Handle(context.Background(), m); err != nil {
					t.Fatalf("Handle(%s) after the repair (delivery %d): %v", m.ID, attempt, err)
				}
			}
		}
		m := model{}
		m.add(events...)
		m.check(t, l, ks)
		if dls := deadLetters(t, l); len(dls) != 1 || dls[0].ID != "neg" || dls[0].Reason != meter.ReasonInvalid {
			t.Errorf("dead letters: got %+v, want the one invalid event", dls)
		}
	})

	t.Run("key store", func(t *testing.T) {
		st, l := openSQLite(t, nil)
		ks := createKeys(t, st, 3)
		events := randomEvents(newRand(t), "evt", 50, ks)
		msg := queue.Message{ID: "msg-1", Data: batchJSON(t, events), PublishTime: t0}
		down := &flakyKeys{KeyStore: st}
		down.down.Store(true)
		c := meter.NewConsumer(l, down, clock.NewFake(t0), discard)
		err := c.Handle(context.Background(), msg)
		if err == nil || !errs.Is(err, errs.Unavailable) {
			t.Fatalf("Handle while the key store is unreachable: got %v, want an Unavailable error (not an ack)", err)
		}
		wantNoDeadLetters(t, l) // an unreachable store is not an unknown key
		down.down.Store(false)
		for range 2 {
			if err := c.Handle(context.Background(), msg); err != nil {
				t.Fatalf("Handle after the store is back: %v", err)
			}
		}
		m := model{}
		m.add(events...)
		m.check(t, l, ks)
		wantNoDeadLetters(t, l)
	})
}

// flakyKeys is a key store that can be made unreachable.
type flakyKeys struct {
	meter.KeyStore
	down atomic.Bool
}

func (f *flakyKeys) GetKey(ctx context.Context, id string) (*store.Key, error) {
	if f.down.Load() {
		return nil, errs.E(errs.Unavailable, "the key store is unreachable")
	}
	return f.KeyStore.GetKey(ctx, id)
}

func (f *flakyKeys) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if f.down.Load() {
		return errs.E(errs.Unavailable, "the key store is unreachable")
	}
	return f.KeyStore.MarkUsed(ctx, uses)
}

// TestKeyUsesAreRetriedWhileTheStoreIsDown: a key_uses message the store
// cannot take now is redelivered (Handle fails), not dead-lettered.
func TestKeyUsesAreRetriedWhileTheStoreIsDown(t *testing.T) {
	st, l := openSQLite(t, nil)
	ks := createKeys(t, st, 1)
	topic := &captureTopic{}
	if err := (meter.ClientIPPublisher{Topic: topic}).MarkUsed(context.Background(), map[string]time.Time{ks[0].ID: t0}); err != nil {
		t.Fatal(err)
	}
	down := &flakyKeys{KeyStore: st}
	down.down.Store(true)
	c := meter.NewConsumer(l, down, clock.NewFake(t0), discard)
	if err := c.Handle(context.Background(), topic.msgs[0]); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Handle while the store is down: got %v, want an Unavailable error (redeliver)", err)
	}
	down.down.Store(false)
	if err := c.Handle(context.Background(), topic.msgs[0]); err != nil {
		t.Fatalf("Handle after the outage: %v", err)
	}
	k, err := st.GetKey(context.Background(), ks[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt == nil || !k.LastUsedAt.Equal(t0) {
		t.Errorf("LastUsedAt after redelivery: got %v, want %v", k.LastUsedAt, t0)
	}
	wantNoDeadLetters(t, l)
}

// TestEventPublishedWithoutRequestsCountsOneRequest: gateways may publish
// usage batches to the topic themselves (docs/architecture.md), in the
// webhook's format, where an omitted "requests" means 1 (docs/openapi.yaml,
// UsageBatch). The consumer must count such an event as one request.
func TestEventPublishedWithoutRequestsCountsOneRequest(t *testing.T) {
	st, l := openSQLite(t, nil)
	ks := createKeys(t, st, 1)
	data := fmt.Sprintf(`{"events": [{"id": "evt_1", "key_id": %q, "time": %q, "units": 350},
		{"id": "evt_2", "key_id": %q, "time": %q, "requests": 0, "units": 1}]}`,
		ks[0].ID, t0.Format(time.RFC3339), ks[0].ID, t0.Format(time.RFC3339))
	c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
	if err := c.Handle(context.Background(), queue.Message{ID: "m", Data: []byte(data), PublishTime: t0}); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	got, err := l.Totals(context.Background(), ks[0].ID, plan.Day, t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ledger.Totals{Requests: 1, Units: 351}); got != want {
		t.Errorf("Totals after a message whose first event omits \"requests\": got %+v, want %+v "+
			"(an omitted requests must count as the documented default, 1, not as 0)", got, want)
	}
}

// proxiedFirestore returns a Firestore client of a new project that
// reaches the emulator through addr. It dials as the client library does
// for FIRESTORE_EMULATOR_HOST (plaintext, "Bearer owner"), except that it
// reconnects after at most 250 ms instead of the default backoff of up to
// 2 minutes, so that the test is not spent waiting for a reconnection.
func proxiedFirestore(t testing.TB, addr string) *firestore.Client {
	t.Helper()
	// With FIRESTORE_EMULATOR_HOST set the library would also dial the
	// emulator itself; the connection below replaces that one.
	t.Setenv("FIRESTORE_EMULATOR_HOST", "")
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(emulatorOwner{}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatalf("dial the proxy: %v", err)
	}
	c, err := firestore.NewClient(context.Background(), testenv.ProjectID(), option.WithGRPCConn(conn))
	if err != nil {
		t.Fatalf("firestore.NewClient: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		conn.Close()
	})
	return c
}

// emulatorOwner authenticates as the emulator's administrator, as the
// client library does for FIRESTORE_EMULATOR_HOST.
type emulatorOwner struct{}

func (emulatorOwner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (emulatorOwner) RequireTransportSecurity() bool { return false }

// outageProxy forwards TCP connections to a backend. Cut drops every
// connection and closes new ones as soon as they are accepted, until
// Restore: to a client, the backend is unreachable.
type outageProxy struct {
	ln      net.Listener
	backend string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startProxy(t testing.TB, backend string) *outageProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &outageProxy{ln: ln, backend: backend, conns: map[net.Conn]bool{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *outageProxy) Addr() string { return p.ln.Addr().String() }

func (p *outageProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

func (p *outageProxy) forward(client net.Conn) {
	if !p.track(client) {
		client.Close()
		return
	}
	server, err := net.Dial("tcp", p.backend)
	if err != nil || !p.track(server) {
		client.Close()
		if server != nil {
			server.Close()
		}
		return
	}
	done := func() {
		client.Close()
		server.Close()
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(server, client); done() })
	wg.Go(func() { io.Copy(client, server); done() })
	wg.Wait()
}

// track registers c to be dropped by Cut, and reports false if the proxy
// is down.
func (p *outageProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = true
	return true
}

// Cut drops every connection and refuses new ones until Restore.
func (p *outageProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore lets connections through again.
func (p *outageProxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestDatastoreOutageMidStreamLosesAndDoublesNothing streams usage batches
// through meter.Publish, the embedded queue and Consumer.Handle into the
// Firestore ledger, cuts Firestore off in the middle of the stream while
// batches keep coming, restores it, and waits for the queue to drain:
// every event is counted exactly once, nothing is dead-lettered.
//
// The issue asks to kill the Firestore emulator and restart it, but a
// restarted emulator starts empty (it keeps everything in memory), which
// would "lose" every count for reasons that have nothing to do with
// keyplane. What the pipeline must survive is the datastore becoming
// unreachable mid-stream — RPCs failing in flight, commits whose outcome
// the client never hears — and coming back with its data. So the ledger's
// and the key store's clients talk to the emulator through a TCP proxy
// that the test cuts (every connection dropped, new ones closed on accept)
// and restores; the emulator and its data live on. Each Handle gets a 1 s
// deadline, as a Cloud Function's timeout or a push subscription's ack
// deadline gives it; without one the client library retries an
// unavailable Commit for up to 60 s and a short outage is invisible. Some
// batches are published twice, as a publisher retry does, and half the
// keys are first looked up after the cut.
func TestDatastoreOutageMidStreamLosesAndDoublesNothing(t *testing.T) {
	proxy := startProxy(t, testenv.Firestore(t))
	fs := proxiedFirestore(t, proxy.Addr())
	st := firestorestore.NewFromClient(fs)
	l := firestoreledger.NewFromClient(fs, firestoreledger.Options{})
	ks := createKeys(t, st, 20)
	rng := newRand(t)
	clk := clock.NewFake(t0)

	q, err := embeddedqueue.Open(filepath.Join(t.TempDir(), "queue.db"), embeddedqueue.Options{Logger: discard, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("open the queue: %v", err)
	}
	policy := queue.RetryPolicy{MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 100}
	deadSub := q.Subscription("usage-dead-letter", "usage-dead-letter-sub", policy, "")
	sub := q.Subscription("usage", "usage-sub", policy, "usage-dead-letter")
	topic := q.Topic("usage")

	c := meter.NewConsumer(l, st, clk, discard)
	var (
		mu          sync.Mutex
		acked       = map[string]bool{}
		ackedNow    = make(chan struct{}, 1)
		failures    atomic.Int64
		maxAttempt  atomic.Int64
		deadLetters atomic.Int64
	)
	handle := func(ctx context.Context, m queue.Message) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		for a := int64(m.DeliveryAttempt); ; {
			cur := maxAttempt.Load()
			if a <= cur || maxAttempt.CompareAndSwap(cur, a) {
				break
			}
		}
		if err := c.Handle(ctx, m); err != nil {
			failures.Add(1)
			return err
		}
		mu.Lock()
		acked[m.ID] = true
		mu.Unlock()
		select {
		case ackedNow <- struct{}{}:
		default:
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var receivers sync.WaitGroup
	receivers.Go(func() {
		if err := sub.Receive(ctx, handle); err != nil {
			t.Errorf("Receive: %v", err)
		}
	})
	receivers.Go(func() {
		err := deadSub.Receive(ctx, func(ctx context.Context, m queue.Message) error {
			deadLetters.Add(1)
			return c.HandleDeadLetter(ctx, m)
		})
		if err != nil {
			t.Errorf("Receive dead letters: %v", err)
		}
	})
	defer func() {
		cancel()
		receivers.Wait()
		q.Close()
	}()

	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	// waitFor waits until cond holds, re-checking on every ack, for at
	// most 60 s.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.NewTimer(60 * time.Second)
		defer deadline.Stop()
		tick := time.NewTicker(100 * time.Millisecond) // failures do not signal ackedNow
		defer tick.Stop()
		for !cond() {
			select {
			case <-ackedNow:
			case <-tick.C:
			case <-deadline.C:
				t.Fatalf("timed out waiting for %s: %d messages acked, %d Handle failures, delivery attempts up to %d",
					what, ackedCount(), failures.Load(), maxAttempt.Load())
			}
		}
	}

	m := model{}
	published := 0
	publish := func(prefix string, n int, ks []*store.Key) {
		t.Helper()
		for i := range n {
			events := randomEvents(rng, fmt.Sprintf("%s-%03d", prefix, i), 1+rng.IntN(30), ks)
			body := batchJSON(t, events)
			copies := 1
			if i%10 == 0 {
				copies = 2 // a publisher retry: the same events under a new message id
			}
			for range copies {
				if _, err := meter.Publish(context.Background(), topic, body, clk.Now()); err != nil {
					t.Fatalf("Publish: %v", err)
				}
				published++
			}
			m.add(events...)
		}
	}

	publish("before", 60, ks[:10])
	waitFor("a third of the first messages to be counted", func() bool { return ackedCount() >= 20 })
	proxy.Cut()
	cutAt, ackedAtCut := time.Now(), ackedCount()
	publish("during", 40, ks)
	waitFor("Handle to fail against the unreachable datastore", func() bool { return failures.Load() > 0 })
	outage := time.NewTimer(2500*time.Millisecond - time.Since(cutAt))
	<-outage.C
	ackedDuringOutage := ackedCount() - ackedAtCut
	proxy.Restore()
	restoredAt := time.Now()
	publish("after", 40, ks)
	waitFor("the queue to drain", func() bool { return ackedCount() == published })
	t.Logf("%d messages acked (%d of them during the %v outage), %d Handle failures, "+
		"delivery attempts up to %d, drained %v after the restore",
		published, ackedDuringOutage, restoredAt.Sub(cutAt).Round(time.Millisecond), failures.Load(), maxAttempt.Load(),
		time.Since(restoredAt).Round(time.Millisecond))

	if failures.Load() == 0 {
		t.Errorf("no Handle call failed: the outage did not reach the consumer, so the test proved nothing")
	}
	m.check(t, l, ks)
	wantNoDeadLetters(t, l)
	if n := deadLetters.Load(); n > 0 {
		t.Errorf("messages dead-lettered by the queue: got %d, want 0", n)
	}
}

// Client IPs from a process that cannot write the ledger travel the usage
// topic; the consumer writes them, and dead-letters what does not decode
// or validate.
func TestClientIPsThroughTheQueue(t *testing.T) {
	st, l := openSQLite(t, nil)
	ks := createKeys(t, st, 1)
	day, _ := plan.Day.Bounds(t0)
	topic := &captureTopic{}
	pub := meter.ClientIPPublisher{Topic: topic}
	if err := pub.AddClientIPs(context.Background(), day, map[string][]string{ks[0].ID: {"203.0.113.1", "2001:DB8::1"}}); err != nil {
		t.Fatal(err)
	}
	if err := pub.AddClientIPs(context.Background(), day, map[string][]string{ks[0].ID: {"not an ip"}}); !errs.Is(err, errs.Invalid) {
		t.Errorf("publishing an invalid IP = %v, want Invalid", err)
	}
	c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
	msgs := append(topic.msgs,
		queue.Message{ID: "bad-json", Data: []byte(`{"day": 5}`), Attributes: map[string]string{"type": "client_ips"}},
		queue.Message{ID: "bad-ip", Data: []byte(`{"day": "2030-01-15T00:00:00Z", "ips": {"k": ["x"]}}`), Attributes: map[string]string{"type": "client_ips"}})
	for _, m := range msgs {
		if err := c.Handle(context.Background(), m); err != nil {
			t.Fatalf("Handle(%s): %v", m.ID, err)
		}
	}
	n, ips, err := l.ClientIPs(context.Background(), ks[0].ID, day, 10)
	if err != nil || n != 2 || fmt.Sprint(ips) != "[2001:db8::1 203.0.113.1]" {
		t.Errorf("ClientIPs = %d %v %v", n, ips, err)
	}
	dls, _, err := l.ListDeadLetters(context.Background(), 10, "")
	if err != nil || len(dls) != 2 {
		t.Errorf("dead letters = %+v, %v; want the two bad messages", dls, err)
	}
}

// Key uses from a process that cannot write the store travel the usage
// topic; the consumer raises the keys' last use, never lowers it, and
// dead-letters what does not decode or validate.
func TestKeyUsesThroughTheQueue(t *testing.T) {
	st, l := openSQLite(t, nil)
	ks := createKeys(t, st, 1)
	topic := &captureTopic{}
	pub := meter.ClientIPPublisher{Topic: topic}
	later, earlier := t0.Add(time.Minute), t0
	for _, at := range []time.Time{later, earlier} {
		if err := pub.MarkUsed(context.Background(), map[string]time.Time{ks[0].ID: at, "no-such-key": at}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.MarkUsed(context.Background(), map[string]time.Time{ks[0].ID: {}}); !errs.Is(err, errs.Invalid) {
		t.Errorf("publishing a zero time = %v, want Invalid", err)
	}
	c := meter.NewConsumer(l, st, clock.NewFake(t0), discard)
	msgs := append(topic.msgs,
		queue.Message{ID: "bad-json", Data: []byte(`{"uses": 5}`), Attributes: map[string]string{"type": "key_uses"}},
		queue.Message{ID: "zero-time", Data: []byte(`{"uses": {"k": "0001-01-01T00:00:00Z"}}`), Attributes: map[string]string{"type": "key_uses"}})
	for _, m := range msgs {
		if err := c.Handle(context.Background(), m); err != nil {
			t.Fatalf("Handle(%s): %v", m.ID, err)
		}
	}
	k, err := st.GetKey(context.Background(), ks[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt == nil || !k.LastUsedAt.Equal(later) {
		t.Errorf("LastUsedAt = %v, want %v", k.LastUsedAt, later)
	}
	dls, _, err := l.ListDeadLetters(context.Background(), 10, "")
	if err != nil || len(dls) != 2 {
		t.Errorf("dead letters = %+v, %v; want the two bad messages", dls, err)
	}
}

type captureTopic struct{ msgs []queue.Message }

func (c *captureTopic) Publish(_ context.Context, ms ...queue.Message) error {
	c.msgs = append(c.msgs, ms...)
	return nil
}
func (c *captureTopic) Close() error { return nil }
