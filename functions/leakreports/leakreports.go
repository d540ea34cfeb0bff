// Package leakreports is the LeakReports Cloud Function: POST
// /v1/leaks/github, where GitHub's secret scanning partner program reports
// leaked keys. It is public at the Cloud Run layer (GitHub cannot present a
// Google ID token); GitHub's ECDSA signature over each report is its
// authentication.
package leakreports

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/wire"
)

var handler = wire.FunctionHandler(wire.LeakReports)

// Handle is the function's entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }
