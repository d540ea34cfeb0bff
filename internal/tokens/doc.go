// Package tokens owns caller tokens: the credentials a signup flow, a
// gateway or a support tool holds instead of the admin token, each with
// named permissions and optionally scoped to one owner. It owns the
// permission vocabulary, minting (a token grants no more than its minter
// holds), revocation, and turning a bearer secret into a Caller through an
// in-memory cache whose entries live CacheTTL: a revocation reaches every
// instance within that bound (at once on the instance that revoked it).
// Secrets are stored only as HMAC-SHA256(pepper, secret), the keys' hasher.
package tokens
