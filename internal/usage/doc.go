// Package usage owns metering: the usage event schema and its validation,
// the Ledger contract that counts each event exactly once into per-key
// minute, hour, day and month counters, the consumer that turns queue
// messages into counted events (acking poison into dead letters, retrying
// transient failures), the quota view verify reads, and the recorder of
// the client IPs verify sees (for the sweep's distinct-IPs rule).
//
// Adapters of the Ledger live in ledger/sqlite and ledger/firestore and pass
// the suite in ledgertest.
package usage
