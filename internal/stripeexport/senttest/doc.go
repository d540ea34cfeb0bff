// Package senttest is the conformance suite of the stripeexport.Sent
// contract, the durable record of the meter events Stripe accepted. Every
// adapter's test calls Run with a function that opens a fresh, empty
// record on a clock the suite can move (Harness.Advance); the suite then
// checks each documented guarantee: what is marked reads as sent until
// its retention has passed and not after, marking again renews it, calls
// of any size and concurrent calls lose nothing, and bad input is
// errs.Invalid and records nothing.
//
// The suite never sleeps: retention is tested by moving the harness's
// clock.
package senttest
