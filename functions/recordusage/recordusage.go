// Package recordusage is the RecordUsage Cloud Function: a CloudEvent
// function receiving the usage topic's messages (Pub/Sub
// messagePublished) and counting their events exactly once. Returning nil
// acknowledges the message (counted, or poison recorded as a dead letter);
// returning an error makes Pub/Sub redeliver it (a transient failure).
package recordusage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

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

var consumer = wire.LazyConsumer()

// Handle is the function's entry point.
func Handle(ctx context.Context, e event.Event) error {
	var m messagePublished
	if err := json.Unmarshal(e.Data(), &m); err != nil {
		// Not a Pub/Sub event at all: retrying cannot help, and there is no
		// message to dead-letter. Ack it and say so.
		fmt.Printf(`{"severity":"ERROR","message":"RecordUsage received a non-Pub/Sub event","id":%q}`+"\n", e.ID())
		return nil
	}
	c, err := consumer()
	if err != nil {
		return err // not started: redeliver later
	}
	return c.Handle(ctx, queue.Message{
		ID: m.Message.MessageID, Data: m.Message.Data, Attributes: m.Message.Attributes,
		PublishTime: m.Message.PublishTime, // DeliveryAttempt unknown: the framework drops it
	})
}
