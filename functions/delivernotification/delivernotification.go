// Package delivernotification is the DeliverNotification Cloud Function: a
// CloudEvent function receiving the notifications topic's messages (Pub/Sub
// messagePublished, through a push subscription) and making the delivery
// attempt each one asks for (notify.Deliverer.Handle): a signed POST to the
// owner's webhook, its outcome recorded, the next attempt scheduled.
//
// The message is in its attributes (notification_id, attempt,
// not_before); it has no data. Returning nil acknowledges it (delivered,
// retry scheduled, or nothing left to do); returning an error makes
// Pub/Sub redeliver it after the subscription's backoff: a transient
// failure of keyplane's own backends, or notify.ErrNotDue for a message
// that arrived before its attempt is due — that redelivery is how waits
// longer than Pub/Sub's 600 s backoff cap are bridged (see internal/notify).
// ErrNotDue is routine, so this package does not log it; the Functions
// Framework, however, prints every returned error to stderr ("Function
// error: …"), which this function cannot suppress.
package delivernotification

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/wire"
)

// app is built once per instance, on the first message.
var app = wire.Function(wire.DeliverNotification)

var log = logging.New(os.Stdout, slog.LevelInfo)

// Handle is the function's entry point.
func Handle(ctx context.Context, e event.Event) error {
	return handle(ctx, e, deliverer, log)
}

// deliverer returns the instance's Deliverer, building the App if needed.
func deliverer() (*notify.Deliverer, error) {
	a, err := app.Get()
	if err != nil {
		return nil, err
	}
	return a.Deliverer, nil
}

// handle decodes the event and hands its message to the Deliverer that
// get returns.
func handle(ctx context.Context, e event.Event, get func() (*notify.Deliverer, error), log *slog.Logger) error {
	m, err := pubsubqueue.DecodeMessagePublished(e.Data())
	if err != nil {
		// Not a Pub/Sub event at all: retrying cannot help, and there is no
		// message to dead-letter. Ack it and say so.
		log.ErrorContext(ctx, "DeliverNotification received a non-Pub/Sub event", "event_id", e.ID(), "error", err)
		return nil
	}
	d, err := get()
	if err != nil {
		return err // not started: redeliver later
	}
	err = d.Handle(ctx, m) // DeliveryAttempt unknown: the framework drops it
	switch {
	case err == nil, errors.Is(err, notify.ErrNotDue):
		return err
	case ctx.Err() != nil:
		return err // the request was cut short; the attempt was given back
	}
	log.WarnContext(ctx, "delivering a notification failed on keyplane's side; Pub/Sub redelivers it",
		"message_id", m.ID, "notification_id", m.Attributes["notification_id"], "error", err)
	return err
}
