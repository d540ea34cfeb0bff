package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/httpapi/contracttest"
	"github.com/keyplane/keyplane/pkg/client"
)

// checked wraps the API's handler so that every exchange of a test is
// checked against docs/openapi.yaml (see contracttest) and every
// successful JSON answer decodes into the Go client's type for its
// operation with no field left over.
func checked(t *testing.T, h http.Handler) http.Handler {
	t.Helper()
	return contracttest.Load(t).Handler(t, h, &contracttest.Options{Check: decodesIntoClientType})
}

// clientTypes names, for every operation of docs/openapi.yaml, the type
// pkg/client decodes its successful answer into, or nil where the client
// has no method for the operation.
var clientTypes = map[string]func() any{
	"createKey":           func() any { return new(client.KeyWithSecret) },
	"rotateKey":           func() any { return new(client.KeyWithSecret) },
	"getKey":              func() any { return new(client.Key) },
	"updateKey":           func() any { return new(client.Key) },
	"disableKey":          func() any { return new(client.Key) },
	"enableKey":           func() any { return new(client.Key) },
	"revokeKey":           func() any { return new(client.Key) },
	"listKeys":            func() any { return new(client.KeyList) },
	"listAudit":           func() any { return new(client.AuditList) },
	"verifyKey":           func() any { return new(client.Decision) },
	"getKeyUsage":         func() any { return new(client.Usage) },
	"getOwner":            func() any { return new(client.Owner) },
	"updateOwner":         func() any { return new(client.Owner) },
	"listOwners":          func() any { return new(client.OwnerList) },
	"createToken":         func() any { return new(client.TokenWithSecret) },
	"listTokens":          func() any { return new(client.TokenList) },
	"revokeToken":         func() any { return new(client.Token) },
	"revealSecret":        nil, // RevealSecret returns the string
	"reportUsage":         nil, // the UsageReporter needs only the status
	"listUsage":           nil,
	"listDeadLetters":     nil,
	"runSweep":            nil,
	"setWebhook":          nil,
	"getWebhook":          nil,
	"health":              nil,
	"getSpend":            func() any { return new(client.Spend) },
	"addCredits":          func() any { return new(client.Credit) },
	"listCredits":         func() any { return new(client.CreditList) },
	"reportLeaks":         func() any { return new([]client.LeakResult) },
	"reportGitHubLeaks":   nil, // GitHub calls it
	"createPortalSession": func() any { return new(client.PortalSession) },
}

// decodesIntoClientType checks that a successful JSON answer has no field
// the client's type for it lacks, and that every field decodes into it.
func decodesIntoClientType(x contracttest.Exchange) error {
	newValue, ok := clientTypes[x.Operation]
	if !ok {
		return fmt.Errorf("operation %q is not in clientTypes: name the client's type for its answers, or nil", x.Operation)
	}
	if newValue == nil || x.Status/100 != 2 || !strings.HasPrefix(x.Header.Get("Content-Type"), "application/json") {
		return nil
	}
	v := newValue()
	dec := json.NewDecoder(bytes.NewReader(x.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the answer does not decode into the client's %T: %v", v, err)
	}
	return nil
}

// TestOpenAPIMatchesRoutes keeps docs/openapi.yaml and the routing table in
// agreement: every route is documented and every documented operation is
// served, and every operation is in clientTypes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	spec := contracttest.Load(t)
	var documented, served []string
	for path, item := range spec.Doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented = append(documented, method+" "+path)
			if _, ok := clientTypes[op.OperationID]; !ok {
				t.Errorf("%s %s: operation %q is not in clientTypes", method, path, op.OperationID)
			}
		}
	}
	for _, r := range (&httpapi.Server{}).Routes() {
		served = append(served, r.Method+" "+r.Path)
	}
	slices.Sort(documented)
	slices.Sort(served)
	for _, s := range served {
		if !slices.Contains(documented, s) {
			t.Errorf("%s is served but not in docs/openapi.yaml", s)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("%s is in docs/openapi.yaml but not served", d)
		}
	}
}
