// Package sweep is keyplane's scheduled sweep: it finds keys that are over
// their quota or behave abusively and has them disabled, with a recorded
// reason and the evidence; it has quota suspensions lifted when their
// window resets; and it tells owners when a key reaches 80% and 100% of a
// quota. Cloud Scheduler runs it through the Sweep function (POST
// /v1/sweep); keyplane serve runs it every KEYPLANE_SWEEP_INTERVAL.
//
// The sweep only judges: which keys, and why. The changes themselves are
// keys.Service's (Suspend, Lift, FinishSweepChange), which decides what
// each writes (the key, the secret version), audits (actor "sweep") and
// tells the owner (key.disabled, key.enabled), as it does for an
// operator's changes; the reasons are its constants too.
//
// # Rules
//
// A key's plan and its per-key limit overrides decide. Only active,
// unexpired keys are judged. A key disabled by hand is never touched (the
// sweep's reasons are reserved: keys.Service refuses them for manual
// disables, so a reason says who disabled the key), a revoked key never.
//
//   - quota_exceeded: usage in the current UTC day or month over a day or
//     month limit (used > max; at used == max verify already refuses, and
//     the 100% notification goes out). The key is suspended until the
//     window ends (of several limits broken, the one that ends last), then
//     re-enabled by the first run after that with reason window_reset.
//     Verify enforces the same quotas per request; the sweep makes the
//     suspension durable, visible in the key's status, and told to the
//     owner. False positives: none beyond the metering itself (a
//     gateway that double-reports with new event ids counts twice).
//   - abuse_spike (plan abuse.spike: metric, factor default 10, floor):
//     usage of the metric in the current UTC hour over factor × the key's
//     trailing hourly average and over floor. The average is the usage
//     from the start of yesterday (or the key's creation hour, if later)
//     to the start of the current hour, divided by those hours; a key
//     created in the current hour has no average yet and is not judged by
//     this rule. Not lifted automatically. False positives: a customer
//     launching a product or running a backfill; a key that was idle
//     yesterday and wakes up (its average is near 0, so only the floor
//     protects it). Set the floor above the most a legitimate key of the
//     plan does in an hour; builtin: free 500 requests at 10×, pro 20,000
//     requests at 20×, enterprise off.
//   - abuse_distinct_ips (plan abuse.distinct_ips.max_per_day): the key was
//     verified from more than max_per_day distinct client IPs in the
//     current UTC day (verify records the IPs gateways send; see
//     clientips.Recorder). Keys restricted to referrers (browser keys,
//     used from every visitor's IP) or to IPs are exempt. Not lifted
//     automatically. False positives: a server fleet or mobile app
//     calling with one key, clients behind rotating carrier-grade NAT or
//     IPv6 privacy addresses (each address counts). Builtin: free 20,
//     pro 200, enterprise off.
//
// Owners (with Sweeper.Owners set) are judged too, by their plan's
// owner_limits and per-feature limits with the owner's overrides:
//
//   - an owner whose usage today or this month (all its keys, or all its
//     keys on one feature) is over a day or month quota is suspended until
//     the window ends (owners.Service.Suspend: one write of the owner and
//     its owner.suspend audit entry, then owner.suspended, told once). A
//     suspension over the owner's own quota refuses every request of its
//     keys; one over a feature's quota, that feature's requests. Verify
//     enforces the same quotas per request from the ledger; the
//     suspension makes it durable, visible on GET /v1/owners/{owner}, and
//     told to the owner.
//   - a suspension is lifted (owner.lift, owner.reinstated) by the first
//     run after its window ends (window_reset), or earlier once the
//     owner's current limits no longer refuse its usage (limit_raised:
//     an operator raised them). While it lasts, each run tells the owner
//     again, which the notification's id makes a no-op unless the first
//     was lost to a crash.
//
// Owners with usage today and suspended owners are read whole each run
// (they are few next to keys), not checkpointed.
//
// The abuse rules are judged before the quotas: a leaked key over its
// quota stays disabled when the window resets. Each decision carries its
// evidence (limit, window, used, max, until; the baseline for a spike,
// some of the IPs for distinct IPs) in the report, the audit entry and the
// notification.
//
// # Scale
//
// A run reads only keys with usage today: it pages through the ledger's
// day counters (ledger.Ledger.OwnerTotals, ordered by key id), reads each
// page's keys in one batch (store.GetKeys), and for each key only what its
// rules need (month totals if it has a month limit; the hour and
// yesterday for the spike rule; the day's client IPs for the IP rule). So
// its cost is linear in keys with usage and flat in keys without.
// Keys with usage only on earlier days cannot newly break a rule: a key
// that is used again appears in today's counters. A process also
// remembers what it judged each key on (up to 200,000 keys): a key whose
// usage today, record and hour are unchanged since is not read or judged
// again (Report.Unchanged), and yesterday's totals are read once a day. So
// with a warm instance a run reads, per key with usage today, one page
// entry and one key record, plus the rules' reads only for keys whose
// usage changed since the last run.
//
// # Crashes, budgets and overlapping runs
//
// After each page the run saves its position (the last key id) in a store
// checkpoint; a run that fails or reaches its Budget stops there and the
// next run continues the pass; a finished pass makes the next run start a
// new one. Every change is conditional (see keys.Service): a disable
// (Suspend) applies only if the key is still the active version that was
// judged, a re-enable (Lift) only if the key is still suspended for
// quota_exceeded with its window ended. Of two runs judging the same key,
// one changes it and the other finds it changed and does nothing, so a key
// is never disabled (or audited, or notified) twice; a key an operator
// changed in between is left as the operator left it. Notifications are deduplicated by an id
// derived from the change (key id, status and the change's time), so
// repeating one sends nothing new.
//
// The effects that follow a change (the secret version, the notification)
// are made after it commits. A run that dies in between leaves them
// undone; every run first re-reads the store's change feed from the start
// of the last run that finished (less two minutes) and completes the
// effects of any sweep change it finds (keys.Service.FinishSweepChange):
// both are idempotent. Re-enabling enables the secret before the key, so a
// crash there leaves a suspended key with an enabled secret, which the
// next run finishes. A change is stamped when it is written, not when the
// run began, so verifiers polling the change feed during a long run see
// it.
//
// A dry run judges the same keys and reports what it would do; it writes
// nothing (no key, secret, checkpoint, audit entry or notification).
package sweep
