// Package notifytest is the conformance suite of the notify.Store contract
// (notify.Registry and notify.Deliveries). Every adapter's test calls Run
// with a function that opens a fresh, empty store; the suite checks each
// documented outcome, including the guarantees the Deliverer relies on:
// CreateDelivery never overwrites, UpdateDelivery writes nothing when
// mutate fails, and concurrent updates of one record are serialised — none
// is lost and exactly one of several competing claims wins.
//
// The suite uses a fixed base time with microsecond precision and never
// sleeps.
package notifytest
