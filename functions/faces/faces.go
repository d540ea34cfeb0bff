// Package faces is the Faces Cloud Function: the pages people open in a
// browser, the operator console (/console) and the owner portal
// (/portal/), and nothing of the API. It is public at the Cloud Run layer
// (a browser cannot present a Google ID token): the console signs
// operators in with an admin or caller token, the portal admits owners
// through single-use links, and every /v1 route stays on the Keys
// function, behind IAM.
package faces

import (
	"net/http"

	"github.com/keyplane/keyplane/internal/wire"
)

var handler = wire.FunctionHandler(wire.Faces)

// Handle is the function's entry point.
func Handle(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }
