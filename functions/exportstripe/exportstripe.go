// Package exportstripe is the ExportStripe Cloud Function: the usage
// topic's export-stripe push subscription delivers each usage message here,
// and internal/stripeexport sends its events to Stripe meter events. An
// error answer makes Pub/Sub redeliver the message after its backoff; after
// 20 deliveries it goes to the usage-events-stripe-dead-letter topic.
// Deployed only with the export configured (infra: var.stripe_meters).
package exportstripe

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/wire"
)

var app = wire.Function(wire.ExportStripe)

// Handle exports one Pub/Sub message of the usage topic.
func Handle(ctx context.Context, e event.Event) error {
	m, err := pubsubqueue.DecodeMessagePublished(e.Data())
	if err != nil {
		// Not a Pub/Sub event at all: retrying cannot help. Ack it and say so.
		fmt.Printf(`{"severity":"ERROR","message":"ExportStripe received a non-Pub/Sub event","id":%q}`+"\n", e.ID())
		return nil
	}
	a, err := app.Get()
	if err != nil {
		return err // not started: redeliver later
	}
	return a.StripeExporter.Handle(ctx, m)
}
