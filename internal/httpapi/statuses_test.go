package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/httpapi/contracttest"
)

// codesByStatus is what writeError and jsonFallback can answer: every
// error code, by the status it is sent with.
func codesByStatus() map[int][]string {
	out := map[int][]string{http.StatusMethodNotAllowed: {"METHOD_NOT_ALLOWED"}, http.StatusRequestHeaderFieldsTooLarge: {"HEADERS_TOO_LARGE"}}
	for k := errs.Kind(0); ; k++ {
		name := k.String()
		if k > 0 && name == errs.Internal.String() {
			break // past the last kind
		}
		out[status(k)] = append(out[status(k)], name)
	}
	return out
}

// ownerFiltered are the lists whose owner filter a scoped token may not
// point at another owner (tokens.Caller.OwnerFilter), and the audit list,
// which a scoped token reads for one of its keys.
var ownerFiltered = map[string]bool{"GET /v1/keys": true, "GET /v1/usage": true, "GET /v1/tokens": true, "GET /v1/audit": true}

// TestSpecDocumentsEveryStatusOfEveryRoute holds docs/openapi.yaml to what
// the routing table implies each route can answer, whatever its handler
// does: 401, 403 and 503 (the ID-token check's certificate fetch, a
// caller token's lookup) where a credential is required, 404 where an
// owner-scoped token can name another owner's resource, 400 and 413 where a body is read, 400 where a
// body is refused, 500 wherever a handler can fail. It also holds every
// documented error status to the codes the server sends with it, and the
// ErrorCode schema to the codes the server has.
func TestSpecDocumentsEveryStatusOfEveryRoute(t *testing.T) {
	spec := contracttest.Load(t)
	codes := codesByStatus()
	for _, rt := range (&Server{}).Routes() {
		name := rt.Method + " " + rt.Path
		item := spec.Doc.Paths.Value(rt.Path)
		if item == nil || item.GetOperation(rt.Method) == nil {
			t.Errorf("%s is not in docs/openapi.yaml", name)
			continue
		}
		op := item.GetOperation(rt.Method)
		want := []int{http.StatusBadRequest}
		if rt.limit > 0 {
			want = append(want, http.StatusRequestEntityTooLarge)
		}
		if rt.Auth {
			// 403: a credential without the route's permission, or
			// scoped to an owner where the route acts across owners.
			want = append(want, http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable)
		}
		if sc := ownerScoped(name); sc == scopeKey || sc == scopeOwner || ownerFiltered[name] {
			// An owner-scoped token naming another owner's resource.
			want = append(want, http.StatusNotFound)
		}
		if rt.Function != "" {
			want = append(want, http.StatusInternalServerError)
		}
		for _, code := range want {
			if op.Responses.Status(code) == nil {
				t.Errorf("%s can answer %d, which docs/openapi.yaml does not document", name, code)
			}
		}
		if op.Responses.Default() != nil {
			t.Errorf("%s documents a default response: name every status instead", name)
		}
		successes := 0
		for key, ref := range op.Responses.Map() {
			code, err := strconv.Atoi(key)
			if err != nil {
				continue
			}
			if code/100 == 2 {
				successes++
				continue
			}
			sent, ok := codes[code]
			if !ok {
				t.Errorf("%s documents %d, which the server never answers", name, code)
				continue
			}
			documented := errorCodes(ref.Value)
			if len(documented) == 0 {
				t.Errorf("%s %d: the response does not say which error codes it carries", name, code)
			}
			for _, c := range documented {
				if !slices.Contains(sent, c) {
					t.Errorf("%s %d documents code %s; the server sends %v with %d", name, code, c, sent, code)
				}
			}
		}
		if successes != 1 {
			t.Errorf("%s documents %d success statuses, want 1", name, successes)
		}
	}

	var all []string
	for _, cs := range codes {
		all = append(all, cs...)
	}
	var enum []string
	if ref := spec.Doc.Components.Schemas["ErrorCode"]; ref != nil && ref.Value != nil {
		for _, v := range ref.Value.Enum {
			enum = append(enum, fmt.Sprint(v))
		}
	}
	slices.Sort(all)
	slices.Sort(enum)
	if !slices.Equal(all, enum) {
		t.Errorf("ErrorCode's enum is %v; the server's codes are %v", enum, all)
	}
	for name, code := range map[string]int{"NotFound": http.StatusNotFound, "MethodNotAllowed": http.StatusMethodNotAllowed} {
		ref := spec.Doc.Components.Responses[name]
		if ref == nil {
			t.Errorf("components.responses.%s is missing: unknown paths and methods are answered with it", name)
			continue
		}
		for _, c := range errorCodes(ref.Value) {
			if !slices.Contains(codes[code], c) {
				t.Errorf("components.responses.%s documents code %s, which is not sent with %d", name, c, code)
			}
		}
	}
}

// errorCodes returns the values a JSON error response allows for
// error.code: the intersection of the enums of error.code in its schema and
// the schema's allOf members (all of which apply).
func errorCodes(r *openapi3.Response) []string {
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		return nil
	}
	var enums [][]string
	var visit func(s *openapi3.Schema)
	visit = func(s *openapi3.Schema) {
		if e := s.Properties["error"]; e != nil && e.Value != nil {
			if c := e.Value.Properties["code"]; c != nil && c.Value != nil && len(c.Value.Enum) > 0 {
				var enum []string
				for _, v := range c.Value.Enum {
					enum = append(enum, fmt.Sprint(v))
				}
				enums = append(enums, enum)
			}
		}
		for _, m := range s.AllOf {
			if m.Value != nil {
				visit(m.Value)
			}
		}
	}
	visit(mt.Schema.Value)
	if len(enums) == 0 {
		return nil
	}
	out := enums[0]
	for _, e := range enums[1:] {
		out = slices.DeleteFunc(out, func(c string) bool { return !slices.Contains(e, c) })
	}
	return out
}
