// Package firestorestore is the production store.Store, on Cloud Firestore in
// native mode.
//
// # Layout
//
//	keys/{key id}              the key record (keyDoc): snake_case fields, the
//	                           hash as 64 lowercase hex characters in "hash";
//	                           never the plaintext
//	key_hashes/{hex hash}      {key_id}: the hash → key lookup; its Create is
//	                           what makes a hash unique
//	pending_keys/{key id}      a provisioning intent: owner, prefix, created_at
//	idempotency/{sha256 hex of the scoped Idempotency-Key}
//	                           the idempotency record, with "key" holding the
//	                           scoped key and "expires_at" its expiry
//	audit/{entry id}           time, actor, action, key_id, details; entry ids
//	                           assigned here start with the UTC time
//	                           (20060102T150405.000000Z) so they sort by time
//	checkpoints/{name}         a job's checkpoint (the sweep's): data (bytes),
//	                           version, updated_at
//	owners/{owner document id} the owner record: id, plan, limits, features,
//	                           suspended (bool), suspension (a map: limit,
//	                           feature, used, max, until, at), billing
//	                           (a map: spend_cap, credits {grants [{id,
//	                           amount, at}], since, offset}, alert_month,
//	                           alert_percent; amounts in micro-units),
//	                           created_at, updated_at; the document id is the
//	                           owner id, or "~" and its hex for an id Firestore
//	                           does not accept ("." and "..") or one starting
//	                           with "~", so queries order by the id field
//	tokens/{token id}          a caller token: name, permissions, owner, hash
//	                           (hex), created_by, created_at, expires_at,
//	                           revoked_at; never the secret
//	token_hashes/{hex hash}    {token_id}: the hash → token lookup, created
//	                           with the token in one transaction
//
// Activate is one transaction of Creates (key, hash lookup, audit entry) and
// a Delete (intent): it writes all of them or, when the key id or hash is
// taken, none. UpdateKey, UpdateOwner, CreatePending, SaveCheckpoint and the
// contended paths of ReserveIdempotency run in transactions, which
// Firestore retries on contention; a transaction still contended after its
// attempts returns errs.Conflict. UpdateKey calls on the same key from one
// Store queue on an in-process lock first, so only other processes contend
// in Firestore (mutate must therefore not call UpdateKey); so do UpdateOwner
// calls on the same owner and SaveCheckpoint calls on the same checkpoint.
// SaveCheckpoint reads the version and writes in one transaction, so of
// concurrent savers of one version exactly one wins and the others get
// errs.Conflict. Times are truncated to the microsecond, Firestore's
// precision, before they are written.
//
// # Deployment
//
// Composite indexes (the emulator does not need them; production rejects
// the queries without them):
//
//	collection keys:  owner ASC, created_at DESC, __name__ DESC          (ListKeys with an owner)
//	collection keys:  status ASC, disabled_until ASC, __name__ ASC       (DueSuspensions)
//	collection audit: key_id ASC, time DESC, __name__ DESC               (ListAudit with a key id)
//	collection owners: updated_at ASC, id ASC, __name__ ASC              (ChangedOwners)
//	collection owners: suspended ASC, id ASC, __name__ ASC               (ListOwners of suspended owners)
//	collection tokens: owner ASC, created_at DESC, __name__ DESC         (ListTokens with an owner)
//
// The other queries (keys and audit by time alone, pending_keys by
// created_at, owners by id) use the automatic single-field indexes.
// EnsureOwner is a Create, which one of concurrent callers wins, then a
// read of whichever owner is stored.
//
// DueSuspensions queries status == "disabled" AND disabled_until <= t. A
// key that is not suspended stores disabled_until as null, which a range
// filter on a timestamp does not match, so manually disabled keys are not
// returned. Every key has both fields, so every key has an entry in the
// index (index storage, and index work when a key's status or
// disabled_until changes); a query is billed one read per key returned,
// and at least one. GetKeys is one batch get: a read per distinct id,
// found or not.
//
// TTL policy: collection group "idempotency", field "expires_at". Firestore
// deletes expired records within about a day; ReserveIdempotency treats a
// record past expires_at as absent meanwhile. Collection group
// "portal_links", field "expires_at" too: a portal link is useless once
// expired, and RedeemPortalLink refuses it by its expires_at meanwhile. Do not put a TTL policy on
// keys.expires_at: an expired key is kept and reported as expired.
//
// Single-field index exemptions that save write cost: keys.hash (looked up
// through key_hashes), keys.metadata, keys.limits, keys.restrictions,
// audit.details, key_hashes.key_id, every tokens field but owner and
// created_at, token_hashes.token_id, owners.plan, owners.limits,
// owners.features, owners.suspension, owners.created_at, every field of portal_links and every field of idempotency (nothing
// queries them). The checkpoints collection holds a few documents, written
// about once per sweep run, so its single-field indexes are left on.
// keys.created_at and audit.time grow monotonically, which caps each
// collection near 500 writes/s; provisioning is far below that, bounded by
// Secret Manager's write quota.
package firestorestore
