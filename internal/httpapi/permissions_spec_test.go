package httpapi

import (
	"testing"

	"github.com/keyplane/keyplane/internal/httpapi/contracttest"
)

// TestSpecNamesEveryRoutesPermission holds each operation's x-permission
// in docs/openapi.yaml to the permission its route needs (Route.Perm),
// and has it absent where no credential is needed.
func TestSpecNamesEveryRoutesPermission(t *testing.T) {
	spec := contracttest.Load(t)
	for _, rt := range (&Server{}).Routes() {
		name := rt.Method + " " + rt.Path
		item := spec.Doc.Paths.Value(rt.Path)
		if item == nil || item.GetOperation(rt.Method) == nil {
			continue // TestSpecDocumentsEveryStatusOfEveryRoute reports it
		}
		got, _ := item.GetOperation(rt.Method).Extensions["x-permission"].(string)
		if want := rt.Perm.String(); got != want {
			t.Errorf("%s: docs/openapi.yaml says x-permission %q, the route needs %q", name, got, want)
		}
	}
}
