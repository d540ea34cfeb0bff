package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyplane/keyplane/pkg/errs"
	"github.com/keyplane/keyplane/pkg/notify"
)

// Store is a notify.Store in one SQLite database file.
type Store struct {
	w *sql.DB // one connection: every write, serialised
	r *sql.DB // read-only connections
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
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, errs.E(errs.Invalid, "notify sqlite: the database path must be a file name without '?'")
	}
	const common = "_busy_timeout=5000"
	w, err := sql.Open("sqlite", path+"?"+common+"&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "notify sqlite: open")
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0) // an in-memory database lives as long as its connection
	s := &Store{w: w, r: w}
	if err := s.migrate(context.Background()); err != nil {
		w.Close()
		return nil, err
	}
	if path == ":memory:" { // every connection would be a new, empty database
		return s, nil
	}
	if s.r, err = sql.Open("sqlite", path+"?"+common+"&_query_only=1"); err != nil {
		w.Close()
		return nil, errs.Wrap(errs.Internal, err, "notify sqlite: open")
	}
	s.r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return translate(err, "notify sqlite: read schema version")
		}
		if v > len(migrations) {
			return errs.E(errs.Internal, "notify sqlite: the database has schema version %d; this program knows up to %d", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return translate(err, fmt.Sprintf("notify sqlite: migrate to schema version %d", i+1))
			}
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations)))
		return translate(err, "notify sqlite: set schema version")
	})
}

// Close closes the database.
func (s *Store) Close() error {
	if s.r == s.w {
		return s.w.Close()
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

// write runs fn in an IMMEDIATE transaction on the writer connection and
// commits it if fn returns nil. fn's error is returned as is.
func (s *Store) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return translate(err, "notify sqlite: begin transaction")
	}
	defer tx.Rollback() // after Commit, a no-op; after a panic in fn, frees the writer
	if err := fn(tx); err != nil {
		return err
	}
	return translate(tx.Commit(), "notify sqlite: commit")
}

// translate classifies a database/sql or SQLite error; msg says what failed
// and is safe to show. Errors that are already classified pass through.
func translate(err error, msg string) error {
	if err == nil {
		return nil
	}
	if _, ok := errs.As(err); ok {
		return err
	}
	var se *sqlite.Error
	switch {
	case errors.As(err, &se):
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return errs.Wrap(errs.Exists, err, msg+": already exists")
		}
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return errs.Wrap(errs.Conflict, err, msg+": the database is busy")
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, err, msg)
	}
	return errs.Wrap(errs.Internal, err, msg)
}

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
	return s.write(ctx, func(tx *sql.Tx) error {
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
	err := s.write(ctx, func(tx *sql.Tx) error {
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
