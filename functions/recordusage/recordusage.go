// Package recordusage is the RecordUsage Cloud Function: a CloudEvent
// function receiving the usage topic's messages (Pub/Sub
// messagePublished) and counting their events exactly once. Returning nil
// acknowledges the message (counted, or poison recorded as a dead letter);
// returning an error makes Pub/Sub redeliver it (a transient failure).
package recordusage

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/wire"
)

// app is built once per instance, on the first message.
var app = wire.Function(wire.RecordUsage)

// Handle is the function's entry point.
func Handle(ctx context.Context, e event.Event) error {
	m, err := pubsubqueue.DecodeMessagePublished(e.Data())
	if err != nil {
		// Not a Pub/Sub event at all: retrying cannot help, and there is no
		// message to dead-letter. Ack it and say so.
		fmt.Printf(`{"severity":"ERROR","message":"RecordUsage received a non-Pub/Sub event","id":%q}`+"\n", e.ID())
		return nil
	}
	a, err := app.Get()
	if err != nil {
		return err // not started: redeliver later
	}
	return a.Consumer.Handle(ctx, m)
}
