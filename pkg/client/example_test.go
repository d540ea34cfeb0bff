package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/wire"
	"github.com/keyplane/keyplane/pkg/client"
)

// An API server protects its handler with the middleware. keyplane runs
// in-process here, on the embedded backends; in production the Client
// points at keyplane's URL instead.
func Example() {
	ctx := context.Background()
	const adminToken = "example-admin-token-0123456789"

	// keyplane, as `keyplane serve` would run it.
	dir, err := os.MkdirTemp("", "keyplane-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken = dir, adminToken
	app, err := wire.ServeAll(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	keyplane := httptest.NewServer(app.Server.Handler())
	defer keyplane.Close()

	// One Client per process: it keeps connections to keyplane alive.
	kp, err := client.New(keyplane.URL, adminToken, nil)
	if err != nil {
		log.Fatal(err)
	}

	// A signup flow provisions a key for a customer.
	key, err := kp.CreateKey(ctx, client.CreateKeyRequest{Owner: "acct_123", Scopes: []string{"generate"}}, "signup-acct_123")
	if err != nil {
		log.Fatal(err)
	}

	// The API: a handler that needs the "generate" scope.
	generate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := client.FromContext(r.Context())
		fmt.Fprintf(w, "generated for %s", d.Owner)
	})
	protect := client.Middleware(kp, &client.MiddlewareOptions{
		Scope: func(*http.Request) string { return "generate" },
	})
	api := httptest.NewServer(protect(generate))
	defer api.Close()

	for _, tc := range []struct{ name, key string }{
		{"no key", ""},
		{"a made-up key", "kp_live_notarealkey"},
		{"the customer's key", key.Secret},
	} {
		req, _ := http.NewRequest("POST", api.URL+"/v1/generate", nil)
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil {
			body = []byte(e.Error.Code)
		}
		fmt.Printf("%s: %d %s\n", tc.name, res.StatusCode, body)
	}
	// Output:
	// no key: 401 UNAUTHENTICATED
	// a made-up key: 401 NOT_FOUND
	// the customer's key: 200 generated for acct_123
}
