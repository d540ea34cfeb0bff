// Package config is keyplane's one typed configuration, read from the
// environment (and, for `keyplane serve`, flags) once at start-up and
// validated before anything is built.
package config

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/stripeexport"
)

// Backend names.
const (
	StoreSQLite         = "sqlite"
	StoreFirestore      = "firestore"
	SecretsFile         = "file"
	SecretsManager      = "secretmanager"
	QueueEmbedded       = "embedded"
	QueuePubSub         = "pubsub"
	defaultSecretPrefix = "keyplane-"
)

// Leak policies (KEYPLANE_LEAK_POLICY).
const (
	LeakDisable    = "disable"
	LeakRevoke     = "revoke"
	LeakQuarantine = "quarantine"
)

// Quarantine settings' defaults and bounds (KEYPLANE_LEAK_QUARANTINE_DAYS,
// KEYPLANE_LEAK_QUARANTINE_GRACE); keys.Service enforces the same.
const (
	DefaultLeakQuarantineDays  = 7
	MaxLeakQuarantineDays      = 7
	DefaultLeakQuarantineGrace = 72 * time.Hour
	MinLeakQuarantineGrace     = time.Minute
	MaxLeakQuarantineGrace     = 720 * time.Hour
)

// DefaultGitHubScanningKeysURL is where GitHub publishes its secret
// scanning public keys.
const DefaultGitHubScanningKeysURL = "https://api.github.com/meta/public_keys/secret_scanning"

// Config is every setting, with the environment variable that sets it.
type Config struct {
	// Store is the datastore: "sqlite" (embedded default) or "firestore"
	// (KEYPLANE_STORE).
	Store string
	// Secrets is the secret vault: "file" (embedded default) or
	// "secretmanager" (KEYPLANE_SECRETS).
	Secrets string
	// Queue is the usage event transport: "embedded" (default) or
	// "pubsub" (KEYPLANE_QUEUE).
	Queue string
	// UsageTopic is the usage events topic (KEYPLANE_USAGE_TOPIC, default
	// "usage-events"); its dead letters go to "<topic>-dead-letter".
	UsageTopic string
	// NotificationsTopic is the owner notifications topic
	// (KEYPLANE_NOTIFICATIONS_TOPIC, default "notifications"): each message
	// asks for one delivery attempt of a notification (internal/notify); the
	// ones the queue gives up on go to "<topic>-dead-letter".
	NotificationsTopic string
	// Project is the Google Cloud project, required by the cloud backends
	// (GOOGLE_CLOUD_PROJECT, or GCP_PROJECT).
	Project string
	// FirestoreDatabase is the Firestore database id
	// (KEYPLANE_FIRESTORE_DATABASE, default "(default)").
	FirestoreDatabase string
	// DataDir holds the SQLite database, the vault and its key for the
	// embedded backends (KEYPLANE_DATA or --data, default ./.keyplane).
	DataDir string
	// VaultKey is the file vault's 32-byte AES key, hex
	// (KEYPLANE_VAULT_KEY). Default: generated into DataDir/vault.key.
	VaultKey []byte
	// AdminToken is a bearer token for the management API
	// (KEYPLANE_ADMIN_TOKEN). Every enabled version of the vault's
	// "admin-token" secret is accepted too; with the file vault and no
	// token at all, one is generated, stored and printed once.
	AdminToken string
	// VerifyTokens are bearer tokens accepted on POST /v1/verify only, for
	// gateways (KEYPLANE_VERIFY_TOKENS, comma-separated, each ≥ 16
	// characters). The admin token is accepted there too.
	VerifyTokens []string
	// IDTokenServiceAccounts are the service accounts whose Google-signed
	// ID tokens are accepted where the admin token is, e.g. Cloud
	// Scheduler's on the sweep route (KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS,
	// comma-separated emails; default none: no ID token is accepted).
	IDTokenServiceAccounts []string
	// IDTokenAudiences are the accepted audiences of those ID tokens
	// (KEYPLANE_ID_TOKEN_AUDIENCES, comma-separated https:// URLs). Default:
	// the URL each request was addressed to, https://<Host>[/path].
	IDTokenAudiences []string
	// PlansFile is a JSON or YAML plans file (KEYPLANE_PLANS). Default:
	// the built-in free/pro/enterprise plans.
	PlansFile string
	// WebhookSecret is the usage webhook's whsec_ secret
	// (KEYPLANE_WEBHOOK_SECRET); default: the vault's "webhook-secret".
	WebhookSecret string
	// StripeAPIKey turns on the export of metered usage to Stripe Billing
	// meter events (KEYPLANE_STRIPE_API_KEY: a restricted key that may
	// write meter events and read customers; infra/ passes it from Secret
	// Manager). Empty, the default: no export.
	StripeAPIKey string
	// StripeMeters maps metrics to Stripe meters' event names
	// (KEYPLANE_STRIPE_METERS, e.g. "requests=api_requests,units=api_tokens";
	// syntax: stripeexport.ParseMeters). Required with StripeAPIKey.
	StripeMeters string
	// StripeURL replaces https://api.stripe.com (KEYPLANE_STRIPE_URL; for
	// stripe-mock and tests).
	StripeURL string
	// WebhookAllowPrivate lets owner webhook URLs be plain http:// and
	// resolve to private, loopback or link-local addresses
	// (KEYPLANE_WEBHOOK_ALLOW_PRIVATE=1 or true; default false). For local
	// development and tests only: in production it lets anyone who may set
	// a webhook make keyplane POST into its own network (SSRF).
	WebhookAllowPrivate bool
	// SweepInterval is how often `keyplane serve` runs the sweep
	// (KEYPLANE_SWEEP_INTERVAL, default 1m; 0 = only on request).
	SweepInterval time.Duration
	// ClockOffset moves the clock of an embedded deployment
	// (KEYPLANE_CLOCK_OFFSET, e.g. 24h): to watch a quota window reset
	// without waiting for it. Refused with the cloud backends.
	ClockOffset time.Duration
	// KeyPrefix prefixes new keys (KEYPLANE_KEY_PREFIX, default kp_live).
	KeyPrefix string
	// SecretPrefix prefixes Secret Manager secret ids, so that several
	// deployments can share a project (KEYPLANE_SECRET_PREFIX, default
	// "keyplane-").
	SecretPrefix string
	// LogLevel is debug, info, warn or error (KEYPLANE_LOG_LEVEL, info).
	LogLevel slog.Level
	// LogValidSample makes the info-level request log keep one in this
	// many VALID verify answers, each kept line carrying "sampled": N
	// (KEYPLANE_LOG_VALID_SAMPLE, default 10; 1 keeps every one). Every
	// refusal, error and other request is logged; the verify metrics
	// count every decision.
	LogValidSample int
	// Telemetry is where metrics and traces go (KEYPLANE_TELEMETRY): off
	// (the default), stdout, prometheus, or gcp (Cloud Monitoring and
	// Cloud Trace; infra/functions.tf sets it for the deployed functions).
	Telemetry string
	// LeakPolicy is what is done to a key reported leaked, by GitHub secret
	// scanning (POST /v1/leaks/github) or anyone else (POST /v1/leaks):
	// "disable" (the default: disabled with reason leaked, an operator can
	// enable it again after a false report), "revoke" (for good, its
	// secret destroyed) or "quarantine" (a grace in which it works only
	// from the client IPs it was recently seen from, a rotation started,
	// then disabled by the sweep) (KEYPLANE_LEAK_POLICY).
	LeakPolicy string
	// LeakQuarantineDays is how many days before a report the client IPs
	// a quarantined key keeps working from are read from, 1 to 7
	// (KEYPLANE_LEAK_QUARANTINE_DAYS, default 7: the ledger keeps client
	// IPs 8 days).
	LeakQuarantineDays int
	// LeakQuarantineGrace is how long a quarantined key keeps working from
	// those IPs before the sweep disables it, 1m to 720h (a rotation's
	// longest grace) (KEYPLANE_LEAK_QUARANTINE_GRACE, default 72h).
	LeakQuarantineGrace time.Duration
	// GitHubScanningKeys is a file holding GitHub's secret scanning public
	// keys in the format GitHub publishes them, for local use and tests
	// (KEYPLANE_GITHUB_SCANNING_KEYS). Default: fetched from
	// GitHubScanningKeysURL.
	GitHubScanningKeys string
	// GitHubScanningKeysURL is where GitHub's secret scanning public keys
	// are fetched from when GitHubScanningKeys is not set
	// (KEYPLANE_GITHUB_SCANNING_KEYS_URL, default
	// https://api.github.com/meta/public_keys/secret_scanning).
	GitHubScanningKeysURL string
	// PortalURL is the origin of the owner portal's links, which POST
	// /v1/portal/sessions returns (KEYPLANE_PORTAL_URL, an http:// or
	// https:// origin such as "https://keyplane-faces-123.europe-west1.run.app").
	// Empty, the default: a link names the host the session request came
	// to, which is right for keyplane serve. In production the request
	// comes to the Keys function, behind IAM, and the pages are on the
	// Faces function, so infra/ sets it to the Faces function's URL.
	PortalURL string
	// MetricsAddr is the listen address of the Prometheus endpoint, with
	// KEYPLANE_TELEMETRY=prometheus (KEYPLANE_METRICS_ADDR, default
	// 127.0.0.1:9464).
	MetricsAddr string
	// RedisAddr is the host:port of a shared Redis (Memorystore in
	// production) that counts the per-minute limits of keys, owners and
	// features across instances (KEYPLANE_REDIS_ADDR). Default "": each
	// instance counts them itself (docs/architecture.md, "Per-minute
	// limits across instances").
	RedisAddr string
	// RedisAuth is Redis's AUTH string: Memorystore's, with auth enabled
	// (KEYPLANE_REDIS_AUTH; infra/ passes it from Secret Manager).
	// Default: none.
	RedisAuth string
	// RedisTLS connects to Redis over TLS: Memorystore with in-transit
	// encryption, on port 6378 (KEYPLANE_REDIS_TLS=1 or true; default
	// false).
	RedisTLS bool
	// RedisCA is the PEM of the certificate authorities the Redis server's
	// certificate must chain to: Memorystore's server CA
	// (KEYPLANE_REDIS_CA). Default, with RedisTLS: the system's roots.
	RedisCA string
	// RedisTimeout bounds each verify's call to Redis; past it, and for a
	// second after any failure, verify counts on the instance instead
	// (KEYPLANE_REDIS_TIMEOUT, default 50ms, at most 1s).
	RedisTimeout time.Duration
}

// Embedded returns the defaults of `keyplane serve`: everything on local
// files.
func Embedded() Config {
	return Config{
		Store: StoreSQLite, Secrets: SecretsFile, Queue: QueueEmbedded, UsageTopic: "usage-events",
		NotificationsTopic: "notifications", DataDir: ".keyplane",
		FirestoreDatabase: "(default)", SweepInterval: time.Minute,
		KeyPrefix: "kp_live", SecretPrefix: defaultSecretPrefix,
		Telemetry: "off", MetricsAddr: "127.0.0.1:9464",
		LeakPolicy: LeakDisable, GitHubScanningKeysURL: DefaultGitHubScanningKeysURL,
		LeakQuarantineDays: DefaultLeakQuarantineDays, LeakQuarantineGrace: DefaultLeakQuarantineGrace,
		RedisTimeout: 50 * time.Millisecond, LogValidSample: DefaultLogValidSample,
	}
}

// DefaultLogValidSample is the default of Config.LogValidSample, and
// MaxLogValidSample its largest value.
const (
	DefaultLogValidSample = 10
	MaxLogValidSample     = 10_000
)

// Cloud returns the defaults of the Cloud Functions: Firestore and Secret
// Manager.
func Cloud() Config {
	c := Embedded()
	c.Store, c.Secrets, c.Queue, c.DataDir, c.SweepInterval = StoreFirestore, SecretsManager, QueuePubSub, "", 0
	return c
}

// FromEnv overrides the fields of c that the environment sets.
func FromEnv(c Config, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	str := func(dst *string, name string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	str(&c.Store, "KEYPLANE_STORE")
	str(&c.Secrets, "KEYPLANE_SECRETS")
	str(&c.Queue, "KEYPLANE_QUEUE")
	str(&c.UsageTopic, "KEYPLANE_USAGE_TOPIC")
	str(&c.NotificationsTopic, "KEYPLANE_NOTIFICATIONS_TOPIC")
	str(&c.Project, "GCP_PROJECT")
	str(&c.Project, "GOOGLE_CLOUD_PROJECT")
	str(&c.FirestoreDatabase, "KEYPLANE_FIRESTORE_DATABASE")
	str(&c.DataDir, "KEYPLANE_DATA")
	str(&c.AdminToken, "KEYPLANE_ADMIN_TOKEN")
	str(&c.PlansFile, "KEYPLANE_PLANS")
	if v := getenv("KEYPLANE_VERIFY_TOKENS"); v != "" {
		c.VerifyTokens = list(v)
	}
	if v := getenv("KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS"); v != "" {
		c.IDTokenServiceAccounts = nil
		for _, sa := range list(v) {
			if !looksLikeEmail(sa) {
				return c, fmt.Errorf("KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS must be comma-separated service account emails; got %q", sa)
			}
			c.IDTokenServiceAccounts = append(c.IDTokenServiceAccounts, sa)
		}
	}
	if v := getenv("KEYPLANE_ID_TOKEN_AUDIENCES"); v != "" {
		c.IDTokenAudiences = nil
		for _, aud := range list(v) {
			if u, err := url.Parse(aud); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
				return c, fmt.Errorf("KEYPLANE_ID_TOKEN_AUDIENCES must be comma-separated https:// URLs; got %q", aud)
			}
			c.IDTokenAudiences = append(c.IDTokenAudiences, aud)
		}
	}
	str(&c.WebhookSecret, "KEYPLANE_WEBHOOK_SECRET")
	str(&c.StripeAPIKey, "KEYPLANE_STRIPE_API_KEY")
	str(&c.StripeMeters, "KEYPLANE_STRIPE_METERS")
	str(&c.StripeURL, "KEYPLANE_STRIPE_URL")
	str(&c.KeyPrefix, "KEYPLANE_KEY_PREFIX")
	str(&c.SecretPrefix, "KEYPLANE_SECRET_PREFIX")
	str(&c.Telemetry, "KEYPLANE_TELEMETRY")
	str(&c.MetricsAddr, "KEYPLANE_METRICS_ADDR")
	str(&c.LeakPolicy, "KEYPLANE_LEAK_POLICY")
	if v := getenv("KEYPLANE_LEAK_QUARANTINE_DAYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return c, fmt.Errorf("KEYPLANE_LEAK_QUARANTINE_DAYS must be a whole number of days from 1 to %d; got %q", MaxLeakQuarantineDays, v)
		}
		c.LeakQuarantineDays = n
	}
	if v := getenv("KEYPLANE_LEAK_QUARANTINE_GRACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("KEYPLANE_LEAK_QUARANTINE_GRACE must be a duration like 72h or 90m; got %q", v)
		}
		c.LeakQuarantineGrace = d
	}
	str(&c.GitHubScanningKeys, "KEYPLANE_GITHUB_SCANNING_KEYS")
	str(&c.GitHubScanningKeysURL, "KEYPLANE_GITHUB_SCANNING_KEYS_URL")
	str(&c.PortalURL, "KEYPLANE_PORTAL_URL")
	str(&c.RedisAddr, "KEYPLANE_REDIS_ADDR")
	str(&c.RedisAuth, "KEYPLANE_REDIS_AUTH")
	str(&c.RedisCA, "KEYPLANE_REDIS_CA")
	switch v := getenv("KEYPLANE_REDIS_TLS"); strings.ToLower(v) {
	case "":
	case "1", "true":
		c.RedisTLS = true
	case "0", "false":
		c.RedisTLS = false
	default:
		return c, fmt.Errorf("KEYPLANE_REDIS_TLS must be 1 or true (or 0 or false); got %q", v)
	}
	if v := getenv("KEYPLANE_REDIS_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("KEYPLANE_REDIS_TIMEOUT must be a duration like 50ms; got %q", v)
		}
		c.RedisTimeout = d
	}
	if v := getenv("KEYPLANE_VAULT_KEY"); v != "" {
		k, err := hex.DecodeString(v)
		if err != nil || len(k) != 32 {
			return c, fmt.Errorf("KEYPLANE_VAULT_KEY must be 64 hex characters (32 bytes)")
		}
		c.VaultKey = k
	}
	if v := getenv("KEYPLANE_SWEEP_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if v == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			return c, fmt.Errorf("KEYPLANE_SWEEP_INTERVAL must be a duration like 1m, or 0 to turn the timer off; got %q", v)
		}
		c.SweepInterval = d
	}
	if v := getenv("KEYPLANE_CLOCK_OFFSET"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("KEYPLANE_CLOCK_OFFSET must be a duration like 24h or -1h; got %q", v)
		}
		c.ClockOffset = d
	}
	switch v := getenv("KEYPLANE_WEBHOOK_ALLOW_PRIVATE"); strings.ToLower(v) {
	case "":
	case "1", "true":
		c.WebhookAllowPrivate = true
	case "0", "false":
		c.WebhookAllowPrivate = false
	default:
		return c, fmt.Errorf("KEYPLANE_WEBHOOK_ALLOW_PRIVATE must be 1 or true (or 0 or false); got %q", v)
	}
	if v := getenv("KEYPLANE_LOG_VALID_SAMPLE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLogValidSample {
			return c, fmt.Errorf("KEYPLANE_LOG_VALID_SAMPLE must be a whole number from 1 (log every VALID verify answer) to %d; got %q", MaxLogValidSample, v)
		}
		c.LogValidSample = n
	}
	if v := getenv("KEYPLANE_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return c, fmt.Errorf("KEYPLANE_LOG_LEVEL must be debug, info, warn or error; got %q", v)
		}
	}
	return c, nil
}

// list splits a comma-separated value, trimming each item and dropping
// empty ones.
func list(v string) []string {
	var items []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// looksLikeEmail reports whether s is local@domain with a dotted domain and
// no spaces: enough to catch a project id or a name pasted by mistake.
func looksLikeEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && strings.Contains(domain, ".") && !strings.HasPrefix(domain, ".") &&
		!strings.HasSuffix(domain, ".") && !strings.ContainsAny(s, " \t<>\"") && !strings.Contains(domain, "@")
}

// Validate checks the combination of settings.
func (c Config) Validate() error {
	var problems []string
	switch c.Store {
	case StoreSQLite, StoreFirestore:
	default:
		problems = append(problems, fmt.Sprintf("KEYPLANE_STORE must be %s or %s, got %q", StoreSQLite, StoreFirestore, c.Store))
	}
	switch c.Secrets {
	case SecretsFile, SecretsManager:
	default:
		problems = append(problems, fmt.Sprintf("KEYPLANE_SECRETS must be %s or %s, got %q", SecretsFile, SecretsManager, c.Secrets))
	}
	switch c.Queue {
	case QueueEmbedded, QueuePubSub:
	default:
		problems = append(problems, fmt.Sprintf("KEYPLANE_QUEUE must be %s or %s, got %q", QueueEmbedded, QueuePubSub, c.Queue))
	}
	if c.UsageTopic == "" {
		problems = append(problems, "KEYPLANE_USAGE_TOPIC must not be empty")
	}
	switch c.NotificationsTopic {
	case "":
		problems = append(problems, "KEYPLANE_NOTIFICATIONS_TOPIC must not be empty")
	case c.UsageTopic, c.UsageTopic + "-dead-letter":
		problems = append(problems, "KEYPLANE_NOTIFICATIONS_TOPIC must differ from the usage topic and its dead-letter topic")
	}
	if c.UsageTopic == c.NotificationsTopic+"-dead-letter" {
		problems = append(problems, "KEYPLANE_USAGE_TOPIC must differ from the notifications topic's dead-letter topic")
	}
	if (c.Store == StoreFirestore || c.Secrets == SecretsManager || c.Queue == QueuePubSub) && c.Project == "" {
		problems = append(problems, "GOOGLE_CLOUD_PROJECT is required with KEYPLANE_STORE=firestore, KEYPLANE_SECRETS=secretmanager or KEYPLANE_QUEUE=pubsub")
	}
	if (c.Store == StoreSQLite || c.Secrets == SecretsFile || c.Queue == QueueEmbedded) && c.DataDir == "" {
		problems = append(problems, "a data directory (--data) is required with the embedded backends")
	}
	if c.ClockOffset != 0 && (c.Store != StoreSQLite || c.Secrets != SecretsFile || c.Queue != QueueEmbedded) {
		problems = append(problems, "KEYPLANE_CLOCK_OFFSET is for local trials and works only with the embedded backends")
	}
	if err := apikey.ValidatePrefix(c.KeyPrefix); err != nil {
		problems = append(problems, "KEYPLANE_KEY_PREFIX: "+strings.TrimPrefix(err.Error(), "apikey: "))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		problems = append(problems, "KEYPLANE_ADMIN_TOKEN must be at least 16 characters")
	}
	for _, t := range c.VerifyTokens {
		if len(t) < 16 {
			problems = append(problems, "each of KEYPLANE_VERIFY_TOKENS must be at least 16 characters")
			break
		}
	}
	switch c.Telemetry {
	case "off", "stdout", "prometheus":
	case "gcp":
		if c.Project == "" {
			problems = append(problems, "GOOGLE_CLOUD_PROJECT is required with KEYPLANE_TELEMETRY=gcp")
		}
	default:
		problems = append(problems, fmt.Sprintf("KEYPLANE_TELEMETRY must be off, stdout, prometheus or gcp, got %q", c.Telemetry))
	}
	if c.Telemetry == "prometheus" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			problems = append(problems, fmt.Sprintf("KEYPLANE_METRICS_ADDR must be host:port, like 127.0.0.1:9464; got %q", c.MetricsAddr))
		}
	}
	switch c.LeakPolicy {
	case LeakDisable, LeakRevoke, LeakQuarantine:
	default:
		problems = append(problems, fmt.Sprintf("KEYPLANE_LEAK_POLICY must be %s, %s or %s, got %q", LeakDisable, LeakRevoke, LeakQuarantine, c.LeakPolicy))
	}
	if c.LeakQuarantineDays < 1 || c.LeakQuarantineDays > MaxLeakQuarantineDays {
		problems = append(problems, fmt.Sprintf("KEYPLANE_LEAK_QUARANTINE_DAYS must be from 1 to %d (the ledger keeps client IPs 8 days); got %d", MaxLeakQuarantineDays, c.LeakQuarantineDays))
	}
	if c.LeakQuarantineGrace < MinLeakQuarantineGrace || c.LeakQuarantineGrace > MaxLeakQuarantineGrace {
		problems = append(problems, fmt.Sprintf("KEYPLANE_LEAK_QUARANTINE_GRACE must be from %s to %s (a rotation's longest grace); got %s", MinLeakQuarantineGrace, MaxLeakQuarantineGrace, c.LeakQuarantineGrace))
	}
	if c.GitHubScanningKeys == "" {
		if u, err := url.Parse(c.GitHubScanningKeysURL); err != nil || u.Scheme != "https" || u.Host == "" {
			problems = append(problems, fmt.Sprintf("KEYPLANE_GITHUB_SCANNING_KEYS_URL must be an https:// URL; got %q", c.GitHubScanningKeysURL))
		}
	}
	if c.PortalURL != "" {
		if u, err := url.Parse(c.PortalURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			u.User != nil || strings.TrimRight(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
			problems = append(problems, fmt.Sprintf("KEYPLANE_PORTAL_URL must be an http:// or https:// origin with no path, query or fragment, like https://faces.example.com; got %q", c.PortalURL))
		}
	}
	problems = append(problems, c.redisProblems()...)
	if len(c.IDTokenAudiences) > 0 && len(c.IDTokenServiceAccounts) == 0 {
		problems = append(problems, "KEYPLANE_ID_TOKEN_AUDIENCES is set but KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS is not: no ID token would be accepted")
	}
	problems = append(problems, c.stripeProblems()...)
	if len(problems) > 0 {
		return fmt.Errorf("configuration: %s", strings.Join(problems, "; "))
	}
	return nil
}

// redisProblems checks the shared limiter's settings.
func (c Config) redisProblems() []string {
	var problems []string
	if c.RedisAddr == "" {
		if c.RedisAuth != "" || c.RedisTLS || c.RedisCA != "" {
			problems = append(problems, "KEYPLANE_REDIS_AUTH, KEYPLANE_REDIS_TLS and KEYPLANE_REDIS_CA need KEYPLANE_REDIS_ADDR: without it the per-minute limits are counted in process")
		}
		return problems
	}
	if host, port, err := net.SplitHostPort(c.RedisAddr); err != nil || host == "" || port == "" {
		problems = append(problems, fmt.Sprintf("KEYPLANE_REDIS_ADDR must be host:port, like 10.0.0.3:6379; got %q", c.RedisAddr))
	}
	if c.RedisCA != "" {
		if !c.RedisTLS {
			problems = append(problems, "KEYPLANE_REDIS_CA is set but KEYPLANE_REDIS_TLS is not: set KEYPLANE_REDIS_TLS=1 to connect over TLS")
		}
		if _, err := c.RedisRoots(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if c.RedisTimeout <= 0 || c.RedisTimeout > time.Second {
		problems = append(problems, fmt.Sprintf("KEYPLANE_REDIS_TIMEOUT must be more than 0 and at most 1s (verify waits that long per request); got %s", c.RedisTimeout))
	}
	return problems
}

// RedisRoots returns the certificate pool of RedisCA; nil (the system's
// roots) if it is empty.
func (c Config) RedisRoots() (*x509.CertPool, error) {
	if c.RedisCA == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.RedisCA)) {
		return nil, fmt.Errorf("KEYPLANE_REDIS_CA must be PEM certificates (Memorystore's server CA: gcloud redis instances describe --format='value(serverCaCerts[0].cert)')")
	}
	return pool, nil
}

// stripeProblems checks the Stripe export's settings: all or nothing.
func (c Config) stripeProblems() []string {
	if c.StripeAPIKey == "" {
		if c.StripeMeters != "" || c.StripeURL != "" {
			return []string{"KEYPLANE_STRIPE_METERS and KEYPLANE_STRIPE_URL need KEYPLANE_STRIPE_API_KEY (the export is off without it)"}
		}
		return nil
	}
	var problems []string
	if m, err := stripeexport.ParseMeters(c.StripeMeters); err != nil {
		problems = append(problems, "KEYPLANE_STRIPE_METERS: "+strings.TrimPrefix(err.Error(), "stripe meters: "))
	} else if len(m) == 0 {
		problems = append(problems, "KEYPLANE_STRIPE_METERS is required with KEYPLANE_STRIPE_API_KEY, e.g. requests=api_requests,units=api_tokens")
	}
	if c.StripeURL != "" {
		if u, err := url.Parse(c.StripeURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, "KEYPLANE_STRIPE_URL must be an http(s) URL, like http://127.0.0.1:12111")
		}
	}
	return problems
}
