// Package plan owns plans, their limits and the time windows limits are
// counted in. It does no I/O beyond reading a plans file at start-up.
//
// A limit is named <metric>_per_<window>, metric ∈ {requests, units, bytes},
// window ∈ {minute, day, month}. Minute limits are admission-control rate
// limits enforced at verify time; day and month limits are quotas evaluated
// from metered usage. Day and month windows are UTC calendar windows. A
// limit that is absent is unlimited; a limit of 0 admits nothing. Usage is
// also counted per UTC hour (Hour, for the sweep's spike rule and usage
// queries), which is not a limit window.
//
// A plan may also carry abuse rules (Abuse: a usage spike, distinct client
// IPs per day), which the sweep (internal/sweep) disables keys by.
package plan
