// Package ledger owns the usage ledger's contract: counting each usage
// event exactly once into per-key minute, hour, day and month counters,
// the totals read back for quotas, the billing export and the sweep, dead
// letters, and the client IPs keys are used from.
//
// Adapters live beside it, named for what they are: sqliteledger (the
// embedded default) and firestoreledger (production). Both pass the suite
// in ledgertest.
package ledger
