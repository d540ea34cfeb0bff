package wire

import (
	"context"
	"fmt"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/webhook"
)

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
// generates one and returns it as generated.
func adminTokens(ctx context.Context, cfg config.Config, v secrets.Vault, generate bool) (tokens []string, generated string, err error) {
	if cfg.AdminToken != "" {
		tokens = append(tokens, cfg.AdminToken)
	}
	versions, err := v.SecretVersions(ctx, secrets.AdminToken)
	if err != nil && !errs.Is(err, errs.NotFound) {
		return nil, "", err
	}
	for _, b := range versions {
		tokens = append(tokens, string(b))
	}
	if len(tokens) > 0 {
		return tokens, "", nil
	}
	if !generate {
		return nil, "", fmt.Errorf("no admin token: set KEYPLANE_ADMIN_TOKEN or add a version to the %q secret", secrets.AdminToken)
	}
	t := "kpadm_" + apikey.RandomString(40)
	if err := v.AddSecretVersion(ctx, secrets.AdminToken, []byte(t)); err != nil {
		return nil, "", err
	}
	return []string{t}, t, nil
}
