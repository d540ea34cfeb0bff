// Package testenv tells tests which real backends are available.
//
// Emulator-backed tests call Firestore or PubSub. When the emulator's
// environment variable is unset they skip, unless KEYPLANE_REQUIRE_EMULATORS
// is set (as .ci/run and `make test` do), in which case they fail: CI must
// never pass by skipping the adapters it exists to test.
package testenv

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
)

// Required reports whether emulator-backed tests must run.
func Required() bool { return os.Getenv("KEYPLANE_REQUIRE_EMULATORS") != "" }

func need(t testing.TB, env, start string) string {
	t.Helper()
	host := os.Getenv(env)
	if host == "" {
		if Required() {
			t.Fatalf("%s is not set but KEYPLANE_REQUIRE_EMULATORS is: start the emulator (%s)", env, start)
		}
		t.Skipf("%s not set; start the emulator (%s) or run `make test`", env, start)
	}
	return host
}

// Firestore returns the Firestore emulator's host:port, skipping or
// failing t as described in the package comment.
func Firestore(t testing.TB) string {
	return need(t, "FIRESTORE_EMULATOR_HOST", "gcloud emulators firestore start")
}

// FirestoreClient returns a client of the Firestore emulator on a project
// of its own (ProjectID), so that it starts from an empty database, and
// closes it when t ends. It skips or fails t as Firestore does.
func FirestoreClient(t testing.TB) *firestore.Client {
	t.Helper()
	return FirestoreClientFor(t, ProjectID())
}

// FirestoreClientFor is FirestoreClient on the database of project, which
// other clients may share.
func FirestoreClientFor(t testing.TB, project string) *firestore.Client {
	t.Helper()
	Firestore(t)
	c, err := firestore.NewClient(t.Context(), project)
	if err != nil {
		t.Fatalf("firestore.NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// PubSub returns the Pub/Sub emulator's host:port.
func PubSub(t testing.TB) string {
	return need(t, "PUBSUB_EMULATOR_HOST", "gcloud beta emulators pubsub start")
}

var seq atomic.Int64

// ProjectID returns a project id no other test in this or an earlier run
// uses. The emulators keep each project's data apart, so a test on its own
// project starts from an empty database.
func ProjectID() string {
	return fmt.Sprintf("kp-test-%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, seq.Add(1))
}
