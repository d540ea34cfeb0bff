package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

// TestCreatePortalSession holds CreatePortalSession to the contract of
// POST /v1/portal/sessions: the request's JSON fields, the admin token,
// and the decoded answer; a refusal is an APIError with the server's
// message.
func TestCreatePortalSession(t *testing.T) {
	expires := time.Date(2026, 12, 7, 12, 15, 0, 0, time.UTC)
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/portal/sessions" || r.Header.Get("Authorization") != "Bearer "+adminToken {
			t.Errorf("request %s %s, Authorization %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		got = nil
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decoding the body: %v", err)
		}
		if got["owner"] == "acct_refused" {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":{"code":"PERMISSION_DENIED","message":"this token lacks portal:sessions"}}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"url": "https://portal.example.com/s/ps_123#t=secret", "expires_at": expires})
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	s, err := c.CreatePortalSession(ctx, PortalSessionRequest{Owner: "acct_1", ReturnURL: "https://app.example.com/settings", Permissions: []string{PermKeysRead, PermKeysCreate}})
	if err != nil {
		t.Fatalf("CreatePortalSession: %v", err)
	}
	if s.URL != "https://portal.example.com/s/ps_123#t=secret" || !s.ExpiresAt.Equal(expires) {
		t.Errorf("CreatePortalSession = %+v", s)
	}
	want := map[string]any{"owner": "acct_1", "return_url": "https://app.example.com/settings", "permissions": []any{"keys:read", "keys:create"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sent %v, want %v", got, want)
	}

	// Optional fields are left out, for the server's defaults.
	if _, err := c.CreatePortalSession(ctx, PortalSessionRequest{Owner: "acct_2"}); err != nil {
		t.Fatalf("CreatePortalSession: %v", err)
	}
	if want := map[string]any{"owner": "acct_2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("sent %v, want %v", got, want)
	}

	_, err = c.CreatePortalSession(ctx, PortalSessionRequest{Owner: "acct_refused"})
	if e := apiErr(t, err); e.Status != 403 || e.Code != "PERMISSION_DENIED" || e.Message != "this token lacks portal:sessions" {
		t.Errorf("refused: %+v", e)
	}
	if _, err := c.CreatePortalSession(ctx, PortalSessionRequest{}); err == nil {
		t.Error("CreatePortalSession without an owner: no error")
	}
}
