package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/pagetoken"
	"github.com/keyplane/keyplane/internal/sqlitedb"
	"github.com/keyplane/keyplane/internal/store"
)

// Store is a store.Store in one SQLite database file.
type Store struct {
	db *sqlitedb.DB
	w  *sql.DB // db.W, one connection: every write, serialised
	r  *sql.DB // db.R, read-only connections
}

var _ store.Store = (*Store)(nil)

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{`
CREATE TABLE keys (
	id             TEXT PRIMARY KEY,
	owner          TEXT NOT NULL,
	name           TEXT NOT NULL,
	plan           TEXT NOT NULL,
	scopes         TEXT NOT NULL,
	status         TEXT NOT NULL,
	status_reason  TEXT NOT NULL,
	disabled_until INTEGER,
	prefix         TEXT NOT NULL,
	last4          TEXT NOT NULL,
	hash           BLOB NOT NULL UNIQUE,
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	expires_at     INTEGER,
	metadata       TEXT NOT NULL,
	limits         TEXT NOT NULL,
	restrictions   TEXT NOT NULL,
	rotated_from   TEXT NOT NULL,
	rotated_to     TEXT NOT NULL,
	last_used_at   INTEGER
) STRICT;
CREATE INDEX keys_by_age ON keys (created_at DESC, id DESC);
CREATE INDEX keys_by_owner ON keys (owner, created_at DESC, id DESC);

CREATE TABLE pending_keys (
	key_id     TEXT PRIMARY KEY,
	owner      TEXT NOT NULL,
	prefix     TEXT NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX pending_by_age ON pending_keys (created_at, key_id);

CREATE TABLE audit (
	id      TEXT PRIMARY KEY,
	time    INTEGER NOT NULL,
	actor   TEXT NOT NULL,
	action  TEXT NOT NULL,
	key_id  TEXT NOT NULL,
	details TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_time ON audit (time DESC, id DESC);
CREATE INDEX audit_by_key ON audit (key_id, time DESC, id DESC);

CREATE TABLE idempotency (
	idem_key     TEXT PRIMARY KEY,
	request_hash TEXT NOT NULL,
	key_id       TEXT NOT NULL,
	state        TEXT NOT NULL,
	lease_until  INTEGER NOT NULL,
	status       INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
`, `
CREATE INDEX keys_by_update ON keys (updated_at, id);
`, `
CREATE INDEX keys_by_suspension ON keys (disabled_until, id) WHERE status = 'disabled' AND disabled_until IS NOT NULL;

CREATE TABLE checkpoints (
	name       TEXT PRIMARY KEY,
	data       BLOB NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
`, `
CREATE TABLE owners (
	id         TEXT PRIMARY KEY,
	plan       TEXT NOT NULL,
	limits     TEXT NOT NULL,
	features   TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX owners_by_update ON owners (updated_at, id);
`, `
CREATE TABLE tokens (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	permissions TEXT NOT NULL,
	owner       TEXT NOT NULL,
	hash        BLOB NOT NULL UNIQUE,
	created_by  TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER,
	revoked_at  INTEGER
) STRICT;
CREATE INDEX tokens_by_age ON tokens (created_at DESC, id DESC);
CREATE INDEX tokens_by_owner ON tokens (owner, created_at DESC, id DESC);
`, `
ALTER TABLE owners ADD COLUMN suspension TEXT;
CREATE INDEX owners_suspended ON owners (id) WHERE suspension IS NOT NULL;
`, `
ALTER TABLE owners ADD COLUMN billing TEXT;
`, `
ALTER TABLE keys ADD COLUMN quarantine TEXT;
ALTER TABLE keys ADD COLUMN quarantine_due INTEGER;
CREATE INDEX keys_by_quarantine ON keys (quarantine_due, id) WHERE quarantine_due IS NOT NULL;
`, `
CREATE TABLE portal_links (
	hash        BLOB PRIMARY KEY,
	owner       TEXT NOT NULL,
	permissions TEXT NOT NULL,
	return_url  TEXT NOT NULL,
	created_by  TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	used_at     INTEGER
) STRICT;
CREATE INDEX portal_links_by_expiry ON portal_links (expires_at);
`}

// Open opens the database file at path, creating it and migrating its
// schema as needed. ":memory:" opens a private in-memory database.
func Open(path string) (*Store, error) {
	db, err := sqlitedb.Open(path, migrations, &sqlitedb.Options{Busy: busy})
	if err != nil {
		return nil, err
	}
	return &Store{db: db, w: db.W, r: db.R}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// busy is the kind of error for a database another process keeps locked
// past busy_timeout: Conflict, as doc.go documents.
const busy = errs.Conflict

// translate classifies a database/sql or SQLite error (sqlitedb.Translate);
// msg says what failed and is safe to show.
func translate(err error, msg string) error { return sqlitedb.Translate(err, msg, busy) }

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", errs.Wrap(errs.Internal, err, "sqlite: encode JSON column")
	}
	return string(b), nil
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// keyCols are the columns of keys, in the order of keyValues and scanKey.
var keyCols = []string{"id", "owner", "name", "plan", "scopes", "status", "status_reason", "disabled_until",
	"prefix", "last4", "hash", "created_at", "updated_at", "expires_at", "metadata", "limits", "restrictions",
	"rotated_from", "rotated_to", "last_used_at", "quarantine", "quarantine_due"}

var (
	selectKey = "SELECT " + strings.Join(keyCols, ", ") + " FROM keys"
	insertKey = "INSERT INTO keys (" + strings.Join(keyCols, ", ") + ") VALUES (?" + strings.Repeat(", ?", len(keyCols)-1) + ")"
	updateKey = "UPDATE keys SET " + strings.Join(keyCols[1:], " = ?, ") + " = ? WHERE id = ?"
)

// querier and execer are *sql.DB or *sql.Tx.
type (
	querier interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}
	execer interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}
)

func keyValues(k *store.Key) ([]any, error) {
	var (
		js  [4]string
		err error
	)
	for i, v := range []any{k.Scopes, k.Metadata, k.Limits, k.Restrictions} {
		if js[i], err = jsonText(v); err != nil {
			return nil, err
		}
	}
	var quarantine any
	if k.Quarantine != nil {
		if quarantine, err = jsonText(k.Quarantine); err != nil {
			return nil, err
		}
	}
	return []any{k.ID, k.Owner, k.Name, k.Plan, js[0], string(k.Status), k.StatusReason,
		nullMicros(k.DisabledUntil), k.Prefix, k.Last4, k.Hash[:], micros(k.CreatedAt), micros(k.UpdatedAt),
		nullMicros(k.ExpiresAt), js[1], js[2], js[3], k.RotatedFrom, k.RotatedTo, nullMicros(k.LastUsedAt),
		quarantine, quarantineDue(k.Quarantine)}, nil
}

// quarantineDue is the quarantine_due column: the end of a quarantine in
// force (what DueQuarantines reads), NULL for none or an ended one.
func quarantineDue(q *store.Quarantine) any {
	if !q.InForce() {
		return nil
	}
	return micros(q.Until)
}

func scanKey(r rowScanner) (*store.Key, error) {
	var (
		k                                      store.Key
		status                                 string
		scopes, metadata, limits, restrictions string
		hash                                   []byte
		created, updated                       int64
		disabledUntil, expiresAt, lastUsedAt   sql.NullInt64
		quarantine                             sql.NullString
		quarantineDue                          sql.NullInt64
	)
	err := r.Scan(&k.ID, &k.Owner, &k.Name, &k.Plan, &scopes, &status, &k.StatusReason, &disabledUntil,
		&k.Prefix, &k.Last4, &hash, &created, &updated, &expiresAt, &metadata, &limits, &restrictions,
		&k.RotatedFrom, &k.RotatedTo, &lastUsedAt, &quarantine, &quarantineDue)
	if err != nil {
		return nil, err
	}
	if quarantine.Valid {
		k.Quarantine = new(store.Quarantine)
		if err := json.Unmarshal([]byte(quarantine.String), k.Quarantine); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "sqlite: decode key "+k.ID)
		}
	}
	if len(hash) != len(k.Hash) {
		return nil, errs.E(errs.Internal, "sqlite: key %s has a %d-byte hash", k.ID, len(hash))
	}
	copy(k.Hash[:], hash)
	for _, c := range []struct {
		text string
		v    any
	}{{scopes, &k.Scopes}, {metadata, &k.Metadata}, {limits, &k.Limits}, {restrictions, &k.Restrictions}} {
		if err := json.Unmarshal([]byte(c.text), c.v); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "sqlite: decode key "+k.ID)
		}
	}
	k.Status = store.Status(status)
	k.CreatedAt, k.UpdatedAt = fromMicros(created), fromMicros(updated)
	k.DisabledUntil, k.ExpiresAt, k.LastUsedAt = fromNullMicros(disabledUntil), fromNullMicros(expiresAt), fromNullMicros(lastUsedAt)
	return &k, nil
}

// getKey reads one key; NotFound if where matches none.
func getKey(ctx context.Context, q querier, where string, arg any) (*store.Key, error) {
	k, err := scanKey(q.QueryRowContext(ctx, selectKey+" WHERE "+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.Wrap(errs.NotFound, err, "key not found")
	}
	if err != nil {
		return nil, translate(err, "sqlite: read key")
	}
	return k, nil
}

// CreatePending stores an intent.
func (s *Store) CreatePending(ctx context.Context, p store.Pending) error {
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM keys WHERE id = ?`, p.KeyID).Scan(&n); err != nil {
			return translate(err, "sqlite: create intent")
		}
		if n > 0 {
			return errs.E(errs.Exists, "a key with id %s exists", p.KeyID)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO pending_keys (key_id, owner, prefix, created_at) VALUES (?, ?, ?, ?)`,
			p.KeyID, p.Owner, p.Prefix, micros(p.CreatedAt))
		return translate(err, "sqlite: create intent")
	})
}

func scanPending(r rowScanner) (store.Pending, error) {
	var (
		p       store.Pending
		created int64
	)
	err := r.Scan(&p.KeyID, &p.Owner, &p.Prefix, &created)
	p.CreatedAt = fromMicros(created)
	return p, err
}

// GetPending returns the intent for keyID.
func (s *Store) GetPending(ctx context.Context, keyID string) (store.Pending, error) {
	p, err := scanPending(s.r.QueryRowContext(ctx, `SELECT key_id, owner, prefix, created_at FROM pending_keys WHERE key_id = ?`, keyID))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Pending{}, errs.Wrap(errs.NotFound, err, "intent not found")
	}
	return p, translate(err, "sqlite: read intent")
}

// ListPending returns intents created before t, oldest first.
func (s *Store) ListPending(ctx context.Context, before time.Time, limit int) ([]store.Pending, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT key_id, owner, prefix, created_at FROM pending_keys
		WHERE created_at < ? ORDER BY created_at, key_id LIMIT ?`, micros(before), limit)
	if err != nil {
		return nil, translate(err, "sqlite: list intents")
	}
	defer rows.Close()
	var out []store.Pending
	for rows.Next() {
		p, err := scanPending(rows)
		if err != nil {
			return nil, translate(err, "sqlite: list intents")
		}
		out = append(out, p)
	}
	return out, translate(rows.Err(), "sqlite: list intents")
}

// DeletePending removes an intent.
func (s *Store) DeletePending(ctx context.Context, keyID string) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM pending_keys WHERE key_id = ?`, keyID)
	return translate(err, "sqlite: delete intent")
}

// Activate creates k, its hash lookup and the audit entry, and deletes k's
// intent, in one transaction.
func (s *Store) Activate(ctx context.Context, k *store.Key, audit store.AuditEntry) error {
	vals, err := keyValues(k)
	if err != nil {
		return err
	}
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insertKey, vals...); err != nil {
			return translate(err, "sqlite: create key")
		}
		if err := insertAudit(ctx, tx, audit); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM pending_keys WHERE key_id = ?`, k.ID)
		return translate(err, "sqlite: delete intent")
	})
}

// GetKey returns the key with id.
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	return getKey(ctx, s.r, "id = ?", id)
}

// LookupHash returns the key whose hash is h.
func (s *Store) LookupHash(ctx context.Context, h apikey.Hash) (*store.Key, error) {
	return getKey(ctx, s.r, "hash = ?", h[:])
}

// UpdateKey applies mutate to key id in one IMMEDIATE transaction, so
// mutate is called once.
func (s *Store) UpdateKey(ctx context.Context, id string, mutate func(*store.Key) (*store.AuditEntry, error)) (*store.Key, error) {
	var out *store.Key
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		k, err := getKey(ctx, tx, "id = ?", id)
		if err != nil {
			return err
		}
		orig := *k
		audit, err := mutate(k)
		if err != nil {
			return err
		}
		if k.ID != orig.ID || k.Owner != orig.Owner || k.Hash != orig.Hash || !k.CreatedAt.Equal(orig.CreatedAt) {
			return errs.E(errs.Internal, "store: UpdateKey's mutate changed the ID, Owner, Hash or CreatedAt of key %s", id)
		}
		vals, err := keyValues(k)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, updateKey, append(vals[1:], id)...); err != nil {
			return translate(err, "sqlite: update key")
		}
		if audit != nil {
			if err := insertAudit(ctx, tx, *audit); err != nil {
				return err
			}
		}
		out = k
		return nil
	})
	return out, err
}

func checkPageSize(n int) error {
	if n < 1 || n > 1000 {
		return errs.E(errs.Invalid, "page size must be 1-1000, got %d", n)
	}
	return nil
}

// cond is an extra condition of a page query, with its arguments.
type cond struct {
	sql  string
	args []any
}

// page runs a newest-first query over table whose order is (timeCol DESC,
// id DESC), filtered by filterCol = filter when filter is not "", starting
// after token, and scans up to size rows with scan.
// conds are further conditions on the rows.
func (s *Store) page(ctx context.Context, sel, timeCol, filterCol, filter, token string, size int, scan func(rowScanner) (time.Time, string, error), conds ...cond) (string, error) {
	if err := checkPageSize(size); err != nil {
		return "", err
	}
	var (
		where []string
		args  []any
	)
	for _, c := range conds {
		where, args = append(where, c.sql), append(args, c.args...)
	}
	if filter != "" {
		where, args = append(where, filterCol+" = ?"), append(args, filter)
	}
	if token != "" {
		t, id, err := pagetoken.Decode(token, nil)
		if err != nil {
			return "", err
		}
		where, args = append(where, "("+timeCol+", id) < (?, ?)"), append(args, micros(t), id)
	}
	q := sel
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + timeCol + " DESC, id DESC LIMIT ?"
	rows, err := s.r.QueryContext(ctx, q, append(args, size+1)...)
	if err != nil {
		return "", translate(err, "sqlite: list")
	}
	defer rows.Close()
	var (
		n      int
		lastT  time.Time
		lastID string
		next   string
	)
	for rows.Next() {
		if n == size {
			next = pagetoken.Encode(lastT, lastID)
			break
		}
		if lastT, lastID, err = scan(rows); err != nil {
			return "", translate(err, "sqlite: list")
		}
		n++
	}
	return next, translate(rows.Err(), "sqlite: list")
}

// ListKeys returns one page of keys, newest first.
func (s *Store) ListKeys(ctx context.Context, q store.ListKeysQuery) ([]*store.Key, string, error) {
	var (
		out   []*store.Key
		conds []cond
	)
	if !q.UnusedSince.IsZero() {
		conds = append(conds, cond{"(last_used_at IS NULL OR last_used_at < ?)", []any{micros(q.UnusedSince)}})
	}
	next, err := s.page(ctx, selectKey, "created_at", "owner", q.Owner, q.PageToken, q.PageSize,
		func(r rowScanner) (time.Time, string, error) {
			k, err := scanKey(r)
			if err != nil {
				return time.Time{}, "", err
			}
			out = append(out, k)
			return k.CreatedAt, k.ID, nil
		}, conds...)
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// MarkUsed raises each key's last_used_at to the time given for it, in
// one transaction.
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := store.CheckMarkUsed(uses); err != nil {
		return err
	}
	if len(uses) == 0 {
		return nil
	}
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		for id, t := range uses {
			// max(NULL, x) is NULL in SQLite, hence the coalesce.
			if _, err := tx.ExecContext(ctx, `UPDATE keys SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?`, micros(t), id); err != nil {
				return translate(err, "sqlite: mark keys used")
			}
		}
		return nil
	})
}

// auditID returns a new audit entry id that sorts by t.
func auditID(t time.Time) string {
	return t.UTC().Format("20060102T150405.000000Z") + "-" + apikey.RandomString(8)
}

func insertAudit(ctx context.Context, x execer, e store.AuditEntry) error {
	if e.ID == "" {
		e.ID = auditID(e.Time)
	}
	details, err := jsonText(e.Details)
	if err != nil {
		return err
	}
	_, err = x.ExecContext(ctx, `INSERT INTO audit (id, time, actor, action, key_id, details) VALUES (?, ?, ?, ?, ?, ?)`,
		e.ID, micros(e.Time), e.Actor, e.Action, e.KeyID, details)
	return translate(err, "sqlite: append audit entry")
}

// AppendAudit stores an audit entry.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	return insertAudit(ctx, s.w, e)
}

// ListAudit returns one page of audit entries, newest first.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, string, error) {
	var out []store.AuditEntry
	next, err := s.page(ctx, "SELECT id, time, actor, action, key_id, details FROM audit", "time", "key_id", q.KeyID, q.PageToken, q.PageSize,
		func(r rowScanner) (time.Time, string, error) {
			var (
				e       store.AuditEntry
				t       int64
				details string
			)
			if err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.KeyID, &details); err != nil {
				return time.Time{}, "", err
			}
			if err := json.Unmarshal([]byte(details), &e.Details); err != nil {
				return time.Time{}, "", errs.Wrap(errs.Internal, err, "sqlite: decode audit entry "+e.ID)
			}
			e.Time = fromMicros(t)
			out = append(out, e)
			return e.Time, e.ID, nil
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// ReserveIdempotency claims rec.Key in one IMMEDIATE transaction, which
// first deletes every expired record.
func (s *Store) ReserveIdempotency(ctx context.Context, rec store.Idempotency, now time.Time) (store.Idempotency, bool, error) {
	var (
		stored store.Idempotency
		owned  bool
	)
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency WHERE expires_at <= ?`, micros(now)); err != nil {
			return translate(err, "sqlite: delete expired idempotency records")
		}
		var (
			cur                     store.Idempotency
			state                   string
			lease, created, expires int64
		)
		err := tx.QueryRowContext(ctx, `SELECT request_hash, key_id, state, lease_until, status, created_at, expires_at
			FROM idempotency WHERE idem_key = ?`, rec.Key).
			Scan(&cur.RequestHash, &cur.KeyID, &state, &lease, &cur.Status, &created, &expires)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			rec.State = store.IdemPending
			_, err := tx.ExecContext(ctx, `INSERT INTO idempotency
				(idem_key, request_hash, key_id, state, lease_until, status, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				rec.Key, rec.RequestHash, rec.KeyID, string(rec.State), micros(rec.LeaseUntil), rec.Status,
				micros(rec.CreatedAt), micros(rec.ExpiresAt))
			stored, owned = rec, true
			return translate(err, "sqlite: reserve idempotency key")
		case err != nil:
			return translate(err, "sqlite: read idempotency record")
		}
		cur.Key, cur.State = rec.Key, store.IdemState(state)
		cur.LeaseUntil, cur.CreatedAt, cur.ExpiresAt = fromMicros(lease), fromMicros(created), fromMicros(expires)
		stored = cur
		if cur.State != store.IdemPending || cur.LeaseUntil.After(now) || cur.RequestHash != rec.RequestHash {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE idempotency SET lease_until = ? WHERE idem_key = ?`, micros(rec.LeaseUntil), rec.Key); err != nil {
			return translate(err, "sqlite: take over idempotency key")
		}
		stored.LeaseUntil, owned = rec.LeaseUntil, true
		return nil
	})
	if err != nil {
		return store.Idempotency{}, false, err
	}
	return stored, owned, nil
}

// CompleteIdempotency marks the record done. NotFound if there is none.
func (s *Store) CompleteIdempotency(ctx context.Context, key string, status int) error {
	res, err := s.w.ExecContext(ctx, `UPDATE idempotency SET state = ?, status = ? WHERE idem_key = ?`, string(store.IdemDone), status, key)
	if err != nil {
		return translate(err, "sqlite: complete idempotency record")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return translate(err, "sqlite: complete idempotency record")
	}
	if n == 0 {
		return errs.E(errs.NotFound, "idempotency record not found")
	}
	return nil
}

// ReleaseIdempotency ends a pending record's lease.
func (s *Store) ReleaseIdempotency(ctx context.Context, key string) error {
	_, err := s.w.ExecContext(ctx, `UPDATE idempotency SET lease_until = ? WHERE idem_key = ? AND state = ?`,
		micros(time.Time{}), key, string(store.IdemPending))
	return translate(err, "sqlite: release idempotency record")
}

// ChangedKeys returns keys changed after (since, afterID), oldest change
// first.
func (s *Store) ChangedKeys(ctx context.Context, since time.Time, afterID string, limit int) ([]*store.Key, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	t := micros(since)
	rows, err := s.r.QueryContext(ctx, selectKey+` WHERE updated_at > ? OR (updated_at = ? AND id > ?)
		ORDER BY updated_at, id LIMIT ?`, t, t, afterID, limit)
	if err != nil {
		return nil, translate(err, "sqlite: read changed keys")
	}
	defer rows.Close()
	var out []*store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, translate(err, "sqlite: read changed keys")
		}
		out = append(out, k)
	}
	return out, translate(rows.Err(), "sqlite: read changed keys")
}

// dueQuery is DueSuspensions' query, with the cursor's condition if
// cursor. Its WHERE matches that of the partial index keys_by_suspension
// term for term (the status a literal, not a parameter), which is what
// lets the planner use that index.
func dueQuery(cursor bool) string {
	q := selectKey + ` WHERE status = 'disabled' AND disabled_until IS NOT NULL AND disabled_until <= ?`
	if cursor {
		q += ` AND (disabled_until, id) > (?, ?)`
	}
	return q + ` ORDER BY disabled_until, id LIMIT ?`
}

// DueSuspensions returns disabled keys whose DisabledUntil is at or before
// t, after (afterUntil, afterID), from the partial index
// keys_by_suspension.
func (s *Store) DueSuspensions(ctx context.Context, t time.Time, afterUntil time.Time, afterID string, limit int) ([]*store.Key, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	args := []any{micros(t)}
	if afterID != "" {
		args = append(args, micros(afterUntil), afterID)
	}
	rows, err := s.r.QueryContext(ctx, dueQuery(afterID != ""), append(args, limit)...)
	if err != nil {
		return nil, translate(err, "sqlite: read due suspensions")
	}
	defer rows.Close()
	var out []*store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, translate(err, "sqlite: read due suspensions")
		}
		out = append(out, k)
	}
	return out, translate(rows.Err(), "sqlite: read due suspensions")
}

// DueQuarantines returns keys whose quarantine in force ends at or before
// t, after (afterUntil, afterID), from the partial index
// keys_by_quarantine.
func (s *Store) DueQuarantines(ctx context.Context, t time.Time, afterUntil time.Time, afterID string, limit int) ([]*store.Key, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	q := selectKey + ` WHERE quarantine_due IS NOT NULL AND quarantine_due <= ?`
	args := []any{micros(t)}
	if afterID != "" {
		q += ` AND (quarantine_due, id) > (?, ?)`
		args = append(args, micros(afterUntil), afterID)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY quarantine_due, id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, translate(err, "sqlite: read due quarantines")
	}
	defer rows.Close()
	var out []*store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, translate(err, "sqlite: read due quarantines")
		}
		out = append(out, k)
	}
	return out, translate(rows.Err(), "sqlite: read due quarantines")
}

// GetKeys returns the stored keys among ids, in one query.
func (s *Store) GetKeys(ctx context.Context, ids []string) (map[string]*store.Key, error) {
	if len(ids) > 1000 {
		return nil, errs.E(errs.Invalid, "at most 1000 ids, got %d", len(ids))
	}
	out := make(map[string]*store.Key, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := s.r.QueryContext(ctx, selectKey+` WHERE id IN (?`+strings.Repeat(", ?", len(ids)-1)+`)`, args...)
	if err != nil {
		return nil, translate(err, "sqlite: read keys")
	}
	defer rows.Close()
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, translate(err, "sqlite: read keys")
		}
		out[k.ID] = k
	}
	return out, translate(rows.Err(), "sqlite: read keys")
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
	c := store.Checkpoint{Name: name}
	var updated int64
	err := s.r.QueryRowContext(ctx, `SELECT data, version, updated_at FROM checkpoints WHERE name = ?`, name).
		Scan(&c.Data, &c.Version, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Checkpoint{}, errs.Wrap(errs.NotFound, err, "checkpoint not found")
	}
	if err != nil {
		return store.Checkpoint{}, translate(err, "sqlite: read checkpoint")
	}
	c.UpdatedAt = fromMicros(updated)
	return c, nil
}

// SaveCheckpoint compares the stored version with c.Version and writes c,
// in one IMMEDIATE transaction.
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
	data := c.Data
	if data == nil {
		data = []byte{} // the column is NOT NULL
	}
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT version FROM checkpoints WHERE name = ?`, c.Name).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return translate(err, "sqlite: read checkpoint")
		}
		if cur != c.Version {
			return errs.E(errs.Conflict, "checkpoint %s: stored version %d, not %d", c.Name, cur, c.Version)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO checkpoints (name, data, version, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET data = excluded.data, version = excluded.version, updated_at = excluded.updated_at`,
			c.Name, data, c.Version+1, micros(now))
		return translate(err, "sqlite: save checkpoint")
	})
	if err != nil {
		return store.Checkpoint{}, err
	}
	c.Version, c.UpdatedAt = c.Version+1, fromMicros(micros(now))
	return c, nil
}

const (
	ownerCols   = "id, plan, limits, features, suspension, billing, created_at, updated_at"
	selectOwner = "SELECT " + ownerCols + " FROM owners"
)

// ownerValues are o's column values, in the order of ownerCols.
func ownerValues(o *store.Owner) ([]any, error) {
	limits, err := jsonText(o.Limits)
	if err != nil {
		return nil, err
	}
	features, err := jsonText(o.Features)
	if err != nil {
		return nil, err
	}
	var suspension any // NULL when not suspended
	if o.Suspension != nil {
		if suspension, err = jsonText(o.Suspension); err != nil {
			return nil, err
		}
	}
	var billing any // NULL when none
	if o.Billing != nil {
		if billing, err = jsonText(o.Billing); err != nil {
			return nil, err
		}
	}
	return []any{o.ID, o.Plan, limits, features, suspension, billing, micros(o.CreatedAt), micros(o.UpdatedAt)}, nil
}

func scanOwner(r rowScanner) (*store.Owner, error) {
	var (
		o                store.Owner
		limits, features string
		suspension       sql.NullString
		billing          sql.NullString
		created, updated int64
	)
	if err := r.Scan(&o.ID, &o.Plan, &limits, &features, &suspension, &billing, &created, &updated); err != nil {
		return nil, err
	}
	if billing.Valid {
		if err := json.Unmarshal([]byte(billing.String), &o.Billing); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "sqlite: decode owner "+o.ID)
		}
	}
	if suspension.Valid {
		if err := json.Unmarshal([]byte(suspension.String), &o.Suspension); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "sqlite: decode owner "+o.ID)
		}
	}
	if err := json.Unmarshal([]byte(limits), &o.Limits); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "sqlite: decode owner "+o.ID)
	}
	if err := json.Unmarshal([]byte(features), &o.Features); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "sqlite: decode owner "+o.ID)
	}
	o.CreatedAt, o.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &o, nil
}

// getOwner reads owner id; NotFound if there is none.
func getOwner(ctx context.Context, q querier, id string) (*store.Owner, error) {
	o, err := scanOwner(q.QueryRowContext(ctx, selectOwner+" WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.Wrap(errs.NotFound, err, "owner not found")
	}
	if err != nil {
		return nil, translate(err, "sqlite: read owner")
	}
	return o, nil
}

// EnsureOwner inserts o unless its id is stored, and reads the stored
// owner, in one IMMEDIATE transaction.
func (s *Store) EnsureOwner(ctx context.Context, o *store.Owner) (*store.Owner, bool, error) {
	vals, err := ownerValues(o)
	if err != nil {
		return nil, false, err
	}
	var (
		stored  *store.Owner
		created bool
	)
	err = s.db.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO owners ("+ownerCols+") VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING", vals...)
		if err != nil {
			return translate(err, "sqlite: create owner")
		}
		n, err := res.RowsAffected()
		if err != nil {
			return translate(err, "sqlite: create owner")
		}
		created = n == 1
		stored, err = getOwner(ctx, tx, o.ID)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return stored, created, nil
}

// GetOwner returns the owner with id.
func (s *Store) GetOwner(ctx context.Context, id string) (*store.Owner, error) {
	return getOwner(ctx, s.r, id)
}

// UpdateOwner applies mutate to owner id in one IMMEDIATE transaction, so
// mutate is called once.
func (s *Store) UpdateOwner(ctx context.Context, id string, mutate func(*store.Owner) (*store.AuditEntry, error)) (*store.Owner, error) {
	var out *store.Owner
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		o, err := getOwner(ctx, tx, id)
		if err != nil {
			return err
		}
		orig := *o
		audit, err := mutate(o)
		if err != nil {
			return err
		}
		if o.ID != orig.ID || !o.CreatedAt.Equal(orig.CreatedAt) {
			return errs.E(errs.Internal, "store: UpdateOwner's mutate changed the ID or CreatedAt of owner %s", id)
		}
		vals, err := ownerValues(o)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE owners SET plan = ?, limits = ?, features = ?, suspension = ?, billing = ?, created_at = ?, updated_at = ? WHERE id = ?`,
			append(vals[1:], id)...); err != nil {
			return translate(err, "sqlite: update owner")
		}
		if audit != nil {
			if err := insertAudit(ctx, tx, *audit); err != nil {
				return err
			}
		}
		out = o
		return nil
	})
	return out, err
}

// ListOwners returns one page of owners, by id ascending. Its tokens hold
// the last id and a zero time.
func (s *Store) ListOwners(ctx context.Context, q store.ListOwnersQuery) ([]*store.Owner, string, error) {
	if err := checkPageSize(q.PageSize); err != nil {
		return nil, "", err
	}
	var after string
	if q.PageToken != "" {
		_, id, err := pagetoken.Decode(q.PageToken, nil)
		if err != nil {
			return nil, "", err
		}
		after = id
	}
	where := " WHERE id > ?"
	if q.Suspended {
		where += " AND suspension IS NOT NULL"
	}
	rows, err := s.r.QueryContext(ctx, selectOwner+where+" ORDER BY id LIMIT ?", after, q.PageSize+1)
	if err != nil {
		return nil, "", translate(err, "sqlite: list owners")
	}
	defer rows.Close()
	var (
		out  []*store.Owner
		next string
	)
	for rows.Next() {
		if len(out) == q.PageSize {
			next = pagetoken.Encode(time.Time{}, out[len(out)-1].ID)
			break
		}
		o, err := scanOwner(rows)
		if err != nil {
			return nil, "", translate(err, "sqlite: list owners")
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, "", translate(err, "sqlite: list owners")
	}
	return out, next, nil
}

// ChangedOwners returns owners changed after (since, afterID), oldest
// change first, from the index owners_by_update.
func (s *Store) ChangedOwners(ctx context.Context, since time.Time, afterID string, limit int) ([]*store.Owner, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit must be 1-1000, got %d", limit)
	}
	t := micros(since)
	rows, err := s.r.QueryContext(ctx, selectOwner+` WHERE updated_at > ? OR (updated_at = ? AND id > ?)
		ORDER BY updated_at, id LIMIT ?`, t, t, afterID, limit)
	if err != nil {
		return nil, translate(err, "sqlite: read changed owners")
	}
	defer rows.Close()
	var out []*store.Owner
	for rows.Next() {
		o, err := scanOwner(rows)
		if err != nil {
			return nil, translate(err, "sqlite: read changed owners")
		}
		out = append(out, o)
	}
	return out, translate(rows.Err(), "sqlite: read changed owners")
}
