package sqlitesent

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/sqlitedb"
)

// Options are the optional settings of OpenWith. The zero value means the
// defaults.
type Options struct {
	// Clock tells the time from which a record's retention runs and
	// against which it has passed. Default: the wall clock.
	Clock clock.Clock
}

// Sent is a stripeexport.Sent in one SQLite database file. It is safe for
// concurrent use.
type Sent struct {
	db    *sqlitedb.DB
	clock clock.Clock
}

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{`
CREATE TABLE stripe_sent (
	id          TEXT PRIMARY KEY,
	recorded_at INTEGER NOT NULL,
	expire_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX stripe_sent_by_expiry ON stripe_sent (expire_at);
`}

// busy is the kind of error for a database another process keeps locked:
// Unavailable, which the exporter answers with a redelivery.
const busy = errs.Unavailable

// Open opens the database file at path with the default options, creating
// it and migrating its schema as needed. ":memory:" opens a private
// in-memory database.
func Open(path string) (*Sent, error) { return OpenWith(path, Options{}) }

// OpenWith is Open with options.
func OpenWith(path string, opts Options) (*Sent, error) {
	db, err := sqlitedb.Open(path, migrations, &sqlitedb.Options{Name: "stripe sent record", Busy: busy})
	if err != nil {
		return nil, err
	}
	s := &Sent{db: db, clock: opts.Clock}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	return s, nil
}

// Close closes the database.
func (s *Sent) Close() error { return s.db.Close() }

// idsPerStatement bounds the ids of one statement, well under SQLite's
// limit of 32766 parameters.
const idsPerStatement = 500

// purgeLimit bounds how many expired rows one MarkSent deletes: more than
// it inserts, so that the table shrinks to what retention keeps.
func purgeLimit(ids int) int { return 2*ids + 100 }

func translate(err error, msg string) error { return sqlitedb.Translate(err, msg, busy) }

func checkIDs(ids []string) error {
	for i, id := range ids {
		if id == "" {
			return errs.E(errs.Invalid, "stripe sent record: id %d is empty", i)
		}
	}
	return nil
}

func placeholders(n int) string { return "?" + strings.Repeat(", ?", n-1) }

// Sent returns the ids that have a row whose retention has not passed.
func (s *Sent) Sent(ctx context.Context, ids []string) (map[string]bool, error) {
	if err := checkIDs(ids); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	now := s.clock.Now().UnixMicro()
	for chunk := range slices.Chunk(ids, idsPerStatement) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, now)
		for _, id := range chunk {
			args = append(args, id)
		}
		if err := s.read(ctx, `SELECT id FROM stripe_sent WHERE expire_at > ? AND id IN (`+placeholders(len(chunk))+`)`, args, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Sent) read(ctx context.Context, query string, args []any, out map[string]bool) error {
	rows, err := s.db.R.QueryContext(ctx, query, args...)
	if err != nil {
		return translate(err, "stripe sent record: read")
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return translate(err, "stripe sent record: read")
		}
		out[id] = true
	}
	return translate(rows.Err(), "stripe sent record: read")
}

// MarkSent deletes a bounded number of expired rows and records ids, in
// one transaction.
func (s *Sent) MarkSent(ctx context.Context, ids []string, retention time.Duration) error {
	if err := checkIDs(ids); err != nil {
		return err
	}
	if retention <= 0 {
		return errs.E(errs.Invalid, "stripe sent record: retention %v is not positive", retention)
	}
	if len(ids) == 0 {
		return nil
	}
	now := s.clock.Now()
	at, expireAt := now.UnixMicro(), now.Add(retention).UnixMicro()
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM stripe_sent WHERE id IN
			(SELECT id FROM stripe_sent WHERE expire_at <= ? ORDER BY expire_at LIMIT ?)`, at, purgeLimit(len(ids))); err != nil {
			return translate(err, "stripe sent record: delete expired records")
		}
		for chunk := range slices.Chunk(ids, idsPerStatement) {
			args := make([]any, 0, 3*len(chunk))
			for _, id := range chunk {
				args = append(args, id, at, expireAt)
			}
			values := "(?, ?, ?)" + strings.Repeat(", (?, ?, ?)", len(chunk)-1)
			if _, err := tx.ExecContext(ctx, `INSERT INTO stripe_sent (id, recorded_at, expire_at) VALUES `+values+`
				ON CONFLICT (id) DO UPDATE SET recorded_at = excluded.recorded_at, expire_at = excluded.expire_at`, args...); err != nil {
				return translate(err, "stripe sent record: record")
			}
		}
		return nil
	})
}
