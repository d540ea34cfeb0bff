package sweep

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The Sweep function, built from the environment as in production (here
// on the embedded backends), serves POST /v1/sweep and nothing of the
// other functions.
func TestSweepFunctionServesOnlyTheSweep(t *testing.T) {
	t.Setenv("KEYPLANE_STORE", "sqlite")
	t.Setenv("KEYPLANE_SECRETS", "file")
	t.Setenv("KEYPLANE_QUEUE", "embedded")
	t.Setenv("KEYPLANE_DATA", t.TempDir())
	t.Setenv("KEYPLANE_ADMIN_TOKEN", "sweep-function-token-123")
	t.Setenv("KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS", "scheduler@proj.iam.gserviceaccount.com")
	srv := httptest.NewServer(http.HandlerFunc(Handle))
	defer srv.Close()
	do := func(method, path, token string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := do("POST", "/v1/sweep", "sweep-function-token-123"); res.StatusCode != 200 {
		t.Errorf("POST /v1/sweep with the admin token = %d, want 200", res.StatusCode)
	}
	if res := do("POST", "/v1/sweep", "not-a-token"); res.StatusCode != 401 {
		t.Errorf("POST /v1/sweep with a wrong token = %d, want 401", res.StatusCode)
	}
	if res := do("POST", "/v1/keys", "sweep-function-token-123"); res.StatusCode != 404 {
		t.Errorf("POST /v1/keys on the Sweep function = %d, want 404", res.StatusCode)
	}
}
