// Package secretstest is the conformance suite of the secrets.Vault
// contract. Every adapter's test calls Run, so that the file vault and the
// Secret Manager adapter are held to the same documented outcomes: an
// adapter needs few tests of its own beyond what its backend adds (file
// permissions, encryption, quota errors).
package secretstest
