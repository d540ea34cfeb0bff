// Package secrets defines the secret vault contract: the plaintext of each
// API key (one secret per key, so that it can be revealed, disabled and
// destroyed on its own) and named deployment secrets such as the hashing
// pepper and the admin token. Adapters: filevault (AES-256-GCM file, the
// embedded default) and secretmanagervault (Google Secret Manager); both pass
// the suite in secretstest.
package secrets
