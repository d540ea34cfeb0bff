// Package usage owns the usage event: its schema (the webhook's and the
// usage topic's batch format), its defaults and its strict validation. It
// does no I/O. The ledger (internal/ledger) counts events, the meter
// (internal/meter) carries them from the queue into the ledger.
package usage
