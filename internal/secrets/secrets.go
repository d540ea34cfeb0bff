package secrets

import "context"

// Well-known names of deployment secrets.
const (
	Pepper        = "pepper"         // HMAC key of the lookup hash; ≥ 32 bytes
	AdminToken    = "admin-token"    // bearer token of the management API
	WebhookSecret = "webhook-secret" // whsec_… secret of the usage webhook
	VerifyToken   = "verify-token"   // bearer token gateways verify with (verify only)
)

// KeyRef names a key's secret and the labels stored with it.
type KeyRef struct {
	KeyID string
	Owner string
}

// Vault stores secrets. Methods return errors of these errs kinds:
// NotFound, Exists, FailedPrecondition (the version is disabled or
// destroyed), Unavailable (unreachable, or over a quota: RetryAfter is set)
// and Internal.
type Vault interface {
	// CreateKeySecret stores plaintext as the secret of ref.KeyID, labelled
	// with the key id and owner. If the key already has a stored version it
	// is kept and Exists is returned, so a retried provisioning reads the
	// stored plaintext instead of replacing it. A secret created without a
	// version (a crash between the two writes) is completed.
	CreateKeySecret(ctx context.Context, ref KeyRef, plaintext []byte) error
	// KeySecret returns the plaintext of keyID. NotFound if none was
	// stored; FailedPrecondition if its version is disabled or destroyed.
	KeySecret(ctx context.Context, keyID string) ([]byte, error)
	// SetKeySecretEnabled disables or re-enables the key's version.
	// NotFound if none; FailedPrecondition if it is destroyed.
	SetKeySecretEnabled(ctx context.Context, keyID string, enabled bool) error
	// DestroyKeySecret destroys the key's version irrecoverably. Destroying
	// a destroyed version, or a key that has no secret, is not an error.
	DestroyKeySecret(ctx context.Context, keyID string) error
	// DeleteKeySecret removes the key's secret entirely (used to reap an
	// abandoned provisioning). No error if there is none.
	DeleteKeySecret(ctx context.Context, keyID string) error

	// Secret returns the latest enabled version of a named deployment
	// secret. NotFound if there is none.
	Secret(ctx context.Context, name string) ([]byte, error)
	// AddSecretVersion makes value the latest version of a named secret,
	// creating the secret if needed. Earlier versions stay enabled (so a
	// rotation can accept both until it finishes).
	AddSecretVersion(ctx context.Context, name string, value []byte) error
	// SecretVersions returns every enabled version of a named secret,
	// newest first. NotFound if there is none.
	SecretVersions(ctx context.Context, name string) ([][]byte, error)

	// Close releases the vault's resources.
	Close() error
}
