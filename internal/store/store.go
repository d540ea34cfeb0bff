package store

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/plan"
)

// Status is a key's lifecycle state.
type Status string

// Key states. Only active keys verify.
const (
	Active   Status = "active"
	Disabled Status = "disabled"
	Revoked  Status = "revoked"
)

// Restrictions limit where a key may be used from, and for what.
type Restrictions struct {
	AllowedIPs       []string `json:"allowed_ips,omitempty"`
	AllowedReferrers []string `json:"allowed_referrers,omitempty"`
	// AllowedFeatures, if not empty, are the only features (models) the
	// key may be verified for.
	AllowedFeatures []string `json:"allowed_features,omitempty"`
}

// Key is the stored record of an API key. It never holds the plaintext.
type Key struct {
	ID            string
	Owner         string
	Name          string
	Plan          string
	Scopes        []string
	Status        Status
	StatusReason  string
	DisabledUntil *time.Time
	Prefix        string
	Last4         string
	Hash          apikey.Hash
	CreatedAt     time.Time
	UpdatedAt     time.Time
	ExpiresAt     *time.Time
	Metadata      map[string]string
	Limits        plan.Limits // per-key overrides of the plan's limits
	Restrictions  Restrictions
	RotatedFrom   string
	RotatedTo     string
	LastUsedAt    *time.Time
	// Quarantine, if not nil, is the leak quarantine the key was put in
	// (KEYPLANE_LEAK_POLICY=quarantine); it is kept, ended, after its
	// grace for the record.
	Quarantine *Quarantine
}

// Quarantine is a grace given to a key reported leaked: until Until it
// verifies only from AllowedIPs, the client IPs it was seen from in the
// days before the report, and then the sweep disables it. It is in force
// while EndedAt is nil.
type Quarantine struct {
	Since      time.Time  `json:"since"`
	Until      time.Time  `json:"until"`
	AllowedIPs []string   `json:"allowed_ips"` // addresses or CIDR prefixes
	Reporter   string     `json:"reporter"`
	URL        string     `json:"url,omitempty"`
	Source     string     `json:"source,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"` // when it ended: the key was disabled, or it was closed
}

// InForce reports whether q restricts its key: it is not nil and not ended.
func (q *Quarantine) InForce() bool { return q != nil && q.EndedAt == nil }

// Owner is the stored record of an owner (a project): the tier its keys
// share limits in and its overrides of that tier. An owner exists once it
// has a key: provisioning stores the record (EnsureOwner) before the key.
type Owner struct {
	ID   string
	Plan string // the owner's tier: its plan's owner_limits and features apply
	// Limits overrides the plan's owner_limits (shared by all the owner's
	// keys); Features overrides the plan's per-feature limits, by feature.
	Limits   plan.Limits
	Features map[string]plan.Limits
	// Suspension, if not nil, is the sweep's suspension of the owner over
	// a quota: every key of the owner is refused until it is lifted.
	Suspension *OwnerSuspension
	// Billing is the owner's spend cap, prepaid credits and the spend
	// alerts told this month; nil for none.
	Billing   *OwnerBilling
	CreatedAt time.Time
	UpdatedAt time.Time // set by every change; orders ChangedOwners
}

// OwnerBilling is an owner's money settings and state. Amounts are in
// micro-units of the plan's currency (plan.MicroPerUnit per unit).
type OwnerBilling struct {
	// SpendCap, if not nil, overrides the plan's monthly spend cap
	// (micro-units; 0 refuses every priced request).
	SpendCap *int64
	// Credits are the prepaid top-ups, oldest first; nil if the owner
	// never had one.
	Credits *Credits
	// AlertMonth and AlertPercent are the highest spend alert (50, 80
	// or 100 % of the cap) told for the month starting at AlertMonth.
	AlertMonth   time.Time
	AlertPercent int
}

// Credits are an owner's prepaid top-ups. The balance is the sum of the
// grants less the spend since the first one: the spend of the month
// starting at Since, less Offset (that month's spend before the first
// top-up), plus every later month's.
type Credits struct {
	Grants []CreditGrant
	Since  time.Time // the start of the month of the first top-up
	Offset int64     // the spend of Since's month before the first top-up
}

// MaxCreditGrants is the most top-ups one owner holds.
const MaxCreditGrants = 1000

// CreditGrant is one prepaid top-up, idempotent by ID.
type CreditGrant struct {
	ID     string
	Amount int64 // micro-units, > 0
	At     time.Time
}

// Granted returns the sum of the grants.
func (c *Credits) Granted() int64 {
	var n int64
	for _, g := range c.Grants {
		n += g.Amount
	}
	return n
}

// OwnerSuspension records why and until when an owner is suspended: the
// quota it went over (the owner's own, or the owner's on one feature),
// the usage the sweep saw, and the end of the quota's window.
type OwnerSuspension struct {
	Limit   string // e.g. "requests_per_day"
	Feature string // "" for the owner's own quota
	Used    int64
	Max     int64
	Until   time.Time // the end of the window: lifted by the first sweep after it
	At      time.Time // when the sweep suspended the owner
}

// ListOwnersQuery selects owners, by id ascending.
type ListOwnersQuery struct {
	PageSize  int    // 1..1000
	PageToken string // from a previous page's next token
	Suspended bool   // only owners with a Suspension
}

// Pending is a provisioning intent: written before a key's secret, so that
// a crash between the secret write and the key write leaves a record that
// finds the secret. It becomes a Key through Activate, or is reaped.
type Pending struct {
	KeyID     string
	Owner     string
	Prefix    string
	CreatedAt time.Time
}

// AuditEntry records one state change or sensitive read.
type AuditEntry struct {
	ID      string // assigned by the store when empty; sorts by time
	Time    time.Time
	Actor   string
	Action  string
	KeyID   string
	Details map[string]string
}

// IdemState is the state of an idempotency record.
type IdemState string

// Idempotency record states.
const (
	IdemPending IdemState = "pending"
	IdemDone    IdemState = "done"
)

// Idempotency records one request made with an Idempotency-Key. It holds
// the id of the key the request provisions and a hash of the request, never
// the secret.
type Idempotency struct {
	Key         string // scoped by the caller: route + the client's header value
	RequestHash string
	KeyID       string
	State       IdemState
	LeaseUntil  time.Time // while pending: the owner's lease
	Status      int       // when done: the HTTP status of the response
	CreatedAt   time.Time
	ExpiresAt   time.Time // the record may be deleted after this (Firestore TTL)
}

// Token is the stored record of a caller token: a credential with named
// permissions, optionally scoped to one owner. It never holds the
// plaintext, only its keyed hash.
type Token struct {
	ID          string // "tok_…"
	Name        string
	Permissions []string // permission names, sorted
	Owner       string   // "" for every owner
	Hash        apikey.Hash
	CreatedBy   string // the actor that minted it
	CreatedAt   time.Time
	ExpiresAt   *time.Time
	RevokedAt   *time.Time
}

// ListTokensQuery selects tokens, newest first.
type ListTokensQuery struct {
	Owner     string // "" for all (scoped and unscoped) tokens
	PageSize  int    // 1..1000
	PageToken string // from a previous page's next token
}

// MaxMarkUsed is the most keys one MarkUsed call takes.
const MaxMarkUsed = 1000

// CheckMarkUsed checks the arguments of MarkUsed that every store rejects.
func CheckMarkUsed(uses map[string]time.Time) error {
	if len(uses) > MaxMarkUsed {
		return errs.E(errs.Invalid, "at most %d keys per MarkUsed call, got %d", MaxMarkUsed, len(uses))
	}
	for id, t := range uses {
		if t.IsZero() {
			return errs.E(errs.Invalid, "MarkUsed: key %q has a zero time", id)
		}
	}
	return nil
}

// ListKeysQuery selects keys, newest first.
type ListKeysQuery struct {
	Owner    string // "" for all owners
	PageSize int    // 1..1000
	// UnusedSince, if not zero, keeps only the keys never used or last
	// used before it (LastUsedAt < UnusedSince): the stale ones. A store
	// that filters as it reads may then return pages shorter than PageSize
	// with a next token; the caller follows it until it is "".
	UnusedSince time.Time
	PageToken   string // from a previous page's next token
}

// AuditQuery selects audit entries, newest first.
type AuditQuery struct {
	KeyID     string // "" for all keys
	PageSize  int
	PageToken string
}

// Checkpoint is a small named record a long-running job (the sweep) keeps
// its progress in, updated with compare-and-set on Version.
type Checkpoint struct {
	Name      string // see ValidCheckpointName
	Data      []byte // at most MaxCheckpointData bytes
	Version   int64  // 0 for none stored; each save adds 1
	UpdatedAt time.Time
}

// MaxCheckpointData is the largest Checkpoint.Data a store accepts.
const MaxCheckpointData = 64 << 10

// ValidCheckpointName reports whether name can name a checkpoint: 1-100
// characters of [a-zA-Z0-9_.-], the first a letter or digit, so that every
// store can use it as is (a Firestore document id, say).
func ValidCheckpointName(name string) bool {
	if len(name) == 0 || len(name) > 100 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// Store is the datastore of keys, intents, idempotency records, audit
// entries and job checkpoints. Methods return errors of these errs kinds:
// NotFound, Exists, Conflict (lost a race; safe to retry, or for
// SaveCheckpoint re-read first), FailedPrecondition (as documented),
// Invalid (a bad argument: a page token, page size or limit, too many ids,
// a checkpoint name or oversized data), Unavailable (backend unreachable)
// and Internal.
type Store interface {
	// CreatePending stores an intent. Exists if one with the same KeyID is
	// stored, or a key with that id is.
	CreatePending(ctx context.Context, p Pending) error
	// GetPending returns the intent for keyID. NotFound if there is none.
	GetPending(ctx context.Context, keyID string) (Pending, error)
	// ListPending returns intents created before t, oldest first, at most
	// limit of them.
	ListPending(ctx context.Context, before time.Time, limit int) ([]Pending, error)
	// DeletePending removes an intent; no error if it is gone.
	DeletePending(ctx context.Context, keyID string) error

	// Activate atomically creates k, its hash lookup and the audit entry,
	// and deletes the intent for k.ID if there is one. Exists if a key with
	// k.ID or k.Hash is stored (nothing is written then).
	Activate(ctx context.Context, k *Key, audit AuditEntry) error
	// GetKey returns the key with id. NotFound if there is none.
	GetKey(ctx context.Context, id string) (*Key, error)
	// LookupHash returns the key whose hash is h. NotFound if none.
	LookupHash(ctx context.Context, h apikey.Hash) (*Key, error)
	// UpdateKey reads key id, calls mutate on it and, if mutate returns nil,
	// writes the key and the audit entry mutate returns (if not nil)
	// atomically. mutate may be called more than once (on contention) and
	// must not change ID, Hash, CreatedAt or Owner. An error from mutate is
	// returned unchanged and nothing is written. NotFound if there is no
	// such key.
	UpdateKey(ctx context.Context, id string, mutate func(*Key) (*AuditEntry, error)) (*Key, error)
	// ListKeys returns one page of keys, newest first, and the token of the
	// next page ("" on the last).
	ListKeys(ctx context.Context, q ListKeysQuery) ([]*Key, string, error)
	// ChangedKeys is the change feed verifiers poll: up to limit keys whose
	// (UpdatedAt, ID) sorts after (since, afterID), in that order (so with
	// afterID "" keys changed exactly at since are included). Every
	// state change sets UpdatedAt, so a poller that remembers the last
	// (UpdatedAt, ID) it saw misses no change made with a clock not behind
	// its cursor. limit is 1..1000.
	ChangedKeys(ctx context.Context, since time.Time, afterID string, limit int) ([]*Key, error)
	// DueSuspensions returns up to limit disabled keys whose DisabledUntil
	// is set and at or before t, ordered by (DisabledUntil, ID), starting
	// after the key (afterUntil, afterID) when afterID is not "" (keys at
	// afterUntil with a greater ID follow it). limit is 1..1000. The sweep
	// re-enables them when their quota window resets; a page shorter than
	// limit is the last.
	DueSuspensions(ctx context.Context, t time.Time, afterUntil time.Time, afterID string, limit int) ([]*Key, error)
	// DueQuarantines returns up to limit keys whose Quarantine is in force
	// (EndedAt nil) and whose Quarantine.Until is at or before t, ordered
	// by (Quarantine.Until, ID), starting after the key (afterUntil,
	// afterID) when afterID is not "". limit is 1..1000. The sweep ends
	// them (disables the key); a page shorter than limit is the last.
	DueQuarantines(ctx context.Context, t time.Time, afterUntil time.Time, afterID string, limit int) ([]*Key, error)
	// GetKeys returns the stored keys among ids (at most 1000; Invalid
	// beyond), by id; ids with no key, or that cannot name one, are absent
	// from the map. Duplicate ids are read once.
	GetKeys(ctx context.Context, ids []string) (map[string]*Key, error)
	// MarkUsed records when keys were last used (uses: key id → time of
	// a use): each key's LastUsedAt becomes the later of its stored value
	// and the given time, to the microsecond, so that writers racing with
	// older times never move it backwards. It is not a state change:
	// UpdatedAt is kept and the change feed does not carry it. Ids with no
	// key are ignored. Invalid for more than MaxMarkUsed ids or a zero
	// time (nothing is written then).
	MarkUsed(ctx context.Context, uses map[string]time.Time) error

	// EnsureOwner stores o if no owner with o.ID is stored, and returns
	// the stored owner either way (created reports which). It is how an
	// owner comes to exist: provisioning calls it before a key's intent.
	EnsureOwner(ctx context.Context, o *Owner) (stored *Owner, created bool, err error)
	// GetOwner returns the owner with id. NotFound if there is none.
	GetOwner(ctx context.Context, id string) (*Owner, error)
	// UpdateOwner reads owner id, calls mutate on it and, if mutate
	// returns nil, writes the owner and the audit entry mutate returns (if
	// not nil) atomically, as UpdateKey does for keys. mutate must not
	// change ID or CreatedAt, and sets UpdatedAt. NotFound if there is no
	// such owner.
	UpdateOwner(ctx context.Context, id string, mutate func(*Owner) (*AuditEntry, error)) (*Owner, error)
	// ListOwners returns one page of owners, by id ascending, and the
	// token of the next page ("" on the last).
	ListOwners(ctx context.Context, q ListOwnersQuery) ([]*Owner, string, error)
	// ChangedOwners is the owners' change feed, as ChangedKeys is the
	// keys': up to limit owners whose (UpdatedAt, ID) sorts after (since,
	// afterID). limit is 1..1000.
	ChangedOwners(ctx context.Context, since time.Time, afterID string, limit int) ([]*Owner, error)

	// CreateToken atomically stores t, its hash lookup and the audit
	// entry. Exists if a token with t.ID or t.Hash is stored (nothing is
	// written then).
	CreateToken(ctx context.Context, t *Token, audit AuditEntry) error
	// GetToken returns the token with id. NotFound if there is none.
	GetToken(ctx context.Context, id string) (*Token, error)
	// LookupTokenHash returns the token whose hash is h, revoked or
	// expired ones included. NotFound if none.
	LookupTokenHash(ctx context.Context, h apikey.Hash) (*Token, error)
	// ListTokens returns one page of tokens, newest first (CreatedAt, then
	// ID, descending), and the token of the next page ("" on the last).
	// With q.Owner set, only the tokens scoped to that owner.
	ListTokens(ctx context.Context, q ListTokensQuery) ([]*Token, string, error)
	// RevokeToken sets the RevokedAt of token id to at and writes the audit
	// entry, atomically, and returns the token. A token already revoked is
	// returned as stored (its first RevokedAt kept) and nothing is written.
	// NotFound if there is no such token.
	RevokeToken(ctx context.Context, id string, at time.Time, audit AuditEntry) (*Token, error)

	// GetCheckpoint returns the checkpoint called name. NotFound if none;
	// Invalid if name is not a ValidCheckpointName.
	GetCheckpoint(ctx context.Context, name string) (Checkpoint, error)
	// SaveCheckpoint stores c if the stored checkpoint's Version equals
	// c.Version (0: none is stored) and returns it with Version+1 and
	// UpdatedAt now (to the microsecond); Conflict if another writer saved
	// first (nothing is written then: re-read and decide again). Invalid if
	// c.Name is not a ValidCheckpointName, c.Version is negative or c.Data
	// is longer than MaxCheckpointData.
	SaveCheckpoint(ctx context.Context, c Checkpoint, now time.Time) (Checkpoint, error)

	// AppendAudit stores an audit entry that is not part of a key update
	// (e.g. a secret reveal).
	AppendAudit(ctx context.Context, e AuditEntry) error
	// ListAudit returns one page of audit entries, newest first.
	ListAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, string, error)

	// ReserveIdempotency claims rec.Key for a request, atomically:
	//   - no record, or one past its ExpiresAt: stores rec (State pending)
	//     and returns it with owned = true;
	//   - a pending record whose LeaseUntil <= now and whose RequestHash
	//     equals rec.RequestHash: extends its lease to rec.LeaseUntil and
	//     returns it (keeping its KeyID) with owned = true;
	//   - otherwise returns the stored record with owned = false.
	ReserveIdempotency(ctx context.Context, rec Idempotency, now time.Time) (stored Idempotency, owned bool, err error)
	// CompleteIdempotency marks the record done with the response status.
	CompleteIdempotency(ctx context.Context, key string, status int) error
	// ReleaseIdempotency ends a pending record's lease (LeaseUntil = zero)
	// so that a retry can take over at once. No error if it is not pending.
	ReleaseIdempotency(ctx context.Context, key string) error

	// Close releases the store's resources.
	Close() error
}
