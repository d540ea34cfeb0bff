package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/tokens"
)

// mintToken mints a caller token through the API with the admin token.
func (a *api) mintToken(body string) (id, secret string) {
	a.t.Helper()
	r := a.do("POST", "/v1/tokens", body)
	if r.Status != 201 {
		a.t.Fatalf("POST /v1/tokens %s = %d %s", body, r.Status, r.Raw)
	}
	return r.Body["id"].(string), r.Body["token"].(string)
}

// as calls the API with bearer secret.
func (a *api) as(secret, method, path, body string) response {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, a.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+secret)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	json.Unmarshal(raw, &out.Body)
	return out
}

// requestFor is a request rt accepts: its path with id and owner filled
// in, and a body for the routes that read one.
func requestFor(rt httpapi.Route, keyID, tokenID, owner, secret string) (path, body string) {
	id := keyID
	if strings.HasPrefix(rt.Path, "/v1/tokens/") {
		id = tokenID
	}
	path = strings.NewReplacer("{id}", id, "{owner}", owner).Replace(rt.Path)
	switch rt.Method + " " + rt.Path {
	case "POST /v1/keys":
		body = `{"owner": "` + owner + `"}`
	case "POST /v1/verify":
		body = `{"key": "` + secret + `"}`
	case "POST /v1/tokens":
		body = `{"name": "child", "permissions": ["tokens:manage"]}`
	case "PUT /v1/owners/{owner}/webhook":
		body = `{"url": "http://127.0.0.1:9/hook", "events": ["key.disabled"]}`
	case "PATCH /v1/keys/{id}":
		body = `{"name": "renamed"}`
	case "POST /v1/portal/sessions":
		body = `{"owner": "` + owner + `", "return_url": "https://platform.example/account"}`
	default:
		if rt.Method != "GET" {
			body = `{}`
		}
	}
	return path, body
}

// TestEveryRouteNeedsItsPermissionAndOnlyIt is the route × permission
// matrix: for every authenticated route of the routing table and every
// permission, a token holding just that permission gets past
// authorization if and only if it is the route's, and is otherwise
// refused with a 403 that names the route's permission. A route added
// without a permission fails here.
func TestEveryRouteNeedsItsPermissionAndOnlyIt(t *testing.T) {
	a := newAPI(t)
	secrets := map[string]string{}
	for _, name := range tokens.Names() {
		_, secrets[name] = a.mintToken(`{"name": "only ` + name + `", "permissions": ["` + name + `"]}`)
	}
	for _, rt := range (&httpapi.Server{}).Routes() {
		name := rt.Method + " " + rt.Path
		if !rt.Auth {
			if rt.Perm != tokens.None {
				t.Errorf("%s needs no credential but names permission %s", name, rt.Perm)
			}
			continue
		}
		if rt.Perm == tokens.None {
			t.Errorf("%s requires a credential but names no permission", name)
			continue
		}
		for _, perm := range tokens.Names() {
			keyID, keySecret := a.create(`{"owner": "o"}`)
			victim, _ := a.mintToken(`{"name": "victim", "permissions": ["verify"]}`)
			path, body := requestFor(rt, keyID, victim, "o", keySecret)
			r := a.as(secrets[perm], rt.Method, path, body)
			if perm == rt.Perm.String() {
				if r.Status == 401 || r.Status == 403 {
					t.Errorf("%s with a %s token = %d %s, want it authorized", name, perm, r.Status, r.Raw)
				}
				continue
			}
			if want := "lacks the " + rt.Perm.String() + " permission"; r.Status != 403 || !strings.Contains(errMessage(r), want) {
				t.Errorf("%s with a %s token = %d %s, want 403 saying it %s", name, perm, r.Status, r.Raw, want)
			}
		}
	}
}

// TestOwnerScopedTokenSeesOnlyItsOwner runs every authenticated route with
// a token holding every permission but scoped to owner "mine": another
// owner's key or owner is a 404 (as if it did not exist), a route that
// acts across owners is a 403, and its own resources are served.
func TestOwnerScopedTokenSeesOnlyItsOwner(t *testing.T) {
	a := newAPI(t)
	all := `["` + strings.Join(tokens.Names(), `", "`) + `"]`
	_, scoped := a.mintToken(`{"name": "mine only", "permissions": ` + all + `, "owner": "mine"}`)
	for _, rt := range (&httpapi.Server{}).Routes() {
		if !rt.Auth {
			continue
		}
		name := rt.Method + " " + rt.Path
		scope := httpapi.OwnerScopeOf(rt)
		theirKey, theirSecret := a.create(`{"owner": "theirs"}`)
		theirToken, _ := a.mintToken(`{"name": "theirs", "permissions": ["verify"], "owner": "theirs"}`)
		path, body := requestFor(rt, theirKey, theirToken, "theirs", theirSecret)
		r := a.as(scoped, rt.Method, path, body)
		switch {
		case scope == "none":
			if r.Status != 403 || !strings.Contains(errMessage(r), "acts across owners") {
				t.Errorf("%s with a scoped token = %d %s, want 403: it acts across owners", name, r.Status, r.Raw)
			}
			continue
		case name == "POST /v1/keys":
			if r.Status != 403 || !strings.Contains(errMessage(r), "scoped to owner mine") {
				t.Errorf("%s for another owner with a scoped token = %d %s, want 403", name, r.Status, r.Raw)
			}
		case name == "POST /v1/verify":
			if r.Status != 200 || r.Body["code"] != "NOT_FOUND" || strings.Contains(r.Raw, theirKey) {
				t.Errorf("%s of another owner's key with a scoped token = %d %s, want NOT_FOUND without the key", name, r.Status, r.Raw)
			}
		case name == "GET /v1/owners":
			if r.Status != 200 || strings.Contains(r.Raw, `"theirs"`) {
				t.Errorf("%s with a scoped token = %d %s, want no other owner", name, r.Status, r.Raw)
			}
		case name == "POST /v1/tokens":
			if r.Status != 201 || r.Body["owner"] != "mine" {
				t.Errorf("%s with a scoped token = %d %s, want a token scoped to mine", name, r.Status, r.Raw)
			}
		case name == "GET /v1/audit":
			path += "?key_id=" + theirKey
			fallthrough
		default:
			if rt.Method == "GET" && path == rt.Path { // a list: name the other owner
				path += "?owner=theirs"
			}
			r = a.as(scoped, rt.Method, path, body)
			if r.Status != 404 {
				t.Errorf("%s naming another owner's resource with a scoped token = %d %s, want 404", name, r.Status, r.Raw)
			}
		}
		// Its own owner's resources are served.
		myKey, mySecret := a.create(`{"owner": "mine"}`)
		myToken, _ := a.mintToken(`{"name": "mine", "permissions": ["verify"], "owner": "mine"}`)
		path, body = requestFor(rt, myKey, myToken, "mine", mySecret)
		if name == "GET /v1/audit" {
			path += "?key_id=" + myKey
		}
		if r := a.as(scoped, rt.Method, path, body); r.Status == 401 || r.Status == 403 || r.Status == 404 {
			t.Errorf("%s on its own owner's resource with a scoped token = %d %s, want it served", name, r.Status, r.Raw)
		}
	}
}

func TestTokenIsTheAuditActorAndRevocationRefusesIt(t *testing.T) {
	a := newAPI(t)
	id, secret := a.mintToken(`{"name": "signup flow", "permissions": ["keys:create", "keys:read"]}`)
	r := a.as(secret, "POST", "/v1/keys", `{"owner": "acct_9"}`)
	if r.Status != 201 {
		t.Fatalf("create with the token = %d %s", r.Status, r.Raw)
	}
	audit := a.do("GET", "/v1/audit?key_id="+r.Body["id"].(string), "")
	if !strings.Contains(audit.Raw, `"actor":"`+id+`"`) {
		t.Errorf("audit of a key the token created = %s, want actor %s", audit.Raw, id)
	}
	if r := a.as(secret, "GET", "/v1/keys/"+r.Body["id"].(string)+"/secret", ""); r.Status != 403 || !strings.Contains(r.Raw, "keys:reveal") {
		t.Errorf("reveal with a provisioner token = %d %s, want 403 naming keys:reveal", r.Status, r.Raw)
	}
	list := a.do("GET", "/v1/tokens", "")
	if list.Status != 200 || !strings.Contains(list.Raw, id) || strings.Contains(list.Raw, secret) || strings.Contains(list.Raw, `"token":`) {
		t.Errorf("GET /v1/tokens = %d %s, want the token without its secret", list.Status, list.Raw)
	}
	if r := a.do("POST", "/v1/tokens/"+id+"/revoke", ""); r.Status != 200 || r.Body["revoked_at"] == nil {
		t.Fatalf("revoke = %d %s", r.Status, r.Raw)
	}
	if r := a.as(secret, "GET", "/v1/keys", ""); r.Status != 401 || !strings.Contains(r.Raw, "revoked") {
		t.Errorf("a revoked token on the instance that revoked it = %d %s, want 401 at once", r.Status, r.Raw)
	}
	if !strings.Contains(a.do("GET", "/v1/audit", "").Raw, `"action":"token.revoke"`) {
		t.Errorf("no token.revoke audit entry")
	}
}

func TestTokenCannotMintMoreThanItHolds(t *testing.T) {
	a := newAPI(t)
	_, mgr := a.mintToken(`{"name": "minter", "permissions": ["tokens:manage", "keys:create"]}`)
	r := a.as(mgr, "POST", "/v1/tokens", `{"name": "escalate", "permissions": ["keys:create", "keys:reveal"]}`)
	if r.Status != 403 || !strings.Contains(r.Raw, "keys:reveal") {
		t.Errorf("minting a permission the minter lacks = %d %s, want 403 naming keys:reveal", r.Status, r.Raw)
	}
	r = a.as(mgr, "POST", "/v1/tokens", `{"name": "bad", "permissions": ["keys:all"]}`)
	if r.Status != 400 || !strings.Contains(r.Raw, "keys:create") {
		t.Errorf("an unknown permission = %d %s, want 400 listing the valid ones", r.Status, r.Raw)
	}
}

func TestOwnerScopedTokenReadsOnlyItsOwnersSeries(t *testing.T) {
	a := newAPI(t)
	a.create(`{"owner": "mine"}`)
	a.create(`{"owner": "theirs"}`)
	_, scoped := a.mintToken(`{"name": "mine", "permissions": ["usage:read"], "owner": "mine"}`)
	if r := a.as(scoped, "GET", "/v1/usage?owner=theirs&bucket=day", ""); r.Status != 404 {
		t.Errorf("another owner's series with a scoped token = %d %s, want 404", r.Status, r.Raw)
	}
	if r := a.as(scoped, "GET", "/v1/usage?owner=mine&bucket=day", ""); r.Status != 200 {
		t.Errorf("its own owner's series with a scoped token = %d %s, want 200", r.Status, r.Raw)
	}
}
