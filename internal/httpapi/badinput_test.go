package httpapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/httpapi"
)

// badInput is one malformed request and the answer it must get.
type badInput struct {
	method, path, body string
	status             int
	code               string
	message            string // a substring of error.message
}

// badInputs are the classes of malformed request an adversarial run over
// every route found answered with a 5xx, a redirect or a success. id and
// owner name an existing key and owner.
func badInputs(id string) []badInput {
	var cases []badInput
	// at outside the range RFC 3339 windows can be written in.
	for _, at := range []string{"0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"} {
		cases = append(cases,
			badInput{"GET", "/v1/keys/" + id + "/usage?window=month&at=" + at, "", 400, "INVALID_ARGUMENT", "at must be from 1970-01-01T00:00:00Z"},
			badInput{"GET", "/v1/usage?at=" + at, "", 400, "INVALID_ARGUMENT", "at must be from 1970-01-01T00:00:00Z"},
		)
	}
	// Empty and dot segments: net/http's mux would redirect to the
	// cleaned path.
	for _, rt := range []struct{ method, path string }{
		{"POST", "/v1/keys//disable"}, {"GET", "/v1/owners/../webhook"}, {"PUT", "/v1/owners/./webhook"},
		{"GET", "/v1/keys/./" + id}, {"GET", "/v1/keys/" + id + "/"}, {"GET", "//v1/keys"},
		{"GET", "/v1/keys/" + id + "/../secret"}, {"GET", "/v1/keys/../keys/" + id + "/secret"},
	} {
		cases = append(cases, badInput{rt.method, rt.path, "", 404, "NOT_FOUND", "paths have no empty, . or .. segments"})
	}
	// Undecodable query strings are refused, not ignored.
	for _, p := range []string{"/v1/keys?owner=%zz", "/v1/keys?page_size=10&owner=%", "/v1/audit?key_id=%G1", "/v1/usage?owner=a;b", "/v1/keys/" + id + "/usage?window=%zz", "/v1/usage/dead-letters?page_token=%zz", "/v1/owners/acct_1/webhook?x=%zz"} {
		cases = append(cases, badInput{"GET", p, "", 400, "INVALID_ARGUMENT", "the query string is malformed"})
	}
	cases = append(cases, badInput{"POST", "/v1/keys/" + id + "/disable?x=%zz", "", 400, "INVALID_ARGUMENT", "the query string is malformed"})
	// A null body is not an object.
	for _, rt := range []struct{ method, path string }{
		{"POST", "/v1/keys"}, {"PATCH", "/v1/keys/" + id}, {"POST", "/v1/keys/" + id + "/disable"},
		{"POST", "/v1/keys/" + id + "/enable"}, {"POST", "/v1/keys/" + id + "/revoke"},
		{"POST", "/v1/keys/" + id + "/rotate"}, {"PUT", "/v1/owners/acct_1/webhook"},
	} {
		for _, body := range []string{"null", " null\n"} {
			cases = append(cases, badInput{rt.method, rt.path, body, 400, "INVALID_ARGUMENT", "must be a JSON object, not null"})
		}
	}
	return cases
}

// TestMalformedRequestsGetTheirSpecific4xx runs every class of malformed
// request over the routes: each gets its own 4xx with a JSON error saying
// what to fix, never a 5xx, a redirect or a success (the exchanges are
// also checked against docs/openapi.yaml).
func TestMalformedRequestsGetTheirSpecific4xx(t *testing.T) {
	a := newAPI(t)
	id, _ := a.create(`{"owner": "acct_1"}`)
	for _, tc := range badInputs(id) {
		r := a.do(tc.method, tc.path, tc.body)
		if r.Status != tc.status || errCode(r) != tc.code || !strings.Contains(errMessage(r), tc.message) {
			t.Errorf("%s %s %q = %d %s; want %d %s with a message containing %q", tc.method, tc.path, tc.body, r.Status, r.Raw, tc.status, tc.code, tc.message)
		}
	}
	// Nothing was changed by a refused request.
	if r := a.do("GET", "/v1/keys/"+id, ""); r.Body["status"] != "active" {
		t.Errorf("after the malformed requests the key is %v, want active", r.Body["status"])
	}
}

// TestForbiddenDecisionSaysWhy: a key restricted to allowed_ips, verified
// without the client's IP, is refused with a message saying the IP is
// missing, not a bare FORBIDDEN.
func TestForbiddenDecisionSaysWhy(t *testing.T) {
	a := newAPI(t)
	_, secret := a.create(`{"owner": "acct_1", "restrictions": {"allowed_ips": ["203.0.113.0/24"]}}`)
	for _, tc := range []struct{ body, want string }{
		{`{"key": "` + secret + `"}`, "the request carries no ip"},
		{`{"key": "` + secret + `", "ip": "198.51.100.7"}`, "ip is not an address in the key's allowed_ips"},
	} {
		r := a.do("POST", "/v1/verify", tc.body)
		if r.Status != 200 || r.Body["code"] != "FORBIDDEN" || !strings.Contains(fmt.Sprint(r.Body["message"]), tc.want) {
			t.Errorf("verify %s = %d %s; want FORBIDDEN with a message containing %q", tc.body, r.Status, r.Raw, tc.want)
		}
	}
	if r := a.do("POST", "/v1/verify", `{"key": "`+secret+`", "ip": "203.0.113.9"}`); r.Body["code"] != "VALID" || r.Body["message"] != nil {
		t.Errorf("verify from an allowed IP = %s; want VALID without a message", r.Raw)
	}
}

// TestOversizedHeadersGet431WithTheLimit: headers over MaxHeaderBytes are
// refused by the handler itself, with the limit stated, whatever server
// runs it (the Functions Framework's allows 1 MB).
func TestOversizedHeadersGet431WithTheLimit(t *testing.T) {
	a := newAPI(t)
	for _, path := range []string{"/v1/keys", "/healthz", "/v1/verify"} {
		method := "GET"
		if path == "/v1/verify" {
			method = "POST"
		}
		r := a.do(method, path, "", "X-Padding", strings.Repeat("a", httpapi.MaxHeaderBytes))
		if r.Status != 431 || errCode(r) != "HEADERS_TOO_LARGE" || !strings.Contains(errMessage(r), "the limit is 32768") {
			t.Errorf("%s %s with a %d-byte header = %d %s; want 431 HEADERS_TOO_LARGE stating the limit", method, path, httpapi.MaxHeaderBytes, r.Status, r.Raw)
		}
	}
	if r := a.do("GET", "/v1/keys", "", "X-Padding", strings.Repeat("a", httpapi.MaxHeaderBytes-1024)); r.Status != 200 {
		t.Errorf("GET /v1/keys with headers just under the limit = %d %s, want 200", r.Status, r.Raw)
	}
}
