package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/internal/verify"
)

// TestDisableReachesOtherInstanceWithinBound runs two verifier instances,
// each with its own Firestore client on one emulator database, as two
// Cloud Functions instances would. A disable made through one must be
// refused by the other after one poll interval (1 s): the bound is poll
// interval + one feed query, under the 2 s target.
func TestDisableReachesOtherInstanceWithinBound(t *testing.T) {
	testenv.Firestore(t)
	project := testenv.ProjectID()
	ctx := context.Background()
	open := func() *firestorestore.Store {
		s := firestorestore.NewFromClient(testenv.FirestoreClientFor(t, project))
		return s
	}
	a := newEnv(t, open())
	storeB := open()
	t.Cleanup(func() { storeB.Close() })
	b := &env{store: &countingStore{Store: storeB}, clock: a.clock, hasher: a.hasher, plans: a.plans}

	k := a.create(t, keys.CreateRequest{})
	va, vb := a.verifier(nil), b.verifier(nil)
	check(t, va, verify.Request{Key: k.Secret}, verify.Valid)
	check(t, vb, verify.Request{Key: k.Secret}, verify.Valid)

	a.clock.Advance(30 * time.Second) // the key has long been cached on B
	check(t, vb, verify.Request{Key: k.Secret}, verify.Valid)
	if _, err := a.keys.Disable(ctx, "ops", k.Key.ID, "compromised"); err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(time.Second)
	check(t, vb, verify.Request{Key: k.Secret}, verify.Disabled)
	check(t, va, verify.Request{Key: k.Secret}, verify.Disabled)

	if _, err := a.keys.Revoke(ctx, "ops", k.Key.ID, "leaked"); err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(time.Second)
	check(t, vb, verify.Request{Key: k.Secret}, verify.Revoked)
	if n := b.store.lookups.Load(); n != 1 {
		t.Errorf("instance B read the key %d times, want once (the rest came from the feed)", n)
	}
}
