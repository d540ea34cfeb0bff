// Package wire builds keyplane from a validated config.Config: it opens the
// configured backends, loads the deployment secrets and plans, and returns
// the services, the HTTP handler and the background work of one role. It
// is the one place that knows which adapter backs each interface;
// cmd/keyplane and the Cloud Functions are its only users.
//
// There is one Builder per role, each reading top to bottom as the list of
// what that role opens (roles.go): Keys, Verify, UsageWebhook, Sweep,
// LeakReports, RecordUsage and DeliverNotification, one per Cloud
// Function, open only
// what their function uses, so that its service account needs no
// permission beyond its job (UsageWebhook never reads the pepper, Verify
// never writes to Firestore, DeliverNotification reads only the
// notification records and the owners' webhook secrets); ServeAll opens
// everything, for keyplane serve.
//
// # Lifecycle
//
// An App's background work (polling the key change feed, flushing client
// IPs, refreshing quotas, and in keyplane serve consuming the queues and
// sweeping on a timer) runs from Start until Close, in one errgroup.Group.
// Close ends it and waits for it before it closes the queue and then the
// stores, so the last client-IP flush, a running sweep and a notification
// being delivered are never cut off by a closed backend. Work in progress
// when Close is called (a message's handler, a sweep run) may go on for
// ShutdownGrace before its context ends too.
//
// A Cloud Function's App (Function) lives as long as its instance: it is
// built on first use and closed when the instance gets SIGTERM.
package wire

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/keyplane/keyplane/internal/clientips"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/verify"
)

// A Builder builds the App of one role from cfg, which it validates first.
// ctx is used while building only.
type Builder func(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error)

// App is a built keyplane role. Fields the role does not use are nil.
type App struct {
	Config   config.Config
	Store    store.Store
	Vault    secrets.Vault
	Plans    *plan.Catalog
	Keys     *keys.Service
	Owners   *owners.Service
	Verifier *verify.Verifier
	Ledger   ledger.Ledger
	Topic    queue.Topic // the usage topic
	Consumer *meter.Consumer
	// StripeExporter exports usage to Stripe; nil when the export is off.
	StripeExporter *stripeexport.Exporter
	// StripeSent is the exporter's durable record of the meter events
	// Stripe accepted; nil when the export is off.
	StripeSent stripeexport.Sent
	// Owner notifications: the webhook registry and delivery records, the
	// notifications topic, the service that sets webhooks and enqueues
	// notifications, and the Deliverer that handles the topic's messages.
	NotifyStore        notify.Store
	NotificationsTopic queue.Topic
	Notify             *notify.Service
	Deliverer          *notify.Deliverer
	Sweeper            *sweep.Sweeper
	// ClientIPs records the client IPs verify sees, for the sweep.
	ClientIPs *clientips.Recorder
	// Server holds the HTTP API's dependencies; Handler serves the role's
	// routes (every route for ServeAll; nil for a CloudEvent function).
	Server  *httpapi.Server
	Handler http.Handler
	// GeneratedAdminToken and GeneratedWebhookSecret are set when the
	// builder generated them (file vault, none configured): the caller
	// shows them once.
	GeneratedAdminToken    string
	GeneratedWebhookSecret string

	jobs    []job                // background work, run from Start until Close
	stop    context.CancelFunc   // ends the jobs' context; nil before Start
	running errgroup.Group       // the jobs
	queue   *embeddedqueue.Queue // the embedded queue, when used
	closers []func() error       // in opening order
}

// A job is background work of an App. Start calls it to set the work up
// (an error fails Start) and runs the func it returns until ctx ends.
type job func(ctx context.Context) (run func(ctx context.Context) error, err error)

// loop is a job with nothing to set up.
func loop(run func(ctx context.Context) error) job {
	return func(context.Context) (func(context.Context) error, error) { return run, nil }
}

// ShutdownGrace is how long work in progress when an App closes may go on
// (a queue message's handler, a sweep run) before its context ends too and
// it stops where it is: what it did is kept, the rest is redone (the queue
// redelivers the message, the next sweep resumes from its checkpoint).
const ShutdownGrace = 10 * time.Second

// Start starts the App's background work. It runs until ctx ends or Close
// is called, whichever is first; Close waits for it. If setting up a part
// fails (e.g. a Pub/Sub subscription cannot be created), Start returns the
// error and starts nothing. Start may be called once.
func (a *App) Start(ctx context.Context) error {
	if a.stop != nil {
		return errors.New("wire: the App was started already")
	}
	runs := make([]func(context.Context) error, 0, len(a.jobs))
	for _, j := range a.jobs {
		run, err := j(ctx)
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	ctx, a.stop = context.WithCancel(ctx)
	for _, run := range runs {
		a.running.Go(func() error { return run(ctx) })
	}
	return nil
}

// Close ends the background work and waits for it, then closes the
// embedded queue (which waits for its running handlers) and the other
// backends, last opened first.
func (a *App) Close() error {
	var errList []error
	if a.stop != nil {
		a.stop()
		errList = append(errList, a.running.Wait())
	}
	if a.queue != nil {
		errList = append(errList, a.queue.Close())
	}
	for i := len(a.closers) - 1; i >= 0; i-- {
		errList = append(errList, a.closers[i]())
	}
	return errors.Join(errList...)
}

// lingering returns a context with ctx's values that ends grace after ctx
// ends, or when cancel is called: for work that should finish what it is
// doing when its owner stops, but not for ever.
func lingering(ctx context.Context, grace time.Duration) (_ context.Context, cancel context.CancelFunc) {
	l, cancelL := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, cancelL)
		context.AfterFunc(l, func() { t.Stop() })
	})
	return l, func() { stop(); cancelL() }
}

// lingeringHandler runs h on a context that outlives the Receive that
// calls it by up to ShutdownGrace (lingering): a message being handled
// when the App closes is finished rather than cut short, so that a
// notification is not delivered twice for an attempt abandoned midway.
func lingeringHandler(h queue.Handler) queue.Handler {
	return func(ctx context.Context, m queue.Message) error {
		ctx, cancel := lingering(ctx, ShutdownGrace)
		defer cancel()
		return h(ctx, m)
	}
}

// ReadAdminToken returns the newest admin token stored in cfg's vault (for
// `keyplane admin-token`). It only reads: it creates no file, directory or
// secret, and it reads the file vault without taking its lock, so it works
// while keyplane serve has the vault open. It fails with an errs.NotFound
// error naming what is missing when there is no vault or no token in it.
func ReadAdminToken(ctx context.Context, cfg config.Config) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	if cfg.Secrets == config.SecretsManager {
		v, err := secretmanagervault.New(ctx, cfg.Project, secretmanagervault.Options{Prefix: cfg.SecretPrefix})
		if err != nil {
			return "", err
		}
		defer v.Close()
		b, err := v.Secret(ctx, secrets.AdminToken)
		if errs.Is(err, errs.NotFound) {
			return "", errs.E(errs.NotFound, "no %q secret in Secret Manager (project %s)", cfg.SecretPrefix+secrets.AdminToken, cfg.Project)
		}
		return string(b), err
	}
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, fs.ErrNotExist) {
		return "", errs.E(errs.NotFound, "data directory %s does not exist", cfg.DataDir)
	}
	key := cfg.VaultKey
	if key == nil {
		var err error
		key, err = filevault.ReadKey(filepath.Join(cfg.DataDir, "vault.key"))
		if errors.Is(err, fs.ErrNotExist) {
			return "", errs.E(errs.NotFound, "no vault key %s (and KEYPLANE_VAULT_KEY is not set)", filepath.Join(cfg.DataDir, "vault.key"))
		}
		if err != nil {
			return "", err
		}
	}
	b, err := filevault.ReadSecret(filepath.Join(cfg.DataDir, "vault.json.enc"), key, secrets.AdminToken)
	return string(b), err
}
