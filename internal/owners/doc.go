// Package owners owns the owner (a project): its tier (a plan whose
// owner_limits and features its keys share), its overrides of that tier,
// and what a change to them writes, audits and notifies.
//
// An owner exists once it has a key: provisioning stores its record, on
// the plan of its first key (keys.Service). An owner whose keys predate
// owner records gets its record the first time it is read here, on the
// plan of its newest key; until then verify treats it the same way.
//
// A change (Update) is one atomic write of the record and its audit entry;
// the owner is then told (owner.plan_changed) and the Observer (the
// verifier of this process) applies it at once; other verifiers learn of
// it from the owners' change feed within the revocation bound.
package owners
