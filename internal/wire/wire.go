// Package wire builds keyplane from a validated config.Config: it opens the
// configured backends, loads the deployment secrets and plans, and returns
// the services and the HTTP server. It is the one place that knows which
// adapter backs each interface; cmd/keyplane and the Cloud Functions are its
// only users.
//
// Each Cloud Function opens only what it uses (Function in Open), so that
// its service account needs no permission beyond its job: UsageWebhook
// never reads the pepper, Verify never touches the usage queue,
// DeliverNotification reads only the notification records and the owners'
// webhook secrets.
package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	gfirestore "cloud.google.com/go/firestore"
	gpubsub "cloud.google.com/go/pubsub/v2"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clientips"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/firestoreledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/firestorenotify"
	"github.com/keyplane/keyplane/internal/notify/sqlitenotify"
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
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/verify"
	"github.com/keyplane/keyplane/internal/webhook"
)

// App is a built keyplane. Fields a function does not use are nil.
type App struct {
	Config   config.Config
	Store    store.Store
	Vault    secrets.Vault
	Plans    *plan.Catalog
	Keys     *keys.Service
	Verifier *verify.Verifier
	Ledger   ledger.Ledger
	Topic    queue.Topic // the usage topic
	Consumer *meter.Consumer
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
	Server    *httpapi.Server
	// GeneratedAdminToken and GeneratedWebhookSecret are set when Open
	// generated them (file vault, none configured): the caller shows them
	// once.
	GeneratedAdminToken    string
	GeneratedWebhookSecret string

	queue     *embeddedqueue.Queue // the embedded queue, when used
	pubsub    *gpubsub.Client
	firestore *gfirestore.Client // shared by every Firestore adapter
	closers   []func() error
}

// Close releases every backend. The embedded queue goes first: closing it
// waits for its running handlers, which use the stores closed after it.
func (a *App) Close() error {
	var errList []error
	if a.queue != nil {
		errList = append(errList, a.queue.Close())
	}
	for i := len(a.closers) - 1; i >= 0; i-- {
		errList = append(errList, a.closers[i]())
	}
	return errors.Join(errList...)
}

// Embedded-queue and Pub/Sub names.
const (
	usageSubscription      = "record-usage"
	deadLetterSuffix       = "-dead-letter"
	deadLetterSubscription = "record-dead-letters"

	notifySubscription           = "deliver-notifications"
	notifyDeadLetterSubscription = "notification-dead-letters"
)

// UsageRetryPolicy is the usage subscription's redelivery policy, the same
// as the production push subscription's (infra/).
var UsageRetryPolicy = queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: 10 * time.Minute, MaxAttempts: 10}

// NotifyRetryPolicy is the notifications subscription's redelivery policy,
// the same as the production push subscription's (infra/). The queue is
// only the alarm clock of internal/notify's retry schedule (see its package
// comment): 5 s is the schedule's first retry, 600 s is Pub/Sub's cap and
// bounds how late a retry is made, and 100 deliveries outlast the
// schedule's longest gap (10 h, 67 to 82 deliveries).
var NotifyRetryPolicy = queue.RetryPolicy{MinBackoff: 5 * time.Second, MaxBackoff: 600 * time.Second, MaxAttempts: 100}

// notifyDeadLetterPolicy redelivers a dead-lettered notification message
// whose handling failed (the store was unreachable) without spinning.
var notifyDeadLetterPolicy = queue.RetryPolicy{MinBackoff: 10 * time.Second, MaxBackoff: 600 * time.Second}

// needs says which parts a function uses.
type needs struct {
	store, keySecrets, auth, ledger, topic, webhookSecrets bool
	// notify: the notification store and topic, and the vault (owner
	// webhook secrets).
	notify bool
	// verifyTokens: read the verify-token secret (only the function that
	// serves /v1/verify may read it).
	verifyTokens bool
}

func needsOf(function string) needs {
	switch function {
	case httpapi.FuncKeys:
		return needs{store: true, keySecrets: true, auth: true, ledger: true, notify: true}
	case httpapi.FuncSweep:
		return needs{store: true, keySecrets: true, auth: true, ledger: true, notify: true}
	case httpapi.FuncVerify:
		// The ledger for quotas (read only); the usage topic for the
		// client IPs it sees, which RecordUsage writes.
		return needs{store: true, auth: true, ledger: true, topic: true, verifyTokens: true}
	case httpapi.FuncUsageWebhook:
		return needs{topic: true, webhookSecrets: true}
	case FuncRecordUsage:
		return needs{store: true, ledger: true}
	case FuncDeliverNotification:
		return needs{notify: true}
	}
	return needs{store: true, keySecrets: true, auth: true, ledger: true, topic: true, webhookSecrets: true, notify: true, verifyTokens: true}
}

// CloudEvent functions, which serve no route of the HTTP API.
const (
	// FuncRecordUsage counts usage.
	FuncRecordUsage = "RecordUsage"
	// FuncDeliverNotification makes the delivery attempts of owner
	// notifications.
	FuncDeliverNotification = "DeliverNotification"
)

// Open builds keyplane from cfg, which it validates first. function names
// the Cloud Function to build for ("" builds everything, for keyplane
// serve).
func Open(ctx context.Context, cfg config.Config, log *slog.Logger, function string) (app *App, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	plans, err := plan.Load(cfg.PlansFile)
	if err != nil {
		return nil, err
	}
	app = &App{Config: cfg, Plans: plans}
	defer func() {
		if err != nil {
			app.Close()
		}
	}()
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	n := needsOf(function)
	var clk clock.Clock = clock.Real{}
	if cfg.ClockOffset != 0 {
		clk = clock.Offset(cfg.ClockOffset)
	}
	srv := &httpapi.Server{Plans: plans, Logger: log, Project: cfg.Project, Clock: clk}
	app.Server = srv
	embeddedVault := cfg.Secrets == config.SecretsFile

	if n.store {
		if app.Store, err = app.openStore(ctx, cfg); err != nil {
			return nil, err
		}
		app.closers = append(app.closers, app.Store.Close)
	}
	if n.keySecrets || n.auth || n.webhookSecrets || n.notify {
		if app.Vault, err = openVault(ctx, cfg); err != nil {
			return nil, err
		}
		app.closers = append(app.closers, app.Vault.Close)
	}
	if n.ledger {
		if app.Ledger, err = app.openLedger(ctx, cfg); err != nil {
			return nil, err
		}
		app.closers = append(app.closers, app.Ledger.Close)
		srv.Ledger = app.Ledger
	}
	if n.topic {
		if app.Topic, err = app.openTopic(ctx, cfg); err != nil {
			return nil, err
		}
		srv.UsageTopic = app.Topic
	}
	if n.notify {
		if err := app.openNotify(ctx, cfg, clk, log); err != nil {
			return nil, err
		}
		srv.Notify = app.Notify
	}
	if n.webhookSecrets {
		if srv.WebhookSecrets, app.GeneratedWebhookSecret, err = webhookSecrets(ctx, cfg, app.Vault, embeddedVault); err != nil {
			return nil, err
		}
	}
	if n.store && n.ledger {
		app.Consumer = meter.NewConsumer(app.Ledger, app.Store, clk, log)
	}
	if n.auth {
		pepper, err := secret(ctx, app.Vault, secrets.Pepper, embeddedVault, 32)
		if err != nil {
			return nil, err
		}
		hasher, err := apikey.NewHasher(pepper)
		if err != nil {
			return nil, fmt.Errorf("the %q secret: %w", secrets.Pepper, err)
		}
		tokens, err := app.adminTokens(ctx, embeddedVault)
		if err != nil {
			return nil, err
		}
		srv.Auth = httpapi.NewTokenAuth(tokens...)
		if len(cfg.IDTokenServiceAccounts) > 0 {
			id, err := httpapi.NewIDTokenAuth(ctx, cfg.IDTokenServiceAccounts, cfg.IDTokenAudiences)
			if err != nil {
				return nil, err
			}
			srv.Auth = httpapi.WithIDTokens(srv.Auth, id)
		}
		verifyTokens := cfg.VerifyTokens
		if n.verifyTokens {
			// Every enabled version of the verify-token secret, as for
			// the admin token (Terraform generates one; rotate by adding).
			versions, err := app.Vault.SecretVersions(ctx, secrets.VerifyToken)
			if err != nil && !errs.Is(err, errs.NotFound) {
				return nil, err
			}
			for _, v := range versions {
				verifyTokens = append(verifyTokens, string(v))
			}
		}
		if len(verifyTokens) > 0 {
			srv.VerifyAuth = httpapi.NewTokenAuthAs("gateway", verifyTokens...)
		}
		opts := &verify.Options{Logger: log}
		if app.Ledger != nil {
			opts.Quota = verify.NewQuotas(app.Ledger, clk, 0, log)
			// Through the usage topic where there is one (Verify may not
			// write to Firestore); flushed from the request path when due
			// (a Cloud Function has no background CPU), and in serve on a
			// timer too.
			var w clientips.Writer = app.Ledger
			if app.Topic != nil {
				w = meter.ClientIPPublisher{Topic: app.Topic}
			}
			app.ClientIPs = clientips.New(w, clk, 10*time.Second, log)
			opts.ClientIPs = app.ClientIPs
		}
		app.Verifier = verify.New(app.Store, hasher, plans, clk, opts)
		srv.Verifier = app.Verifier
		if n.keySecrets {
			app.Keys = &keys.Service{
				Store: app.Store, Vault: app.Vault, Hasher: hasher, Plans: plans,
				Prefix: cfg.KeyPrefix, Clock: clk, Logger: log,
			}
			if app.Notify != nil {
				app.Keys.Notifier = notify.KeyEvents{Service: app.Notify}
			}
			srv.Keys = app.Keys
		}
	}
	if app.Keys != nil && app.Ledger != nil {
		app.Sweeper = &sweep.Sweeper{
			Store: app.Store, Ledger: app.Ledger, Plans: plans,
			Notify: app.Notify, Keys: app.Keys, Clock: clk, Logger: log,
		}
		if cfg.Store == config.StoreFirestore {
			// Firestore reads are round trips, not CPU: more of them in
			// flight (docs/benchmarks.md, "Sweep", read concurrency: 32
			// readers against the default 8 on the emulator).
			app.Sweeper.Workers = 32
		}
		srv.Sweeper = app.Sweeper
	}
	return app, nil
}

// firestoreClient returns the one Firestore client of the App (the
// configured project and database), created on first use and closed by
// Close after the adapters that share it.
func (a *App) firestoreClient(ctx context.Context, cfg config.Config) (*gfirestore.Client, error) {
	if a.firestore != nil {
		return a.firestore, nil
	}
	c, err := gfirestore.NewClientWithDatabase(ctx, cfg.Project, cfg.FirestoreDatabase)
	if err != nil {
		return nil, fmt.Errorf("firestore: %w", err)
	}
	a.firestore = c
	a.closers = append(a.closers, c.Close)
	return c, nil
}

func (a *App) openStore(ctx context.Context, cfg config.Config) (store.Store, error) {
	if cfg.Store == config.StoreSQLite {
		return sqlitestore.Open(filepath.Join(cfg.DataDir, "keyplane.db"))
	}
	c, err := a.firestoreClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return firestorestore.NewFromClient(c), nil
}

func (a *App) openLedger(ctx context.Context, cfg config.Config) (ledger.Ledger, error) {
	if cfg.Store == config.StoreSQLite {
		return sqliteledger.Open(filepath.Join(cfg.DataDir, "usage.db"))
	}
	c, err := a.firestoreClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return firestoreledger.NewFromClient(c, firestoreledger.Options{}), nil
}

// openNotify opens the notification store (its own SQLite file, or the
// shared Firestore database) and the notifications topic, and builds the
// notify Service and Deliverer on them and the vault.
func (a *App) openNotify(ctx context.Context, cfg config.Config, clk clock.Clock, log *slog.Logger) error {
	if cfg.Store == config.StoreSQLite {
		s, err := sqlitenotify.Open(filepath.Join(cfg.DataDir, "notify.db"))
		if err != nil {
			return err
		}
		a.NotifyStore = s
	} else {
		c, err := a.firestoreClient(ctx, cfg)
		if err != nil {
			return err
		}
		a.NotifyStore = firestorenotify.NewFromClient(c)
	}
	a.closers = append(a.closers, a.NotifyStore.Close)
	t, err := a.openNotificationsTopic(ctx, cfg)
	if err != nil {
		return err
	}
	a.NotificationsTopic = t
	guard := &notify.Guard{AllowPrivate: cfg.WebhookAllowPrivate}
	a.Notify = &notify.Service{
		Registry: a.NotifyStore, Deliveries: a.NotifyStore, Vault: a.Vault, Topic: t,
		Guard: guard, Clock: clk, Logger: log,
	}
	a.Deliverer = &notify.Deliverer{
		Registry: a.NotifyStore, Deliveries: a.NotifyStore, Vault: a.Vault, Topic: t,
		Guard: guard, Clock: clk, Logger: log,
	}
	return nil
}

func openVault(ctx context.Context, cfg config.Config) (secrets.Vault, error) {
	if cfg.Secrets == config.SecretsManager {
		return secretmanagervault.New(ctx, cfg.Project, secretmanagervault.Options{Prefix: cfg.SecretPrefix})
	}
	key := cfg.VaultKey
	if key == nil {
		var err error
		if key, err = filevault.LoadOrCreateKey(filepath.Join(cfg.DataDir, "vault.key")); err != nil {
			return nil, err
		}
	}
	return filevault.Open(filepath.Join(cfg.DataDir, "vault.json.enc"), key)
}

// openQueue opens the App's transport once: the Pub/Sub client, or the
// embedded queue that every topic of the process shares.
func (a *App) openQueue(ctx context.Context, cfg config.Config) error {
	if a.pubsub != nil || a.queue != nil {
		return nil
	}
	if cfg.Queue == config.QueuePubSub {
		c, err := gpubsub.NewClient(ctx, cfg.Project)
		if err != nil {
			return fmt.Errorf("pubsub: %w", err)
		}
		a.pubsub = c
		a.closers = append(a.closers, c.Close)
		return nil
	}
	q, err := embeddedqueue.Open(filepath.Join(cfg.DataDir, "queue.db"), embeddedqueue.Options{})
	if err != nil {
		return err
	}
	a.queue = q // closed first by Close
	return nil
}

// openTopic opens the usage topic: a Pub/Sub topic, or the embedded queue's
// (with its record-usage subscription and dead-letter topic declared, so
// that nothing published is dropped).
func (a *App) openTopic(ctx context.Context, cfg config.Config) (queue.Topic, error) {
	if err := a.openQueue(ctx, cfg); err != nil {
		return nil, err
	}
	if a.pubsub != nil {
		t := pubsubqueue.NewTopic(a.pubsub, cfg.UsageTopic, pubsubqueue.PublishSettings{})
		a.closers = append(a.closers, t.Close)
		return t, nil
	}
	// Declare both subscriptions now: a message published to a topic with
	// no subscription is dropped.
	q := a.queue
	q.Subscription(cfg.UsageTopic, usageSubscription, UsageRetryPolicy, cfg.UsageTopic+deadLetterSuffix)
	q.Subscription(cfg.UsageTopic+deadLetterSuffix, deadLetterSubscription, queue.RetryPolicy{}, "")
	return q.Topic(cfg.UsageTopic), nil
}

// openNotificationsTopic opens the notifications topic: a Pub/Sub topic,
// or the embedded queue's, with its deliver-notifications subscription,
// dead-letter topic and dead-letter subscription declared.
func (a *App) openNotificationsTopic(ctx context.Context, cfg config.Config) (queue.Topic, error) {
	if err := a.openQueue(ctx, cfg); err != nil {
		return nil, err
	}
	if a.pubsub != nil {
		t := pubsubqueue.NewTopic(a.pubsub, cfg.NotificationsTopic, pubsubqueue.PublishSettings{})
		a.closers = append(a.closers, t.Close)
		return t, nil
	}
	q, name, dl := a.queue, cfg.NotificationsTopic, cfg.NotificationsTopic+deadLetterSuffix
	q.Subscription(name, notifySubscription, NotifyRetryPolicy, dl)
	q.Subscription(dl, notifyDeadLetterSubscription, notifyDeadLetterPolicy, "")
	return q.Topic(name), nil
}

// UsageSubscriptions returns the subscriptions a long-lived process
// (keyplane serve) consumes: the usage events and their dead letters. They
// are the embedded queue's, or Pub/Sub pull subscriptions created if needed
// (in production a push subscription delivers to RecordUsage instead, and
// dead letters wait on a pull subscription for an operator).
func (a *App) UsageSubscriptions(ctx context.Context) (events, deadLetters queue.Subscription, err error) {
	name, dl := a.Config.UsageTopic, a.Config.UsageTopic+deadLetterSuffix
	if a.queue != nil {
		return a.queue.Subscription(name, usageSubscription, UsageRetryPolicy, dl),
			a.queue.Subscription(dl, deadLetterSubscription, queue.RetryPolicy{}, ""), nil
	}
	if a.pubsub == nil {
		return nil, nil, errors.New("no usage queue is open")
	}
	for _, t := range []string{name, dl} {
		if err := pubsubqueue.EnsureTopic(ctx, a.pubsub, t); err != nil {
			return nil, nil, err
		}
	}
	sub, dlSub := name+"-"+usageSubscription, dl+"-"+deadLetterSubscription
	if err := pubsubqueue.EnsureSubscription(ctx, a.pubsub, sub, name, UsageRetryPolicy, dl); err != nil {
		return nil, nil, err
	}
	if err := pubsubqueue.EnsureSubscription(ctx, a.pubsub, dlSub, dl, queue.RetryPolicy{}, ""); err != nil {
		return nil, nil, err
	}
	return pubsubqueue.NewSubscription(a.pubsub, sub), pubsubqueue.NewSubscription(a.pubsub, dlSub), nil
}

// NotificationSubscriptions returns the subscriptions through which a
// long-lived process (keyplane serve) delivers owner notifications: the
// notifications topic's and its dead letters'. They are the embedded
// queue's, or Pub/Sub pull subscriptions created if needed (in production
// a push subscription delivers to DeliverNotification instead).
func (a *App) NotificationSubscriptions(ctx context.Context) (deliveries, deadLetters queue.Subscription, err error) {
	name, dl := a.Config.NotificationsTopic, a.Config.NotificationsTopic+deadLetterSuffix
	if a.queue != nil {
		return a.queue.Subscription(name, notifySubscription, NotifyRetryPolicy, dl),
			a.queue.Subscription(dl, notifyDeadLetterSubscription, notifyDeadLetterPolicy, ""), nil
	}
	if a.pubsub == nil {
		return nil, nil, errors.New("no notifications queue is open")
	}
	for _, t := range []string{name, dl} {
		if err := pubsubqueue.EnsureTopic(ctx, a.pubsub, t); err != nil {
			return nil, nil, err
		}
	}
	sub, dlSub := name+"-"+notifySubscription, dl+"-"+notifyDeadLetterSubscription
	if err := pubsubqueue.EnsureSubscription(ctx, a.pubsub, sub, name, NotifyRetryPolicy, dl); err != nil {
		return nil, nil, err
	}
	if err := pubsubqueue.EnsureSubscription(ctx, a.pubsub, dlSub, dl, notifyDeadLetterPolicy, ""); err != nil {
		return nil, nil, err
	}
	return pubsubqueue.NewSubscription(a.pubsub, sub), pubsubqueue.NewSubscription(a.pubsub, dlSub), nil
}

// DeliveryHandler wraps a notify.Deliverer handler for a subscription:
// it logs the errors that make the queue redeliver, except ErrNotDue,
// which is routine (a message polled before its attempt is due) and is
// logged at debug level only.
func DeliveryHandler(h queue.Handler, log *slog.Logger) queue.Handler {
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

// secret reads a named deployment secret. With generate (the embedded
// vault) a missing one is created from random characters; in production it
// must have been provisioned (infra/ does), and its absence is an error
// that names it.
func secret(ctx context.Context, v secrets.Vault, name string, generate bool, n int) ([]byte, error) {
	b, err := v.Secret(ctx, name)
	switch {
	case err == nil:
		return b, nil
	case !errs.Is(err, errs.NotFound):
		return nil, err
	case !generate:
		return nil, fmt.Errorf("secret %q does not exist in the vault: create it (see docs/operations.md)", name)
	}
	b = []byte(apikey.RandomString(n + n/2)) // base62: ~5.95 bits a char
	if err := v.AddSecretVersion(ctx, name, b); err != nil {
		return nil, err
	}
	return b, nil
}

// webhookSecrets returns the usage webhook's accepted secrets: the
// configured one and every enabled version in the vault (several during a
// rotation). With the embedded vault and none at all, one is generated and
// returned as generated.
func webhookSecrets(ctx context.Context, cfg config.Config, v secrets.Vault, generate bool) (out []webhook.Secret, generated string, err error) {
	var texts []string
	if cfg.WebhookSecret != "" {
		texts = append(texts, cfg.WebhookSecret)
	}
	versions, err := v.SecretVersions(ctx, secrets.WebhookSecret)
	if err != nil && !errs.Is(err, errs.NotFound) {
		return nil, "", err
	}
	for _, b := range versions {
		texts = append(texts, string(b))
	}
	if len(texts) == 0 {
		if !generate {
			return nil, "", fmt.Errorf("no usage webhook secret: set KEYPLANE_WEBHOOK_SECRET or add a version to the %q secret", secrets.WebhookSecret)
		}
		s := webhook.NewSecret()
		if err := v.AddSecretVersion(ctx, secrets.WebhookSecret, []byte(s)); err != nil {
			return nil, "", err
		}
		texts, generated = append(texts, s), s
	}
	for _, t := range texts {
		s, err := webhook.ParseSecret(t)
		if err != nil {
			return nil, "", fmt.Errorf("usage webhook secret: %w", err)
		}
		out = append(out, s)
	}
	return out, generated, nil
}

// adminTokens returns every accepted admin token: the configured one and
// the vault's enabled versions. With the embedded vault and none at all, it
// generates one.
func (a *App) adminTokens(ctx context.Context, embedded bool) ([]string, error) {
	var tokens []string
	if a.Config.AdminToken != "" {
		tokens = append(tokens, a.Config.AdminToken)
	}
	versions, err := a.Vault.SecretVersions(ctx, secrets.AdminToken)
	if err != nil && !errs.Is(err, errs.NotFound) {
		return nil, err
	}
	for _, v := range versions {
		tokens = append(tokens, string(v))
	}
	if len(tokens) > 0 {
		return tokens, nil
	}
	if !embedded {
		return nil, fmt.Errorf("no admin token: set KEYPLANE_ADMIN_TOKEN or add a version to the %q secret", secrets.AdminToken)
	}
	t := "kpadm_" + apikey.RandomString(40)
	if err := a.Vault.AddSecretVersion(ctx, secrets.AdminToken, []byte(t)); err != nil {
		return nil, err
	}
	a.GeneratedAdminToken = t
	return []string{t}, nil
}

// AdminToken returns the newest admin token stored in the vault (for
// `keyplane admin-token`).
func AdminToken(ctx context.Context, v secrets.Vault) (string, error) {
	b, err := v.Secret(ctx, secrets.AdminToken)
	return string(b), err
}

// RunBackground runs the periodic work of a long-lived process (keyplane
// serve) until ctx ends: polling the verifier's change feed, consuming the
// usage queue, delivering owner notifications, and sweeping every
// SweepInterval (in production Cloud Scheduler calls the Sweep function).
func (a *App) RunBackground(ctx context.Context, log *slog.Logger) error {
	go a.Verifier.Run(ctx)
	go a.ClientIPs.Run(ctx)
	events, deadLetters, err := a.UsageSubscriptions(ctx)
	if err != nil {
		return err
	}
	deliveries, deadDeliveries, err := a.NotificationSubscriptions(ctx)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		what string
		sub  queue.Subscription
		h    queue.Handler
	}{
		{"usage consumer", events, a.Consumer.Handle},
		{"usage dead-letter consumer", deadLetters, a.Consumer.HandleDeadLetter},
		{"notification deliverer", deliveries, DeliveryHandler(a.Deliverer.Handle, log)},
		{"notification dead-letter handler", deadDeliveries, DeliveryHandler(a.Deliverer.HandleDeadLetter, log)},
	} {
		go func() {
			if err := c.sub.Receive(ctx, c.h); err != nil && ctx.Err() == nil {
				log.Error(c.what+" stopped", "error", err)
			}
		}()
	}
	if a.Config.SweepInterval > 0 {
		go a.runSweeps(ctx, a.Config.SweepInterval, log)
	}
	return nil
}

// runSweeps runs the sweep every interval until ctx ends.
func (a *App) runSweeps(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := a.Sweeper.Run(ctx, sweep.Options{})
		switch {
		case err != nil && ctx.Err() == nil:
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
