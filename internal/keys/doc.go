// Package keys is the key lifecycle service: provisioning (crash-consistent
// and idempotent), reading, listing, updating, disabling, enabling,
// revoking, rotating and revealing keys, with an audit entry for every
// state change and every reveal. It is the one owner of what a key state
// change writes (the key record, the audit entry, the secret version) and
// who it tells, including the changes the sweep asks for.
//
// # Crash consistency
//
// Provisioning writes in this order, so that a crash after any step leaves
// nothing verifiable without its secret and no secret that nothing finds:
//
//  1. the idempotency record (if the request has an Idempotency-Key),
//     holding the new key's id and a hash of the request;
//  2. a pending intent for the key id (store.Pending) — not verifiable,
//     not listed;
//  3. the plaintext, in the secret vault;
//  4. the key record, its hash lookup and the "key.create" audit entry, in
//     one atomic store write that also deletes the intent — from here on
//     the key verifies;
//  5. the idempotency record is marked done.
//
// A retry with the same Idempotency-Key resumes at the first missing step
// with the same key id; a secret written before the crash is read back, so
// the retry returns the same key. Intents nobody resumes are reaped by
// ReapAbandoned (their secrets deleted) once the idempotency window has
// passed.
//
// # Owner notifications
//
// Disable and Enable tell the key's owner (Service.Notifier: key.disabled,
// key.enabled through internal/notify) after the change is committed and only
// when they changed what the owner sees: the status, or a timed suspension
// turned into a disable without an end; a call that changes nothing, or
// only the operator's reason, tells nobody. This is not transactional: the change is
// committed first and the notification is enqueued afterwards, so a
// process that dies between the two, or a notification store or queue
// that is down then, leaves a change the owner is never told about. The
// failure is logged at ERROR ("the key changed but its owner's
// notification was not queued") and the request still succeeds, because
// the change stands. Closing the gap needs an outbox: the notification
// written in the same store transaction as the change and relayed from
// there.
//
// # The sweep's transitions
//
// internal/sweep only judges: it decides which keys to suspend or lift and
// why, and asks Service to act. Its changes are conditional, so that a key
// changed between judging and acting is left alone and of two overlapping
// sweeps one acts and the other finds nothing to do:
//
//   - Suspend disables a key only if it is still the active version the
//     sweep judged (a compare-and-set on UpdatedAt, inside the store's
//     UpdateKey);
//   - Lift re-enables a key only if it is still suspended for
//     ReasonQuotaExceeded with its window ended: never an abuse
//     suspension, never an operator's disable;
//   - EndQuarantine disables a key for its leak only if its quarantine
//     (LeakQuarantine) is still in force with its grace ended;
//   - FinishSweepChange makes the effects of an earlier sweep change that
//     a crash or an outage left unmade.
//
// The sweep's reasons (ReasonQuotaExceeded, ReasonSpike,
// ReasonDistinctIPs, ReasonWindowReset, and any abuse_ reason) are
// reserved: Disable and Revoke refuse them, so a reason says who made the
// change. A sweep change is stamped (UpdatedAt, the audit entry's time)
// when it is written, like any other, so the change feed carries it to
// verifiers however long the run has taken. Unlike a manual change, a
// sweep change whose owner could not be told returns the error (with the
// change reported as made): the sweep finishes it on a later run
// (FinishSweepChange), and the Notifier tells one change once.
package keys
