package httpapi

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/pkg/client"
)

// The server's answers and the Go client's types are separate on purpose:
// pkg/client is a public, stdlib-only API with compatibility promises and
// client-side conveniences (RotatedFrom as a string, Replayed from a
// header, UpdateKeyRequest's own encoding), and the server's types are
// free to follow the wire exactly (null where the API says null). What
// keeps them in agreement is this test, over every field either declares,
// and the HTTP suite, which decodes every real answer into the client's
// type with DisallowUnknownFields (decodesIntoClientType).

// jsonShape returns the JSON fields t encodes, each with the kind of JSON
// value it holds: "a.b" for an object's field, "a[]" for an array's items
// and "a{}" for a map's values. Pointers are their element (null aside),
// named types their underlying kind.
func jsonShape(t reflect.Type) map[string]string {
	out := map[string]string{}
	var visit func(path string, t reflect.Type)
	visit = func(path string, t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == reflect.TypeFor[time.Time]() {
			out[path] = "time"
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			out[path] = "object"
			fields(t, func(name string, f reflect.Type) { visit(path+"."+name, f) })
		case reflect.Map:
			out[path] = "object"
			visit(path+"{}", t.Elem())
		case reflect.Slice, reflect.Array:
			out[path] = "array"
			visit(path+"[]", t.Elem())
		case reflect.String:
			out[path] = "string"
		case reflect.Bool:
			out[path] = "boolean"
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			out[path] = "integer"
		case reflect.Float32, reflect.Float64:
			out[path] = "number"
		default:
			out[path] = t.Kind().String()
		}
	}
	visit("", t)
	delete(out, "")
	return out // paths start with "." for the top-level fields
}

// fields calls f with the JSON name and type of each field t encodes,
// flattening embedded structs as encoding/json does.
func fields(t reflect.Type, f func(name string, t reflect.Type)) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" || !sf.IsExported() && !sf.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
			fields(sf.Type, f)
			continue
		}
		if name == "" {
			name = sf.Name
		}
		f(name, sf.Type)
	}
}

func TestClientTypesMatchTheServersAnswers(t *testing.T) {
	for _, tc := range []struct {
		name           string
		server, client reflect.Type
		// serverOnly are fields the server's type has that the client's
		// lacks on purpose.
		serverOnly []string
	}{
		{"key with secret", reflect.TypeFor[keyResource](), reflect.TypeFor[client.KeyWithSecret](), nil},
		// The key resource carries the secret only on creation and rotation.
		{"key", reflect.TypeFor[keyResource](), reflect.TypeFor[client.Key](), []string{".secret"}},
		{"key list", reflect.TypeFor[keyList](), reflect.TypeFor[client.KeyList](), []string{".keys[].secret"}},
		{"audit list", reflect.TypeFor[auditList](), reflect.TypeFor[client.AuditList](), nil},
		{"decision", reflect.TypeFor[decisionResponse](), reflect.TypeFor[client.Decision](), nil},
		{"limit state", reflect.TypeFor[limitState](), reflect.TypeFor[client.LimitState](), nil},
		{"key usage", reflect.TypeFor[keyUsageResource](), reflect.TypeFor[client.Usage](), nil},
		{"restrictions", reflect.TypeFor[restrictionsResource](), reflect.TypeFor[client.Restrictions](), nil},
		{"token with secret", reflect.TypeFor[tokenResource](), reflect.TypeFor[client.TokenWithSecret](), nil},
		{"token", reflect.TypeFor[tokenResource](), reflect.TypeFor[client.Token](), []string{".token"}},
		{"token list", reflect.TypeFor[tokenList](), reflect.TypeFor[client.TokenList](), []string{".tokens[].token"}},
		{"error detail", reflect.TypeFor[fieldError](), reflect.TypeFor[client.ErrorDetail](), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, cl := jsonShape(tc.server), jsonShape(tc.client)
			for path, kind := range server {
				switch ck, ok := cl[path]; {
				case !ok && slices.Contains(tc.serverOnly, path):
				case !ok:
					t.Errorf("the server sends %s (a JSON %s), which the client's %v drops", path, kind, tc.client)
				case ck != kind:
					t.Errorf("the server sends %s as a JSON %s, the client's %v expects a %s", path, kind, tc.client, ck)
				}
			}
			for path := range cl {
				if _, ok := server[path]; !ok {
					t.Errorf("the client's %v has %s, which the server's %v never sends", tc.client, path, tc.server)
				}
			}
		})
	}
}
