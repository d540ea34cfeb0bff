package client_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/wire"
	"github.com/keyplane/keyplane/pkg/client"
)

// An API meters what each request costs: the handler records its units,
// and the middleware reports one usage event per request through a
// batching reporter. keyplane runs in-process here, with the consumer that
// counts usage, as `keyplane serve` runs it.
func ExampleReportUsage() {
	ctx := context.Background()
	const adminToken = "example-admin-token-0123456789"
	secret := make([]byte, 32)
	rand.Read(secret)
	webhookSecret := "whsec_" + base64.StdEncoding.EncodeToString(secret)

	// keyplane, as `keyplane serve` would run it.
	dir, err := os.MkdirTemp("", "keyplane-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = dir, adminToken, webhookSecret
	quiet := slog.New(slog.DiscardHandler)
	app, err := wire.ServeAll(ctx, cfg, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	bg, stop := context.WithCancel(ctx)
	defer stop()
	if err := app.Start(bg); err != nil {
		log.Fatal(err)
	}
	keyplane := httptest.NewServer(app.Server.Handler())
	defer keyplane.Close()

	kp, err := client.New(keyplane.URL, adminToken, nil)
	if err != nil {
		log.Fatal(err)
	}
	key, err := kp.CreateKey(ctx, client.CreateKeyRequest{Owner: "acct_123"}, "")
	if err != nil {
		log.Fatal(err)
	}

	// One reporter per process; Close sends what is still queued.
	reporter, err := client.NewUsageReporter(keyplane.URL+"/v1/usage", webhookSecret, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer reporter.Close(ctx)

	// The handler records the units the request used.
	generate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client.SetUnits(r.Context(), 350) // e.g. the tokens generated
		io.WriteString(w, "generated")
	})
	// UsageMeter goes outside the middleware, so that the units the
	// handler records reach ReportUsage.
	protect := client.Middleware(kp, &client.MiddlewareOptions{
		OnResponse: client.ReportUsage(reporter, nil),
	})
	api := httptest.NewServer(client.UsageMeter(protect(generate)))
	defer api.Close()

	for range 3 {
		req, _ := http.NewRequest("POST", api.URL+"/v1/generate", nil)
		req.Header.Set("X-Api-Key", key.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}

	// Send now rather than within FlushInterval, then wait for keyplane's
	// consumer to count the events.
	if err := reporter.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	var u *client.Usage
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if u, err = kp.KeyUsage(ctx, key.ID, "day", time.Time{}); err != nil {
			log.Fatal(err)
		}
		if u.Requests == 3 {
			break
		}
	}
	fmt.Printf("%d requests, %d units, %d bytes\n", u.Requests, u.Units, u.Bytes)
	// Output:
	// 3 requests, 1050 units, 27 bytes
}
