// Package notify owns owner notifications: where each owner wants to hear
// about its keys (the webhook registry), the notifications themselves
// (key.disabled, key.enabled, usage.threshold, owner.plan_changed) and their delivery as
// Standard Webhooks, signed with internal/webhook, retried on a schedule of
// hours through the queue, and dead-lettered when the schedule runs out.
// The sweep calls Service.Notify (usage thresholds), keys.Service calls it
// through KeyEvents (every key state change, the sweep's included); the
// notifications subscription calls
// Deliverer.Handle (the DeliverNotification function in production, a
// subscription of the embedded queue in keyplane serve; internal/wire builds
// both). Adapters of the Store live in sqlitenotify and
// firestorenotify and pass the suite in notifytest.
//
// # Webhooks
//
// Service.SetWebhook (PUT /v1/owners/{owner}/webhook) validates the owner,
// the event filter (a subset of EventTypes; none means all) and the URL
// (Guard.CheckURL), adds a new "whsec_" secret as the latest version of
// the vault secret SecretName(owner) = "owner-webhook-<hash of owner>",
// and then stores the webhook with the secret's Fingerprint. Every call
// rotates the secret: deliveries from then on, including retries of
// notifications queued before, are signed with the new secret only. The
// fingerprint picks the vault version, so a call that fails after the
// vault write leaves the old URL signing with the old secret, and of two
// racing calls the one whose registry write lands last signs with its own
// secret. Each call leaves the previous version enabled in the vault;
// nothing here disables old versions (secrets.Vault cannot yet).
//
// # Notifications
//
// Service.Notify records a Delivery — the JSON body {"type", "timestamp",
// "data"}, fixed once, and the state of its attempts — under the
// webhook-id NotificationID(owner, type, event id) ("ntf_" + 128 bits of
// SHA-256), and publishes the message for attempt 1. The event id is the
// caller's: KeyDisabledEvent and KeyEnabledEvent derive it from the key
// and the time of the change, UsageThresholdEvent from the key, limit,
// window and threshold, so two sweeps emitting the same event find the
// record already there (CreateDelivery answers Exists) and send nothing
// more. Nothing is recorded or sent for an owner without a webhook, or
// whose webhook does not take the event type. Records expire after
// Retention (30 days), which bounds the deduplication window.
//
// # The retry schedule, and why it is driven by the record
//
// Attempts are spaced by DefaultSchedule: 5 s, 5 min, 30 min, 2 h, 5 h and
// 10 h, seven attempts over about 17.6 hours, then the record is marked
// Dead with its last HTTP status and error. The queue cannot express that
// by itself: a subscription's redelivery backoff is capped at 600 s (as
// Pub/Sub caps it), and a subscription with a dead-letter topic delivers
// a message at most 100 times. So the schedule lives in the delivery
// record, and the queue is only the alarm clock:
//
//   - Each message asks for one attempt: attributes notification_id,
//     attempt (n) and not_before (when the attempt is due).
//   - A message that arrives before not_before is answered with ErrNotDue
//     at once, with no I/O at all; the queue redelivers it after its
//     backoff (5 s doubling to 600 s). That polling is what bridges waits
//     longer than the backoff cap.
//   - When attempt n fails, the handler records the outcome and
//     next_attempt_at in the record, publishes a new message for attempt
//     n+1 with not_before = next_attempt_at, and acknowledges the old one.
//     Publishing a fresh message per attempt restarts the queue's delivery
//     count, so no message lives longer than one gap of the schedule: the
//     10 h gap takes 67 to 82 deliveries (8 while the backoff doubles from
//     5 s, then one every 480-600 s, depending on jitter), inside the
//     dead-letter policy's 100. That policy stays a safety net for messages that fail
//     for other reasons (a store down for hours): HandleDeadLetter marks
//     their delivery Dead with ReasonTransport.
//   - A retry is made within one backoff (≤ 10 min) after it is due: the
//     5 s retry comes 5-6 s after the failure, the later ones up to ten
//     minutes late, which a schedule of hours does not notice. A delivery
//     that fails every attempt costs 140 to 170 wake-ups in all, each a
//     no-op without I/O until it is due.
//
// The alternatives were weighed and rejected. Nacking one message until
// the record says it is due needs no re-publish, but the whole schedule
// then takes 140 to 170 deliveries of the same message, more than a
// dead-letter policy allows, so its subscription could have none. A
// scheduled retry table swept by a timer needs a poller (Cloud Scheduler
// fires at most once a minute, too late for the 5 s retry) and a query
// index on next_attempt_at. Cloud Tasks schedules exactly, but it is a
// backend outside the queue contract, without an emulator.
//
// # Attempts, leases and crashes
//
// The record decides; messages may be duplicated, late or lost. An attempt
// is claimed with UpdateDelivery (a compare-and-set: attempt n may start
// only when n-1 attempts were made, none is in flight and next_attempt_at
// has passed), which takes a lease of Timeout + 1 min. So duplicate
// messages make one request per attempt; a message for an attempt that is
// already made or superseded is acknowledged; a handler that dies holding
// a lease is replaced by the next delivery once the lease expires (the
// attempt is made again, with the same webhook-id — receivers deduplicate
// on it, as Standard Webhooks expects). Delivery is therefore at least
// once. If the process dies after recording a failed attempt but before
// publishing the next message, the redelivered old message publishes it;
// the record's enqueued counter keeps duplicates of the old message from
// publishing it twice. A handler stopped mid-request (its context ends)
// gives the attempt back instead of counting it.
//
// Each attempt POSTs the stored body to the owner's current URL, signed
// with the current secret, with a fresh webhook-timestamp and the same
// webhook-id; it fails on any status outside 2xx (redirects are not
// followed), on a transport error, or after Timeout (10 s). If the owner
// removed the webhook or unsubscribed from the type meanwhile, the record
// ends Canceled without a request. Transient failures of keyplane's own
// backends (registry, vault, store, queue) do not spend an attempt: Handle
// returns them and the queue redelivers.
//
// # SSRF
//
// A webhook URL must be https (http only with Guard.AllowPrivate), at most
// 2048 bytes, without user info or fragment, and every address its host
// resolves to must be public: not loopback, private, link-local (the
// metadata server), unspecified, multicast, CGNAT 100.64.0.0/10, IPv6
// unique local fc00::/7, or another reserved range (see Refusal;
// IPv4-mapped, NAT64 and 6to4 addresses are judged by the IPv4 address
// they carry). SetWebhook checks this, and every attempt checks it again:
// the HTTP client resolves the host once, vets every answer, and connects
// only to a vetted IP literal (Guard.DialContext, with a socket-level
// re-check), so a DNS answer that changes between the check and the
// connection (rebinding) cannot reach an internal address. The client
// uses no proxy and follows no redirect. Guard.AllowPrivate
// (KEYPLANE_WEBHOOK_ALLOW_PRIVATE=1) lifts the address rule and admits
// http://, for local development and tests only.
package notify
