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
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/wire"
)

// messagePublished is the data of a google.cloud.pubsub.topic.v1.messagePublished event.
type messagePublished struct {
	Message struct {
		Data        []byte            `json:"data"` // base64 in JSON
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime time.Time         `json:"publishTime"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

var deliverer = wire.LazyDeliverer()

var log = logging.New(os.Stdout, slog.LevelInfo)

// Handle is the function's entry point.
func Handle(ctx context.Context, e event.Event) error {
	return handle(ctx, e, deliverer, log)
}

// handle decodes the event and hands its message to the Deliverer that
// get builds once per instance.
func handle(ctx context.Context, e event.Event, get func() (*notify.Deliverer, error), log *slog.Logger) error {
	var m messagePublished
	if err := json.Unmarshal(e.Data(), &m); err != nil {
		// Not a Pub/Sub event at all: retrying cannot help, and there is no
		// message to dead-letter. Ack it and say so.
		log.ErrorContext(ctx, "DeliverNotification received a non-Pub/Sub event", "event_id", e.ID(), "error", err)
		return nil
	}
	d, err := get()
	if err != nil {
		return err // not started: redeliver later
	}
	err = d.Handle(ctx, queue.Message{
		ID: m.Message.MessageID, Data: m.Message.Data, Attributes: m.Message.Attributes,
		PublishTime: m.Message.PublishTime, // DeliveryAttempt unknown: the framework drops it
	})
	switch {
	case err == nil, errors.Is(err, notify.ErrNotDue):
		return err
	case ctx.Err() != nil:
		return err // the request was cut short; the attempt was given back
	}
	log.WarnContext(ctx, "delivering a notification failed on keyplane's side; Pub/Sub redelivers it",
		"message_id", m.Message.MessageID, "notification_id", m.Message.Attributes["notification_id"], "error", err)
	return err
}
