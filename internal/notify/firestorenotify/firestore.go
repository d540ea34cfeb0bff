package firestorenotify

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/firestoredb"
	"github.com/keyplane/keyplane/internal/notify"
)

// Collection names; see the package comment for the layout.
const (
	webhooksColl      = "owner_webhooks"
	notificationsColl = "notifications"
)

// txAttempts bounds the attempts of a contended transaction before it
// returns errs.Conflict.
const txAttempts = 10

// Store is a notify.Store on Firestore.
type Store struct {
	c *firestore.Client
	// locks serialise this process's UpdateDelivery transactions on the
	// same record.
	locks firestoredb.Locks
}

var _ notify.Store = (*Store)(nil)

// NewFromClient returns a Store on c, a client of the Firestore database
// that the process's other Firestore adapters may share.
func NewFromClient(c *firestore.Client) *Store { return &Store{c: c} }

// Close does nothing: the client's owner closes it.
func (s *Store) Close() error { return nil }

// translate classifies a Firestore (gRPC) error (firestoredb.Translate);
// msg says what failed and is safe to show. Contention is Conflict.
func translate(err error, msg string) error { return firestoredb.Translate(err, msg, errs.Conflict) }

// docID maps an owner or delivery id to a document id. Ids Firestore
// accepts are used as they are; any other (empty, with '/', ".", "..",
// __.*__, not UTF-8, too long) becomes "~" and its hex, which no owner or
// notification id can collide with: neither alphabet has '~'.
func docID(id string) string {
	if firestoredb.ValidID(id) && !strings.HasPrefix(id, "~") {
		return id
	}
	return "~" + hex.EncodeToString([]byte(id))
}

type webhookDoc struct {
	Owner             string    `firestore:"owner"`
	URL               string    `firestore:"url"`
	Events            []string  `firestore:"events"`
	SecretFingerprint string    `firestore:"secret_fingerprint"`
	UpdatedAt         time.Time `firestore:"updated_at"`
}

func (s *Store) webhook(owner string) *firestore.DocumentRef {
	return s.c.Collection(webhooksColl).Doc(docID(owner))
}

func (s *Store) notification(id string) *firestore.DocumentRef {
	return s.c.Collection(notificationsColl).Doc(docID(id))
}

// Put stores w as w.Owner's webhook, replacing any earlier one.
func (s *Store) Put(ctx context.Context, w notify.OwnerWebhook) error {
	if w.Owner == "" {
		return errs.E(errs.Invalid, "an owner webhook needs an owner")
	}
	_, err := s.webhook(w.Owner).Set(ctx, &webhookDoc{
		Owner: w.Owner, URL: w.URL, Events: w.Events, SecretFingerprint: w.SecretFingerprint,
		UpdatedAt: firestoredb.Time(w.UpdatedAt),
	})
	return translate(err, "notify firestore: store owner webhook")
}

// Get returns owner's webhook. NotFound if there is none.
func (s *Store) Get(ctx context.Context, owner string) (notify.OwnerWebhook, error) {
	snap, err := s.webhook(owner).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return notify.OwnerWebhook{}, errs.E(errs.NotFound, "owner %q has no webhook", owner)
	}
	if err != nil {
		return notify.OwnerWebhook{}, translate(err, "notify firestore: read owner webhook")
	}
	var d webhookDoc
	if err := snap.DataTo(&d); err != nil {
		return notify.OwnerWebhook{}, errs.Wrap(errs.Internal, err, "notify firestore: decode owner webhook")
	}
	return notify.OwnerWebhook{
		Owner: d.Owner, URL: d.URL, Events: d.Events, SecretFingerprint: d.SecretFingerprint, UpdatedAt: d.UpdatedAt.UTC(),
	}, nil
}

type deliveryDoc struct {
	ID            string     `firestore:"id"`
	Owner         string     `firestore:"owner"`
	Type          string     `firestore:"type"`
	Payload       []byte     `firestore:"payload"`
	Status        string     `firestore:"status"`
	Attempts      int        `firestore:"attempts"`
	Enqueued      int        `firestore:"enqueued"`
	NextAttemptAt time.Time  `firestore:"next_attempt_at"`
	Lease         string     `firestore:"lease"`
	LeaseUntil    time.Time  `firestore:"lease_until"`
	LastAttemptAt time.Time  `firestore:"last_attempt_at"`
	LastStatus    int        `firestore:"last_status"`
	LastError     string     `firestore:"last_error"`
	Reason        string     `firestore:"reason"`
	CreatedAt     time.Time  `firestore:"created_at"`
	UpdatedAt     time.Time  `firestore:"updated_at"`
	ExpireAt      *time.Time `firestore:"expire_at"` // the TTL field; nil (never expires) when unset
}

func toDeliveryDoc(d *notify.Delivery) *deliveryDoc {
	doc := &deliveryDoc{
		ID: d.ID, Owner: d.Owner, Type: d.Type, Payload: d.Payload, Status: string(d.Status), Attempts: d.Attempts,
		Enqueued: d.Enqueued, NextAttemptAt: firestoredb.Time(d.NextAttemptAt), Lease: d.Lease,
		LeaseUntil: firestoredb.Time(d.LeaseUntil), LastAttemptAt: firestoredb.Time(d.LastAttemptAt),
		LastStatus: d.LastStatus, LastError: d.LastError, Reason: d.Reason,
		CreatedAt: firestoredb.Time(d.CreatedAt), UpdatedAt: firestoredb.Time(d.UpdatedAt),
	}
	if !d.ExpireAt.IsZero() {
		t := firestoredb.Time(d.ExpireAt)
		doc.ExpireAt = &t
	}
	return doc
}

func fromDeliveryDoc(snap *firestore.DocumentSnapshot) (notify.Delivery, error) {
	var doc deliveryDoc
	if err := snap.DataTo(&doc); err != nil {
		return notify.Delivery{}, errs.Wrap(errs.Internal, err, "notify firestore: decode delivery "+snap.Ref.ID)
	}
	d := notify.Delivery{
		ID: doc.ID, Owner: doc.Owner, Type: doc.Type, Payload: doc.Payload, Status: notify.Status(doc.Status),
		Attempts: doc.Attempts, Enqueued: doc.Enqueued, NextAttemptAt: utc(doc.NextAttemptAt), Lease: doc.Lease,
		LeaseUntil: utc(doc.LeaseUntil), LastAttemptAt: utc(doc.LastAttemptAt), LastStatus: doc.LastStatus,
		LastError: doc.LastError, Reason: doc.Reason, CreatedAt: utc(doc.CreatedAt), UpdatedAt: utc(doc.UpdatedAt),
	}
	if doc.ExpireAt != nil {
		d.ExpireAt = doc.ExpireAt.UTC()
	}
	return d, nil
}

// utc returns t in UTC, keeping the zero time zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// CreateDelivery stores d; Exists if its id is taken.
func (s *Store) CreateDelivery(ctx context.Context, d notify.Delivery) error {
	if d.ID == "" {
		return errs.E(errs.Invalid, "a delivery needs an id")
	}
	_, err := s.notification(d.ID).Create(ctx, toDeliveryDoc(&d))
	if status.Code(err) == codes.AlreadyExists {
		return errs.Wrap(errs.Exists, err, "delivery "+d.ID+" already exists")
	}
	return translate(err, "notify firestore: create delivery")
}

// GetDelivery returns the record with id; NotFound if there is none.
func (s *Store) GetDelivery(ctx context.Context, id string) (notify.Delivery, error) {
	snap, err := s.notification(id).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return notify.Delivery{}, errs.E(errs.NotFound, "no delivery %q", id)
	}
	if err != nil {
		return notify.Delivery{}, translate(err, "notify firestore: read delivery")
	}
	return fromDeliveryDoc(snap)
}

// mutateError carries UpdateDelivery's mutate error out of the
// transaction, so that it is returned unchanged.
type mutateError struct{ err error }

func (e *mutateError) Error() string { return e.err.Error() }

// UpdateDelivery runs mutate on the record in a transaction, which
// Firestore retries on contention (calling mutate again); still contended
// after txAttempts attempts, it returns errs.Conflict.
func (s *Store) UpdateDelivery(ctx context.Context, id string, mutate func(*notify.Delivery) error) (notify.Delivery, error) {
	mu := s.locks.For(id)
	mu.Lock()
	defer mu.Unlock()
	ref := s.notification(id)
	var out notify.Delivery
	err := s.c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if status.Code(err) == codes.NotFound {
			return &mutateError{errs.E(errs.NotFound, "no delivery %q", id)}
		}
		if err != nil {
			return err
		}
		d, err := fromDeliveryDoc(snap)
		if err != nil {
			return err
		}
		if err := mutate(&d); err != nil {
			return &mutateError{err}
		}
		d.ID = id
		out = d
		return tx.Set(ref, toDeliveryDoc(&d))
	}, firestore.MaxAttempts(txAttempts))
	if me, ok := errors.AsType[*mutateError](err); ok {
		return notify.Delivery{}, me.err
	}
	if err != nil {
		return notify.Delivery{}, translate(err, "notify firestore: update delivery")
	}
	return out, nil
}
