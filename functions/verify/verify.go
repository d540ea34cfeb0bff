// Package verify is the Verify Cloud Function: POST /v1/verify, the hot
// path every API request of the customer's gateway goes through. It builds
// its dependencies once per instance and keeps its key cache warm between
// requests.
package verify

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/wire"
)

var handler = wire.FunctionHandler(wire.Verify)

// Handle is the function's entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }
