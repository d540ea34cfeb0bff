package sweep_test

import (
	"path/filepath"
	"testing"

	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/ledger/firestoreledger"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/firestorenotify"
	"github.com/keyplane/keyplane/internal/notify/sqlitenotify"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

// backend is one set of the adapters the sweep runs on: the key store, the
// usage ledger and the notification store, each new and empty, closed when
// tb ends.
type backend struct {
	name string
	open func(tb testing.TB) (store.Store, ledger.Ledger, notify.Store)
}

// backends are what every sweep test (through eachBackend) and benchmark
// runs on: the embedded SQLite adapters always; the Firestore adapters on
// the emulator, which skip without FIRESTORE_EMULATOR_HOST and fail
// without it when KEYPLANE_REQUIRE_EMULATORS is set (testenv).
var backends = []backend{
	{"sqlite", func(tb testing.TB) (store.Store, ledger.Ledger, notify.Store) {
		tb.Helper()
		dir := tb.TempDir()
		st, err := sqlitestore.Open(filepath.Join(dir, "keys.db"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { st.Close() })
		l, err := sqliteledger.Open(filepath.Join(dir, "usage.db"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { l.Close() })
		ns, err := sqlitenotify.Open(filepath.Join(dir, "notify.db"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { ns.Close() })
		return st, l, ns
	}},
	{"firestore", func(tb testing.TB) (store.Store, ledger.Ledger, notify.Store) {
		tb.Helper()
		c := testenv.FirestoreClient(tb) // a project of its own: an empty database
		st, l, ns := firestorestore.NewFromClient(c), firestoreledger.NewFromClient(c, firestoreledger.Options{}), firestorenotify.NewFromClient(c)
		tb.Cleanup(func() { st.Close(); l.Close(); ns.Close() })
		return st, l, ns
	}},
}

// eachBackend runs test once on each backend, as a subtest named after it,
// with a new env. It is the only way a test gets an env, so every sweep
// test covers every backend without a list of tests to keep.
func eachBackend(t *testing.T, test func(t *testing.T, e *env)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, newEnv(t, b)) })
	}
}
