package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/keyplane/keyplane/internal/errs"
)

var testMigrations = []string{
	`CREATE TABLE items (id TEXT PRIMARY KEY) STRICT;`,
	`CREATE TABLE notes (id TEXT PRIMARY KEY) STRICT;`,
}

func open(t *testing.T, path string, migrations []string, opt *Options) *DB {
	t.Helper()
	db, err := Open(path, migrations, opt)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenMigratesAndRefusesANewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := Open(path, testMigrations[:1], nil)
	if err != nil {
		t.Fatalf("Open with one migration: %v", err)
	}
	if _, err := db.W.Exec(`INSERT INTO items (id) VALUES ('a')`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	db.Close()

	db = open(t, path, testMigrations, nil)
	var v, n int
	if err := db.R.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != 2 {
		t.Errorf("schema version after migrating: got %d (%v), want 2", v, err)
	}
	if err := db.R.QueryRow("SELECT count(*) FROM items").Scan(&n); err != nil || n != 1 {
		t.Errorf("rows kept by the migration: got %d (%v), want 1", n, err)
	}
	db.Close()

	_, err = Open(path, testMigrations[:1], &Options{Name: "test db"})
	if got, want := errs.KindOf(err), errs.Internal; got != want {
		t.Errorf("Open with fewer migrations than the schema version: got kind %v (%v), want %v", got, err, want)
	}
}

func TestOpenRejectsAPathWithAQuery(t *testing.T) {
	for _, path := range []string{"", "x.db?mode=ro"} {
		_, err := Open(path, nil, &Options{Name: "test db"})
		if e, ok := errs.As(err); !ok || e.Kind != errs.Invalid || e.Msg != "test db: the database path must be a file name without '?'" {
			t.Errorf("Open(%q): got %v, want Invalid with the name in the message", path, err)
		}
	}
}

func TestReadPoolCannotWrite(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "test.db"), testMigrations, nil)
	if db.R == db.W {
		t.Fatal("a file database: got R == W, want a separate read pool")
	}
	if _, err := db.R.Exec(`INSERT INTO items (id) VALUES ('a')`); err == nil {
		t.Error("insert through R: got nil, want an error")
	}
	mem := open(t, ":memory:", testMigrations, nil)
	if mem.R != mem.W {
		t.Error(":memory:: got R != W, want one connection for both")
	}
}

func TestWriteRollsBackWhenFnFails(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "test.db"), testMigrations, nil)
	sentinel := errors.New("fn failed")
	err := db.Write(t.Context(), func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO items (id) VALUES ('a')`); err != nil {
			return err
		}
		return sentinel
	})
	if err != sentinel {
		t.Errorf("Write: got %v, want fn's error as is", err)
	}
	var n int
	if err := db.R.QueryRow("SELECT count(*) FROM items").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows after the failed Write: got %d (%v), want 0", n, err)
	}
}

func TestTranslateGivesEachFailureItsKind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.db")
	db := open(t, path, testMigrations, nil)
	if _, err := db.W.Exec(`INSERT INTO items (id) VALUES ('a')`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	_, duplicate := db.W.Exec(`INSERT INTO items (id) VALUES ('a')`)

	// A second handle without a busy timeout fails at once while W holds
	// the write lock.
	tx, err := db.W.Begin()
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	defer tx.Rollback()
	other, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer other.Close()
	_, busy := other.Begin()

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, canceled := db.R.QueryContext(ctx, "SELECT 1")
	_, syntax := db.R.Exec("SELEKT 1")
	classified := errs.E(errs.NotFound, "key not found")

	for _, tc := range []struct {
		name string
		err  error
		busy errs.Kind
		want errs.Kind
	}{
		{"unique violation", duplicate, errs.Unavailable, errs.Exists},
		{"busy, store contract", busy, errs.Conflict, errs.Conflict},
		{"busy, ledger contract", busy, errs.Unavailable, errs.Unavailable},
		{"context canceled", canceled, errs.Conflict, errs.Unavailable},
		{"already classified", classified, errs.Unavailable, errs.NotFound},
		{"anything else", syntax, errs.Unavailable, errs.Internal},
	} {
		if tc.err == nil {
			t.Errorf("%s: the setup produced no error", tc.name)
			continue
		}
		got := Translate(tc.err, "test", tc.busy)
		if k := errs.KindOf(got); k != tc.want {
			t.Errorf("%s: Translate(%v): got kind %v, want %v", tc.name, tc.err, k, tc.want)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("%s: Translate(%v) = %v does not wrap the cause", tc.name, tc.err, got)
		}
	}
	if err := Translate(nil, "test", errs.Unavailable); err != nil {
		t.Errorf("Translate(nil): got %v, want nil", err)
	}
}
