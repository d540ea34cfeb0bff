// Package storetest is the conformance suite of the store.Store contract.
// Every adapter's test calls Run with a function that opens a fresh, empty
// store; the suite then checks each documented outcome of each method,
// including the atomicity and concurrency guarantees callers rely on
// (Activate writes all or nothing, concurrent UpdateKey loses no update,
// concurrent ReserveIdempotency has exactly one owner, concurrent
// SaveCheckpoint of one version has exactly one winner).
//
// The suite uses a fixed base time with microsecond precision and never
// sleeps: stores must keep times to at least the microsecond, and may return
// nil or empty maps and slices interchangeably.
package storetest
