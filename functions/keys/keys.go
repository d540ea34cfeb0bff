// Package keys is the Keys Cloud Function: the key management routes
// (/v1/keys…, /v1/audit). It builds its dependencies once per instance
// from the environment and serves internal/httpapi's handlers.
package keys

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/wire"
)

var handler = wire.FunctionHandler(wire.Keys)

// Handle is the function's entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }
