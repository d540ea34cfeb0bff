package wire

import (
	"context"
	"log/slog"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/meter"
)

// The builders of the roles. Each step opens or builds one thing from
// what the steps above it opened; after a step fails, the rest do nothing
// and done closes what was opened and returns the error.

// Names of the CloudEvent functions, which serve no route of the HTTP API
// (the HTTP functions' names are httpapi's FuncKeys, FuncVerify,
// FuncUsageWebhook and FuncSweep).
const (
	FuncRecordUsage         = "RecordUsage"
	FuncDeliverNotification = "DeliverNotification"
	FuncExportStripe        = "ExportStripe"
)

var (
	_ Builder = Keys
	_ Builder = Verify
	_ Builder = UsageWebhook
	_ Builder = Sweep
	_ Builder = LeakReports
	_ Builder = Faces
	_ Builder = RecordUsage
	_ Builder = DeliverNotification
	_ Builder = ExportStripe
	_ Builder = ServeAll
)

// Keys builds the Keys function: the key management routes, the usage
// queries, the owners' webhook settings and leak reports from operators
// and other scanners (POST /v1/leaks).
func Keys(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, httpapi.FuncKeys, cfg, log)
	b.openStore()
	b.openVault()         // key secrets, the pepper, admin tokens, owner webhook secrets
	b.openLedger()        // read only: the usage queries
	b.openNotifications() // a key's changes are notified to its owner
	b.notifyService()
	b.keyHasher()
	b.authenticate()
	b.keysService()
	b.leaksService() // POST /v1/leaks
	b.ownerPortal()  // POST /v1/portal/sessions; its links open on Faces
	b.routes(httpapi.FuncKeys)
	return b.done()
}

// Faces builds the Faces function: the operator console (/console) and
// the owner portal's pages (/portal/), and /healthz; it serves no /v1
// route. The console signs operators in with the admin and caller tokens
// the Keys function accepts and acts through the key service; the portal
// exchanges the single-use links POST /v1/portal/sessions (on Keys) makes.
// Without the sweep, the console's sweep page only says where the sweep
// runs; without the leaks service and the usage topic, it needs neither
// the webhook secret nor the verify token.
func Faces(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, httpapi.FuncFaces, cfg, log)
	b.openStore()
	b.openVault()         // key secrets, the pepper, admin tokens
	b.openLedger()        // read only: the usage and spend pages
	b.openNotifications() // a key's changes are notified to its owner
	b.notifyService()
	b.keyHasher()
	b.authenticate() // the console's sign-in
	b.keysService()
	b.ownerPortal() // the pages under /portal/
	b.routes(httpapi.FuncFaces)
	return b.done()
}

// Verify builds the Verify function: POST /v1/verify, with its key
// cache kept fresh, quotas and the client IPs and key uses it sees
// recorded. It writes nothing to the datastore: the client IPs and uses go
// through the usage topic, from which RecordUsage writes them.
func Verify(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, httpapi.FuncVerify, cfg, log)
	b.openStore()      // read only: key lookups and the change feed
	b.openVault()      // the pepper, admin and verify tokens
	b.openLedger()     // read only: quotas
	b.openUsageTopic() // the client IPs
	b.keyHasher()
	b.authenticate()
	b.verifyAuth()
	b.verifier(meter.ClientIPPublisher{Topic: b.app.Topic})
	b.routes(httpapi.FuncVerify)
	return b.done()
}

// UsageWebhook builds the UsageWebhook function: POST /v1/usage, which
// checks a gateway's signature and publishes the events to the usage
// topic.
func UsageWebhook(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, httpapi.FuncUsageWebhook, cfg, log)
	b.openVault() // the webhook secrets only
	b.openUsageTopic()
	b.usageWebhookSecrets()
	b.routes(httpapi.FuncUsageWebhook)
	return b.done()
}

// Sweep builds the Sweep function: POST /v1/sweep, which Cloud
// Scheduler calls; the sweep acts on keys through the key service and
// notifies their owners.
func Sweep(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, httpapi.FuncSweep, cfg, log)
	b.openStore()
	b.openVault()
	b.openLedger()
	b.openNotifications()
	b.notifyService()
	b.keyHasher()
	b.authenticate()
	b.keysService()
	b.sweeper()
	b.routes(httpapi.FuncSweep)
	return b.done()
}

// LeakReports builds the LeakReports function: POST /v1/leaks/github,
// where GitHub's secret scanning partner program reports leaked keys,
// signed by GitHub. It stops the reported keys through the key service
// (store, key secret versions) and notifies their owners; it serves no
// route that takes a bearer token.
func LeakReports(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, httpapi.FuncLeakReports, cfg, log)
	b.openStore()
	b.openVault() // the pepper, key secret versions
	if cfg.LeakPolicy == config.LeakQuarantine {
		b.openLedger() // read only: the client IPs a quarantined key keeps
	}
	b.openNotifications()
	b.notifyService()
	b.keyHasher()
	b.keysService()
	b.leaksService()
	b.routes(httpapi.FuncLeakReports)
	return b.done()
}

// RecordUsage builds the RecordUsage function's usage consumer, which
// counts the usage topic's messages into the ledger (and writes the key
// uses verify publishes to the store).
func RecordUsage(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, FuncRecordUsage, cfg, log)
	b.openStore() // the keys' owners, and their last uses
	b.openLedger()
	b.consumer()
	return b.done()
}

// ExportStripe builds the ExportStripe function's Stripe exporter, which
// sends the usage topic's events to Stripe meter events (a second push
// subscription of the topic). It fails to start unless the export is
// configured.
func ExportStripe(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, FuncExportStripe, cfg, log)
	if cfg.StripeAPIKey == "" {
		b.err = errs.E(errs.Invalid, "ExportStripe needs KEYPLANE_STRIPE_API_KEY and KEYPLANE_STRIPE_METERS")
	}
	b.openStore()  // the keys' owners
	b.openLedger() // the export's dead letters
	b.stripeExporter()
	return b.done()
}

// DeliverNotification builds the DeliverNotification function's
// notify.Deliverer, which makes the delivery attempts the notifications
// topic's messages ask for.
func DeliverNotification(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, FuncDeliverNotification, cfg, log)
	b.openVault() // the owners' webhook secrets only
	b.openNotifications()
	b.deliverer()
	return b.done()
}

// ServeAll builds everything, for keyplane serve: every route, and as
// background work (Start) the key change feed, the client-IP flushes and
// quota refreshes of verify, the usage consumer, the notification
// deliverer and, every cfg.SweepInterval, the sweep (in production Cloud
// Scheduler calls the Sweep function instead). One process owns every
// backend, so verify records client IPs straight into the ledger and key
// uses into the store.
func ServeAll(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	b := begin(ctx, "", cfg, log)
	b.openStore()
	b.openVault()
	b.openLedger()
	b.openUsageTopic()
	b.dropStripeExportIfOff()
	b.openNotifications()
	b.notifyService()
	b.deliverer()
	b.usageWebhookSecrets()
	b.consumer()
	b.stripeExporter()
	b.keyHasher()
	b.authenticate()
	b.verifyAuth()
	b.verifier(localRecords{b.app.Ledger, b.app.Store})
	b.keysService()
	b.leaksService()
	b.ownerPortal()
	b.sweeper()
	b.consumeUsage()
	b.exportToStripe()
	b.deliverNotifications()
	b.sweepEvery(cfg.SweepInterval)
	b.routes()
	return b.done()
}
