// Package ledgertest is the conformance suite of the ledger.Ledger contract.
// Every adapter's test calls Run with a function that opens a fresh, empty
// ledger and returns it in a Harness; the suite then checks each documented
// guarantee, above all exactly-once counting: an event id is counted once
// however often, in whatever order and however concurrently it is
// delivered, and a failed Count burns no id.
//
// Failure and expiry need the adapter's help, given through the Harness:
// Break and Repair make commits fail (the adapters' own tests install a
// Breaker's Hook as their commit hook), Advance moves the ledger's clock.
// Tests that need a hook the harness lacks are skipped, saying why. When a commit
// fails part way through a Count, the suite expects the count Count returns
// with its error to be what that call did count: an adapter knows it
// exactly when its own hook failed the commit.
//
// The suite uses fixed event times and never sleeps. Count may report
// transient failures (errs.Unavailable) under contention; the suite retries
// those a bounded number of times, as the usage consumer does.
package ledgertest
