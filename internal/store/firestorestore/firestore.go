package firestorestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/firestoredb"
	"github.com/keyplane/keyplane/internal/pagetoken"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// Collection names; see the package comment for the layout.
const (
	keysColl    = "keys"
	hashesColl  = "key_hashes"
	pendingColl = "pending_keys"
	idemColl    = "idempotency"
	auditColl   = "audit"
	ckptColl    = "checkpoints"
	ownersColl  = "owners"
)

// txAttempts bounds the attempts of a contended transaction before it
// returns errs.Conflict.
const txAttempts = 10

// Store is a store.Store on Firestore.
type Store struct {
	c *firestore.Client
	// unusedScan, if not 0, replaces maxUnusedScan (tests lower it).
	unusedScan int
	// keyLocks serialise this process's UpdateKey transactions on the same
	// key: 20 concurrent updates of one key took 3-30 s on the emulator
	// without them.
	keyLocks firestoredb.Locks
	// ckptLocks do the same for SaveCheckpoint, so that this process's
	// concurrent savers lose on the version check, not on contention.
	ckptLocks firestoredb.Locks
	// ownerLocks do the same for UpdateOwner.
	ownerLocks firestoredb.Locks
}

var _ store.Store = (*Store)(nil)

// NewFromClient returns a Store on c, a client of the Firestore database
// (the emulator's when FIRESTORE_EMULATOR_HOST is set) that the process's
// other Firestore adapters may share.
func NewFromClient(c *firestore.Client) *Store { return &Store{c: c} }

// Close does nothing: the client's owner closes it.
func (s *Store) Close() error { return nil }

// translate classifies a Firestore (gRPC) error (firestoredb.Translate);
// msg says what failed and is safe to show. Contention is Conflict.
func translate(err error, msg string) error { return firestoredb.Translate(err, msg, errs.Conflict) }

// mutateError carries UpdateKey's mutate error out of the transaction, so
// that it is returned unchanged.
type mutateError struct{ err error }

func (e *mutateError) Error() string { return e.err.Error() }

// checkID is Invalid if id cannot name a document (firestoredb.ValidID).
// A read of such an id finds nothing.
func checkID(what, id string) error {
	if !firestoredb.ValidID(id) {
		return errs.E(errs.Invalid, "%s %q cannot be a Firestore document id", what, id)
	}
	return nil
}

func tsPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := firestoredb.Time(*t)
	return &v
}

type keyDoc struct {
	Owner         string            `firestore:"owner"`
	Name          string            `firestore:"name"`
	Plan          string            `firestore:"plan"`
	Scopes        []string          `firestore:"scopes"`
	Status        string            `firestore:"status"`
	StatusReason  string            `firestore:"status_reason"`
	DisabledUntil *time.Time        `firestore:"disabled_until"`
	Prefix        string            `firestore:"prefix"`
	Last4         string            `firestore:"last4"`
	Hash          string            `firestore:"hash"`
	CreatedAt     time.Time         `firestore:"created_at"`
	UpdatedAt     time.Time         `firestore:"updated_at"`
	ExpiresAt     *time.Time        `firestore:"expires_at"`
	Metadata      map[string]string `firestore:"metadata"`
	Limits        plan.Limits       `firestore:"limits"`
	Restrictions  restrictionsDoc   `firestore:"restrictions"`
	RotatedFrom   string            `firestore:"rotated_from"`
	RotatedTo     string            `firestore:"rotated_to"`
	// LastUsedMicros is the time of the key's last use in Unix
	// microseconds, 0 if never used: a number, since MarkUsed raises it
	// with a maximum transform, which takes numbers only.
	LastUsedMicros int64 `firestore:"last_used_micros"`
	// Quarantine is the key's leak quarantine, nil if none; QuarantineDue
	// is its end while it is in force (what DueQuarantines reads), null
	// for none or an ended one.
	Quarantine    *quarantineDoc `firestore:"quarantine"`
	QuarantineDue *time.Time     `firestore:"quarantine_due"`
}

type quarantineDoc struct {
	Since      time.Time  `firestore:"since"`
	Until      time.Time  `firestore:"until"`
	AllowedIPs []string   `firestore:"allowed_ips"`
	Reporter   string     `firestore:"reporter"`
	URL        string     `firestore:"url"`
	Source     string     `firestore:"source"`
	EndedAt    *time.Time `firestore:"ended_at"`
}

func toQuarantineDoc(q *store.Quarantine) (*quarantineDoc, *time.Time) {
	if q == nil {
		return nil, nil
	}
	d := &quarantineDoc{Since: firestoredb.Time(q.Since), Until: firestoredb.Time(q.Until), AllowedIPs: q.AllowedIPs,
		Reporter: q.Reporter, URL: q.URL, Source: q.Source, EndedAt: tsPtr(q.EndedAt)}
	if !q.InForce() {
		return d, nil
	}
	return d, &d.Until
}

func fromQuarantineDoc(d *quarantineDoc) *store.Quarantine {
	if d == nil {
		return nil
	}
	return &store.Quarantine{Since: d.Since, Until: d.Until, AllowedIPs: d.AllowedIPs, Reporter: d.Reporter,
		URL: d.URL, Source: d.Source, EndedAt: d.EndedAt}
}

type restrictionsDoc struct {
	AllowedIPs       []string `firestore:"allowed_ips"`
	AllowedReferrers []string `firestore:"allowed_referrers"`
	AllowedFeatures  []string `firestore:"allowed_features"`
}

func toKeyDoc(k *store.Key) *keyDoc {
	q, due := toQuarantineDoc(k.Quarantine)
	return &keyDoc{
		Quarantine: q, QuarantineDue: due,
		Owner: k.Owner, Name: k.Name, Plan: k.Plan, Scopes: k.Scopes, Status: string(k.Status),
		StatusReason: k.StatusReason, DisabledUntil: tsPtr(k.DisabledUntil), Prefix: k.Prefix, Last4: k.Last4,
		Hash: k.Hash.String(), CreatedAt: firestoredb.Time(k.CreatedAt), UpdatedAt: firestoredb.Time(k.UpdatedAt),
		ExpiresAt: tsPtr(k.ExpiresAt), Metadata: k.Metadata, Limits: k.Limits,
		Restrictions: restrictionsDoc{AllowedIPs: k.Restrictions.AllowedIPs, AllowedReferrers: k.Restrictions.AllowedReferrers,
			AllowedFeatures: k.Restrictions.AllowedFeatures},
		RotatedFrom: k.RotatedFrom, RotatedTo: k.RotatedTo, LastUsedMicros: lastUsedMicros(k.LastUsedAt),
	}
}

// fromKeyDocs decodes the key documents of a query, in order.
func fromKeyDocs(snaps []*firestore.DocumentSnapshot) ([]*store.Key, error) {
	out := make([]*store.Key, 0, len(snaps))
	for _, snap := range snaps {
		k, err := fromKeyDoc(snap)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

func fromKeyDoc(snap *firestore.DocumentSnapshot) (*store.Key, error) {
	var d keyDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: decode key "+snap.Ref.ID)
	}
	h, err := apikey.ParseHash(d.Hash)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: decode key "+snap.Ref.ID)
	}
	return &store.Key{
		ID: snap.Ref.ID, Owner: d.Owner, Name: d.Name, Plan: d.Plan, Scopes: d.Scopes, Status: store.Status(d.Status),
		StatusReason: d.StatusReason, DisabledUntil: d.DisabledUntil, Prefix: d.Prefix, Last4: d.Last4, Hash: h,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt, Metadata: d.Metadata, Limits: d.Limits,
		Restrictions: store.Restrictions{AllowedIPs: d.Restrictions.AllowedIPs, AllowedReferrers: d.Restrictions.AllowedReferrers,
			AllowedFeatures: d.Restrictions.AllowedFeatures},
		RotatedFrom: d.RotatedFrom, RotatedTo: d.RotatedTo, LastUsedAt: lastUsedTime(d.LastUsedMicros),
		Quarantine: fromQuarantineDoc(d.Quarantine),
	}, nil
}

func lastUsedMicros(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixMicro()
}

func lastUsedTime(us int64) *time.Time {
	if us == 0 {
		return nil
	}
	t := time.UnixMicro(us).UTC()
	return &t
}

type hashDoc struct {
	KeyID string `firestore:"key_id"`
}

type pendingDoc struct {
	Owner     string    `firestore:"owner"`
	Prefix    string    `firestore:"prefix"`
	CreatedAt time.Time `firestore:"created_at"`
}

type auditDoc struct {
	Time    time.Time         `firestore:"time"`
	Actor   string            `firestore:"actor"`
	Action  string            `firestore:"action"`
	KeyID   string            `firestore:"key_id"`
	Details map[string]string `firestore:"details"`
}

type idemDoc struct {
	Key         string    `firestore:"key"`
	RequestHash string    `firestore:"request_hash"`
	KeyID       string    `firestore:"key_id"`
	State       string    `firestore:"state"`
	LeaseUntil  time.Time `firestore:"lease_until"`
	Status      int       `firestore:"status"`
	CreatedAt   time.Time `firestore:"created_at"`
	ExpiresAt   time.Time `firestore:"expires_at"`
}

func toIdemDoc(r store.Idempotency) *idemDoc {
	return &idemDoc{Key: r.Key, RequestHash: r.RequestHash, KeyID: r.KeyID, State: string(r.State),
		LeaseUntil: firestoredb.Time(r.LeaseUntil), Status: r.Status, CreatedAt: firestoredb.Time(r.CreatedAt),
		ExpiresAt: firestoredb.Time(r.ExpiresAt)}
}

func fromIdemDoc(snap *firestore.DocumentSnapshot) (store.Idempotency, error) {
	var d idemDoc
	if err := snap.DataTo(&d); err != nil {
		return store.Idempotency{}, errs.Wrap(errs.Internal, err, "firestore: decode idempotency record")
	}
	return store.Idempotency{Key: d.Key, RequestHash: d.RequestHash, KeyID: d.KeyID, State: store.IdemState(d.State),
		LeaseUntil: d.LeaseUntil, Status: d.Status, CreatedAt: d.CreatedAt, ExpiresAt: d.ExpiresAt}, nil
}

func (s *Store) key(id string) *firestore.DocumentRef     { return s.c.Collection(keysColl).Doc(id) }
func (s *Store) pending(id string) *firestore.DocumentRef { return s.c.Collection(pendingColl).Doc(id) }
func (s *Store) audit(id string) *firestore.DocumentRef   { return s.c.Collection(auditColl).Doc(id) }

func (s *Store) hash(h apikey.Hash) *firestore.DocumentRef {
	return s.c.Collection(hashesColl).Doc(h.String())
}

func (s *Store) idem(key string) *firestore.DocumentRef {
	sum := sha256.Sum256([]byte(key))
	return s.c.Collection(idemColl).Doc(hex.EncodeToString(sum[:]))
}

// CreatePending stores an intent, in a transaction that checks that no
// key has its id.
func (s *Store) CreatePending(ctx context.Context, p store.Pending) error {
	if err := checkID("key id", p.KeyID); err != nil {
		return err
	}
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		if _, err := tx.Get(s.key(p.KeyID)); err == nil {
			return errs.E(errs.Exists, "a key with id %s exists", p.KeyID)
		} else if status.Code(err) != codes.NotFound {
			return err
		}
		return tx.Create(s.pending(p.KeyID), &pendingDoc{Owner: p.Owner, Prefix: p.Prefix, CreatedAt: firestoredb.Time(p.CreatedAt)})
	}, firestore.MaxAttempts(txAttempts))
	return translate(err, "firestore: create intent")
}

func fromPendingDoc(snap *firestore.DocumentSnapshot) (store.Pending, error) {
	var d pendingDoc
	if err := snap.DataTo(&d); err != nil {
		return store.Pending{}, errs.Wrap(errs.Internal, err, "firestore: decode intent "+snap.Ref.ID)
	}
	return store.Pending{KeyID: snap.Ref.ID, Owner: d.Owner, Prefix: d.Prefix, CreatedAt: d.CreatedAt}, nil
}

// GetPending returns the intent for keyID.
func (s *Store) GetPending(ctx context.Context, keyID string) (store.Pending, error) {
	if !firestoredb.ValidID(keyID) {
		return store.Pending{}, errs.E(errs.NotFound, "intent not found")
	}
	snap, err := s.pending(keyID).Get(ctx)
	if err != nil {
		return store.Pending{}, translate(err, "firestore: read intent")
	}
	return fromPendingDoc(snap)
}

// ListPending returns intents created before t, oldest first.
func (s *Store) ListPending(ctx context.Context, before time.Time, limit int) ([]store.Pending, error) {
	if limit <= 0 {
		return nil, nil
	}
	snaps, err := s.c.Collection(pendingColl).Where("created_at", "<", firestoredb.Time(before)).
		OrderBy("created_at", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc).
		Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, translate(err, "firestore: list intents")
	}
	out := make([]store.Pending, 0, len(snaps))
	for _, snap := range snaps {
		p, err := fromPendingDoc(snap)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// DeletePending removes an intent.
func (s *Store) DeletePending(ctx context.Context, keyID string) error {
	if !firestoredb.ValidID(keyID) {
		return nil
	}
	_, err := s.pending(keyID).Delete(ctx)
	return translate(err, "firestore: delete intent")
}

// Activate creates k, its hash lookup and the audit entry, and deletes k's
// intent, in one transaction of writes.
func (s *Store) Activate(ctx context.Context, k *store.Key, audit store.AuditEntry) error {
	if err := checkID("key id", k.ID); err != nil {
		return err
	}
	audit, err := withAuditID(audit)
	if err != nil {
		return err
	}
	err = s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		if err := tx.Create(s.key(k.ID), toKeyDoc(k)); err != nil {
			return err
		}
		if err := tx.Create(s.hash(k.Hash), &hashDoc{KeyID: k.ID}); err != nil {
			return err
		}
		if err := tx.Create(s.audit(audit.ID), toAuditDoc(audit)); err != nil {
			return err
		}
		return tx.Delete(s.pending(k.ID))
	}, firestore.MaxAttempts(txAttempts))
	return translate(err, "firestore: activate key")
}

// GetKey returns the key with id.
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	if !firestoredb.ValidID(id) {
		return nil, errs.E(errs.NotFound, "key not found")
	}
	snap, err := s.key(id).Get(ctx)
	if err != nil {
		return nil, translate(err, "firestore: read key")
	}
	return fromKeyDoc(snap)
}

// LookupHash returns the key whose hash is h: two reads, the lookup and
// the key. Keys are never deleted, so the second read finds the key.
func (s *Store) LookupHash(ctx context.Context, h apikey.Hash) (*store.Key, error) {
	snap, err := s.hash(h).Get(ctx)
	if err != nil {
		return nil, translate(err, "firestore: look up key hash")
	}
	var d hashDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: decode key hash lookup")
	}
	return s.GetKey(ctx, d.KeyID)
}

// UpdateKey applies mutate to key id in a transaction; mutate runs once
// per attempt.
func (s *Store) UpdateKey(ctx context.Context, id string, mutate func(*store.Key) (*store.AuditEntry, error)) (*store.Key, error) {
	if !firestoredb.ValidID(id) {
		return nil, errs.E(errs.NotFound, "key not found")
	}
	mu := s.keyLocks.For(id)
	mu.Lock()
	defer mu.Unlock()
	var out *store.Key
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(s.key(id))
		if err != nil {
			return err
		}
		k, err := fromKeyDoc(snap)
		if err != nil {
			return err
		}
		orig := *k
		audit, err := mutate(k)
		if err != nil {
			return &mutateError{err}
		}
		if k.ID != orig.ID || k.Owner != orig.Owner || k.Hash != orig.Hash || !k.CreatedAt.Equal(orig.CreatedAt) {
			return errs.E(errs.Internal, "store: UpdateKey's mutate changed the ID, Owner, Hash or CreatedAt of key %s", id)
		}
		if err := tx.Set(s.key(id), toKeyDoc(k)); err != nil {
			return err
		}
		if audit != nil {
			a, err := withAuditID(*audit)
			if err != nil {
				return err
			}
			if err := tx.Create(s.audit(a.ID), toAuditDoc(a)); err != nil {
				return err
			}
		}
		out = k
		return nil
	}, firestore.MaxAttempts(txAttempts))
	if me, ok := errors.AsType[*mutateError](err); ok {
		return nil, me.err
	}
	if err != nil {
		return nil, translate(err, "firestore: update key")
	}
	return out, nil
}

// page reads up to size documents of coll, newest first by (timeField,
// id), those with filterField == filter unless filter is "", after the
// position token encodes. more reports whether there are others after them.
func (s *Store) page(ctx context.Context, coll, timeField, filterField, filter, token string, size int) (snaps []*firestore.DocumentSnapshot, more bool, err error) {
	if size < 1 || size > 1000 {
		return nil, false, errs.E(errs.Invalid, "page size must be 1-1000, got %d", size)
	}
	q := s.c.Collection(coll).Query
	if filter != "" {
		q = q.Where(filterField, "==", filter)
	}
	q = q.OrderBy(timeField, firestore.Desc).OrderBy(firestore.DocumentID, firestore.Desc)
	if token != "" {
		t, id, err := pagetoken.Decode(token, firestoredb.ValidID)
		if err != nil {
			return nil, false, err
		}
		q = q.StartAfter(firestoredb.Time(t), id)
	}
	snaps, err = q.Limit(size + 1).Documents(ctx).GetAll()
	if err != nil {
		return nil, false, translate(err, "firestore: list "+coll)
	}
	if len(snaps) > size {
		return snaps[:size], true, nil
	}
	return snaps, false, nil
}

// maxUnusedScan bounds the key documents one ListKeys call with
// UnusedSince reads.
const maxUnusedScan = 5000

// ListKeys returns one page of keys, newest first.
//
// With UnusedSince it reads the keys in the same order and keeps the
// stale ones (a Firestore query cannot select documents by a field they
// may lack, and keys written before last_used_micros existed lack it): it
// reads at most 5,000 documents per call, so a page may hold fewer than
// PageSize keys, even none, with a next token.
func (s *Store) ListKeys(ctx context.Context, q store.ListKeysQuery) ([]*store.Key, string, error) {
	if !q.UnusedSince.IsZero() {
		return s.listUnused(ctx, q)
	}
	snaps, more, err := s.page(ctx, keysColl, "created_at", "owner", q.Owner, q.PageToken, q.PageSize)
	if err != nil {
		return nil, "", err
	}
	out, err := fromKeyDocs(snaps)
	if err != nil {
		return nil, "", err
	}
	var next string
	if more {
		last := out[len(out)-1]
		next = pagetoken.Encode(last.CreatedAt, last.ID)
	}
	return out, next, nil
}

func (s *Store) listUnused(ctx context.Context, q store.ListKeysQuery) ([]*store.Key, string, error) {
	if q.PageSize < 1 || q.PageSize > 1000 {
		return nil, "", errs.E(errs.Invalid, "page size must be 1-1000, got %d", q.PageSize)
	}
	bound := maxUnusedScan
	if s.unusedScan > 0 {
		bound = s.unusedScan
	}
	since := q.UnusedSince.UnixMicro()
	var out []*store.Key
	token := q.PageToken
	for scanned := 0; scanned < bound; {
		snaps, more, err := s.page(ctx, keysColl, "created_at", "owner", q.Owner, token, min(1000, bound-scanned))
		if err != nil {
			return nil, "", err
		}
		ks, err := fromKeyDocs(snaps)
		if err != nil {
			return nil, "", err
		}
		for i, k := range ks {
			scanned++
			if k.LastUsedAt == nil || k.LastUsedAt.UnixMicro() < since {
				out = append(out, k)
			}
			if len(out) == q.PageSize {
				if !more && i == len(ks)-1 {
					return out, "", nil
				}
				return out, pagetoken.Encode(k.CreatedAt, k.ID), nil
			}
		}
		if !more {
			return out, "", nil
		}
		last := ks[len(ks)-1]
		token = pagetoken.Encode(last.CreatedAt, last.ID)
	}
	return out, token, nil
}

// auditID returns a new audit entry id that sorts by t.
func auditID(t time.Time) string {
	return t.UTC().Format("20060102T150405.000000Z") + "-" + apikey.RandomString(8)
}

// withAuditID returns e with an id: its own, checked, or a new one.
func withAuditID(e store.AuditEntry) (store.AuditEntry, error) {
	if e.ID == "" {
		e.ID = auditID(e.Time)
		return e, nil
	}
	return e, checkID("audit entry id", e.ID)
}

func toAuditDoc(e store.AuditEntry) *auditDoc {
	return &auditDoc{Time: firestoredb.Time(e.Time), Actor: e.Actor, Action: e.Action, KeyID: e.KeyID, Details: e.Details}
}

// AppendAudit stores an audit entry.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	e, err := withAuditID(e)
	if err != nil {
		return err
	}
	_, err = s.audit(e.ID).Create(ctx, toAuditDoc(e))
	return translate(err, "firestore: append audit entry")
}

// ListAudit returns one page of audit entries, newest first.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, string, error) {
	snaps, more, err := s.page(ctx, auditColl, "time", "key_id", q.KeyID, q.PageToken, q.PageSize)
	if err != nil {
		return nil, "", err
	}
	out := make([]store.AuditEntry, 0, len(snaps))
	for _, snap := range snaps {
		var d auditDoc
		if err := snap.DataTo(&d); err != nil {
			return nil, "", errs.Wrap(errs.Internal, err, "firestore: decode audit entry "+snap.Ref.ID)
		}
		out = append(out, store.AuditEntry{ID: snap.Ref.ID, Time: d.Time, Actor: d.Actor, Action: d.Action,
			KeyID: d.KeyID, Details: d.Details})
	}
	var next string
	if more {
		last := out[len(out)-1]
		next = pagetoken.Encode(last.Time, last.ID)
	}
	return out, next, nil
}

// ReserveIdempotency claims rec.Key. It first tries a plain Create, which
// exactly one of any number of concurrent first requests wins without
// transaction contention; only when a record exists does it read and
// decide in a transaction.
func (s *Store) ReserveIdempotency(ctx context.Context, rec store.Idempotency, now time.Time) (store.Idempotency, bool, error) {
	rec.State = store.IdemPending
	ref := s.idem(rec.Key)
	_, err := ref.Create(ctx, toIdemDoc(rec))
	if err == nil {
		return rec, true, nil
	}
	if status.Code(err) != codes.AlreadyExists {
		return store.Idempotency{}, false, translate(err, "firestore: reserve idempotency key")
	}
	var (
		stored store.Idempotency
		owned  bool
	)
	err = s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if status.Code(err) == codes.NotFound { // deleted since the Create
			stored, owned = rec, true
			return tx.Create(ref, toIdemDoc(rec))
		}
		if err != nil {
			return err
		}
		cur, err := fromIdemDoc(snap)
		if err != nil {
			return err
		}
		switch {
		case !now.Before(cur.ExpiresAt):
			stored, owned = rec, true
			return tx.Set(ref, toIdemDoc(rec))
		case cur.State == store.IdemPending && !cur.LeaseUntil.After(now) && cur.RequestHash == rec.RequestHash:
			cur.LeaseUntil = rec.LeaseUntil
			stored, owned = cur, true
			return tx.Update(ref, []firestore.Update{{Path: "lease_until", Value: firestoredb.Time(rec.LeaseUntil)}})
		}
		stored, owned = cur, false
		return nil
	}, firestore.MaxAttempts(txAttempts))
	if err != nil {
		return store.Idempotency{}, false, translate(err, "firestore: reserve idempotency key")
	}
	return stored, owned, nil
}

// CompleteIdempotency marks the record done. NotFound if there is none.
func (s *Store) CompleteIdempotency(ctx context.Context, key string, code int) error {
	_, err := s.idem(key).Update(ctx, []firestore.Update{
		{Path: "state", Value: string(store.IdemDone)},
		{Path: "status", Value: code},
	})
	return translate(err, "firestore: complete idempotency record")
}

// ReleaseIdempotency ends a pending record's lease.
func (s *Store) ReleaseIdempotency(ctx context.Context, key string) error {
	ref := s.idem(key)
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		if state, err := snap.DataAt("state"); err != nil || state != string(store.IdemPending) {
			return err
		}
		return tx.Update(ref, []firestore.Update{{Path: "lease_until", Value: time.Time{}}})
	}, firestore.MaxAttempts(txAttempts))
	return translate(err, "firestore: release idempotency record")
}

// ChangedKeys returns keys changed after (since, afterID), oldest change
// first. It uses the automatic single-field index on updated_at.
func (s *Store) ChangedKeys(ctx context.Context, since time.Time, afterID string, limit int) ([]*store.Key, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	q := s.c.Collection(keysColl).Where("updated_at", ">=", firestoredb.Time(since)).
		OrderBy("updated_at", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	if afterID != "" {
		q = q.StartAfter(firestoredb.Time(since), afterID)
	}
	snaps, err := q.Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, translate(err, "firestore: read changed keys")
	}
	return fromKeyDocs(snaps)
}

// DueSuspensions returns disabled keys whose DisabledUntil is at or before
// t, after (afterUntil, afterID). It needs the composite index on keys
// (status, disabled_until, __name__) that doc.go lists. A key that is not
// suspended stores disabled_until as null, which a range filter on a
// timestamp never matches.
func (s *Store) DueSuspensions(ctx context.Context, t time.Time, afterUntil time.Time, afterID string, limit int) ([]*store.Key, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	q := s.c.Collection(keysColl).Where("status", "==", string(store.Disabled)).
		Where("disabled_until", "<=", firestoredb.Time(t)).
		OrderBy("disabled_until", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	if afterID != "" {
		if !firestoredb.ValidID(afterID) {
			return nil, errs.E(errs.Invalid, "cursor key id %q cannot be a Firestore document id", afterID)
		}
		q = q.StartAfter(firestoredb.Time(afterUntil), afterID)
	}
	snaps, err := q.Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, translate(err, "firestore: read due suspensions")
	}
	return fromKeyDocs(snaps)
}

// DueQuarantines returns keys whose quarantine in force ends at or before
// t, after (afterUntil, afterID). The automatic single-field index on
// quarantine_due serves it; a key with no quarantine in force stores
// quarantine_due as null, which a range filter on a timestamp never
// matches.
func (s *Store) DueQuarantines(ctx context.Context, t time.Time, afterUntil time.Time, afterID string, limit int) ([]*store.Key, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	q := s.c.Collection(keysColl).Where("quarantine_due", "<=", firestoredb.Time(t)).
		OrderBy("quarantine_due", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	if afterID != "" {
		if !firestoredb.ValidID(afterID) {
			return nil, errs.E(errs.Invalid, "cursor key id %q cannot be a Firestore document id", afterID)
		}
		q = q.StartAfter(firestoredb.Time(afterUntil), afterID)
	}
	snaps, err := q.Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, translate(err, "firestore: read due quarantines")
	}
	return fromKeyDocs(snaps)
}

// GetKeys returns the stored keys among ids with one GetAll (one read per
// distinct valid id, found or not).
func (s *Store) GetKeys(ctx context.Context, ids []string) (map[string]*store.Key, error) {
	if len(ids) > 1000 {
		return nil, errs.E(errs.Invalid, "at most 1000 ids, got %d", len(ids))
	}
	out := make(map[string]*store.Key, len(ids))
	seen := make(map[string]bool, len(ids))
	refs := make([]*firestore.DocumentRef, 0, len(ids))
	for _, id := range ids {
		if seen[id] || !firestoredb.ValidID(id) {
			continue
		}
		seen[id] = true
		refs = append(refs, s.key(id))
	}
	if len(refs) == 0 {
		return out, nil
	}
	snaps, err := s.c.GetAll(ctx, refs)
	if err != nil {
		return nil, translate(err, "firestore: read keys")
	}
	for _, snap := range snaps {
		if !snap.Exists() {
			continue
		}
		k, err := fromKeyDoc(snap)
		if err != nil {
			return nil, err
		}
		out[k.ID] = k
	}
	return out, nil
}

// MarkUsed raises each key's last_used_micros with a maximum transform,
// in one BulkWriter: concurrent writers never move it backwards, and a key
// that does not exist is not created (the update's precondition fails
// and is ignored).
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := store.CheckMarkUsed(uses); err != nil {
		return err
	}
	if len(uses) == 0 {
		return nil
	}
	bw := s.c.BulkWriter(ctx)
	jobs := make([]*firestore.BulkWriterJob, 0, len(uses))
	for id, t := range uses {
		if !firestoredb.ValidID(id) {
			continue
		}
		j, err := bw.Update(s.key(id), []firestore.Update{{Path: "last_used_micros", Value: firestore.FieldTransformMaximum(t.UnixMicro())}})
		if err != nil {
			bw.End()
			return translate(err, "firestore: mark keys used")
		}
		jobs = append(jobs, j)
	}
	bw.End()
	for _, j := range jobs {
		if _, err := j.Results(); err != nil && status.Code(err) != codes.NotFound {
			return translate(err, "firestore: mark keys used")
		}
	}
	return nil
}

type checkpointDoc struct {
	Data      []byte    `firestore:"data"`
	Version   int64     `firestore:"version"`
	UpdatedAt time.Time `firestore:"updated_at"`
}

func (s *Store) checkpoint(name string) *firestore.DocumentRef {
	return s.c.Collection(ckptColl).Doc(name)
}

func checkCheckpointName(name string) error {
	if !store.ValidCheckpointName(name) {
		return errs.E(errs.Invalid, "checkpoint name %q: want 1-100 characters of [a-zA-Z0-9_.-], the first a letter or digit", name)
	}
	return nil
}

// GetCheckpoint returns the checkpoint called name.
func (s *Store) GetCheckpoint(ctx context.Context, name string) (store.Checkpoint, error) {
	if err := checkCheckpointName(name); err != nil {
		return store.Checkpoint{}, err
	}
	snap, err := s.checkpoint(name).Get(ctx)
	if err != nil {
		return store.Checkpoint{}, translate(err, "firestore: read checkpoint")
	}
	var d checkpointDoc
	if err := snap.DataTo(&d); err != nil {
		return store.Checkpoint{}, errs.Wrap(errs.Internal, err, "firestore: decode checkpoint "+name)
	}
	return store.Checkpoint{Name: name, Data: d.Data, Version: d.Version, UpdatedAt: d.UpdatedAt}, nil
}

// SaveCheckpoint compares the stored version with c.Version and writes c,
// in a transaction. Savers in this process queue on an in-process lock;
// a transaction still contended by other processes after its attempts,
// like a version mismatch, is Conflict.
func (s *Store) SaveCheckpoint(ctx context.Context, c store.Checkpoint, now time.Time) (store.Checkpoint, error) {
	if err := checkCheckpointName(c.Name); err != nil {
		return store.Checkpoint{}, err
	}
	if c.Version < 0 {
		return store.Checkpoint{}, errs.E(errs.Invalid, "checkpoint %s: negative version %d", c.Name, c.Version)
	}
	if len(c.Data) > store.MaxCheckpointData {
		return store.Checkpoint{}, errs.E(errs.Invalid, "checkpoint %s: %d bytes of data, at most %d", c.Name, len(c.Data), store.MaxCheckpointData)
	}
	mu := s.ckptLocks.For(c.Name)
	mu.Lock()
	defer mu.Unlock()
	ref := s.checkpoint(c.Name)
	doc := &checkpointDoc{Data: c.Data, Version: c.Version + 1, UpdatedAt: firestoredb.Time(now)}
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		var cur int64
		snap, err := tx.Get(ref)
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			return err
		default:
			v, err := snap.DataAt("version")
			if err != nil {
				return errs.Wrap(errs.Internal, err, "firestore: decode checkpoint "+c.Name)
			}
			n, ok := v.(int64)
			if !ok {
				return errs.E(errs.Internal, "firestore: checkpoint %s has version %v (%T)", c.Name, v, v)
			}
			cur = n
		}
		if cur != c.Version {
			return errs.E(errs.Conflict, "checkpoint %s: stored version %d, not %d", c.Name, cur, c.Version)
		}
		return tx.Set(ref, doc)
	}, firestore.MaxAttempts(txAttempts))
	if err != nil {
		return store.Checkpoint{}, translate(err, "firestore: save checkpoint")
	}
	c.Version, c.UpdatedAt = doc.Version, doc.UpdatedAt
	return c, nil
}

// ownerDocID maps an owner id to its document id, by the rule of
// firestorenotify's docID: an id Firestore accepts is used as it is; any
// other ("." and "..", which owner ids may be, or empty, with '/',
// __.*__, not UTF-8, too long) becomes "~" and its hex, which no owner id
// can collide with: an id starting with '~' is encoded too. Document ids
// therefore do not sort as owner ids do; the queries order by the "id"
// field.
func ownerDocID(id string) string {
	if firestoredb.ValidID(id) && !strings.HasPrefix(id, "~") {
		return id
	}
	return "~" + hex.EncodeToString([]byte(id))
}

func (s *Store) owner(id string) *firestore.DocumentRef {
	return s.c.Collection(ownersColl).Doc(ownerDocID(id))
}

type ownerDoc struct {
	ID         string                 `firestore:"id"`
	Plan       string                 `firestore:"plan"`
	Limits     plan.Limits            `firestore:"limits"`
	Features   map[string]plan.Limits `firestore:"features"`
	Suspended  bool                   `firestore:"suspended"` // Suspension is set: ListOwners(Suspended) queries it
	Suspension *suspensionDoc         `firestore:"suspension"`
	Billing    *billingDoc            `firestore:"billing"`
	CreatedAt  time.Time              `firestore:"created_at"`
	UpdatedAt  time.Time              `firestore:"updated_at"`
}

type suspensionDoc struct {
	Limit   string    `firestore:"limit"`
	Feature string    `firestore:"feature"`
	Used    int64     `firestore:"used"`
	Max     int64     `firestore:"max"`
	Until   time.Time `firestore:"until"`
	At      time.Time `firestore:"at"`
}

type billingDoc struct {
	SpendCap     *int64      `firestore:"spend_cap"`
	Credits      *creditsDoc `firestore:"credits"`
	AlertMonth   time.Time   `firestore:"alert_month"`
	AlertPercent int         `firestore:"alert_percent"`
}

type creditsDoc struct {
	Grants []creditGrantDoc `firestore:"grants"`
	Since  time.Time        `firestore:"since"`
	Offset int64            `firestore:"offset"`
}

type creditGrantDoc struct {
	ID     string    `firestore:"id"`
	Amount int64     `firestore:"amount"`
	At     time.Time `firestore:"at"`
}

func toBillingDoc(b *store.OwnerBilling) *billingDoc {
	if b == nil {
		return nil
	}
	d := &billingDoc{SpendCap: b.SpendCap, AlertMonth: firestoredb.Time(b.AlertMonth), AlertPercent: b.AlertPercent}
	if c := b.Credits; c != nil {
		d.Credits = &creditsDoc{Since: firestoredb.Time(c.Since), Offset: c.Offset, Grants: make([]creditGrantDoc, len(c.Grants))}
		for i, g := range c.Grants {
			d.Credits.Grants[i] = creditGrantDoc{ID: g.ID, Amount: g.Amount, At: firestoredb.Time(g.At)}
		}
	}
	return d
}

func fromBillingDoc(d *billingDoc) *store.OwnerBilling {
	if d == nil {
		return nil
	}
	b := &store.OwnerBilling{SpendCap: d.SpendCap, AlertMonth: d.AlertMonth, AlertPercent: d.AlertPercent}
	if c := d.Credits; c != nil {
		b.Credits = &store.Credits{Since: c.Since, Offset: c.Offset, Grants: make([]store.CreditGrant, len(c.Grants))}
		for i, g := range c.Grants {
			b.Credits.Grants[i] = store.CreditGrant{ID: g.ID, Amount: g.Amount, At: g.At}
		}
	}
	return b
}

func toOwnerDoc(o *store.Owner) *ownerDoc {
	d := &ownerDoc{ID: o.ID, Plan: o.Plan, Limits: o.Limits, Features: o.Features, Billing: toBillingDoc(o.Billing),
		CreatedAt: firestoredb.Time(o.CreatedAt), UpdatedAt: firestoredb.Time(o.UpdatedAt)}
	if sp := o.Suspension; sp != nil {
		d.Suspended = true
		d.Suspension = &suspensionDoc{Limit: sp.Limit, Feature: sp.Feature, Used: sp.Used, Max: sp.Max,
			Until: firestoredb.Time(sp.Until), At: firestoredb.Time(sp.At)}
	}
	return d
}

func fromOwnerDoc(snap *firestore.DocumentSnapshot) (*store.Owner, error) {
	var d ownerDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "firestore: decode owner document "+snap.Ref.ID)
	}
	o := &store.Owner{ID: d.ID, Plan: d.Plan, Limits: d.Limits, Features: d.Features, Billing: fromBillingDoc(d.Billing),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	if sp := d.Suspension; sp != nil {
		o.Suspension = &store.OwnerSuspension{Limit: sp.Limit, Feature: sp.Feature, Used: sp.Used, Max: sp.Max,
			Until: sp.Until, At: sp.At}
	}
	return o, nil
}

func fromOwnerDocs(snaps []*firestore.DocumentSnapshot) ([]*store.Owner, error) {
	out := make([]*store.Owner, 0, len(snaps))
	for _, snap := range snaps {
		o, err := fromOwnerDoc(snap)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// EnsureOwner creates o's document, which exactly one of concurrent
// callers does, and reads the stored owner: the one it created, or the
// one that was there.
func (s *Store) EnsureOwner(ctx context.Context, o *store.Owner) (*store.Owner, bool, error) {
	ref := s.owner(o.ID)
	_, err := ref.Create(ctx, toOwnerDoc(o))
	created := err == nil
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return nil, false, translate(err, "firestore: create owner")
	}
	snap, err := ref.Get(ctx)
	if err != nil {
		return nil, false, translate(err, "firestore: read owner")
	}
	stored, err := fromOwnerDoc(snap)
	if err != nil {
		return nil, false, err
	}
	return stored, created, nil
}

// GetOwner returns the owner with id.
func (s *Store) GetOwner(ctx context.Context, id string) (*store.Owner, error) {
	snap, err := s.owner(id).Get(ctx)
	if err != nil {
		return nil, translate(err, "firestore: read owner")
	}
	return fromOwnerDoc(snap)
}

// UpdateOwner applies mutate to owner id in a transaction, as UpdateKey
// does; mutate runs once per attempt.
func (s *Store) UpdateOwner(ctx context.Context, id string, mutate func(*store.Owner) (*store.AuditEntry, error)) (*store.Owner, error) {
	ref := s.owner(id)
	mu := s.ownerLocks.For(ref.ID)
	mu.Lock()
	defer mu.Unlock()
	var out *store.Owner
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		o, err := fromOwnerDoc(snap)
		if err != nil {
			return err
		}
		orig := *o
		audit, err := mutate(o)
		if err != nil {
			return &mutateError{err}
		}
		if o.ID != orig.ID || !o.CreatedAt.Equal(orig.CreatedAt) {
			return errs.E(errs.Internal, "store: UpdateOwner's mutate changed the ID or CreatedAt of owner %s", id)
		}
		if err := tx.Set(ref, toOwnerDoc(o)); err != nil {
			return err
		}
		if audit != nil {
			a, err := withAuditID(*audit)
			if err != nil {
				return err
			}
			if err := tx.Create(s.audit(a.ID), toAuditDoc(a)); err != nil {
				return err
			}
		}
		out = o
		return nil
	}, firestore.MaxAttempts(txAttempts))
	if me, ok := errors.AsType[*mutateError](err); ok {
		return nil, me.err
	}
	if err != nil {
		return nil, translate(err, "firestore: update owner")
	}
	return out, nil
}

// ListOwners returns one page of owners, by the "id" field ascending (its
// automatic single-field index). Its tokens hold the last id and a zero
// time.
func (s *Store) ListOwners(ctx context.Context, q store.ListOwnersQuery) ([]*store.Owner, string, error) {
	if q.PageSize < 1 || q.PageSize > 1000 {
		return nil, "", errs.E(errs.Invalid, "page size must be 1-1000, got %d", q.PageSize)
	}
	fq := s.c.Collection(ownersColl).OrderBy("id", firestore.Asc)
	if q.Suspended {
		fq = s.c.Collection(ownersColl).Where("suspended", "==", true).OrderBy("id", firestore.Asc)
	}
	if q.PageToken != "" {
		_, id, err := pagetoken.Decode(q.PageToken, nil)
		if err != nil {
			return nil, "", err
		}
		fq = fq.StartAfter(id)
	}
	snaps, err := fq.Limit(q.PageSize + 1).Documents(ctx).GetAll()
	if err != nil {
		return nil, "", translate(err, "firestore: list owners")
	}
	more := len(snaps) > q.PageSize
	if more {
		snaps = snaps[:q.PageSize]
	}
	out, err := fromOwnerDocs(snaps)
	if err != nil {
		return nil, "", err
	}
	var next string
	if more {
		next = pagetoken.Encode(time.Time{}, out[len(out)-1].ID)
	}
	return out, next, nil
}

// ChangedOwners returns owners changed after (since, afterID), oldest
// change first, by (updated_at, id): the fields, not the document id,
// which is an encoding of the id that does not sort like it. It needs the
// composite index on owners (updated_at, id) that doc.go lists.
func (s *Store) ChangedOwners(ctx context.Context, since time.Time, afterID string, limit int) ([]*store.Owner, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	q := s.c.Collection(ownersColl).Where("updated_at", ">=", firestoredb.Time(since)).
		OrderBy("updated_at", firestore.Asc).OrderBy("id", firestore.Asc)
	if afterID != "" {
		q = q.StartAfter(firestoredb.Time(since), afterID)
	}
	snaps, err := q.Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, translate(err, "firestore: read changed owners")
	}
	return fromOwnerDocs(snaps)
}
