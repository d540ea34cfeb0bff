package faces

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The Faces function, built from the environment as in production (here
// on the embedded backends), serves the console's and the portal's pages
// and no route of the API, whatever token comes with the request.
func TestFacesFunctionServesOnlyThePages(t *testing.T) {
	t.Setenv("KEYPLANE_STORE", "sqlite")
	t.Setenv("KEYPLANE_SECRETS", "file")
	t.Setenv("KEYPLANE_QUEUE", "embedded")
	t.Setenv("KEYPLANE_DATA", t.TempDir())
	t.Setenv("KEYPLANE_ADMIN_TOKEN", "faces-function-token-123")
	srv := httptest.NewServer(http.HandlerFunc(Handle))
	defer srv.Close()
	do := func(method, path string) (int, string) {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(`{"owner": "acct_faces"}`)
		}
		req, _ := http.NewRequest(method, srv.URL+path, body)
		req.Header.Set("Authorization", "Bearer faces-function-token-123")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		page, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(page)
	}
	if code, body := do("GET", "/console/signin"); code != 200 || !strings.Contains(body, "<form") {
		t.Errorf("GET /console/signin = %d, want 200 and the sign-in form:\n%s", code, body)
	}
	if code, _ := do("GET", "/portal/exchange?token=not-a-link"); code < 400 || code >= 500 || code == 404 {
		t.Errorf("GET /portal/exchange with a bad token = %d, want a 4xx other than 404", code)
	}
	if code, _ := do("GET", "/healthz"); code != 200 {
		t.Errorf("GET /healthz = %d, want 200", code)
	}
	for _, r := range [][2]string{{"POST", "/v1/keys"}, {"GET", "/v1/owners"}, {"POST", "/v1/portal/sessions"}, {"POST", "/v1/verify"}} {
		if code, _ := do(r[0], r[1]); code != 404 {
			t.Errorf("%s %s on the Faces function = %d, want 404", r[0], r[1], code)
		}
	}
}
