package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/wire"
)

// FuzzHandler sends arbitrary method, path, query and body to the whole
// API on the embedded backends, with the admin token: whatever the
// request, the answer is never a 5xx or a redirect, and every error is a
// JSON {"error": {"code", "message"}}. The seeds are the classes of
// malformed input an adversarial run found (badInputs) and a valid
// request of every route; they run as a normal test.
func FuzzHandler(f *testing.F) {
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = f.TempDir(), token, webhookSecret
	app, err := wire.ServeAll(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { app.Close() })
	h := app.Server.Handler()

	rec := fuzzServe(h, "POST", "/v1/keys", `{"owner": "acct_1"}`)
	var created struct{ ID string }
	if err := json.Unmarshal(rec.Body.Bytes(), &created); rec.Code != 201 || err != nil {
		f.Fatalf("creating the seed key = %d %s", rec.Code, rec.Body)
	}
	id := created.ID
	for _, tc := range badInputs(id) {
		path, query, _ := strings.Cut(tc.path, "?")
		f.Add(tc.method, path, query, []byte(tc.body))
	}
	for _, rt := range app.Server.Routes() {
		path := strings.NewReplacer("{id}", id, "{owner}", "acct_1").Replace(rt.Path)
		f.Add(rt.Method, path, "", []byte(nil))
		f.Add(rt.Method, path, "page_size=1&owner=acct_1&window=day&at=2030-01-02T15:04:05Z", []byte(`{}`))
	}
	for _, body := range []string{`{"name": 1}`, `{"limits": {"requests_per_minute": -1}}`, `[]`, `"x"`, `{"expires_at": "0000-01-01T00:00:00Z"}`, `{"owner": "` + strings.Repeat("a", 300) + `"}`} {
		f.Add("PATCH", "/v1/keys/"+id, "", []byte(body))
		f.Add("POST", "/v1/keys", "", []byte(body))
	}
	f.Add("POST", "/v1/verify", "", []byte(`{"key": "kp_test_`+strings.Repeat("x", 40)+`", "ip": "::ffff:1.2.3.4", "units": 9223372036854775807}`))
	f.Add("GET", "/v1/keys/"+id+"/usage", "at=9999-12-31T23:59:59Z", []byte(nil))
	f.Add("GET", "/v1/usage", "format=csv&at=1970-01-01T00:00:00Z&window=month", []byte(nil))
	f.Add("GET", "/v1/usage", "owner=acct_1&bucket=minute&group_by=feature&start=1970-01-01T00:00:00Z&end=1970-01-02T00:00:00Z", []byte(nil))

	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		if strings.HasPrefix(path, "/v1/owners/") && method == "PUT" {
			// A webhook URL is checked by a DNS lookup: not in a fuzz loop.
			return
		}
		target := "http://keyplane.test" + path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(method, target, bytes.NewReader(body))
		if err != nil || req.URL.Host != "keyplane.test" || req.URL.Path != path {
			return // not a request a client can send
		}
		req.RequestURI = req.URL.RequestURI()
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code/100 == 3 || rec.Code < 200 {
			t.Fatalf("%s %s?%s %q = %d %s", method, path, query, body, rec.Code, rec.Body)
		}
		if rec.Code < 400 {
			return
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" ||
			!strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("%s %s?%s %q = %d %s: not a JSON error", method, path, query, body, rec.Code, rec.Body)
		}
	})
}

func fuzzServe(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
