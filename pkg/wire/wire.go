// Package wire builds keyplane from a validated config.Config: it opens the
// configured backends, loads the pepper and plans, and returns the services
// and the HTTP server. It is the one place that knows which adapter backs
// each interface; cmd/keyplane and the Cloud Functions are its only users.
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

	"github.com/keyplane/keyplane/pkg/apikey"
	"github.com/keyplane/keyplane/pkg/clock"
	"github.com/keyplane/keyplane/pkg/config"
	"github.com/keyplane/keyplane/pkg/errs"
	"github.com/keyplane/keyplane/pkg/httpapi"
	"github.com/keyplane/keyplane/pkg/keys"
	"github.com/keyplane/keyplane/pkg/plan"
	"github.com/keyplane/keyplane/pkg/secrets"
	"github.com/keyplane/keyplane/pkg/secrets/filevault"
	smvault "github.com/keyplane/keyplane/pkg/secrets/secretmanager"
	"github.com/keyplane/keyplane/pkg/store"
	storefs "github.com/keyplane/keyplane/pkg/store/firestore"
	"github.com/keyplane/keyplane/pkg/store/sqlite"
	"github.com/keyplane/keyplane/pkg/verify"
)

// App is a built keyplane.
type App struct {
	Config   config.Config
	Store    store.Store
	Vault    secrets.Vault
	Plans    *plan.Catalog
	Keys     *keys.Service
	Verifier *verify.Verifier
	Server   *httpapi.Server
	// GeneratedAdminToken is set when Open generated the admin token (file
	// vault, none configured): the caller shows it once.
	GeneratedAdminToken string

	closers []func() error
}

// Close releases every backend.
func (a *App) Close() error {
	var errList []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errList = append(errList, a.closers[i]())
	}
	return errors.Join(errList...)
}

// Open builds keyplane from cfg, which it validates first.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (app *App, err error) {
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
	if app.Store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	app.closers = append(app.closers, app.Store.Close)
	if app.Vault, err = openVault(ctx, cfg); err != nil {
		return nil, err
	}
	app.closers = append(app.closers, app.Vault.Close)

	embedded := cfg.Secrets == config.SecretsFile
	pepper, err := secret(ctx, app.Vault, secrets.Pepper, embedded, 32)
	if err != nil {
		return nil, err
	}
	hasher, err := apikey.NewHasher(pepper)
	if err != nil {
		return nil, fmt.Errorf("the %q secret: %w", secrets.Pepper, err)
	}
	tokens, err := app.adminTokens(ctx, embedded)
	if err != nil {
		return nil, err
	}
	app.Keys = &keys.Service{
		Store: app.Store, Vault: app.Vault, Hasher: hasher, Plans: plans,
		Prefix: cfg.KeyPrefix, Clock: clock.Real{}, Logger: log,
	}
	app.Verifier = verify.New(app.Store, hasher, plans, clock.Real{}, &verify.Options{Logger: log})
	app.Server = &httpapi.Server{
		Keys: app.Keys, Verifier: app.Verifier, Plans: plans, Auth: httpapi.NewTokenAuth(tokens...),
		Logger: log, Project: cfg.Project,
	}
	return app, nil
}

func openStore(ctx context.Context, cfg config.Config) (store.Store, error) {
	if cfg.Store == config.StoreSQLite {
		return sqlite.Open(filepath.Join(cfg.DataDir, "keyplane.db"))
	}
	c, err := gfirestore.NewClientWithDatabase(ctx, cfg.Project, cfg.FirestoreDatabase)
	if err != nil {
		return nil, fmt.Errorf("firestore: %w", err)
	}
	return storefs.NewFromClient(c), nil
}

func openVault(ctx context.Context, cfg config.Config) (secrets.Vault, error) {
	if cfg.Secrets == config.SecretsManager {
		return smvault.New(ctx, cfg.Project, smvault.Options{Prefix: cfg.SecretPrefix})
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

// secret reads a named deployment secret. With generate (the embedded
// vault) a missing one is created from n random bytes; in production it
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

// adminTokens returns every accepted admin token: the configured one and
// the vault's enabled versions. With the embedded vault and none at all, it
// generates one.
func (a *App) adminTokens(ctx context.Context, embedded bool) ([]string, error) {
	var tokens []string
	if a.Config.AdminToken != "" {
		tokens = append(tokens, a.Config.AdminToken)
	}
	versions, err := a.Vault.SecretVersions(ctx, secrets.AdminToken)
	switch {
	case errs.Is(err, errs.NotFound):
	case err != nil:
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
// serve) until ctx ends: polling the verifier's change feed, and reaping
// abandoned provisioning intents hourly (in production the scheduled Sweep
// function reaps).
func (a *App) RunBackground(ctx context.Context) {
	go a.Verifier.Run(ctx)
	log := a.Keys.Logger
	reap := func() {
		n, err := a.Keys.ReapAbandoned(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("reaping abandoned provisioning intents", "error", err)
		} else if n > 0 {
			log.Info("reaped abandoned provisioning intents", "count", n)
		}
	}
	reap()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			reap()
		}
	}
}
