// Command keyplane runs keyplane on one machine and administers it.
//
//	keyplane serve [--addr 127.0.0.1:8080] [--data ./.keyplane]
//	keyplane admin-token [--data ./.keyplane]
//	keyplane report-usage --key-id key_… [--requests 1] …
//	keyplane receive-webhooks --secret-file FILE [--addr 127.0.0.1:9000] [--fail N]
//	keyplane keys create|list|get|update|disable|enable|rotate|revoke|reveal …
//	keyplane usage|audit|sweep|portal-link …, keyplane owners list|get|update …
//
// serve runs every Cloud Function's routes in one process on one port, on
// the embedded backends by default (SQLite, an encrypted file vault); each
// backend can be switched to its Google Cloud adapter through the
// environment (see internal/config). admin-token prints the admin token that
// serve generated and stored in the embedded vault; it only reads, and
// works while serve runs.
//
// The admin commands (keys, usage, audit, owners, sweep, portal-link) call
// keyplane's HTTP API through pkg/client, at $KEYPLANE_URL with
// $KEYPLANE_ADMIN_TOKEN (--url and --token override them), and print a
// table or, with -o json, JSON. Their exit code is 0 on success, 1 when
// keyplane refused (its message on stderr) or could not be reached, and 2
// for a mistake in the command line.
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
	"strings"
	"syscall"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  keyplane serve [--addr 127.0.0.1:8080] [--data ./.keyplane]
  keyplane admin-token [--data ./.keyplane]
      prints the admin token serve generated into the embedded vault; only reads, works while serve runs
  keyplane report-usage --key-id key_… [--requests 1] [--units 0] [--bytes 0] [--id evt_…] [--url http://127.0.0.1:8080]
      signs a usage event with $KEYPLANE_WEBHOOK_SECRET and posts it to the usage webhook
  keyplane receive-webhooks --secret-file FILE [--addr 127.0.0.1:9000] [--fail N]
      an owner's webhook endpoint for local trials: checks signatures, prints notifications

admin commands, against $KEYPLANE_URL (default http://127.0.0.1:8080) with $KEYPLANE_ADMIN_TOKEN;
--url and --token override them, -o table|json picks the output:
  keyplane keys create|list|get|update|disable|enable|rotate|revoke|reveal …
      keys: create prints the secret once, reveal --yes reads it again (audited)
  keyplane usage [--key KEY_ID | --owner OWNER [--bucket day --group-by key|feature]]
  keyplane audit [--key-id KEY_ID]
  keyplane owners list|get|update|spend …
      an owner's tier (plan), limit overrides and spend cap; spend: what a month cost
  keyplane credits add|list OWNER …
      an owner's prepaid top-ups and balance
  keyplane sweep [--dry-run]
  keyplane portal-link --owner OWNER [--return-url URL] [--permissions …]
  exit codes: 0 done, 1 keyplane refused or could not be reached, 2 a command-line mistake

  keyplane help [command]

Environment: KEYPLANE_URL, KEYPLANE_ADMIN_TOKEN, KEYPLANE_PLANS, KEYPLANE_DATA, KEYPLANE_STORE (sqlite|firestore),
KEYPLANE_SECRETS (file|secretmanager), GOOGLE_CLOUD_PROJECT, KEYPLANE_KEY_PREFIX,
KEYPLANE_VAULT_KEY, KEYPLANE_WEBHOOK_ALLOW_PRIVATE, KEYPLANE_SWEEP_INTERVAL, KEYPLANE_CLOCK_OFFSET,
KEYPLANE_LOG_LEVEL; see docs/operations.md.
`

// errHelpShown is returned by run when it printed the help asked for.
var errHelpShown = errors.New("help shown")

// A usageError is a mistake in the command line: exit reports it with the
// usage of the command (or of keyplane, when flags is nil) and exit code 2.
type usageError struct {
	flags *flag.FlagSet
	err   error
}

func (e *usageError) Error() string { return e.err.Error() }

// exit reports run's result on stderr and returns the process's exit code:
// 0 for success or help, 2 for a command-line mistake (with the usage), 1
// for any other error, as one line.
func exit(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "keyplane:", ue.err)
		if ue.flags == nil {
			fmt.Fprint(stderr, usage)
		} else {
			ue.flags.SetOutput(stderr)
			ue.flags.Usage()
		}
		return 2
	default:
		fmt.Fprintln(stderr, "keyplane:", err)
		return 1
	}
}

// newFlags returns the FlagSet of a command whose usage line is synopsis.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: keyplane %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses a command's arguments, which must all be flags. On
// -h/--help it prints the command's usage to stdout and returns
// errHelpShown; a bad flag or a stray argument is a usageError.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard) // exit reports errors, with the usage
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return errHelpShown
	}
	if err != nil {
		return &usageError{fs, fmt.Errorf("%s: %w", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return &usageError{fs, fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{nil, errors.New("no command given")}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) == 2 && args[1] != "help" && !strings.HasPrefix(args[1], "-") {
			return run(ctx, []string{args[1], "--help"}, getenv, stdout, stderr)
		}
		if len(args) > 1 {
			return &usageError{nil, fmt.Errorf("help: unexpected argument %q", args[len(args)-1])}
		}
		fmt.Fprint(stdout, usage)
		return errHelpShown
	case "serve":
		fs := newFlags("serve", "serve [--addr 127.0.0.1:8080] [--data DIR]")
		addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
		data := dataFlag(fs)
		if err := parseFlags(fs, args[1:], stdout); err != nil {
			return err
		}
		cfg, err := embeddedConfig(getenv, *data)
		if err != nil {
			return err
		}
		// Log lines written while requests are in flight are batched; Close
		// writes what is held once serve has shut down.
		logs := logging.NewBuffer(stderr, nil)
		defer logs.Close()
		return serve(ctx, cfg, *addr, logging.New(logs, cfg.LogLevel), stdout)
	case "admin-token":
		fs := newFlags("admin-token", "admin-token [--data DIR]")
		data := dataFlag(fs)
		if err := parseFlags(fs, args[1:], stdout); err != nil {
			return err
		}
		cfg, err := embeddedConfig(getenv, *data)
		if err != nil {
			return err
		}
		tok, err := wire.ReadAdminToken(ctx, cfg)
		if errs.Is(err, errs.NotFound) {
			return fmt.Errorf("admin-token: nothing to read: %w; serve generates the token on its first start with this --data (or use KEYPLANE_ADMIN_TOKEN)", err)
		}
		if err != nil {
			return fmt.Errorf("admin-token: %w", err)
		}
		fmt.Fprintln(stdout, tok)
		return nil
	case "report-usage":
		return reportUsage(ctx, args[1:], getenv, stdout, stderr)
	case "receive-webhooks":
		return receiveWebhooks(ctx, args[1:], getenv, stdout, stderr)
	}
	if cmd := adminCommands[args[0]]; cmd != nil {
		return cmd(adminEnv{ctx, getenv, stdout, stderr}, args[1:])
	}
	return &usageError{nil, fmt.Errorf("unknown command %q", args[0])}
}

// dataFlag defines --data; "" means KEYPLANE_DATA or the default.
func dataFlag(fs *flag.FlagSet) *string {
	return fs.String("data", "", "directory of the embedded backends' data (default $KEYPLANE_DATA, or ./.keyplane)")
}

// embeddedConfig is the configuration from the environment, with dataDir
// (when not "") overriding KEYPLANE_DATA.
func embeddedConfig(getenv func(string) string, dataDir string) (config.Config, error) {
	cfg, err := config.FromEnv(config.Embedded(), getenv)
	if err != nil {
		return cfg, err
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	return cfg, nil
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
	if errors.Is(err, filevault.ErrInUse) {
		return fmt.Errorf("serve: data directory %s is in use by another keyplane process (another serve?): stop it, or pass another --data", cfg.DataDir)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// Close ends the background work and waits for it (the last client-IP
	// flush, a sweep or notification in progress) before it closes the
	// queue and the stores. It runs after the HTTP server has shut down, so
	// no request is left to record a client IP after the last flush.
	defer app.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w (pass another --addr)", err)
	}
	srv := wire.HTTPServer(app.Handler)
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "keyplane listening on %s (store=%s, secrets=%s, data=%s)\n", base, cfg.Store, cfg.Secrets, cfg.DataDir)
	token := "$KEYPLANE_ADMIN_TOKEN"
	if app.GeneratedAdminToken != "" {
		token = app.GeneratedAdminToken
		fmt.Fprintf(stdout, "generated an admin token (`keyplane admin-token` prints it again):\n  export KEYPLANE_ADMIN_TOKEN=%s\n", token)
	}
	if app.GeneratedWebhookSecret != "" {
		fmt.Fprintf(stdout, "generated the usage webhook's signing secret, shown once:\n  export KEYPLANE_WEBHOOK_SECRET=%s\n", app.GeneratedWebhookSecret)
	}
	fmt.Fprintf(stdout, "operator console: %s/console (sign in with the admin token)\n", base)
	fmt.Fprintf(stdout, "try:\n  curl -s -X POST %s/v1/keys -H \"Authorization: Bearer %s\" -d '{\"owner\": \"acct_123\"}'\n", base, token)

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
