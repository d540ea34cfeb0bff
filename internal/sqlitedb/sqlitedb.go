package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyplane/keyplane/internal/errs"
)

// Options are the optional settings of Open; nil means every default.
type Options struct {
	// Name begins every error message, e.g. "embedded queue". Default
	// "sqlite".
	Name string
	// Busy is the kind of error for a database another process keeps
	// locked past the busy timeout (see Translate). Default
	// errs.Unavailable; errs.Internal, the zero Kind, cannot be chosen.
	Busy errs.Kind
}

// DB is an open database file.
type DB struct {
	W *sql.DB // one connection, IMMEDIATE transactions: every write, serialised
	R *sql.DB // read-only connections; W itself for ":memory:"

	name string
	busy errs.Kind
}

// Open opens the database file at path, creating it as needed, and
// migrates its schema: migrations[i] moves it from version i to i+1, so
// the list is append-only. ":memory:" opens a private in-memory database.
// Errors: Invalid for an empty path or one with '?', Internal for a
// database with a newer schema version than len(migrations), and what
// Translate gives for a failed migration.
func Open(path string, migrations []string, opt *Options) (*DB, error) {
	db := &DB{name: "sqlite", busy: errs.Unavailable}
	if opt != nil && opt.Name != "" {
		db.name = opt.Name
	}
	if opt != nil && opt.Busy != errs.Internal {
		db.busy = opt.Busy
	}
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, errs.E(errs.Invalid, "%s: the database path must be a file name without '?'", db.name)
	}
	const common = "_busy_timeout=5000&_foreign_keys=1"
	w, err := sql.Open("sqlite", path+"?"+common+"&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, db.name+": open")
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0) // an in-memory database lives as long as its connection
	db.W, db.R = w, w
	if err := db.migrate(context.Background(), migrations); err != nil {
		w.Close()
		return nil, err
	}
	if path == ":memory:" {
		return db, nil
	}
	if db.R, err = sql.Open("sqlite", path+"?"+common+"&_query_only=1"); err != nil {
		w.Close()
		return nil, errs.Wrap(errs.Internal, err, db.name+": open")
	}
	db.R.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	return db, nil
}

func (db *DB) migrate(ctx context.Context, migrations []string) error {
	return db.Write(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return db.translate(err, "read schema version")
		}
		if v > len(migrations) {
			return errs.E(errs.Internal, "%s: the database has schema version %d; this program knows up to %d", db.name, v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return db.translate(err, fmt.Sprintf("migrate to schema version %d", i+1))
			}
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations)))
		return db.translate(err, "set schema version")
	})
}

// Close closes both handles.
func (db *DB) Close() error {
	if db.R == db.W {
		return db.W.Close()
	}
	return errors.Join(db.R.Close(), db.W.Close())
}

// Write runs fn in an IMMEDIATE transaction on W and commits it if fn
// returns nil. fn's error is returned as is; a failure to begin or commit
// is classified by Translate.
func (db *DB) Write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.W.BeginTx(ctx, nil)
	if err != nil {
		return db.translate(err, "begin transaction")
	}
	defer tx.Rollback() // after Commit, a no-op; after a panic in fn, frees the writer
	if err := fn(tx); err != nil {
		return err
	}
	return db.translate(tx.Commit(), "commit")
}

func (db *DB) translate(err error, what string) error {
	return Translate(err, db.name+": "+what, db.busy)
}

// Translate classifies a database/sql or SQLite error; msg says what
// failed and is safe to show. nil stays nil and an error that already has
// an errs kind keeps it. Otherwise: a unique or primary-key constraint
// violation is Exists; a database still locked after the busy timeout
// (SQLITE_BUSY, SQLITE_LOCKED) is busy, the kind the caller's contract
// gives it; a cancelled or expired context is Unavailable; anything else is
// Internal.
func Translate(err error, msg string, busy errs.Kind) error {
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
			return errs.Wrap(busy, err, msg+": the database is busy")
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, err, msg)
	}
	return errs.Wrap(errs.Internal, err, msg)
}
