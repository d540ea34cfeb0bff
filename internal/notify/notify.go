package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/plan"
)

// Event types an owner can subscribe to.
const (
	KeyDisabled    = "key.disabled"
	KeyEnabled     = "key.enabled"
	UsageThreshold = "usage.threshold"
	// KeyLeaked tells an owner that one of its keys was reported leaked
	// (by GitHub secret scanning or another scanner) and was disabled or
	// revoked for it.
	KeyLeaked = "key.leaked"
	// OwnerPlanChanged tells an owner that its plan (tier) or its
	// overrides changed.
	OwnerPlanChanged = "owner.plan_changed"
	// OwnerSuspended tells an owner that the sweep suspended it over a
	// quota: every key of the owner is refused until Until.
	OwnerSuspended = "owner.suspended"
	// OwnerReinstated tells an owner that its suspension was lifted.
	OwnerReinstated = "owner.reinstated"
	// SpendThreshold tells an owner that its month's spend reached 50,
	// 80 or 100 % of its monthly spend cap.
	SpendThreshold = "spend.threshold"
)

// EventTypes are every event type, in the order responses list them. An
// owner who names no events is subscribed to all of them.
var EventTypes = []string{KeyDisabled, KeyEnabled, UsageThreshold, OwnerPlanChanged, OwnerSuspended, OwnerReinstated, KeyLeaked, SpendThreshold}

// EnvAllowPrivate is the environment variable that sets
// Guard.AllowPrivate ("1" or "true"), for local development and tests.
const EnvAllowPrivate = "KEYPLANE_WEBHOOK_ALLOW_PRIVATE"

// Limits and defaults.
const (
	MaxURLLen = 2048
	// MaxDataBytes bounds an event's data as JSON.
	MaxDataBytes = 64 << 10
	// MaxEventIDLen bounds Event.ID.
	MaxEventIDLen = 512
	// DefaultTimeout bounds one delivery attempt: connecting, TLS, sending
	// the request and reading the response.
	DefaultTimeout = 10 * time.Second
	// Retention is how long a delivery record is kept after it is
	// created, and so how long the same event id is deduplicated.
	Retention = 30 * 24 * time.Hour
)

// DefaultSchedule is the delay before each retry: attempt n+1 is made
// DefaultSchedule[n-1] after attempt n failed. After the last one fails,
// the delivery is dead-lettered. That is 7 attempts over about 17.6 hours.
var DefaultSchedule = []time.Duration{
	5 * time.Second,
	5 * time.Minute,
	30 * time.Minute,
	2 * time.Hour,
	5 * time.Hour,
	10 * time.Hour,
}

// OwnerWebhook is where an owner's notifications go.
type OwnerWebhook struct {
	Owner  string
	URL    string
	Events []string // the subscribed event types, a subset of EventTypes in its order
	// SecretFingerprint names the version of the owner's signing secret
	// (see SecretName) that signs deliveries: Fingerprint of its whsec_
	// form. Empty means the vault's latest version.
	SecretFingerprint string
	UpdatedAt         time.Time
}

// Subscribed reports whether w wants events of type typ.
func (w OwnerWebhook) Subscribed(typ string) bool {
	for _, e := range w.Events {
		if e == typ {
			return true
		}
	}
	return false
}

// Registry stores owners' webhooks. Errors are errs kinds: NotFound,
// Invalid (an owner the backend cannot store), Conflict (contention; retry),
// Unavailable and Internal.
type Registry interface {
	// Put stores w as w.Owner's webhook, replacing any earlier one.
	Put(ctx context.Context, w OwnerWebhook) error
	// Get returns owner's webhook. NotFound if the owner has none.
	Get(ctx context.Context, owner string) (OwnerWebhook, error)
}

// Status is where a delivery stands.
type Status string

// Delivery statuses. Only pending deliveries change.
const (
	Pending   Status = "pending"   // attempts remain
	Delivered Status = "delivered" // an attempt got a 2xx answer
	Dead      Status = "dead"      // given up on: Reason says why
	Canceled  Status = "canceled"  // the owner removed the webhook or unsubscribed before it was delivered
)

// Reasons a delivery ended without being delivered.
const (
	ReasonExhausted     = "attempts_exhausted" // the last scheduled attempt failed
	ReasonTransport     = "queue_gave_up"      // the queue dead-lettered its message (HandleDeadLetter)
	ReasonNoWebhook     = "webhook_removed"    // the owner has no webhook any more
	ReasonNotSubscribed = "unsubscribed"       // the owner's webhook no longer takes the event type
)

// Delivery is the durable record of one notification: what is sent, and
// the state of its attempts. Its ID is the webhook-id, the same on every
// attempt.
type Delivery struct {
	ID      string // "ntf_" + 32 hex characters, see NotificationID
	Owner   string
	Type    string
	Payload []byte // the JSON body POSTed on every attempt
	Status  Status
	// Attempts counts the attempts started.
	Attempts int
	// Enqueued is the highest attempt number whose queue message is known
	// to be published.
	Enqueued int
	// NextAttemptAt is the earliest time attempt Attempts+1 may start.
	NextAttemptAt time.Time
	// Lease is non-empty while attempt Attempts is in flight: the token of
	// the handler that claimed it, which holds it until LeaseUntil.
	Lease      string
	LeaseUntil time.Time
	// The outcome of the last attempt: its start, its HTTP status (0 when
	// there was no response) and, when it failed, why.
	LastAttemptAt time.Time
	LastStatus    int
	LastError     string
	// Reason says why a Dead or Canceled delivery ended.
	Reason    string
	CreatedAt time.Time
	UpdatedAt time.Time
	// ExpireAt is when the record may be deleted (CreatedAt + Retention);
	// until then the same event id is not delivered again.
	ExpireAt time.Time
}

// Deliveries stores delivery records. Errors are errs kinds: NotFound,
// Exists, Conflict (contention that outlasted the backend's retries; retry),
// Unavailable and Internal.
type Deliveries interface {
	// CreateDelivery stores d. Exists, leaving the stored record
	// unchanged, if a record with d.ID exists.
	CreateDelivery(ctx context.Context, d Delivery) error
	// GetDelivery returns the record with id. NotFound if there is none.
	GetDelivery(ctx context.Context, id string) (Delivery, error)
	// UpdateDelivery reads the record with id, calls mutate on it and
	// stores the result, atomically: concurrent updates of one record are
	// serialised and none is lost. If mutate returns an error nothing is
	// written and UpdateDelivery returns that error unchanged. mutate may
	// be called more than once (a backend may retry a contended
	// transaction), so it must only change *Delivery; it must not call the
	// store, and a change of the ID is ignored. NotFound if there is no
	// record with id.
	UpdateDelivery(ctx context.Context, id string, mutate func(*Delivery) error) (Delivery, error)
}

// Store is a Registry and a Deliveries, as the adapters (sqlitenotify,
// firestorenotify) provide them, with Close.
type Store interface {
	Registry
	Deliveries
	Close() error
}

// NotificationID is the webhook-id of the notification of an event: the
// same owner, type and caller-supplied event id always give the same
// webhook-id, which is what deduplicates the same event emitted twice.
func NotificationID(owner, typ, eventID string) string {
	h := sha256.Sum256([]byte(owner + "\x00" + typ + "\x00" + eventID))
	return "ntf_" + hex.EncodeToString(h[:16])
}

// SecretName is the name of owner's signing secret in the vault. Each
// SetWebhook adds a version.
func SecretName(owner string) string {
	h := sha256.Sum256([]byte(owner))
	return "owner-webhook-" + hex.EncodeToString(h[:16])
}

// Fingerprint identifies a secret without revealing it: hex of the first
// 16 bytes of the SHA-256 of its whsec_ form.
func Fingerprint(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:16])
}

// Event is something to tell an owner.
type Event struct {
	Type string // KeyDisabled, KeyEnabled or UsageThreshold
	// ID identifies the event for deduplication: the same owner, type and
	// ID are delivered once (within Retention), however often Notify is
	// called. The constructors below derive it from what makes the event
	// unique.
	ID string
	// Time is when the event happened: the payload's "timestamp". Zero
	// means now.
	Time time.Time
	// Data is the payload's "data": anything that marshals to a JSON
	// object of at most MaxDataBytes. Nil is sent as {}.
	Data any
}

// KeyStatusData is the data of key.disabled and key.enabled.
type KeyStatusData struct {
	KeyID  string `json:"key_id"`
	Owner  string `json:"owner"`
	Status string `json:"status"` // "disabled" or "active"; "revoked" in key.leaked
	// Reason is the machine-readable reason: quota_exceeded, an abuse
	// rule's name, window_reset, manual, leaked.
	Reason string `json:"reason"`
	// DisabledUntil is when a quota suspension ends (key.disabled only).
	DisabledUntil *time.Time `json:"disabled_until,omitempty"`
	// Evidence is what the decision was based on, e.g. limit, used, max,
	// window.
	Evidence map[string]any `json:"evidence,omitempty"`
}

// UsageThresholdData is the data of usage.threshold.
type UsageThresholdData struct {
	KeyID       string    `json:"key_id"`
	Owner       string    `json:"owner"`
	Limit       string    `json:"limit"`     // e.g. "requests_per_day"
	Threshold   int       `json:"threshold"` // percent: 80 or 100
	Used        int64     `json:"used"`
	Max         int64     `json:"max"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
}

// KeyDisabledEvent is the key.disabled event of a key disabled at at: one
// notification per key and disable time.
func KeyDisabledEvent(d KeyStatusData, at time.Time) Event {
	return Event{Type: KeyDisabled, ID: eventID(KeyDisabled, d.KeyID, stamp(at)), Time: at, Data: d}
}

// KeyEnabledEvent is the key.enabled event of a key re-enabled at at: one
// notification per key and enable time.
func KeyEnabledEvent(d KeyStatusData, at time.Time) Event {
	return Event{Type: KeyEnabled, ID: eventID(KeyEnabled, d.KeyID, stamp(at)), Time: at, Data: d}
}

// UsageThresholdEvent is the usage.threshold event of a key crossing a
// threshold: one notification per key, limit, window and threshold,
// whenever and however often it is emitted.
func UsageThresholdEvent(d UsageThresholdData, at time.Time) Event {
	return Event{
		Type: UsageThreshold,
		ID:   eventID(UsageThreshold, d.KeyID, d.Limit, stamp(d.WindowStart), strconv.Itoa(d.Threshold)),
		Time: at, Data: d,
	}
}

// OwnerPlanData is the data of owner.plan_changed: the owner's plan and
// overrides after the change, and its plan before.
type OwnerPlanData struct {
	Owner        string                 `json:"owner"`
	Plan         string                 `json:"plan"`
	PreviousPlan string                 `json:"previous_plan"`
	Limits       plan.Limits            `json:"limits,omitempty"`
	Features     map[string]plan.Limits `json:"features,omitempty"`
}

// OwnerPlanChangedEvent is the owner.plan_changed event of a change made
// at at: one notification per owner and change time.
func OwnerPlanChangedEvent(d OwnerPlanData, at time.Time) Event {
	return Event{Type: OwnerPlanChanged, ID: eventID(OwnerPlanChanged, d.Owner, stamp(at)), Time: at, Data: d}
}

// OwnerSuspensionData is the data of owner.suspended and
// owner.reinstated: the quota the owner went over, and until when.
type OwnerSuspensionData struct {
	Owner   string    `json:"owner"`
	Reason  string    `json:"reason"` // quota_exceeded; window_reset or limit_raised when reinstated
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Used    int64     `json:"used"`
	Max     int64     `json:"max"`
	Until   time.Time `json:"until"`
}

// OwnerSuspensionEvent is the owner.suspended (or, with reinstated,
// owner.reinstated) event of one suspension: one notification per owner,
// limit, feature and end of window, however often it is emitted.
func OwnerSuspensionEvent(d OwnerSuspensionData, reinstated bool, at time.Time) Event {
	typ := OwnerSuspended
	if reinstated {
		typ = OwnerReinstated
	}
	return Event{Type: typ, ID: eventID(typ, d.Owner, d.Limit, d.Feature, stamp(d.Until)), Time: at, Data: d}
}

// SpendThresholdData is the data of spend.threshold: the owner's spend
// in the month starting at Month reached Threshold % of its cap.
// Amounts are decimal strings in Currency.
type SpendThresholdData struct {
	Owner     string    `json:"owner"`
	Month     time.Time `json:"month"`
	Threshold int       `json:"threshold"` // 50, 80 or 100
	Spend     string    `json:"spend"`
	Cap       string    `json:"cap"`
	Currency  string    `json:"currency"`
}

// SpendThresholdEvent is the spend.threshold event of one threshold: one
// notification per owner, month and threshold, however often it is
// emitted.
func SpendThresholdEvent(d SpendThresholdData, at time.Time) Event {
	return Event{Type: SpendThreshold, ID: eventID(SpendThreshold, d.Owner, stamp(d.Month), strconv.Itoa(d.Threshold)), Time: at, Data: d}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func eventID(parts ...string) string { return strings.Join(parts, "|") }
