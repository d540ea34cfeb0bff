package notify

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/webhook"
)

func validateOwner(owner string) error {
	if !ids.ValidOwner(owner) {
		return invalidField("owner", "owner must be "+ids.OwnerSyntax)
	}
	return nil
}

// normalizeEvents checks events against EventTypes and returns them in
// EventTypes' order without duplicates; none means all.
func normalizeEvents(events []string) ([]string, error) {
	if len(events) == 0 {
		return slices.Clone(EventTypes), nil
	}
	for _, e := range events {
		if !slices.Contains(EventTypes, e) {
			return nil, invalidField("events", "events: %q is not an event type; use any of %s (or omit events for all)",
				e, strings.Join(EventTypes, ", "))
		}
	}
	var out []string
	for _, t := range EventTypes {
		if slices.Contains(events, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// Service sets owners' webhooks and enqueues their notifications. Its
// fields are its dependencies; Clock, Logger and Guard may be nil for their
// defaults (the wall clock, slog.Default() and the production Guard).
type Service struct {
	Registry   Registry
	Deliveries Deliveries
	Vault      secrets.Vault
	Topic      queue.Topic // the notifications topic the Deliverer's subscription reads
	Guard      *Guard
	Clock      clock.Clock
	Logger     *slog.Logger
}

func (s *Service) now() time.Time {
	if s.Clock == nil {
		return clock.Real{}.Now()
	}
	return s.Clock.Now()
}

func (s *Service) guard() *Guard {
	if s.Guard == nil {
		return &Guard{}
	}
	return s.Guard
}

func (s *Service) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// SetWebhook makes url the owner's webhook for events (none means every
// type) and returns it with a new signing secret, "whsec_…", which it
// keeps in the vault as a new version of SecretName(owner).
//
// Every call rotates the secret: from the moment it returns, every
// delivery — including retries of notifications enqueued earlier — is
// signed with the new secret only, so the owner's receiver must switch to
// it. The secret is written before the webhook record and the record names
// the secret's version (OwnerWebhook.SecretFingerprint), so a call that
// fails halfway leaves the previous URL signing with the previous secret,
// and of two concurrent calls the webhook that wins is signed with its own
// secret.
//
// Errors: Invalid (the owner, URL or events; the message says what to fix;
// this includes a URL whose host resolves to a non-public address),
// Unavailable (DNS, the vault or the registry; retry) and Internal.
func (s *Service) SetWebhook(ctx context.Context, owner, url string, events []string) (OwnerWebhook, string, error) {
	if err := validateOwner(owner); err != nil {
		return OwnerWebhook{}, "", err
	}
	evs, err := normalizeEvents(events)
	if err != nil {
		return OwnerWebhook{}, "", err
	}
	if _, err := s.guard().CheckURL(ctx, url); err != nil {
		return OwnerWebhook{}, "", err
	}
	secret := webhook.NewSecret()
	if err := s.Vault.AddSecretVersion(ctx, SecretName(owner), []byte(secret)); err != nil {
		return OwnerWebhook{}, "", err
	}
	w := OwnerWebhook{Owner: owner, URL: url, Events: evs, SecretFingerprint: Fingerprint(secret), UpdatedAt: s.now()}
	if err := s.Registry.Put(ctx, w); err != nil {
		return OwnerWebhook{}, "", err
	}
	s.logger().InfoContext(ctx, "owner webhook set", "owner", owner, "events", evs)
	return w, secret, nil
}

// Webhook returns owner's webhook (its URL, event filter and the
// fingerprint of its signing secret, never the secret). Errors: Invalid
// (the owner), NotFound (the owner has no webhook), Unavailable, Internal.
func (s *Service) Webhook(ctx context.Context, owner string) (OwnerWebhook, error) {
	if err := validateOwner(owner); err != nil {
		return OwnerWebhook{}, err
	}
	w, err := s.Registry.Get(ctx, owner)
	if errs.Is(err, errs.NotFound) {
		return OwnerWebhook{}, errs.E(errs.NotFound, "owner %q has no webhook; set one with PUT /v1/owners/{owner}/webhook", owner)
	}
	return w, err
}

// Outcome says what Notify did.
type Outcome string

// Notify outcomes.
const (
	Queued        Outcome = "queued"         // a new notification is on its way
	Duplicate     Outcome = "duplicate"      // the same event was notified before; nothing new is sent
	NoWebhook     Outcome = "no_webhook"     // the owner has no webhook; nothing is sent
	NotSubscribed Outcome = "not_subscribed" // the owner's webhook does not take this event type
)

// Notify enqueues the notification of e to owner's webhook, if the owner
// has one subscribed to e.Type, and returns its webhook-id and what it did.
// The webhook-id is NotificationID(owner, e.Type, e.ID), so calling Notify
// again with the same event — a retried or concurrent sweep — sends
// nothing new (Duplicate), within Retention.
//
// A nil error means the notification is durably recorded and its first
// delivery is on the queue. After an error, call Notify again with the same
// event: it completes what the failed call began and never sends twice.
// Errors: Invalid (owner, e.Type, e.ID or e.Data; the message says which),
// Unavailable (the store or the queue; retry), Internal.
func (s *Service) Notify(ctx context.Context, owner string, e Event) (string, Outcome, error) {
	if err := validateOwner(owner); err != nil {
		return "", "", err
	}
	if !slices.Contains(EventTypes, e.Type) {
		return "", "", invalidField("type", "event type %q is not one of %s", e.Type, strings.Join(EventTypes, ", "))
	}
	if e.ID == "" || len(e.ID) > MaxEventIDLen || !utf8.ValidString(e.ID) {
		return "", "", invalidField("id", "an event needs an id of 1-%d bytes of UTF-8 that identifies it for deduplication", MaxEventIDLen)
	}
	now := s.now()
	if e.Time.IsZero() {
		e.Time = now
	}
	payload, err := encodePayload(e)
	if err != nil {
		return "", "", err
	}
	id := NotificationID(owner, e.Type, e.ID)
	w, err := s.Registry.Get(ctx, owner)
	switch {
	case errs.Is(err, errs.NotFound):
		return id, NoWebhook, nil
	case err != nil:
		return "", "", err
	case !w.Subscribed(e.Type):
		return id, NotSubscribed, nil
	}
	d := Delivery{
		ID: id, Owner: owner, Type: e.Type, Payload: payload, Status: Pending,
		NextAttemptAt: now, CreatedAt: now, UpdatedAt: now, ExpireAt: now.Add(Retention),
	}
	outcome := Queued
	switch err := s.Deliveries.CreateDelivery(ctx, d); {
	case errs.Is(err, errs.Exists):
		if d, err = s.Deliveries.GetDelivery(ctx, id); err != nil {
			return "", "", err
		}
		outcome = Duplicate
		if d.Status != Pending || d.Attempts > 0 || d.Enqueued > 0 {
			return id, outcome, nil
		}
		// An earlier call recorded it but may not have published it:
		// publish it now (a duplicate message is harmless, a missing one
		// would strand the notification).
	case err != nil:
		return "", "", err
	}
	if err := enqueue(ctx, s.Topic, s.Deliveries, s.logger(), s.now(), d, 1); err != nil {
		return "", "", err
	}
	s.logger().InfoContext(ctx, "notification queued", "notification_id", id, "owner", owner, "type", e.Type, "outcome", string(outcome))
	return id, outcome, nil
}

// payload is the body POSTed to webhooks, the shape Standard Webhooks
// recommends.
type payload struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

func encodePayload(e Event) ([]byte, error) {
	data := json.RawMessage("{}")
	if e.Data != nil {
		b, err := json.Marshal(e.Data)
		if err != nil {
			return nil, invalidField("data", "event data must marshal to JSON")
		}
		if len(b) == 0 || b[0] != '{' {
			return nil, invalidField("data", "event data must be a JSON object")
		}
		if len(b) > MaxDataBytes {
			return nil, invalidField("data", "event data is %d bytes of JSON; the limit is %d", len(b), MaxDataBytes)
		}
		data = b
	}
	b, err := json.Marshal(payload{Type: e.Type, Timestamp: e.Time.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano), Data: data})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encoding a notification")
	}
	return b, nil
}

// Message attributes of a delivery message.
const (
	attrID        = "notification_id"
	attrAttempt   = "attempt"
	attrNotBefore = "not_before"
)

// enqueue publishes the message that asks for attempt n of d, not before
// d.NextAttemptAt, and then records that it did (Enqueued), so that
// duplicates of the previous message do not publish it again. Failing to
// record it only costs a possible duplicate message later, so that error is
// not returned.
func enqueue(ctx context.Context, t queue.Topic, ds Deliveries, log *slog.Logger, now time.Time, d Delivery, n int) error {
	m := queue.Message{Attributes: map[string]string{
		attrID:        d.ID,
		attrAttempt:   strconv.Itoa(n),
		attrNotBefore: d.NextAttemptAt.UTC().Format(time.RFC3339Nano),
	}}
	if err := t.Publish(ctx, m); err != nil {
		return err
	}
	_, err := ds.UpdateDelivery(ctx, d.ID, func(d *Delivery) error {
		if d.Enqueued >= n {
			return errUnchanged
		}
		d.Enqueued, d.UpdatedAt = n, now
		return nil
	})
	if err != nil && err != errUnchanged {
		log.WarnContext(ctx, "recording that a notification message was published failed; a duplicate message may follow",
			"notification_id", d.ID, "attempt", n, "error", err)
	}
	return nil
}
