package stripeexport

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/usage"
)

// Dead-letter reasons of the exporter (ledger dead letters; their ids
// start with "stripe:").
const (
	// ReasonRejected marks a meter event Stripe refused with a 4xx other
	// than 429: sending it again as it is will not help.
	ReasonRejected = "stripe_rejected"
	// ReasonDeliveryFailed marks a usage message whose export the
	// transport gave up on after its maximum deliveries (Stripe was down
	// for hours).
	ReasonDeliveryFailed = "stripe_delivery_failed"
	// ReasonAmbiguousCustomer marks a usage event whose owner has several
	// Stripe customers (metadata keyplane_owner): which to bill is the
	// operator's to settle.
	ReasonAmbiguousCustomer = "stripe_customer_ambiguous"
)

// Stripe is the part of Stripe the exporter uses; *Client is one.
type Stripe interface {
	Send(ctx context.Context, ev MeterEvent) error
	Customer(ctx context.Context, owner string) (string, error)
}

// Keys finds a key's owner; store.Store is one.
type Keys interface {
	GetKey(ctx context.Context, id string) (*store.Key, error)
}

// DeadLetters records dead letters; ledger.Ledger is one.
type DeadLetters interface {
	AddDeadLetter(ctx context.Context, d ledger.DeadLetter) error
}

// Retry is the exporter's retry of one meter event within one delivery:
// Attempts tries, the n-th retry after Backoff·2^(n-1) (capped at
// MaxBackoff) plus up to as much again of jitter. What is still failing
// after them is left to the queue's redelivery.
type Retry struct {
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// DefaultRetry is the retry of production: 4 tries within about 10 s.
var DefaultRetry = Retry{Attempts: 4, Backoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second}

// Cache sizes and lifetimes.
const (
	sentCacheSize     = 200_000
	customerCacheSize = 100_000
	// CustomerTTL is how long an owner's Stripe customer (or its absence)
	// is kept before it is searched again.
	CustomerTTL = 5 * time.Minute
)

// Exporter turns usage messages into Stripe meter events. Its Handle
// follows the queue contract: nil acks (exported, skipped, or dead-lettered),
// an error asks for redelivery (Stripe, the store, the ledger or the sent
// record failed transiently).
type Exporter struct {
	stripe      Stripe
	keys        Keys
	deadLetters DeadLetters
	sentRecord  Sent // the durable record of accepted identifiers
	meters      Meters
	clock       clock.Clock
	log         *slog.Logger

	// Retry is the retry within one delivery (DefaultRetry if zero).
	Retry Retry
	// Concurrency bounds the meter events one message sends at once (8 if 0).
	Concurrency int

	// sent caches identifiers this process found in, or wrote to, the
	// durable record: a redelivery to the same instance (Stripe partly
	// down, a slow ack) reads nothing. An identifier enters it only once
	// the record has it.
	sent      *lru.Cache[string, struct{}]
	owners    *lru.Cache[string, string]   // key id → owner ("" for none)
	customers *lru.Cache[string, customer] // owner → Stripe customer

	counts struct {
		sent, already, skipped, unmapped, deadLetters, retries atomic.Uint64
	}
}

type customer struct {
	id  string // "" for none
	err error  // an *AmbiguousError: several customers
	at  time.Time
}

// New returns an Exporter of the metrics meters maps, which records the
// meter events Stripe accepted in sent.
func New(s Stripe, keys Keys, dl DeadLetters, sent Sent, meters Meters, clk clock.Clock, log *slog.Logger) *Exporter {
	cache, _ := lru.New[string, struct{}](sentCacheSize)
	owners, _ := lru.New[string, string](customerCacheSize)
	customers, _ := lru.New[string, customer](customerCacheSize)
	return &Exporter{stripe: s, keys: keys, deadLetters: dl, sentRecord: sent, meters: meters, clock: clk, log: log,
		sent: cache, owners: owners, customers: customers}
}

// Counts is what an Exporter has done since it was made.
type Counts struct {
	Sent        uint64 // meter events Stripe accepted
	Already     uint64 // meter events not sent again: the sent record (or this process's cache of it) has them
	Skipped     uint64 // usage events of owners without a Stripe customer (or of keys without an owner)
	Unmapped    uint64 // usage events with no metric the meter mapping names
	DeadLetters uint64 // meter events and messages recorded as dead letters
	Retries     uint64 // retried Stripe calls
}

// Counts returns the counters of x.
func (x *Exporter) Counts() Counts {
	c := &x.counts
	return Counts{Sent: c.sent.Load(), Already: c.already.Load(), Skipped: c.skipped.Load(),
		Unmapped: c.unmapped.Load(), DeadLetters: c.deadLetters.Load(), Retries: c.retries.Load()}
}

// maxIdentifier is Stripe's limit on a meter event's identifier.
const maxIdentifier = 100

// Identifier is the meter event identifier of metric of the usage event
// eventID: the event id itself when the event sends one meter event
// (several is false), else id:metric; one longer than Stripe's 100
// characters is replaced by kp_ and the SHA-256 of it (base64url). It
// depends on nothing but its arguments, so retries dedupe.
func Identifier(eventID, metric string, several bool) string {
	id := eventID
	if several {
		id += ":" + metric
	}
	if len(id) <= maxIdentifier {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "kp_" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// Handle exports one message of the usage topic. Messages that are not
// usage batches (client IPs, key uses) and events the meter consumer
// dead-letters (invalid, unknown key) are acknowledged without a call.
func (x *Exporter) Handle(ctx context.Context, m queue.Message) error {
	switch m.Attributes["type"] {
	case "", "usage.batch":
	default:
		return nil
	}
	batch, err := usage.DecodeMessage(m.Data)
	if err != nil {
		return nil // the meter consumer records it as a dead letter
	}
	now := x.clock.Now()
	var out []MeterEvent
	for _, e := range batch {
		if f, _ := e.Problem(now); f != "" {
			continue
		}
		evs, err := x.meterEvents(ctx, e)
		if err != nil {
			return err
		}
		out = append(out, evs...)
	}
	out, err = x.unsent(ctx, out)
	if err != nil {
		return err
	}
	accepted, sendErr := x.sendAll(ctx, out)
	// What Stripe accepted is recorded even when other events of the
	// message failed, so that the redelivery sends only those.
	if err := x.markSent(ctx, accepted); err != nil {
		return err
	}
	return sendErr
}

// unsent returns the events of evs whose identifiers neither this
// process's cache nor the durable record has, each identifier once.
func (x *Exporter) unsent(ctx context.Context, evs []MeterEvent) ([]MeterEvent, error) {
	var ask []string
	cached := make(map[string]bool, len(evs))
	for _, ev := range evs {
		if _, ok := x.sent.Get(ev.Identifier); ok {
			cached[ev.Identifier] = true
		} else {
			ask = append(ask, ev.Identifier)
		}
	}
	var recorded map[string]bool
	if len(ask) > 0 {
		var err error
		if recorded, err = x.sentRecord.Sent(ctx, ask); err != nil {
			return nil, fmt.Errorf("stripe export: reading the sent record: %w", err)
		}
	}
	out := make([]MeterEvent, 0, len(ask))
	seen := make(map[string]bool, len(ask))
	for _, ev := range evs {
		id := ev.Identifier
		switch {
		case cached[id]:
			x.counts.already.Add(1)
		case recorded[id]:
			x.sent.Add(id, struct{}{})
			x.counts.already.Add(1)
		case seen[id]: // the event is in the message twice; the first is sent
			x.counts.already.Add(1)
		default:
			seen[id] = true
			out = append(out, ev)
		}
	}
	return out, nil
}

// markTimeout bounds the write of the sent record after the sends.
const markTimeout = 10 * time.Second

// markSent records ids in the durable record, then in the cache. The write
// outlives ctx's cancellation (a shutdown, the push's deadline) by up to
// markTimeout: Stripe has these events, and recording them now rather
// than on a redelivery narrows the window that Stripe's 24-hour dedupe
// must cover.
func (x *Exporter) markSent(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if err := x.sentRecord.MarkSent(ctx, ids, SentRetention); err != nil {
		return fmt.Errorf("stripe export: recording %d meter events Stripe accepted: %w", len(ids), err)
	}
	for _, id := range ids {
		x.sent.Add(id, struct{}{})
	}
	return nil
}

// meterEvents returns the meter events of e.
func (x *Exporter) meterEvents(ctx context.Context, e usage.Event) ([]MeterEvent, error) {
	type part struct {
		metric, name string
		value        int64
	}
	var parts []part
	for _, metric := range Metrics {
		name, ok := x.meters.EventName(metric, e.Feature)
		if !ok {
			continue
		}
		v := map[string]int64{"requests": e.Requests, "units": e.Units, "bytes": e.Bytes}[metric]
		parts = append(parts, part{metric, name, v})
	}
	if len(parts) == 0 {
		x.counts.unmapped.Add(1)
		return nil, nil
	}
	owner, known, err := x.owner(ctx, e.KeyID)
	if err != nil || !known {
		return nil, err // an unknown key is the meter consumer's dead letter
	}
	if owner == "" {
		x.counts.skipped.Add(1)
		return nil, nil
	}
	cust, err := x.customer(ctx, owner)
	var amb *AmbiguousError
	switch {
	case errors.As(err, &amb):
		return nil, x.deadLetter(ctx, "stripe:"+e.ID, ReasonAmbiguousCustomer, err.Error(), e)
	case errs.Is(err, errs.Invalid): // the search refused (a bad API key, say)
		return nil, x.deadLetter(ctx, "stripe:"+e.ID, ReasonRejected, err.Error(), e)
	case err != nil:
		return nil, err
	}
	if cust == "" {
		x.counts.skipped.Add(1)
		return nil, nil
	}
	var out []MeterEvent
	for _, p := range parts {
		if p.value == 0 {
			continue // nothing to bill; Stripe would sum a zero
		}
		id := Identifier(e.ID, p.metric, len(parts) > 1)
		out = append(out, MeterEvent{EventName: p.name, Customer: cust, Value: p.value, Identifier: id, Time: e.Time})
	}
	return out, nil
}

// owner returns the owner of key id ("" for none), and whether the key
// exists.
func (x *Exporter) owner(ctx context.Context, keyID string) (string, bool, error) {
	if o, ok := x.owners.Get(keyID); ok {
		return o, true, nil
	}
	k, err := x.keys.GetKey(ctx, keyID)
	if errs.Is(err, errs.NotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("stripe export: reading key %s: %w", keyID, err)
	}
	x.owners.Add(keyID, k.Owner) // a key's owner never changes
	return k.Owner, true, nil
}

// customer returns owner's Stripe customer ("" for none), cached for
// CustomerTTL.
func (x *Exporter) customer(ctx context.Context, owner string) (string, error) {
	now := x.clock.Now()
	if c, ok := x.customers.Get(owner); ok && now.Sub(c.at) < CustomerTTL && !now.Before(c.at) {
		return c.id, c.err
	}
	if !ids.ValidOwner(owner) {
		return "", nil
	}
	var id string
	err := x.retry(ctx, func() error {
		var err error
		id, err = x.stripe.Customer(ctx, owner)
		return err
	})
	var amb *AmbiguousError
	if err != nil && !errors.As(err, &amb) {
		return "", err
	}
	x.customers.Add(owner, customer{id: id, err: err, at: now})
	return id, err
}

// sendAll sends evs, Concurrency at a time, each with its retries, and
// returns the identifiers Stripe accepted. A refused event becomes a dead
// letter; if any still fails transiently, the error asks for redelivery
// (the events Stripe took are recorded by the caller and not sent again).
func (x *Exporter) sendAll(ctx context.Context, evs []MeterEvent) ([]string, error) {
	n := x.Concurrency
	if n <= 0 {
		n = 8
	}
	sem := make(chan struct{}, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   int
		accepted []string
	)
	for _, ev := range evs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ok, err := x.send(ctx, ev)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				accepted = append(accepted, ev.Identifier)
			}
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return accepted, fmt.Errorf("stripe export: %d of %d meter events not sent: %w", failed, len(evs), firstErr)
	}
	return accepted, nil
}

// send sends ev with its retries and reports whether Stripe accepted it
// (now, or before: its identifier's dedupe); a refusal is recorded as a
// dead letter.
func (x *Exporter) send(ctx context.Context, ev MeterEvent) (bool, error) {
	err := x.retry(ctx, func() error { return x.stripe.Send(ctx, ev) })
	switch {
	case err == nil:
		x.counts.sent.Add(1)
		return true, nil
	case errs.Is(err, errs.Invalid):
		return false, x.deadLetterEvent(ctx, ev, err)
	}
	return false, err
}

// retry calls f until it succeeds, fails with anything but
// errs.Unavailable, or has had x.Retry.Attempts tries.
func (x *Exporter) retry(ctx context.Context, f func() error) error {
	r := x.Retry
	if r.Attempts <= 0 {
		r = DefaultRetry
	}
	var err error
	for i := 0; i < r.Attempts; i++ {
		if i > 0 {
			x.counts.retries.Add(1)
			d := r.Backoff << (i - 1)
			if d > r.MaxBackoff || d <= 0 {
				d = r.MaxBackoff
			}
			d += time.Duration(rand.Int64N(int64(d) + 1))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return errs.Wrap(errs.Unavailable, ctx.Err(), "stripe export: stopped while retrying")
			case <-t.C:
			}
		}
		if err = f(); err == nil || !errs.Is(err, errs.Unavailable) {
			return err
		}
	}
	return err
}

func (x *Exporter) deadLetterEvent(ctx context.Context, ev MeterEvent, cause error) error {
	payload := fmt.Appendf(nil, `{"event_name":%q,"stripe_customer_id":%q,"value":%d,"identifier":%q,"timestamp":%d}`,
		ev.EventName, ev.Customer, ev.Value, ev.Identifier, ev.Time.Unix())
	return x.record(ctx, ledger.DeadLetter{ID: "stripe:" + ev.Identifier, Reason: ReasonRejected, Detail: cause.Error(), Payload: payload})
}

func (x *Exporter) deadLetter(ctx context.Context, id, reason, detail string, e usage.Event) error {
	payload := fmt.Appendf(nil, `{"id":%q,"key_id":%q,"time":%q,"requests":%d,"units":%d,"bytes":%d,"feature":%q}`,
		e.ID, e.KeyID, e.Time.Format(time.RFC3339Nano), e.Requests, e.Units, e.Bytes, e.Feature)
	return x.record(ctx, ledger.DeadLetter{ID: id, Reason: reason, Detail: detail, Payload: payload})
}

func (x *Exporter) record(ctx context.Context, d ledger.DeadLetter) error {
	d.Time = x.clock.Now()
	if err := x.deadLetters.AddDeadLetter(ctx, d); err != nil {
		return fmt.Errorf("stripe export: recording a dead letter: %w", err)
	}
	x.counts.deadLetters.Add(1)
	x.log.WarnContext(ctx, "stripe export dead letter", "reason", d.Reason, "id", d.ID, "detail", d.Detail)
	return nil
}

// HandleDeadLetter records a usage message the export subscription gave
// up on, so that it can be found and replayed (docs/operations.md). Its
// events are counted in the ledger all the same.
func (x *Exporter) HandleDeadLetter(ctx context.Context, m queue.Message) error {
	detail := "not exported to Stripe: delivery attempts exhausted"
	if n := m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"]; n != "" {
		detail += " (" + n + " deliveries)"
	}
	return x.record(ctx, ledger.DeadLetter{ID: "stripe:message:" + m.ID, Reason: ReasonDeliveryFailed, Detail: detail, Payload: m.Data})
}
