// Package contracttest checks real HTTP exchanges against keyplane's HTTP
// contract, docs/openapi.yaml, with kin-openapi's validator.
//
// [Spec.Handler] wraps a handler, normally the whole API, so that every
// request a test suite makes and every answer the server gives is
// checked, and a mismatch fails the test:
//
//   - The answer's status must be documented for the operation, and its
//     headers and body must match that response's schemas.
//   - Every field of a JSON answer must be documented: the document leaves
//     its objects open so that fields can be added without breaking
//     clients, but the server may not send a field it does not describe.
//   - A request the document rejects (a missing credential, an unknown
//     field, a malformed parameter, a body where none is taken) must get a
//     4xx: a server that accepts what its contract rejects, or a contract
//     stricter than its server, is a mismatch either way.
//   - A path the document does not list must get 404 NOT_FOUND, and a
//     method a listed path does not take must get 405 METHOD_NOT_ALLOWED
//     with an Allow header naming exactly the documented methods; both
//     are checked against the document's NotFound and MethodNotAllowed
//     responses.
//
// It is for tests only: answers are buffered until they are checked.
package contracttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Path is docs/openapi.yaml relative to the module root.
const Path = "docs/openapi.yaml"

// Spec is the loaded contract.
type Spec struct {
	Doc    *openapi3.T
	router routers.Router
}

// Load reads and validates docs/openapi.yaml of the module the test runs
// in (found from the working directory up). The document's servers are
// dropped so that requests to any test server's address are routed.
func Load(tb testing.TB) *Spec {
	tb.Helper()
	file, err := find(Path)
	if err != nil {
		tb.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(file)
	if err != nil {
		tb.Fatalf("%s: %v", Path, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		tb.Fatalf("%s is not a valid OpenAPI document: %v", Path, err)
	}
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		tb.Fatalf("%s: %v", Path, err)
	}
	return &Spec{Doc: doc, router: router}
}

// find returns the path of name relative to the nearest directory, from
// the working directory up, that holds go.mod.
func find(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, name), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("contracttest: no go.mod above the working directory, so no %s", name)
		}
		dir = parent
	}
}

// Exchange is one checked request and its answer.
type Exchange struct {
	Method, Path string
	Operation    string // the operation id; "" for an unrouted request
	Status       int
	Header       http.Header
	Body         []byte
}

// Options change what Handler checks; nil means the checks of the package
// comment only.
type Options struct {
	// Check, if set, is given every exchange of a documented operation
	// after it passed the document's checks; an error fails the test. It
	// is the hook for checks the document cannot express, such as
	// decoding every answer into a Go client's type for it.
	Check func(Exchange) error
}

// Handler returns h with every exchange checked against the document;
// a mismatch is reported with tb.Errorf, before the client gets the answer.
func (s *Spec) Handler(tb testing.TB, h http.Handler, opts *Options) http.Handler {
	if opts == nil {
		opts = &Options{}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			tb.Errorf("contracttest: reading the request body of %s %s: %v", r.Method, r.URL.Path, err)
			http.Error(w, "contracttest: unreadable request", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		got, _ := io.ReadAll(res.Body)

		if err := s.check(r, body, res.StatusCode, res.Header, got, opts); err != nil {
			tb.Errorf("%s %s → %d %s\n%v", r.Method, r.URL.RequestURI(), res.StatusCode, abbreviate(got), err)
		}
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		w.Write(got)
	})
}

// check returns what is wrong with one exchange, or nil.
func (s *Spec) check(r *http.Request, reqBody []byte, status int, header http.Header, body []byte, opts *Options) error {
	if r.Method == http.MethodHead {
		return nil // net/http answers it with the GET handler, and kin-openapi checks no HEAD answer
	}
	ctx := context.Background()
	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	req.ContentLength = int64(len(reqBody))

	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return s.checkUnrouted(req, status, header, body)
	}
	options := &openapi3filter.Options{
		AuthenticationFunc:                bearerPresent,
		IncludeResponseStatus:             true,
		RejectWhenRequestBodyNotSpecified: true,
		SkipSettingDefaults:               true,
		MultiError:                        true,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: options}
	// A 4xx is a fit answer to any request, valid or not: the server may
	// refuse what the document cannot express (an unknown key id, a
	// duplicate event id). Any other answer is due only to a valid one.
	if status < 400 || status > 499 {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			return fmt.Errorf("the document rejects this request, but the server answered %d (a 4xx was due):\n%v", status, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: options}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("the answer does not match %s %s in the document:\n%v", route.Method, route.Path, err)
	}
	if err := undocumentedFields(route.Operation, status, header, body); err != nil {
		return err
	}
	if opts.Check != nil {
		return opts.Check(Exchange{Method: r.Method, Path: r.URL.Path, Operation: route.Operation.OperationID,
			Status: status, Header: header, Body: body})
	}
	return nil
}

// checkUnrouted checks the answer to a request for which the document has
// no operation: 405 with the path's methods if the path is documented,
// else 404.
func (s *Spec) checkUnrouted(req *http.Request, status int, header http.Header, body []byte) error {
	template, item := s.matchPath(req.URL.Path)
	if item == nil {
		return s.checkAgainst(req, "NotFound", http.StatusNotFound, status, header, body)
	}
	if err := s.checkAgainst(req, "MethodNotAllowed", http.StatusMethodNotAllowed, status, header, body); err != nil {
		return err
	}
	var want []string
	for m := range item.Operations() {
		want = append(want, m)
	}
	sort.Strings(want)
	got := strings.Split(header.Get("Allow"), ", ")
	sort.Strings(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("Allow: %s, but the document lists %s for %s", header.Get("Allow"), strings.Join(want, ", "), template)
	}
	return nil
}

// checkAgainst checks an answer against the named component response,
// which is due with status want.
func (s *Spec) checkAgainst(req *http.Request, name string, want, status int, header http.Header, body []byte) error {
	if status != want {
		return fmt.Errorf("the document has no operation %s %s, so %d %s was due", req.Method, req.URL.Path, want, name)
	}
	ref := s.Doc.Components.Responses[name]
	if ref == nil {
		return fmt.Errorf("the document has no components.responses.%s", name)
	}
	op := openapi3.NewOperation()
	op.AddResponse(want, ref.Value)
	route := &routers.Route{Spec: s.Doc, Path: req.URL.Path, Method: req.Method, Operation: op, PathItem: &openapi3.PathItem{}}
	options := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, Route: route, Options: options}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: options}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("the answer does not match components.responses.%s:\n%v", name, err)
	}
	return undocumentedFields(op, status, header, body)
}

// matchPath returns the documented path template that path matches, if
// any: a {parameter} matches one non-empty segment.
func (s *Spec) matchPath(path string) (string, *openapi3.PathItem) {
	segs := strings.Split(path, "/")
	for template, item := range s.Doc.Paths.Map() {
		t := strings.Split(template, "/")
		if len(t) != len(segs) {
			continue
		}
		ok := true
		for i := range t {
			if strings.HasPrefix(t[i], "{") && strings.HasSuffix(t[i], "}") {
				ok = segs[i] != ""
			} else {
				ok = t[i] == segs[i]
			}
			if !ok {
				break
			}
		}
		if ok {
			return template, item
		}
	}
	return "", nil
}

// bearerPresent is the document's bearer scheme as a client sees it: an
// Authorization: Bearer header with a token. Whether the token is right
// is the server's to say.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if in.SecurityScheme == nil || in.SecurityScheme.Type != "http" || !strings.EqualFold(in.SecurityScheme.Scheme, "bearer") {
		return fmt.Errorf("contracttest: security scheme %q is not supported", in.SecuritySchemeName)
	}
	scheme, token, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no Authorization: Bearer credentials")
	}
	return nil
}

// undocumentedFields reports the fields of a JSON answer that the
// response's schema does not describe.
func undocumentedFields(op *openapi3.Operation, status int, header http.Header, body []byte) error {
	ref := op.Responses.Status(status)
	if ref == nil || ref.Value == nil {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	content := ref.Value.Content.Get(mt)
	if mt != "application/json" || content == nil || content.Schema == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("the answer is not JSON: %v", err)
	}
	var extra []string
	walk("", v, []*openapi3.Schema{content.Schema.Value}, &extra)
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("the answer has fields the document does not describe: %s", strings.Join(extra, ", "))
	}
	return nil
}

// walk appends to extra the object fields in v that none of schemas (all
// of which describe v) documents. A field is documented by a schema's
// properties or additionalProperties, or those of its allOf, anyOf and
// oneOf members.
func walk(path string, v any, schemas []*openapi3.Schema, extra *[]string) {
	schemas = flatten(schemas)
	switch v := v.(type) {
	case map[string]any:
		for name, val := range v {
			var describe []*openapi3.Schema
			open := false
			for _, s := range schemas {
				if p := s.Properties[name]; p != nil && p.Value != nil {
					describe = append(describe, p.Value)
				} else if a := s.AdditionalProperties; a.Schema != nil && a.Schema.Value != nil {
					describe = append(describe, a.Schema.Value)
				} else if a.Has != nil && *a.Has {
					open = true
				}
			}
			switch {
			case len(describe) > 0:
				walk(path+"."+name, val, describe, extra)
			case !open:
				*extra = append(*extra, strings.TrimPrefix(path+"."+name, "."))
			}
		}
	case []any:
		var items []*openapi3.Schema
		for _, s := range schemas {
			if s.Items != nil && s.Items.Value != nil {
				items = append(items, s.Items.Value)
			}
		}
		if len(items) == 0 {
			return
		}
		for i, e := range v {
			walk(fmt.Sprintf("%s[%d]", path, i), e, items, extra)
		}
	}
}

// flatten returns schemas with their allOf, anyOf and oneOf members.
func flatten(schemas []*openapi3.Schema) []*openapi3.Schema {
	var out []*openapi3.Schema
	var add func(s *openapi3.Schema)
	add = func(s *openapi3.Schema) {
		if s == nil || slices.Contains(out, s) {
			return
		}
		out = append(out, s)
		for _, group := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
			for _, m := range group {
				add(m.Value)
			}
		}
	}
	for _, s := range schemas {
		add(s)
	}
	return out
}

func abbreviate(b []byte) string {
	const max = 600
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
