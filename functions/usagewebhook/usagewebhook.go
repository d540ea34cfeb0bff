// Package usagewebhook is the UsageWebhook Cloud Function: POST /v1/usage,
// where gateways report usage events signed with Standard Webhooks. It
// answers 202 only after Pub/Sub has acknowledged the events.
package usagewebhook

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/wire"
)

var handler = wire.FunctionHandler(wire.UsageWebhook)

// Handle is the function's entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }
