package keys_test

import (
	"context"
	"testing"

	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

func TestConcurrentIdempotentCreatesMakeOneKeyFirestore(t *testing.T) {
	testenv.Firestore(t)
	st := firestorestore.NewFromClient(testenv.FirestoreClient(t))
	runConcurrentIdempotency(t, newEnv(t, st))
}

func TestCrashAfterActivateThenRetryFirestore(t *testing.T) {
	testenv.Firestore(t)
	st := firestorestore.NewFromClient(testenv.FirestoreClient(t))
	e := newEnv(t, st)
	ctx := context.Background()
	e.crash.arm("Activate")
	if _, err := e.svc.Create(ctx, "admin", req, "idem-fs"); err == nil {
		t.Fatal("want the crash")
	}
	e.crash.restart()
	e.checkConsistent(t)
	e.clock.Advance(31e9)
	c, err := e.svc.Create(ctx, "admin", req, "idem-fs")
	if err != nil {
		t.Fatal(err)
	}
	if ks := e.allKeys(t); len(ks) != 1 || ks[0].ID != c.Key.ID {
		t.Fatalf("%d keys after the retry, want exactly the returned one", len(ks))
	}
	e.checkConsistent(t)
}
