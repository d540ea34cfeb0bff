// Command keyplane runs keyplane on one machine and administers it.
//
//	keyplane serve [--addr 127.0.0.1:8080] [--data ./.keyplane]
//	keyplane admin-token [--data ./.keyplane]
//	keyplane report-usage --key-id key_… [--requests 1] …
//	keyplane receive-webhooks --secret-file FILE [--addr 127.0.0.1:9000] [--fail N]
//
// serve runs every Cloud Function's routes in one process on one port, on
// the embedded backends by default (SQLite, an encrypted file vault); each
// backend can be switched to its Google Cloud adapter through the
// environment (see internal/config). admin-token prints the admin token that
// serve generated and stored in the embedded vault.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "keyplane:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  keyplane serve [--addr 127.0.0.1:8080] [--data ./.keyplane]
  keyplane admin-token [--data ./.keyplane]
  keyplane report-usage --key-id key_… [--requests 1] [--units 0] [--bytes 0] [--id evt_…] [--url http://127.0.0.1:8080]
      signs a usage event with $KEYPLANE_WEBHOOK_SECRET and posts it to the usage webhook
  keyplane receive-webhooks --secret-file FILE [--addr 127.0.0.1:9000] [--fail N]
      an owner's webhook endpoint for local trials: checks signatures, prints notifications

Environment: KEYPLANE_ADMIN_TOKEN, KEYPLANE_PLANS, KEYPLANE_STORE (sqlite|firestore),
KEYPLANE_SECRETS (file|secretmanager), GOOGLE_CLOUD_PROJECT, KEYPLANE_KEY_PREFIX,
KEYPLANE_VAULT_KEY, KEYPLANE_WEBHOOK_ALLOW_PRIVATE, KEYPLANE_SWEEP_INTERVAL, KEYPLANE_CLOCK_OFFSET,
KEYPLANE_LOG_LEVEL; see docs/operations.md.`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "report-usage":
		return reportUsage(ctx, args[1:], getenv, stdout, stderr)
	case "receive-webhooks":
		return receiveWebhooks(ctx, args[1:], getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	cfg, err := config.FromEnv(config.Embedded(), getenv)
	if err != nil {
		return err
	}
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "directory of the embedded backends' data (env KEYPLANE_DATA)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	// Log lines written while requests are in flight are batched; Close
	// writes what is held once serve has shut down.
	logs := logging.NewBuffer(stderr, nil)
	defer logs.Close()
	log := logging.New(logs, cfg.LogLevel)
	switch args[0] {
	case "serve":
		return serve(ctx, cfg, *addr, log, stdout)
	case "admin-token":
		app, err := wire.ServeAll(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer app.Close()
		tok, err := wire.AdminToken(ctx, app.Vault)
		if err != nil {
			return fmt.Errorf("no admin token in the vault (KEYPLANE_ADMIN_TOKEN is used instead?): %w", err)
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func serve(ctx context.Context, cfg config.Config, addr string, log *slog.Logger, stdout io.Writer) error {
	if cfg.WebhookAllowPrivate {
		log.Warn("KEYPLANE_WEBHOOK_ALLOW_PRIVATE is on: owner webhooks may use http:// and private, loopback and link-local addresses; never run a deployment reachable by others like this (SSRF)")
	}
	if cfg.ClockOffset != 0 {
		log.Warn("KEYPLANE_CLOCK_OFFSET is set: keyplane's clock reads "+cfg.ClockOffset.String()+" from now (for local trials only)",
			"now", time.Now().UTC().Add(cfg.ClockOffset).Format(time.RFC3339))
	}
	app, err := wire.ServeAll(ctx, cfg, log)
	if err != nil {
		return err
	}
	// Close ends the background work and waits for it (the last client-IP
	// flush, a sweep or notification in progress) before it closes the
	// queue and the stores. It runs after the HTTP server has shut down, so
	// no request is left to record a client IP after the last flush.
	defer app.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := wire.HTTPServer(app.Handler)
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "keyplane listening on %s (store=%s, secrets=%s, data=%s)\n", base, cfg.Store, cfg.Secrets, cfg.DataDir)
	token := "$KEYPLANE_ADMIN_TOKEN"
	if app.GeneratedAdminToken != "" {
		token = app.GeneratedAdminToken
		fmt.Fprintf(stdout, "generated an admin token, shown once (with serve stopped, `keyplane admin-token` prints it again):\n  export KEYPLANE_ADMIN_TOKEN=%s\n", token)
	}
	if app.GeneratedWebhookSecret != "" {
		fmt.Fprintf(stdout, "generated the usage webhook's signing secret, shown once:\n  export KEYPLANE_WEBHOOK_SECRET=%s\n", app.GeneratedWebhookSecret)
	}
	fmt.Fprintf(stdout, "try:\n  curl -s -X POST %s/v1/keys -H 'Authorization: Bearer %s' -d '{\"owner\": \"acct_123\"}'\n", base, token)

	// The background work outlives the signal until Close: the HTTP server
	// drains first.
	if err := app.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "shutting down")
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
