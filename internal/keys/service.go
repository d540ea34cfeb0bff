package keys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/store"
)

// Audit actions.
const (
	ActionCreate  = "key.create"
	ActionUpdate  = "key.update"
	ActionDisable = "key.disable"
	ActionEnable  = "key.enable"
	ActionRevoke  = "key.revoke"
	ActionRotate  = "key.rotate"
	ActionReveal  = "key.secret.reveal"
)

// Service is the key lifecycle service. All fields are required except
// those documented with a default.
type Service struct {
	Store  store.Store
	Vault  secrets.Vault
	Hasher *apikey.Hasher
	Plans  *plan.Catalog
	Prefix string       // key prefix, e.g. "kp_live"
	Clock  clock.Clock  // default clock.Real
	Logger *slog.Logger // default slog.Default()

	// IdempotencyTTL is how long an Idempotency-Key is remembered (24h).
	IdempotencyTTL time.Duration
	// Lease is how long a request owns an Idempotency-Key before a retry
	// may take over its work, after a crash (30s).
	Lease time.Duration
	// Notifier, if not nil, tells a key's owner about manual disables and
	// enables (see Disable and Enable) and about the sweep's suspensions
	// and lifts (see Suspend and Lift). Default: nobody is told.
	Notifier Notifier
	// Observer, if not nil, is told of every committed write to a key
	// before the call that made it returns, so that a verifier in the
	// same process answers from the new state at once (see KeyObserver).
	// Default: nobody is told; other processes learn from the change feed.
	Observer KeyObserver
	// Quarantine is what the LeakQuarantine leak action reads client IPs
	// from, and its lookback and grace; needed only for that action.
	Quarantine QuarantinePolicy
}

// KeyObserver learns of a key's committed change in the process that made
// it. Service calls KeyChanged after every write to a key is committed
// (a no-op update writes nothing and calls nothing), with the key as
// stored, before returning to its caller. KeyChanged must not block on
// I/O or modify k.
type KeyObserver interface {
	KeyChanged(k *store.Key)
}

// Notifier tells a key's owner that the key changed state. Service calls
// it after the change is committed, only when the state actually changed,
// with the key as stored. An error means the owner was not told; the
// change stands. Implementations should derive the event's identity from
// the key and its UpdatedAt, so that calling them twice for the same
// change tells the owner once.
type Notifier interface {
	// KeyDisabled and KeyEnabled tell of an operator's change (Disable,
	// Enable); Service logs their errors (see the package comment).
	KeyDisabled(ctx context.Context, k *store.Key, actor string) error
	KeyEnabled(ctx context.Context, k *store.Key, actor string) error
	// KeySwept tells of a change the sweep asked for (Suspend, Lift,
	// FinishSweepChange): k is disabled with one of the sweep's reasons,
	// or active with ReasonWindowReset. The reason is meant for the owner
	// (an operator's free text is not). evidence is what a suspension was
	// decided on, nil when it is not known (a lift, FinishSweepChange).
	// Service returns its errors, so that the sweep finishes them later.
	KeySwept(ctx context.Context, k *store.Key, evidence map[string]any) error
}

// now is the service's time, at the microsecond precision the stores keep,
// so that a response and a later read of the same record agree.
func (s *Service) now() time.Time {
	if s.Clock == nil {
		return time.Now().UTC().Truncate(time.Microsecond)
	}
	return s.Clock.Now().Truncate(time.Microsecond)
}

func (s *Service) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func (s *Service) ttl() time.Duration {
	if s.IdempotencyTTL <= 0 {
		return 24 * time.Hour
	}
	return s.IdempotencyTTL
}

func (s *Service) lease() time.Duration {
	if s.Lease <= 0 {
		return 30 * time.Second
	}
	return s.Lease
}

// CreateRequest is the body of POST /v1/keys.
type CreateRequest struct {
	Owner        string              `json:"owner"`
	Plan         string              `json:"plan,omitempty"`
	Name         string              `json:"name,omitempty"`
	Scopes       []string            `json:"scopes,omitempty"`
	ExpiresAt    *time.Time          `json:"expires_at,omitempty"`
	Metadata     map[string]string   `json:"metadata,omitempty"`
	Limits       plan.Limits         `json:"limits,omitempty"`
	Restrictions *store.Restrictions `json:"restrictions,omitempty"`
}

// Created is the outcome of provisioning: the key and its plaintext.
type Created struct {
	Key    *store.Key
	Secret string
	// Replayed is true when the response repeats an earlier request's with
	// the same Idempotency-Key.
	Replayed bool
}

// template validates req and returns the key it describes, without id,
// hash or timestamps.
func (s *Service) template(req CreateRequest) (*store.Key, error) {
	now := s.now()
	if err := validateOwner(req.Owner); err != nil {
		return nil, err
	}
	name := req.Plan
	if name == "" {
		if name = s.Plans.Default(); name == "" {
			return nil, invalid("plan is required: this deployment has no default plan (plans: %v)", s.Plans.Names())
		}
	}
	p, ok := s.Plans.Get(name)
	if !ok {
		return nil, invalid("plan %q does not exist; plans: %v", name, s.Plans.Names())
	}
	if err := validateText("name", req.Name, MaxNameLen); err != nil {
		return nil, err
	}
	scopes, err := resolveScopes(p, req.Scopes)
	if err != nil {
		return nil, err
	}
	exp, err := validateExpiry(req.ExpiresAt, now)
	if err != nil {
		return nil, err
	}
	if err := validateMetadata(req.Metadata); err != nil {
		return nil, err
	}
	if err := validateLimits(req.Limits); err != nil {
		return nil, err
	}
	var r store.Restrictions
	if req.Restrictions != nil {
		if r, err = normalizeRestrictions(*req.Restrictions); err != nil {
			return nil, err
		}
	}
	return &store.Key{
		Owner:        req.Owner,
		Name:         req.Name,
		Plan:         name,
		Scopes:       scopes,
		Status:       store.Active,
		Prefix:       s.Prefix,
		ExpiresAt:    exp,
		Metadata:     maps.Clone(req.Metadata),
		Limits:       maps.Clone(req.Limits),
		Restrictions: r,
	}, nil
}

// Create provisions a key. idemKey is the request's Idempotency-Key header
// ("" if none).
func (s *Service) Create(ctx context.Context, actor string, req CreateRequest, idemKey string) (*Created, error) {
	tmpl, err := s.template(req)
	if err != nil {
		return nil, err
	}
	return s.provision(ctx, actor, "POST /v1/keys", req, idemKey, tmpl, nil, nil)
}

// provision runs the idempotency protocol around finish. scope and body
// identify the request for the idempotency record. before, if not nil,
// checks that the work may start (or resume) for the new key's id; it is
// not called when a finished request is replayed. after, if not nil, runs
// once the new key is active (rotation's update of the old key) and must
// be safe to repeat.
func (s *Service) provision(ctx context.Context, actor, scope string, body any, idemKey string, tmpl *store.Key,
	before func(id string) error, after func(context.Context, *store.Key) error) (*Created, error) {
	work := func(id string) (*Created, error) {
		if before != nil {
			if err := before(id); err != nil {
				return nil, err
			}
		}
		c, err := s.finish(ctx, actor, id, tmpl)
		if err == nil && after != nil {
			err = after(ctx, c.Key)
		}
		return c, err
	}
	if idemKey == "" {
		return work(ids.NewKeyID())
	}
	if err := validateIdempotencyKey(idemKey); err != nil {
		return nil, err
	}
	reqHash, err := requestHash(scope, body)
	if err != nil {
		return nil, err
	}
	now := s.now()
	recKey := scope + " " + idemKey
	rec, owned, err := s.Store.ReserveIdempotency(ctx, store.Idempotency{
		Key:         recKey,
		RequestHash: reqHash,
		KeyID:       ids.NewKeyID(),
		State:       store.IdemPending,
		LeaseUntil:  now.Add(s.lease()),
		CreatedAt:   now,
		ExpiresAt:   now.Add(s.ttl()),
	}, now)
	if err != nil {
		return nil, err
	}
	if !owned {
		switch {
		case rec.RequestHash != reqHash:
			return nil, errs.E(errs.Unprocessable, "Idempotency-Key %q was already used with a different request", idemKey)
		case rec.State == store.IdemPending:
			e := errs.E(errs.Conflict, "a request with this Idempotency-Key is still in progress; retry later")
			e.RetryAfter = max(rec.LeaseUntil.Sub(now), time.Second)
			return nil, e
		}
		return s.replay(ctx, rec.KeyID)
	}
	c, err := work(rec.KeyID)
	if err != nil {
		// Let a retry take over at once rather than after the lease.
		if rerr := s.Store.ReleaseIdempotency(context.WithoutCancel(ctx), recKey); rerr != nil {
			s.logger().WarnContext(ctx, "releasing idempotency record", "error", rerr)
		}
		return nil, err
	}
	if err := s.Store.CompleteIdempotency(ctx, recKey, 201); err != nil {
		return nil, err
	}
	return c, nil
}

// replay answers a repeated request with the key it created, re-reading
// the plaintext from the vault.
func (s *Service) replay(ctx context.Context, id string) (*Created, error) {
	k, err := s.Store.GetKey(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.Status == store.Revoked {
		return nil, errs.E(errs.FailedPrecondition, "the key this Idempotency-Key created (%s) has since been revoked", id)
	}
	secret, err := s.Vault.KeySecret(ctx, id)
	if err != nil {
		return nil, err
	}
	return &Created{Key: k, Secret: string(secret), Replayed: true}, nil
}

// finish provisions key id from tmpl, resuming after whichever step an
// earlier attempt with the same id reached (see the package comment).
func (s *Service) finish(ctx context.Context, actor, id string, tmpl *store.Key) (*Created, error) {
	if k, err := s.Store.GetKey(ctx, id); err == nil {
		return s.withSecret(ctx, k)
	} else if !errs.Is(err, errs.NotFound) {
		return nil, err
	}
	now := s.now()
	// The owner exists once it has a key: its record (its tier: the plan
	// of its first key) is stored first, so that no key is ever without
	// one. A crash after this leaves an owner without keys, which is
	// harmless: the next attempt finds it.
	if _, _, err := s.Store.EnsureOwner(ctx, &store.Owner{ID: tmpl.Owner, Plan: tmpl.Plan, CreatedAt: now, UpdatedAt: now}); err != nil {
		return nil, err
	}
	err := s.Store.CreatePending(ctx, store.Pending{KeyID: id, Owner: tmpl.Owner, Prefix: tmpl.Prefix, CreatedAt: now})
	if err != nil && !errs.Is(err, errs.Exists) {
		return nil, err
	}
	plaintext, err := apikey.Generate(tmpl.Prefix)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "")
	}
	switch err := s.Vault.CreateKeySecret(ctx, secrets.KeyRef{KeyID: id, Owner: tmpl.Owner}, []byte(plaintext)); {
	case errs.Is(err, errs.Exists):
		stored, err := s.Vault.KeySecret(ctx, id)
		if err != nil {
			return nil, err
		}
		plaintext = string(stored)
	case err != nil:
		return nil, err
	}
	k := *tmpl
	k.ID = id
	k.Hash = s.Hasher.Sum(plaintext)
	k.Last4 = apikey.Last4(plaintext)
	k.CreatedAt, k.UpdatedAt = now, now
	details := map[string]string{"owner": k.Owner, "plan": k.Plan}
	if k.RotatedFrom != "" {
		details["rotated_from"] = k.RotatedFrom
	}
	err = s.Store.Activate(ctx, &k, store.AuditEntry{Time: now, Actor: actor, Action: ActionCreate, KeyID: id, Details: details})
	if errs.Is(err, errs.Exists) {
		// A concurrent attempt that took over the same id won the race.
		stored, gerr := s.Store.GetKey(ctx, id)
		if gerr != nil {
			return nil, err
		}
		return s.withSecret(ctx, stored)
	}
	if err != nil {
		return nil, err
	}
	return &Created{Key: &k, Secret: plaintext}, nil
}

func (s *Service) withSecret(ctx context.Context, k *store.Key) (*Created, error) {
	secret, err := s.Vault.KeySecret(ctx, k.ID)
	if err != nil {
		return nil, err
	}
	return &Created{Key: k, Secret: string(secret)}, nil
}

// requestHash identifies a request for idempotency: the SHA-256 of its
// scope and its decoded body re-encoded, so formatting does not matter.
func requestHash(scope string, body any) (string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return "", errs.Wrap(errs.Internal, err, "")
	}
	h := sha256.New()
	h.Write([]byte(scope))
	h.Write([]byte{0})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Get returns the key with id.
func (s *Service) Get(ctx context.Context, id string) (*store.Key, error) {
	if !ids.ValidKeyID(id) {
		return nil, errs.E(errs.NotFound, "key %q not found", id)
	}
	k, err := s.Store.GetKey(ctx, id)
	if errs.Is(err, errs.NotFound) {
		return nil, errs.E(errs.NotFound, "key %q not found", id)
	}
	return k, err
}

// List returns a page of keys, newest first.
func (s *Service) List(ctx context.Context, q store.ListKeysQuery) ([]*store.Key, string, error) {
	if q.Owner != "" {
		if err := validateOwner(q.Owner); err != nil {
			return nil, "", err
		}
	}
	return s.Store.ListKeys(ctx, q)
}

// Audit returns a page of audit entries, newest first.
func (s *Service) Audit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, string, error) {
	if q.KeyID != "" && !ids.ValidKeyID(q.KeyID) {
		return nil, "", invalid("key_id %q is not a key id ("+ids.KeyIDSyntax+")", q.KeyID)
	}
	return s.Store.ListAudit(ctx, q)
}

// Nullable is a JSON field that distinguishes absent (Set false) from null
// (Set true, Value nil).
type Nullable[T any] struct {
	Set   bool
	Value *T
}

// UnmarshalJSON records that the field was present.
func (n *Nullable[T]) UnmarshalJSON(b []byte) error {
	n.Set = true
	if string(b) == "null" {
		n.Value = nil
		return nil
	}
	n.Value = new(T)
	return json.Unmarshal(b, n.Value)
}

// MarshalJSON encodes the value, or null.
func (n Nullable[T]) MarshalJSON() ([]byte, error) { return json.Marshal(n.Value) }

// UpdateRequest is the body of PATCH /v1/keys/{id}: absent fields are left
// unchanged; present ones replace the stored value. expires_at: null clears
// the expiry.
type UpdateRequest struct {
	Name         *string             `json:"name,omitempty"`
	Plan         *string             `json:"plan,omitempty"`
	Scopes       *[]string           `json:"scopes,omitempty"`
	Metadata     *map[string]string  `json:"metadata,omitempty"`
	Limits       *plan.Limits        `json:"limits,omitempty"`
	Restrictions *store.Restrictions `json:"restrictions,omitempty"`
	ExpiresAt    Nullable[time.Time] `json:"expires_at"`
}

// Update applies a PATCH.
func (s *Service) Update(ctx context.Context, actor, id string, req UpdateRequest) (*store.Key, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return nil, err
	}
	now := s.now()
	// Validate everything that does not depend on the stored key first.
	if req.Name != nil {
		if err := validateText("name", *req.Name, MaxNameLen); err != nil {
			return nil, err
		}
	}
	if req.Metadata != nil {
		if err := validateMetadata(*req.Metadata); err != nil {
			return nil, err
		}
	}
	if req.Limits != nil {
		if err := validateLimits(*req.Limits); err != nil {
			return nil, err
		}
	}
	var restrictions store.Restrictions
	if req.Restrictions != nil {
		var err error
		if restrictions, err = normalizeRestrictions(*req.Restrictions); err != nil {
			return nil, err
		}
	}
	var expires *time.Time
	if req.ExpiresAt.Set {
		var err error
		if expires, err = validateExpiry(req.ExpiresAt.Value, now); err != nil {
			return nil, err
		}
	}
	return s.update(ctx, id, func(k *store.Key) (*store.AuditEntry, error) {
		if k.Status == store.Revoked {
			return nil, errs.E(errs.FailedPrecondition, "key %s is revoked and cannot be changed", id)
		}
		var changed []string
		if req.Name != nil && *req.Name != k.Name {
			k.Name = *req.Name
			changed = append(changed, "name")
		}
		planName := k.Plan
		if req.Plan != nil {
			planName = *req.Plan
		}
		p, ok := s.Plans.Get(planName)
		if !ok {
			return nil, invalid("plan %q does not exist; plans: %v", planName, s.Plans.Names())
		}
		if planName != k.Plan {
			k.Plan = planName
			changed = append(changed, "plan")
		}
		scopes := k.Scopes
		if req.Scopes != nil {
			scopes = *req.Scopes
		}
		resolved, err := resolveScopes(p, scopes)
		if err != nil {
			if req.Scopes == nil {
				return nil, invalid("the key's scopes %v are not all in plan %q; send scopes with the new plan", k.Scopes, p.Name)
			}
			return nil, err
		}
		if !slices.Equal(resolved, k.Scopes) {
			k.Scopes = resolved
			changed = append(changed, "scopes")
		}
		if req.Metadata != nil && !maps.Equal(*req.Metadata, k.Metadata) {
			k.Metadata = maps.Clone(*req.Metadata)
			changed = append(changed, "metadata")
		}
		if req.Limits != nil && !maps.Equal(*req.Limits, k.Limits) {
			k.Limits = maps.Clone(*req.Limits)
			changed = append(changed, "limits")
		}
		if req.Restrictions != nil && !equalRestrictions(restrictions, k.Restrictions) {
			k.Restrictions = restrictions
			changed = append(changed, "restrictions")
		}
		if req.ExpiresAt.Set && !equalTimePtr(expires, k.ExpiresAt) {
			k.ExpiresAt = expires
			changed = append(changed, "expires_at")
		}
		if len(changed) == 0 {
			return nil, errNoChange
		}
		k.UpdatedAt = now
		return &store.AuditEntry{Time: now, Actor: actor, Action: ActionUpdate, KeyID: id,
			Details: map[string]string{"fields": strings.Join(changed, ",")}}, nil
	})
}

// errNoChange aborts an update that would change nothing, so that no
// audit entry is written; callers turn it into the unchanged key.
var errNoChange = errors.New("keys: no change")

func equalRestrictions(a, b store.Restrictions) bool {
	return slices.Equal(a.AllowedIPs, b.AllowedIPs) && slices.Equal(a.AllowedReferrers, b.AllowedReferrers) &&
		slices.Equal(a.AllowedFeatures, b.AllowedFeatures)
}

func equalTimePtr(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}
