// Package sweep is the Sweep Cloud Function: POST /v1/sweep, which Cloud
// Scheduler calls with a Google-signed ID token (an admin token works
// too). It builds its dependencies once per instance from the environment
// and serves internal/httpapi's handler, which runs internal/sweep.
package sweep

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/wire"
)

var handler = wire.FunctionHandler(wire.Sweep)

// Handle is the function's entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }
