package meter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/usage"
)

// Dead-letter reasons.
const (
	ReasonUndecodable = "undecodable_message"
	ReasonInvalid     = "invalid_event"
	ReasonUnknownKey  = "unknown_key"
	// ReasonDeliveryFailed marks a message the transport gave up on after
	// its maximum delivery attempts (a transient failure that lasted).
	ReasonDeliveryFailed = "delivery_failed"
)

// The usage topic carries two kinds of message, told apart by the type
// attribute: usage batches (the webhook's body, also published by gateways
// directly, which may omit the attribute) and client IPs.
const (
	attrType      = "type"
	typeBatch     = "usage.batch"
	typeClientIPs = "client_ips"
	typeKeyUses   = "key_uses"
)

// Publish validates a webhook body and publishes it as one message,
// returning how many events it holds once the transport has acknowledged
// it: a nil error means no event can be lost. The body is published as it
// came (the consumer decodes it with the same defaults), which saves
// re-encoding up to a megabyte per call.
func Publish(ctx context.Context, t queue.Topic, body []byte, now time.Time) (int, error) {
	b, err := usage.DecodeBatch(body, now)
	if err != nil {
		return 0, err
	}
	if err := t.Publish(ctx, queue.Message{Data: body, Attributes: map[string]string{attrType: typeBatch}}); err != nil {
		return 0, errs.Wrap(errs.Unavailable, err, "the usage queue did not accept the events; retry")
	}
	return len(b.Events), nil
}

// KeyStore finds keys and owners and records keys' last use; store.Store
// is one.
type KeyStore interface {
	GetKey(ctx context.Context, id string) (*store.Key, error)
	GetOwner(ctx context.Context, id string) (*store.Owner, error)
	MarkUsed(ctx context.Context, uses map[string]time.Time) error
}

// OwnerPlanTTL is how long the consumer keeps an owner's plan before
// reading it again: an event is priced at the plan its owner has when the
// event is counted, as the consumer last read it (at most this old).
const OwnerPlanTTL = time.Minute

// keyInfo is what the consumer keeps of a key: its owner and plan never
// change.
type keyInfo struct{ owner, plan string }

// ownerPlan is an owner's plan as read at a time.
type ownerPlan struct {
	plan string
	at   time.Time
}

// Consumer turns usage messages into counted events. Its Handle follows
// the Pub/Sub contract: nil acks (counted, or poison recorded as a dead
// letter), an error asks for redelivery (a transient failure).
type Consumer struct {
	ledger  ledger.Ledger
	keys    KeyStore
	clock   clock.Clock
	log     *slog.Logger
	keyInfo *lru.Cache[string, keyInfo]   // key id → owner and plan
	plans   *lru.Cache[string, ownerPlan] // owner → its plan, OwnerPlanTTL

	// Plans, if set, prices each event at its owner's plan's prices
	// (plan.Plan.Cost) and the ledger counts the cost with the event; nil,
	// or a catalog without prices, prices nothing (no owner is read).
	Plans *plan.Catalog

	// Tracer, if set, traces each message handled (a usage batch); nil
	// traces nothing.
	Tracer trace.Tracer

	counted     atomic.Uint64 // events counted into the ledger
	deadLetters atomic.Uint64 // dead letters recorded
}

// Counts is what a Consumer has counted since it was made.
type Counts struct {
	Events      uint64 // usage events counted into the ledger
	DeadLetters uint64 // dead letters recorded (poison events and messages the transport gave up on)
}

// Counts returns the counters of c.
func (c *Consumer) Counts() Counts {
	return Counts{Events: c.counted.Load(), DeadLetters: c.deadLetters.Load()}
}

// span starts a span named name if c has a Tracer.
func (c *Consumer) span(ctx context.Context, name string, m queue.Message) (context.Context, func(error)) {
	if c.Tracer == nil {
		return ctx, func(error) {}
	}
	ctx, span := c.Tracer.Start(ctx, name, trace.WithAttributes(attribute.String("messaging.message.id", m.ID)))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "redelivered")
		}
		span.End()
	}
}

// NewConsumer returns a Consumer.
func NewConsumer(l ledger.Ledger, keys KeyStore, clk clock.Clock, log *slog.Logger) *Consumer {
	info, _ := lru.New[string, keyInfo](100_000)
	plans, _ := lru.New[string, ownerPlan](100_000)
	return &Consumer{ledger: l, keys: keys, clock: clk, log: log, keyInfo: info, plans: plans}
}

// Handle processes one message: a usage batch, or client IPs verify saw
// (a message with the attribute type=client_ips, see ClientIPPublisher),
// or the keys' last uses verify saw (type=key_uses).
func (c *Consumer) Handle(ctx context.Context, m queue.Message) (err error) {
	ctx, end := c.span(ctx, "meter.batch", m)
	defer func() { end(err) }()
	now := c.clock.Now()
	switch m.Attributes[attrType] {
	case typeClientIPs:
		return handleRecord(ctx, c, m, now, typeClientIPs, func(msg clientIPsMessage) error {
			return c.ledger.AddClientIPs(ctx, msg.Day, msg.IPs)
		})
	case typeKeyUses:
		return handleRecord(ctx, c, m, now, typeKeyUses, func(msg keyUsesMessage) error {
			return c.keys.MarkUsed(ctx, msg.Uses)
		})
	}
	batch, err := usage.DecodeMessage(m.Data)
	if err != nil {
		return c.deadLetter(ctx, ledger.DeadLetter{ID: "message:" + m.ID, Reason: ReasonUndecodable,
			Detail: "message data is not a JSON usage batch: " + usage.JSONProblem(err), Payload: m.Data}, now)
	}
	events := make([]ledger.Counted, 0, len(batch))
	for i, e := range batch {
		if f, msg := e.Problem(now); msg != "" {
			id := e.ID
			if id == "" || len(id) > usage.MaxIDLen {
				id = fmt.Sprintf("message:%s:%d", m.ID, i)
			}
			if err := c.deadLetter(ctx, ledger.DeadLetter{ID: id, Reason: ReasonInvalid, Detail: f + " " + msg, Payload: eventJSON(e)}, now); err != nil {
				return err
			}
			continue
		}
		k, err := c.key(ctx, e.KeyID)
		if errs.Is(err, errs.NotFound) {
			if err := c.deadLetter(ctx, ledger.DeadLetter{ID: e.ID, Reason: ReasonUnknownKey, Detail: "no key " + e.KeyID, Payload: eventJSON(e)}, now); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		cost, err := c.cost(ctx, k, e, now)
		if errs.Is(err, errs.Invalid) {
			if err := c.deadLetter(ctx, ledger.DeadLetter{ID: e.ID, Reason: ReasonInvalid, Detail: err.Error(), Payload: eventJSON(e)}, now); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		events = append(events, ledger.Counted{Event: e, Owner: k.owner, Cost: cost})
	}
	if len(events) == 0 {
		return nil
	}
	if _, err := c.ledger.Count(ctx, events, usage.Retention); err != nil {
		return fmt.Errorf("counting %d events: %w", len(events), err)
	}
	c.counted.Add(uint64(len(events)))
	return nil
}

// HandleDeadLetter records a message the transport dead-lettered, so that
// it can be found and replayed (docs/operations.md). Its events are not
// counted.
func (c *Consumer) HandleDeadLetter(ctx context.Context, m queue.Message) (err error) {
	ctx, end := c.span(ctx, "meter.dead_letter", m)
	defer func() { end(err) }()
	detail := "not counted: delivery attempts exhausted"
	if n := m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"]; n != "" {
		detail += " (" + n + " deliveries)"
	}
	return c.deadLetter(ctx, ledger.DeadLetter{ID: "message:" + m.ID, Reason: ReasonDeliveryFailed, Detail: detail, Payload: m.Data}, c.clock.Now())
}

func (c *Consumer) key(ctx context.Context, keyID string) (keyInfo, error) {
	if k, ok := c.keyInfo.Get(keyID); ok {
		return k, nil
	}
	k, err := c.keys.GetKey(ctx, keyID)
	if err != nil {
		return keyInfo{}, err
	}
	info := keyInfo{owner: k.Owner, plan: k.Plan}
	c.keyInfo.Add(keyID, info)
	return info, nil
}

// cost prices e at the plan of k's owner (the owner's record's plan; the
// key's plan if the owner has no record or the key no owner). An event
// whose cost does not fit the counters is errs.Invalid; a store that
// cannot be read is returned as it failed.
func (c *Consumer) cost(ctx context.Context, k keyInfo, e usage.Event, now time.Time) (int64, error) {
	if c.Plans == nil || !c.Plans.Priced() {
		return 0, nil
	}
	name := k.plan
	if k.owner != "" {
		op, ok := c.plans.Get(k.owner)
		if !ok || now.Sub(op.at) >= OwnerPlanTTL || now.Before(op.at) {
			o, err := c.keys.GetOwner(ctx, k.owner)
			switch {
			case err == nil:
				op = ownerPlan{plan: o.Plan, at: now}
			case errs.Is(err, errs.NotFound):
				op = ownerPlan{plan: k.plan, at: now}
			default:
				return 0, err
			}
			c.plans.Add(k.owner, op)
		}
		name = op.plan
	}
	p, ok := c.Plans.Get(name)
	if !ok {
		return 0, nil // a plan no longer offered has no prices
	}
	cost, ok := p.Cost(e.Feature, e.Requests, e.Units, e.Bytes)
	if !ok {
		return 0, errs.E(errs.Invalid, "cost: the event's amounts at plan %s's prices overflow the spend counters", name)
	}
	return cost, nil
}

func (c *Consumer) deadLetter(ctx context.Context, d ledger.DeadLetter, now time.Time) error {
	d.Time = now
	if err := c.ledger.AddDeadLetter(ctx, d); err != nil {
		return fmt.Errorf("recording a dead letter: %w", err)
	}
	c.deadLetters.Add(1)
	c.log.WarnContext(ctx, "usage dead letter", "reason", d.Reason, "id", d.ID, "detail", d.Detail)
	return nil
}

// clientIPsMessage is the data of a client_ips message.
type clientIPsMessage struct {
	Day time.Time           `json:"day"`
	IPs map[string][]string `json:"ips"` // key id → IPs
}

// keyUsesMessage is the data of a key_uses message.
type keyUsesMessage struct {
	Uses map[string]time.Time `json:"uses"` // key id → time of its latest use
}

// ClientIPPublisher is the clientips.Writer of a process that must not write
// to the ledger or the store (the Verify function reads Firestore only): it
// publishes the IPs and the key uses to the usage topic, and the usage
// consumer writes them.
type ClientIPPublisher struct {
	Topic queue.Topic
}

// AddClientIPs validates ips as the ledger would and publishes them.
func (p ClientIPPublisher) AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error {
	clean, err := ledger.CleanClientIPs(day, ips)
	if err != nil {
		return err
	}
	data, err := json.Marshal(clientIPsMessage{Day: day.UTC(), IPs: clean})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "client IPs: encode")
	}
	if err := p.Topic.Publish(ctx, queue.Message{Data: data, Attributes: map[string]string{attrType: typeClientIPs}}); err != nil {
		return errs.Wrap(errs.Unavailable, err, "client IPs: the usage queue did not accept them")
	}
	return nil
}

// MarkUsed validates uses as the store would and publishes them.
func (p ClientIPPublisher) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := store.CheckMarkUsed(uses); err != nil {
		return err
	}
	if len(uses) == 0 {
		return nil
	}
	data, err := json.Marshal(keyUsesMessage{Uses: uses})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "key uses: encode")
	}
	if err := p.Topic.Publish(ctx, queue.Message{Data: data, Attributes: map[string]string{attrType: typeKeyUses}}); err != nil {
		return errs.Wrap(errs.Unavailable, err, "key uses: the usage queue did not accept them")
	}
	return nil
}

// handleRecord decodes a message of type typ (client_ips, key_uses) into a
// T and writes it with write. A message that does not decode, or that write
// rejects as invalid, is dead-lettered; any other failure is returned, so
// that the message is delivered again.
func handleRecord[T any](ctx context.Context, c *Consumer, m queue.Message, now time.Time, typ string, write func(T) error) error {
	var msg T
	err := json.Unmarshal(m.Data, &msg)
	if err == nil {
		err = write(msg)
		if err != nil && !errs.Is(err, errs.Invalid) {
			return fmt.Errorf("recording a %s message: %w", typ, err)
		}
	}
	if err != nil {
		return c.deadLetter(ctx, ledger.DeadLetter{ID: "message:" + m.ID, Reason: ReasonInvalid,
			Detail: typ + " message: " + err.Error(), Payload: m.Data}, now)
	}
	return nil
}

func eventJSON(e usage.Event) []byte {
	b, _ := json.Marshal(e)
	return b
}
