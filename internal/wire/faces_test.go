package wire

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestFacesServesThePagesAndNoAPI: the Faces function serves the
// console's sign-in page and the portal's link exchange (a bad link is a
// 4xx page, not a missing route), /healthz, and no /v1 route, even with
// the admin token.
func TestFacesServesThePagesAndNoAPI(t *testing.T) {
	app, err := Faces(t.Context(), embedded(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	do := func(method, path, body string) *httptest.ResponseRecorder {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, path, r)
		req.Header.Set("Authorization", "Bearer wire-test-admin-token")
		rec := httptest.NewRecorder()
		app.Handler.ServeHTTP(rec, req)
		return rec
	}
	if rec := do("GET", "/console/signin", ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "<form") {
		t.Errorf("GET /console/signin = %d, want 200 and the sign-in form:\n%s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/console/keys", ""); rec.Code != http.StatusSeeOther {
		t.Errorf("GET /console/keys signed out = %d, want 303 to the sign-in page", rec.Code)
	}
	rec := do("GET", "/portal/exchange?token=not-a-link", "")
	if rec.Code < 400 || rec.Code >= 500 || rec.Code == http.StatusNotFound {
		t.Errorf("GET /portal/exchange with a bad token = %d, want a 4xx page other than 404", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /portal/exchange with a bad token: Content-Type %q, want a page", ct)
	}
	if rec := do("GET", "/healthz", ""); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200", rec.Code)
	}
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/keys", `{"owner": "acct_faces"}`},
		{"GET", "/v1/keys", ""},
		{"GET", "/v1/owners", ""},
		{"POST", "/v1/portal/sessions", `{"owner": "acct_faces"}`},
		{"POST", "/v1/tokens", `{}`},
		{"POST", "/v1/leaks", `{}`},
		{"GET", "/", ""},
	} {
		if rec := do(r.method, r.path, r.body); rec.Code != http.StatusNotFound {
			t.Errorf("%s %s on Faces = %d, want 404", r.method, r.path, rec.Code)
		}
	}
}

// TestPortalLinksOpenOnFaces: with KEYPLANE_PORTAL_URL naming the Faces
// function, as infra/ sets it, the link POST /v1/portal/sessions returns
// on the Keys function points at Faces, and Faces exchanges it for a
// portal session (the two functions share the store, as in production;
// the embedded vault admits one process at a time, so Keys closes before
// Faces opens).
func TestPortalLinksOpenOnFaces(t *testing.T) {
	cfg := embedded(t)
	log := slog.New(slog.DiscardHandler)
	var faces http.Handler // set once Keys has closed, before any request
	facesSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { faces.ServeHTTP(w, r) }))
	t.Cleanup(facesSrv.Close)
	cfg.PortalURL = facesSrv.URL + "/"
	keysApp, err := Keys(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer keysApp.Close()

	post := func(path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer wire-test-admin-token")
		rec := httptest.NewRecorder()
		keysApp.Handler.ServeHTTP(rec, req)
		return rec
	}
	if rec := post("/v1/keys", `{"owner": "acct_faces"}`); rec.Code != http.StatusCreated {
		t.Fatalf("POST /v1/keys on Keys = %d: %s", rec.Code, rec.Body)
	}
	rec := post("/v1/portal/sessions", `{"owner": "acct_faces"}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("POST /v1/portal/sessions on Keys = %d: %s", rec.Code, rec.Body)
	}
	var session struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &session); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(session.URL, facesSrv.URL+"/portal/exchange?token=") {
		t.Fatalf("the session's link %q does not point at Faces (%s)", session.URL, facesSrv.URL)
	}
	if res := keysGet(t, keysApp, "/portal/exchange"); res != http.StatusNotFound {
		t.Errorf("GET /portal/exchange on Keys = %d, want 404: the pages are on Faces", res)
	}
	if err := keysApp.Close(); err != nil {
		t.Fatal(err)
	}
	facesApp, err := Faces(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer facesApp.Close()
	faces = facesApp.Handler

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get(session.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode >= 400 {
		t.Fatalf("GET the link on Faces = %d, want it exchanged", res.StatusCode)
	}
	if len(res.Cookies()) == 0 {
		t.Errorf("GET the link on Faces set no session cookie")
	}
	if loc, err := url.Parse(res.Header.Get("Location")); res.StatusCode/100 == 3 && (err != nil || !strings.HasPrefix(loc.Path, "/portal")) {
		t.Errorf("the exchange redirects to %q, want a portal page", res.Header.Get("Location"))
	}
}

// keysGet is the status of GET path on app's handler.
func keysGet(t *testing.T, app *App, path string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	app.Handler.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code
}
