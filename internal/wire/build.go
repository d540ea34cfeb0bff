package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	gfirestore "cloud.google.com/go/firestore"
	gpubsub "cloud.google.com/go/pubsub/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clientips"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/console"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/leaks"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/firestoreledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/limiter/redislimiter"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/firestorenotify"
	"github.com/keyplane/keyplane/internal/notify/sqlitenotify"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/stripeexport/firestoresent"
	"github.com/keyplane/keyplane/internal/stripeexport/sqlitesent"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/telemetry"
	"github.com/keyplane/keyplane/internal/tokens"
	"github.com/keyplane/keyplane/internal/verify"
)

// build is one builder's state: the App so far and the first error. Its
// steps (the methods below) do nothing once err is set.
type build struct {
	ctx  context.Context
	role string // the function's name, for errors; "" for ServeAll
	cfg  config.Config
	log  *slog.Logger
	clk  clock.Clock
	app  *App
	srv  *httpapi.Server // app.Server
	err  error

	firestore *gfirestore.Client // shared by every Firestore adapter
	pubsub    *gpubsub.Client
	hasher    *apikey.Hasher
	tel       *telemetry.Telemetry // nil: telemetry off
}

// begin validates cfg, loads the plans and makes the data directory.
func begin(ctx context.Context, role string, cfg config.Config, log *slog.Logger) *build {
	var clk clock.Clock = clock.Real{}
	if cfg.ClockOffset != 0 {
		clk = clock.Offset(cfg.ClockOffset)
	}
	b := &build{ctx: ctx, role: role, cfg: cfg, log: log, clk: clk, app: &App{Config: cfg}}
	if b.err = cfg.Validate(); b.err != nil {
		return b
	}
	if b.app.Plans, b.err = plan.Load(cfg.PlansFile); b.err != nil {
		return b
	}
	// Telemetry is opened first, so that Close shuts it down (flushing
	// the last metrics and spans) after everything it observes.
	service := "keyplane"
	if role != "" {
		service = role
	}
	tel, shutdown, err := telemetry.Setup(ctx, telemetry.Config{
		Mode: cfg.Telemetry, MetricsAddr: cfg.MetricsAddr, Project: cfg.Project, Service: service, Out: os.Stdout,
	}, log)
	if b.err = err; err != nil {
		return b
	}
	b.tel = tel
	b.closeLater(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return shutdown(ctx)
	})
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			b.err = fmt.Errorf("data directory: %w", err)
			return b
		}
	}
	b.srv = &httpapi.Server{Plans: b.app.Plans, Logger: log, Project: cfg.Project, Clock: clk, ValidLogSample: cfg.LogValidSample}
	b.app.Server = b.srv
	return b
}

// done returns the App, or closes what was opened and returns the first
// error, naming the function.
func (b *build) done() (*App, error) {
	if b.err == nil {
		return b.app, nil
	}
	b.app.Close()
	if b.role != "" {
		return nil, fmt.Errorf("%s: %w", b.role, b.err)
	}
	return nil, b.err
}

// closeLater makes App.Close call close, before what was opened earlier.
func (b *build) closeLater(close func() error) { b.app.closers = append(b.app.closers, close) }

// embeddedVault reports whether the vault is the file vault, where missing
// deployment secrets are generated instead of being an error.
func (b *build) embeddedVault() bool { return b.cfg.Secrets == config.SecretsFile }

// firestoreClient returns the one Firestore client of the App (the
// configured project and database), created on first use and closed after
// the adapters that share it.
func (b *build) firestoreClient() (*gfirestore.Client, error) {
	if b.firestore != nil {
		return b.firestore, nil
	}
	c, err := gfirestore.NewClientWithDatabase(b.ctx, b.cfg.Project, b.cfg.FirestoreDatabase)
	if err != nil {
		return nil, fmt.Errorf("firestore: %w", err)
	}
	b.firestore = c
	b.closeLater(c.Close)
	return c, nil
}

// openQueue opens the App's transport once: the Pub/Sub client, or the
// embedded queue that every topic of the process shares.
func (b *build) openQueue() error {
	if b.pubsub != nil || b.app.queue != nil {
		return nil
	}
	if b.cfg.Queue == config.QueuePubSub {
		c, err := gpubsub.NewClient(b.ctx, b.cfg.Project)
		if err != nil {
			return fmt.Errorf("pubsub: %w", err)
		}
		b.pubsub = c
		b.closeLater(c.Close)
		return nil
	}
	q, err := embeddedqueue.Open(filepath.Join(b.cfg.DataDir, "queue.db"), embeddedqueue.Options{})
	if err != nil {
		return err
	}
	b.app.queue = q // closed by Close before every other backend
	return b.tel.ObserveQueue(q)
}

// openTopic opens the topic of spec named name: a Pub/Sub topic, or the
// embedded queue's, with spec's subscriptions declared.
func (b *build) openTopic(spec TopicSpec, name string) (queue.Topic, error) {
	if err := b.openQueue(); err != nil {
		return nil, err
	}
	if b.pubsub != nil {
		t := pubsubqueue.NewTopic(b.pubsub, name, pubsubqueue.PublishSettings{})
		b.closeLater(t.Close)
		return t, nil
	}
	spec.declare(b.app.queue, name)
	return b.app.queue.Topic(name), nil
}

// openStore opens the key store: SQLite, or Firestore.
func (b *build) openStore() {
	if b.err != nil {
		return
	}
	if b.cfg.Store == config.StoreSQLite {
		st, err := sqlitestore.Open(filepath.Join(b.cfg.DataDir, "keyplane.db"))
		if b.err = err; err != nil {
			return
		}
		b.app.Store = st
	} else {
		c, err := b.firestoreClient()
		if b.err = err; err != nil {
			return
		}
		b.app.Store = firestorestore.NewFromClient(c)
	}
	b.closeLater(b.app.Store.Close)
}

// openVault opens the secret vault: Secret Manager, or the file vault.
func (b *build) openVault() {
	if b.err != nil {
		return
	}
	var v secrets.Vault
	if b.cfg.Secrets == config.SecretsManager {
		v, b.err = secretmanagervault.New(b.ctx, b.cfg.Project, secretmanagervault.Options{Prefix: b.cfg.SecretPrefix})
	} else {
		key := b.cfg.VaultKey
		if key == nil {
			if key, b.err = filevault.LoadOrCreateKey(filepath.Join(b.cfg.DataDir, "vault.key")); b.err != nil {
				return
			}
		}
		v, b.err = filevault.Open(filepath.Join(b.cfg.DataDir, "vault.json.enc"), key)
	}
	if b.err != nil {
		return
	}
	b.app.Vault = v
	b.closeLater(v.Close)
}

// openLedger opens the usage ledger: its own SQLite file, or the shared
// Firestore database.
func (b *build) openLedger() {
	if b.err != nil {
		return
	}
	if b.cfg.Store == config.StoreSQLite {
		l, err := sqliteledger.OpenWith(filepath.Join(b.cfg.DataDir, "usage.db"), sqliteledger.Options{Clock: b.clk})
		if b.err = err; err != nil {
			return
		}
		b.app.Ledger = l
	} else {
		c, err := b.firestoreClient()
		if b.err = err; err != nil {
			return
		}
		b.app.Ledger = firestoreledger.NewFromClient(c, firestoreledger.Options{Clock: b.clk})
	}
	b.closeLater(b.app.Ledger.Close)
	b.srv.Ledger = b.app.Ledger
}

// openUsageTopic opens the usage topic.
func (b *build) openUsageTopic() {
	if b.err != nil {
		return
	}
	if b.app.Topic, b.err = b.openTopic(UsageTopic, b.cfg.UsageTopic); b.err == nil {
		b.srv.UsageTopic = b.app.Topic
		if b.app.queue != nil && b.cfg.StripeAPIKey != "" {
			StripeExportTopic.declare(b.app.queue, b.cfg.UsageTopic) // before anything is published
		}
	}
}

// openNotifications opens the owner notifications' records (their own
// SQLite file, or the shared Firestore database) and the notifications
// topic.
func (b *build) openNotifications() {
	if b.err != nil {
		return
	}
	if b.cfg.Store == config.StoreSQLite {
		s, err := sqlitenotify.Open(filepath.Join(b.cfg.DataDir, "notify.db"))
		if b.err = err; err != nil {
			return
		}
		b.app.NotifyStore = s
	} else {
		c, err := b.firestoreClient()
		if b.err = err; err != nil {
			return
		}
		b.app.NotifyStore = firestorenotify.NewFromClient(c)
	}
	b.closeLater(b.app.NotifyStore.Close)
	b.app.NotificationsTopic, b.err = b.openTopic(NotificationsTopic, b.cfg.NotificationsTopic)
}

// guard is the SSRF guard of owner webhook URLs.
func (b *build) guard() *notify.Guard { return &notify.Guard{AllowPrivate: b.cfg.WebhookAllowPrivate} }

// notifyService builds the service that sets owner webhooks and enqueues
// notifications.
func (b *build) notifyService() {
	if b.err != nil {
		return
	}
	a := b.app
	a.Notify = &notify.Service{
		Registry: a.NotifyStore, Deliveries: a.NotifyStore, Vault: a.Vault, Topic: a.NotificationsTopic,
		Guard: b.guard(), Clock: b.clk, Logger: b.log,
	}
	b.srv.Notify = a.Notify
}

// deliverer builds the Deliverer that handles the notifications topic's
// messages.
func (b *build) deliverer() {
	if b.err != nil {
		return
	}
	a := b.app
	a.Deliverer = &notify.Deliverer{
		Registry: a.NotifyStore, Deliveries: a.NotifyStore, Vault: a.Vault, Topic: a.NotificationsTopic,
		Guard: b.guard(), Clock: b.clk, Logger: b.log,
	}
}

// usageWebhookSecrets reads the usage webhook's signing secrets.
func (b *build) usageWebhookSecrets() {
	if b.err != nil {
		return
	}
	b.srv.WebhookSecrets, b.app.GeneratedWebhookSecret, b.err = webhookSecrets(b.ctx, b.cfg, b.app.Vault, b.embeddedVault())
}

// consumer builds the usage consumer.
func (b *build) consumer() {
	if b.err != nil {
		return
	}
	b.app.Consumer = meter.NewConsumer(b.app.Ledger, b.app.Store, b.clk, b.log)
	b.app.Consumer.Plans = b.app.Plans
	b.app.Consumer.Tracer = b.tel.Tracer()
	b.err = b.tel.ObserveConsumer(b.app.Consumer)
}

// dropStripeExportIfOff deletes the embedded queue's Stripe export
// subscriptions when the export is off: declared by an earlier serve with
// the export on, they would keep a copy of every usage message for ever.
// (Pub/Sub subscriptions are infra/'s to remove, with var.stripe_meters.)
func (b *build) dropStripeExportIfOff() {
	if b.err != nil || b.app.queue == nil || b.cfg.StripeAPIKey != "" {
		return
	}
	for _, sub := range []string{StripeExportTopic.Subscription, StripeExportTopic.DeadLetterSubscription} {
		if b.err = b.app.queue.DeleteSubscription(b.ctx, sub); b.err != nil {
			return
		}
	}
}

// stripeExporter builds the Stripe usage exporter when the export is
// configured (cfg.StripeAPIKey); its dead letters go to the ledger, and
// its record of the meter events Stripe accepted to its own SQLite file
// or the shared Firestore database.
func (b *build) stripeExporter() {
	if b.err != nil || b.cfg.StripeAPIKey == "" {
		return
	}
	meters, err := stripeexport.ParseMeters(b.cfg.StripeMeters)
	if b.err = err; err != nil {
		return
	}
	if b.cfg.Store == config.StoreSQLite {
		s, err := sqlitesent.OpenWith(filepath.Join(b.cfg.DataDir, "stripe-sent.db"), sqlitesent.Options{Clock: b.clk})
		if b.err = err; err != nil {
			return
		}
		b.app.StripeSent = s
		b.closeLater(s.Close)
	} else {
		c, err := b.firestoreClient()
		if b.err = err; err != nil {
			return
		}
		b.app.StripeSent = firestoresent.NewFromClient(c, firestoresent.Options{Clock: b.clk})
	}
	client := stripeexport.NewClient(b.cfg.StripeAPIKey, b.cfg.StripeURL, nil)
	b.app.StripeExporter = stripeexport.New(client, b.app.Store, b.app.Ledger, b.app.StripeSent, meters, b.clk, b.log)
	b.log.Info("stripe usage export on", "meters", meters.String())
	b.err = b.tel.ObserveStripeExporter(b.app.StripeExporter)
}

// keyHasher reads the pepper and builds the key hasher from it.
func (b *build) keyHasher() {
	if b.err != nil {
		return
	}
	pepper, err := secret(b.ctx, b.app.Vault, secrets.Pepper, b.embeddedVault(), 32)
	if b.err = err; err != nil {
		return
	}
	if b.hasher, b.err = apikey.NewHasher(pepper); b.err != nil {
		b.err = fmt.Errorf("the %q secret: %w", secrets.Pepper, b.err)
	}
}

// authenticate admits the admin tokens, caller tokens and, if configured,
// Google-signed ID tokens of the given service accounts.
func (b *build) authenticate() {
	if b.err != nil {
		return
	}
	admin, generated, err := adminTokens(b.ctx, b.cfg, b.app.Vault, b.embeddedVault())
	if b.err = err; err != nil {
		return
	}
	b.app.GeneratedAdminToken = generated
	b.srv.Auth = httpapi.NewTokenAuth(admin...)
	// Caller tokens, minted through POST /v1/tokens, are hashed with the
	// keys' pepper and cached per instance (tokens.DefaultCacheTTL).
	b.srv.Tokens = &tokens.Service{Store: b.app.Store, Hasher: b.hasher, Clock: b.clk}
	if len(b.cfg.IDTokenServiceAccounts) > 0 {
		id, err := httpapi.NewIDTokenAuth(b.ctx, b.cfg.IDTokenServiceAccounts, b.cfg.IDTokenAudiences)
		if b.err = err; err != nil {
			return
		}
		b.srv.Auth = httpapi.WithIDTokens(b.srv.Auth, id)
	}
}

// verifyAuth admits the gateways' verify tokens on the verify route: the
// configured ones and every enabled version of the verify-token secret, as
// for the admin token (Terraform generates one; rotate by adding).
func (b *build) verifyAuth() {
	if b.err != nil {
		return
	}
	tokens := b.cfg.VerifyTokens
	versions, err := b.app.Vault.SecretVersions(b.ctx, secrets.VerifyToken)
	if err != nil && !errs.Is(err, errs.NotFound) {
		b.err = err
		return
	}
	for _, v := range versions {
		tokens = append(tokens, string(v))
	}
	if len(tokens) > 0 {
		b.srv.VerifyAuth = httpapi.NewTokenAuthAs("gateway", tokens...)
	}
}

// clientIPFlushInterval is how often the client IPs and key uses verify
// sees are flushed to w (so a key's last_used_at trails its latest verify
// by about this much): from the request path when due (a Cloud Function has no
// CPU between requests), and on a timer while the instance has CPU.
const clientIPFlushInterval = 10 * time.Second

// localRecords is the clientips.Writer of a process that owns the ledger
// and the store: client IPs go to the ledger, key uses to the store.
type localRecords struct {
	ledger ledger.Ledger
	store  store.Store
}

func (w localRecords) AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error {
	return w.ledger.AddClientIPs(ctx, day, ips)
}

func (w localRecords) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	return w.store.MarkUsed(ctx, uses)
}

// verifier builds the Verifier, with quotas read from the ledger and the
// client IPs it sees recorded to w, and runs in the background the change
// feed's polling, the client IPs' flushes and the quota refreshes.
func (b *build) verifier(w clientips.Writer) {
	if b.err != nil {
		return
	}
	a := b.app
	quotas := verify.NewQuotas(a.Ledger, 0, b.log)
	a.ClientIPs = clientips.New(w, b.clk, clientIPFlushInterval, b.log)
	latency, err := b.tel.VerifyLatency()
	if b.err = err; err != nil {
		return
	}
	shared, err := b.sharedLimiter()
	if b.err = err; err != nil {
		return
	}
	a.Verifier = verify.New(a.Store, b.hasher, a.Plans, b.clk, &verify.Options{
		Logger: b.log, Quota: quotas, ClientIPs: a.ClientIPs, ObserveLatency: latency, Limiter: shared,
	})
	if b.err = b.tel.ObserveVerifier(a.Verifier); b.err != nil {
		return
	}
	b.srv.Verifier = a.Verifier
	v, ips := a.Verifier, a.ClientIPs
	a.jobs = append(a.jobs,
		loop(func(ctx context.Context) error { v.Run(ctx); return nil }),
		loop(func(ctx context.Context) error { ips.Run(ctx); return nil }), // its last flush when ctx ends
		loop(func(ctx context.Context) error { <-ctx.Done(); quotas.Stop(); return nil }),
	)
}

// sharedLimiter returns the Redis limiter of cfg.RedisAddr, with one
// client for the instance, or nil (per-minute limits counted in process)
// if it is not set. An unreachable Redis is not an error here: verify
// counts on the instance until it answers (see verify.Options.Limiter).
func (b *build) sharedLimiter() (limiter.Limiter, error) {
	cfg := b.cfg
	if cfg.RedisAddr == "" {
		return nil, nil
	}
	opt := &redis.Options{
		Addr: cfg.RedisAddr, Password: cfg.RedisAuth,
		// The Admit's own timeout bounds each call, and a failed call is
		// decided on the instance at once rather than retried.
		ContextTimeoutEnabled: true, MaxRetries: -1,
	}
	if cfg.RedisTLS {
		roots, err := cfg.RedisRoots()
		if err != nil {
			return nil, err
		}
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	}
	c := redis.NewClient(opt)
	b.closeLater(c.Close)
	l, err := redislimiter.New(c, &redislimiter.Options{Timeout: cfg.RedisTimeout, Clock: b.clk})
	if err != nil {
		return nil, err
	}
	b.log.Info("per-minute limits are counted in the shared Redis", "redis_addr", cfg.RedisAddr, "tls", cfg.RedisTLS)
	return l, nil
}

// keysService builds the service that owns every key state transition.
func (b *build) keysService() {
	if b.err != nil {
		return
	}
	a := b.app
	a.Keys = &keys.Service{
		Store: a.Store, Vault: a.Vault, Hasher: b.hasher, Plans: a.Plans,
		Prefix: b.cfg.KeyPrefix, Clock: b.clk, Logger: b.log,
	}
	if a.Notify != nil {
		a.Keys.Notifier = notify.KeyEvents{Service: a.Notify}
	}
	if a.Verifier != nil {
		// Both in one process (serve): its own changes verify at once.
		a.Keys.Observer = a.Verifier
	}
	b.srv.Keys = a.Keys
	a.Owners = &owners.Service{Store: a.Store, Plans: a.Plans, Clock: b.clk, Logger: b.log}
	if a.Ledger != nil {
		a.Owners.Spend = a.Ledger
	}
	if a.Notify != nil {
		a.Owners.Notifier = notify.OwnerEvents{Service: a.Notify}
	}
	if a.Verifier != nil {
		a.Owners.Observer = a.Verifier
	}
	b.srv.Owners = a.Owners
}

// leaksService builds the intake of leak reports (POST /v1/leaks and
// POST /v1/leaks/github): the policy from the configuration (quarantine
// reads the ledger's client IPs), and GitHub's
// secret scanning keys from the configured file or GitHub's URL.
func (b *build) leaksService() {
	if b.err != nil {
		return
	}
	a := b.app
	action := keys.LeakDisable
	switch b.cfg.LeakPolicy {
	case config.LeakRevoke:
		action = keys.LeakRevoke
	case config.LeakQuarantine:
		if a.Ledger == nil {
			b.err = fmt.Errorf("KEYPLANE_LEAK_POLICY=quarantine needs the ledger (the client IPs a quarantined key keeps), which this function did not open")
			return
		}
		action = keys.LeakQuarantine
		a.Keys.Quarantine = keys.QuarantinePolicy{IPs: a.Ledger, Days: b.cfg.LeakQuarantineDays, Grace: b.cfg.LeakQuarantineGrace}
	}
	b.srv.Leaks = &leaks.Service{Lookup: a.Store, Keys: a.Keys, Hasher: b.hasher, Action: action, Logger: b.log}
	var src leaks.KeySource = leaks.HTTPKeys{URL: b.cfg.GitHubScanningKeysURL}
	if b.cfg.GitHubScanningKeys != "" {
		src = leaks.FileKeys{Path: b.cfg.GitHubScanningKeys}
	}
	b.srv.GitHubKeys = &leaks.Keyring{Source: src, Clock: b.clk, Logger: b.log}
}

// sweeper builds the sweep.
func (b *build) sweeper() {
	if b.err != nil {
		return
	}
	a := b.app
	a.Sweeper = &sweep.Sweeper{
		Store: a.Store, Ledger: a.Ledger, Plans: a.Plans,
		Notify: a.Notify, Keys: a.Keys, Owners: a.Owners, Clock: b.clk, Logger: b.log, Tracer: b.tel.Tracer(),
	}
	if b.err = b.tel.ObserveSweeper(a.Sweeper); b.err != nil {
		return
	}
	if b.cfg.Store == config.StoreFirestore {
		// Firestore reads are round trips, not CPU: more of them in
		// flight (docs/benchmarks.md, "Sweep", read concurrency: 32
		// readers against the default 8 on the emulator).
		a.Sweeper.Workers = 32
	}
	b.srv.Sweeper = a.Sweeper
}

// consumeUsage counts the usage topic's messages and records its dead
// letters, in the background.
func (b *build) consumeUsage() {
	if b.err != nil {
		return
	}
	c := b.app.Consumer
	b.consume(UsageTopic, b.cfg.UsageTopic,
		receiver{"usage consumer", c.Handle},
		receiver{"usage dead-letter consumer", c.HandleDeadLetter})
}

// exportToStripe exports the usage topic's events to Stripe, and records
// its subscription's dead letters, in the background (nothing when the
// export is off).
func (b *build) exportToStripe() {
	if b.err != nil || b.app.StripeExporter == nil {
		return
	}
	x, log := b.app.StripeExporter, b.log
	b.consume(StripeExportTopic, b.cfg.UsageTopic,
		receiver{"stripe exporter", exportHandler(x.Handle, log)},
		receiver{"stripe export dead-letter handler", x.HandleDeadLetter})
}

// exportHandler logs the failures that make the queue redeliver a usage
// message to the Stripe exporter.
func exportHandler(h queue.Handler, log *slog.Logger) queue.Handler {
	return func(ctx context.Context, m queue.Message) error {
		err := h(ctx, m)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "exporting usage to Stripe failed; the queue redelivers it", "message_id", m.ID, "error", err)
		}
		return err
	}
}

// deliverNotifications makes the delivery attempts the notifications
// topic's messages ask for, and handles its dead letters, in the
// background.
func (b *build) deliverNotifications() {
	if b.err != nil {
		return
	}
	d, log := b.app.Deliverer, b.log
	b.consume(NotificationsTopic, b.cfg.NotificationsTopic,
		receiver{"notification deliverer", deliveryHandler(d.Handle, log)},
		receiver{"notification dead-letter handler", deliveryHandler(d.HandleDeadLetter, log)})
}

// receiver is a named handler of a subscription.
type receiver struct {
	what   string
	handle queue.Handler
}

// consume adds the job that receives the messages of topic (spec) and of
// its dead letters: the embedded queue's subscriptions, or Pub/Sub pull
// subscriptions, created at Start if needed (in production push
// subscriptions deliver to RecordUsage and DeliverNotification instead).
// A handler running when the App closes is given ShutdownGrace to finish.
func (b *build) consume(spec TopicSpec, topic string, events, deadLetters receiver) {
	q, ps, log := b.app.queue, b.pubsub, b.log
	b.app.jobs = append(b.app.jobs, func(ctx context.Context) (func(context.Context) error, error) {
		var sub, dlSub queue.Subscription
		if q != nil {
			sub, dlSub = spec.declare(q, topic)
		} else {
			var err error
			if sub, dlSub, err = spec.ensure(ctx, ps, topic); err != nil {
				return nil, err
			}
		}
		return func(ctx context.Context) error {
			var g errgroup.Group
			for _, r := range []struct {
				receiver
				sub queue.Subscription
			}{{events, sub}, {deadLetters, dlSub}} {
				g.Go(func() error {
					if err := r.sub.Receive(ctx, lingeringHandler(r.handle)); err != nil && ctx.Err() == nil {
						log.Error(r.what+" stopped", "error", err)
					}
					return nil
				})
			}
			return g.Wait()
		}, nil
	})
}

// deliveryHandler wraps a notify.Deliverer handler for a subscription:
// it logs the errors that make the queue redeliver, except ErrNotDue,
// which is routine (a message polled before its attempt is due) and is
// logged at debug level only.
func deliveryHandler(h queue.Handler, log *slog.Logger) queue.Handler {
	return func(ctx context.Context, m queue.Message) error {
		err := h(ctx, m)
		switch {
		case err == nil:
		case errors.Is(err, notify.ErrNotDue):
			log.DebugContext(ctx, "notification message not due yet; the queue redelivers it later", "message_id", m.ID)
		case ctx.Err() != nil:
			// Stopping: the message is given back, nothing failed.
		default:
			log.WarnContext(ctx, "delivering a notification failed; the queue redelivers it", "message_id", m.ID, "error", err)
		}
		return err
	}
}

// sweepEvery runs the sweep every interval in the background (none if
// interval is 0). A run in progress when the App closes is given
// ShutdownGrace to finish.
func (b *build) sweepEvery(interval time.Duration) {
	if b.err != nil || interval <= 0 {
		return
	}
	s, log := b.app.Sweeper, b.log
	b.app.jobs = append(b.app.jobs, loop(func(ctx context.Context) error {
		runSweeps(ctx, s, interval, log)
		return nil
	}))
}

// runSweeps runs s every interval until ctx ends.
func runSweeps(ctx context.Context, s *sweep.Sweeper, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		run, cancel := lingering(ctx, ShutdownGrace)
		rep, err := s.Run(run, sweep.Options{})
		cut := run.Err() != nil // by the end of the grace, when stopping
		cancel()
		switch {
		case err != nil && !cut:
			log.Error("sweep failed; the next run continues from its checkpoint", "error", err)
		case err == nil && (len(rep.Disabled) > 0 || len(rep.Reenabled) > 0 || len(rep.Thresholds) > 0 || !rep.Complete):
			log.Info("sweep", "scanned", rep.Scanned, "disabled", len(rep.Disabled), "reenabled", len(rep.Reenabled),
				"thresholds", len(rep.Thresholds), "complete", rep.Complete)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// routes serves the routes of the named functions (every route if none).
func (b *build) routes(functions ...string) {
	if b.err != nil {
		return
	}
	if len(functions) == 0 || slices.Contains(functions, httpapi.FuncFaces) {
		b.console()
	}
	b.app.Handler = b.srv.Handler(functions...)
}

// console builds the operator console over the Server's services.
func (b *build) console() {
	c, err := console.New(console.Config{Keys: b.srv.Keys, Owners: b.srv.Owners, Ledger: b.srv.Ledger, Sweeper: b.srv.Sweeper,
		Plans: b.srv.Plans, Authenticate: b.srv.AuthenticateCredential, Clock: b.srv.Clock, Logger: b.srv.Logger})
	if err != nil {
		b.err = err
		return
	}
	b.srv.Console = c
}
