package sqlitenotify

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/sqlitedb"
)

// Store is a notify.Store in one SQLite database file.
type Store struct {
	db *sqlitedb.DB
	w  *sql.DB // db.W, one connection: every write, serialised
	r  *sql.DB // db.R, read-only connections
}

var _ notify.Store = (*Store)(nil)

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{`
CREATE TABLE owner_webhooks (
	owner              TEXT PRIMARY KEY,
	url                TEXT NOT NULL,
	events             TEXT NOT NULL,
	secret_fingerprint TEXT NOT NULL,
	updated_at         INTEGER NOT NULL
) STRICT;

CREATE TABLE notifications (
	id              TEXT PRIMARY KEY,
	owner           TEXT NOT NULL,
	type            TEXT NOT NULL,
	payload         BLOB NOT NULL,
	status          TEXT NOT NULL,
	attempts        INTEGER NOT NULL,
	enqueued        INTEGER NOT NULL,
	next_attempt_at INTEGER NOT NULL,
	lease           TEXT NOT NULL,
	lease_until     INTEGER NOT NULL,
	last_attempt_at INTEGER NOT NULL,
	last_status     INTEGER NOT NULL,
	last_error      TEXT NOT NULL,
	reason          TEXT NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	expire_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX notifications_by_expiry ON notifications (expire_at);
`}

// Open opens the database file at path, creating it and migrating its
// schema as needed. ":memory:" opens a private in-memory database.
func Open(path string) (*Store, error) {
	db, err := sqlitedb.Open(path, migrations, &sqlitedb.Options{Name: "notify sqlite", Busy: busy})
	if err != nil {
		return nil, err
	}
	return &Store{db: db, w: db.W, r: db.R}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// busy is the kind of error for a database another process keeps locked
// past busy_timeout: Conflict, as notify.Store documents for contention.
const busy = errs.Conflict

// translate classifies a database/sql or SQLite error (sqlitedb.Translate);
// msg says what failed and is safe to show.
func translate(err error, msg string) error { return sqlitedb.Translate(err, msg, busy) }

// micros stores a time as Unix microseconds, the zero time as 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// Put stores w as w.Owner's webhook, replacing any earlier one.
func (s *Store) Put(ctx context.Context, w notify.OwnerWebhook) error {
	if w.Owner == "" {
		return errs.E(errs.Invalid, "an owner webhook needs an owner")
	}
	events, err := json.Marshal(w.Events)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "notify sqlite: encode events")
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO owner_webhooks (owner, url, events, secret_fingerprint, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (owner) DO UPDATE SET url = excluded.url, events = excluded.events,
			secret_fingerprint = excluded.secret_fingerprint, updated_at = excluded.updated_at`,
		w.Owner, w.URL, string(events), w.SecretFingerprint, micros(w.UpdatedAt))
	return translate(err, "notify sqlite: store owner webhook")
}

// Get returns owner's webhook. NotFound if there is none.
func (s *Store) Get(ctx context.Context, owner string) (notify.OwnerWebhook, error) {
	var (
		w       = notify.OwnerWebhook{Owner: owner}
		events  string
		updated int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT url, events, secret_fingerprint, updated_at FROM owner_webhooks WHERE owner = ?`, owner).
		Scan(&w.URL, &events, &w.SecretFingerprint, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return notify.OwnerWebhook{}, errs.E(errs.NotFound, "owner %q has no webhook", owner)
	}
	if err != nil {
		return notify.OwnerWebhook{}, translate(err, "notify sqlite: read owner webhook")
	}
	if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
		return notify.OwnerWebhook{}, errs.Wrap(errs.Internal, err, "notify sqlite: decode owner webhook events")
	}
	w.UpdatedAt = fromMicros(updated)
	return w, nil
}

const deliveryColumns = `id, owner, type, payload, status, attempts, enqueued, next_attempt_at, lease, lease_until,
	last_attempt_at, last_status, last_error, reason, created_at, updated_at, expire_at`

func deliveryArgs(d *notify.Delivery) []any {
	payload := d.Payload
	if payload == nil {
		payload = []byte{}
	}
	return []any{d.ID, d.Owner, d.Type, payload, string(d.Status), d.Attempts, d.Enqueued, micros(d.NextAttemptAt),
		d.Lease, micros(d.LeaseUntil), micros(d.LastAttemptAt), d.LastStatus, d.LastError, d.Reason,
		micros(d.CreatedAt), micros(d.UpdatedAt), micros(d.ExpireAt)}
}

func scanDelivery(row interface{ Scan(...any) error }) (notify.Delivery, error) {
	var (
		d                                                notify.Delivery
		status                                           string
		next, leaseUntil, last, created, updated, expire int64
	)
	err := row.Scan(&d.ID, &d.Owner, &d.Type, &d.Payload, &status, &d.Attempts, &d.Enqueued, &next, &d.Lease, &leaseUntil,
		&last, &d.LastStatus, &d.LastError, &d.Reason, &created, &updated, &expire)
	if err != nil {
		return notify.Delivery{}, err
	}
	d.Status = notify.Status(status)
	d.NextAttemptAt, d.LeaseUntil, d.LastAttemptAt = fromMicros(next), fromMicros(leaseUntil), fromMicros(last)
	d.CreatedAt, d.UpdatedAt, d.ExpireAt = fromMicros(created), fromMicros(updated), fromMicros(expire)
	return d, nil
}

// purgeBatch bounds the expired records one CreateDelivery deletes.
const purgeBatch = 100

// CreateDelivery stores d; Exists if its id is taken. It first deletes up
// to purgeBatch records that expired before d.CreatedAt, which stands in
// for Firestore's TTL policy.
func (s *Store) CreateDelivery(ctx context.Context, d notify.Delivery) error {
	if d.ID == "" {
		return errs.E(errs.Invalid, "a delivery needs an id")
	}
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		if !d.CreatedAt.IsZero() {
			if _, err := tx.ExecContext(ctx, `DELETE FROM notifications WHERE id IN
				(SELECT id FROM notifications WHERE expire_at > 0 AND expire_at < ? ORDER BY expire_at LIMIT ?)`,
				micros(d.CreatedAt), purgeBatch); err != nil {
				return translate(err, "notify sqlite: delete expired deliveries")
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO notifications (`+deliveryColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, deliveryArgs(&d)...)
		if errs.Is(translate(err, ""), errs.Exists) {
			return errs.Wrap(errs.Exists, err, "delivery "+d.ID+" already exists")
		}
		return translate(err, "notify sqlite: create delivery")
	})
}

// GetDelivery returns the record with id; NotFound if there is none.
func (s *Store) GetDelivery(ctx context.Context, id string) (notify.Delivery, error) {
	d, err := scanDelivery(s.r.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM notifications WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return notify.Delivery{}, errs.E(errs.NotFound, "no delivery %q", id)
	}
	return d, translate(err, "notify sqlite: read delivery")
}

// UpdateDelivery runs mutate on the record in one IMMEDIATE transaction.
func (s *Store) UpdateDelivery(ctx context.Context, id string, mutate func(*notify.Delivery) error) (notify.Delivery, error) {
	var out notify.Delivery
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		d, err := scanDelivery(tx.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM notifications WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return errs.E(errs.NotFound, "no delivery %q", id)
		}
		if err != nil {
			return translate(err, "notify sqlite: read delivery")
		}
		if err := mutate(&d); err != nil {
			return err
		}
		d.ID = id
		args := deliveryArgs(&d)
		_, err = tx.ExecContext(ctx, `UPDATE notifications SET owner = ?, type = ?, payload = ?, status = ?, attempts = ?,
			enqueued = ?, next_attempt_at = ?, lease = ?, lease_until = ?, last_attempt_at = ?, last_status = ?,
			last_error = ?, reason = ?, created_at = ?, updated_at = ?, expire_at = ? WHERE id = ?`,
			append(args[1:], id)...)
		if err != nil {
			return translate(err, "notify sqlite: update delivery")
		}
		out = d
		return nil
	})
	if err != nil {
		return notify.Delivery{}, err
	}
	return out, nil
}
