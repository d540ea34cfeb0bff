package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
)

// Run runs the conformance suite against the stores open returns. Each
// subtest calls open once for a fresh, empty store and closes that store
// when it ends; open releases anything else it made (a client, a
// directory) through t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"CreatePendingThenGet", testCreatePendingThenGet},
		{"CreatePendingDuplicateIsExists", testCreatePendingDuplicateIsExists},
		{"CreatePendingForStoredKeyIsExists", testCreatePendingForStoredKeyIsExists},
		{"DeletePendingIsIdempotent", testDeletePendingIsIdempotent},
		{"ListPendingOldestFirstBeforeAndLimit", testListPendingOldestFirstBeforeAndLimit},

		{"ActivateWritesKeyLookupAuditAndDeletesIntent", testActivateWritesKeyLookupAuditAndDeletesIntent},
		{"ActivateWithoutIntent", testActivateWithoutIntent},
		{"ActivateDuplicateIDIsExistsAndWritesNothing", testActivateDuplicateIDIsExistsAndWritesNothing},
		{"ActivateDuplicateHashIsExistsAndWritesNothing", testActivateDuplicateHashIsExistsAndWritesNothing},
		{"KeyRoundTripsEveryField", testKeyRoundTripsEveryField},
		{"UnknownKeyIsNotFound", testUnknownKeyIsNotFound},

		{"UpdateKeyWritesKeyAndAuditAtomically", testUpdateKeyWritesKeyAndAuditAtomically},
		{"UpdateKeyWithoutAuditWritesOnlyKey", testUpdateKeyWithoutAuditWritesOnlyKey},
		{"UpdateKeyMutateErrorWritesNothing", testUpdateKeyMutateErrorWritesNothing},
		{"UpdateKeyRejectsImmutableFieldChange", testUpdateKeyRejectsImmutableFieldChange},
		{"UpdateKeyConcurrentLosesNoUpdate", testUpdateKeyConcurrentLosesNoUpdate},

		{"ListKeysNewestFirstTiesByIDDescending", testListKeysNewestFirstTiesByIDDescending},
		{"ListKeysFiltersByOwner", testListKeysFiltersByOwner},
		{"ListKeysPagesWithoutGapsOrDuplicates", testListKeysPagesWithoutGapsOrDuplicates},
		{"ListKeysUnusedSinceKeepsStaleKeys", testListKeysUnusedSinceKeepsStaleKeys},
		{"ListKeysEmpty", testListKeysEmpty},
		{"ListKeysBadQueryIsInvalid", testListKeysBadQueryIsInvalid},
		{"ChangedKeysFeedsEveryChangeInOrder", testChangedKeysFeedsEveryChangeInOrder},
		{"DueSuspensionsOnlyDueSuspendedKeysInOrder", testDueSuspensionsOnlyDueSuspendedKeysInOrder},
		{"DueSuspensionsPagesWithoutGapsOrRepeats", testDueSuspensionsPagesWithoutGapsOrRepeats},
		{"DueSuspensionsDropsReenabledKeys", testDueSuspensionsDropsReenabledKeys},
		{"QuarantineRoundTrips", testQuarantineRoundTrips},
		{"DueQuarantinesOnlyInForceDueInOrderAndPaged", testDueQuarantinesOnlyInForceDueInOrderAndPaged},
		{"DueQuarantinesDropsEndedQuarantines", testDueQuarantinesDropsEndedQuarantines},
		{"GetKeysReturnsPresentKeysOnce", testGetKeysReturnsPresentKeysOnce},
		{"GetKeysTooManyIDsIsInvalid", testGetKeysTooManyIDsIsInvalid},
		{"MarkUsedOnlyMovesForward", testMarkUsedOnlyMovesForward},
		{"MarkUsedConcurrentKeepsLatest", testMarkUsedConcurrentKeepsLatest},
		{"MarkUsedBadArgumentsAreInvalidAndWriteNothing", testMarkUsedBadArgumentsAreInvalidAndWriteNothing},

		{"AppendAuditAssignsTimeSortableID", testAppendAuditAssignsTimeSortableID},
		{"ListAuditNewestFirstFilteredAndPaged", testListAuditNewestFirstFilteredAndPaged},
		{"ListAuditBadQueryIsInvalid", testListAuditBadQueryIsInvalid},

		{"ReserveIdempotencyFirstCallOwns", testReserveIdempotencyFirstCallOwns},
		{"ReserveIdempotencySecondCallGetsStored", testReserveIdempotencySecondCallGetsStored},
		{"ReserveIdempotencyConcurrentOneOwner", testReserveIdempotencyConcurrentOneOwner},
		{"ReserveIdempotencyTakeoverAfterLeaseKeepsKeyID", testReserveIdempotencyTakeoverAfterLeaseKeepsKeyID},
		{"ReserveIdempotencyNoTakeoverWithDifferentHash", testReserveIdempotencyNoTakeoverWithDifferentHash},
		{"ReserveIdempotencyReplacesExpiredRecord", testReserveIdempotencyReplacesExpiredRecord},
		{"CompleteIdempotencyMarksDone", testCompleteIdempotencyMarksDone},
		{"CompleteIdempotencyUnknownIsNotFound", testCompleteIdempotencyUnknownIsNotFound},
		{"ReleaseIdempotencyAllowsImmediateTakeover", testReleaseIdempotencyAllowsImmediateTakeover},
		{"ReleaseIdempotencyIgnoresDoneAndUnknown", testReleaseIdempotencyIgnoresDoneAndUnknown},

		{"EnsureOwnerKeepsTheFirstRecord", testEnsureOwnerKeepsTheFirstRecord},
		{"OwnerRoundTripsEveryField", testOwnerRoundTripsEveryField},
		{"UnknownOwnerIsNotFound", testUnknownOwnerIsNotFound},
		{"UpdateOwnerWritesOwnerAndAuditAtomically", testUpdateOwnerWritesOwnerAndAuditAtomically},
		{"UpdateOwnerMutateErrorWritesNothing", testUpdateOwnerMutateErrorWritesNothing},
		{"UpdateOwnerRejectsImmutableFieldChange", testUpdateOwnerRejectsImmutableFieldChange},
		{"ListOwnersByIDPagesWithoutGapsOrDuplicates", testListOwnersByIDPagesWithoutGapsOrDuplicates},
		{"ListOwnersBadQueryIsInvalid", testListOwnersBadQueryIsInvalid},
		{"ListOwnersSuspendedListsOnlySuspendedOwners", testListOwnersSuspendedListsOnlySuspendedOwners},
		{"ChangedOwnersFeedsEveryChangeInOrder", testChangedOwnersFeedsEveryChangeInOrder},

		{"CreateTokenRoundTripsEveryFieldAndAudits", testCreateTokenRoundTripsEveryFieldAndAudits},
		{"CreateTokenDuplicateIsExistsAndWritesNothing", testCreateTokenDuplicateIsExistsAndWritesNothing},
		{"UnknownTokenIsNotFound", testUnknownTokenIsNotFound},
		{"ListTokensNewestFirstFilteredAndPaged", testListTokensNewestFirstFilteredAndPaged},
		{"ListTokensBadQueryIsInvalid", testListTokensBadQueryIsInvalid},
		{"RevokeTokenOnceKeepsFirstTime", testRevokeTokenOnceKeepsFirstTime},

		{"GetCheckpointMissingIsNotFound", testGetCheckpointMissingIsNotFound},
		{"SaveCheckpointComparesVersion", testSaveCheckpointComparesVersion},
		{"SaveCheckpointConcurrentOneWins", testSaveCheckpointConcurrentOneWins},
		{"CheckpointBadArgumentsAreInvalid", testCheckpointBadArgumentsAreInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// base is the suite's fixed clock reading, with microsecond precision.
var base = time.Date(2031, time.March, 4, 5, 6, 7, 891011000, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func ptr[T any](v T) *T { return &v }

func hashOf(s string) apikey.Hash { return apikey.Hash(sha256.Sum256([]byte(s))) }

// cmpOpts compares records field by field, times with time.Time.Equal, and
// nil and empty maps and slices as equal.
var cmpOpts = cmp.Options{cmpopts.EquateEmpty()}

var ignoreAuditID = cmpopts.IgnoreFields(store.AuditEntry{}, "ID")

// newKey returns a minimal valid key: no optional field set.
func newKey(id, owner string, created time.Time) *store.Key {
	return &store.Key{
		ID:        id,
		Owner:     owner,
		Name:      "key " + id,
		Plan:      "free",
		Scopes:    []string{"read"},
		Status:    store.Active,
		Prefix:    "kp_test",
		Last4:     "Ab3d",
		Hash:      hashOf(id),
		CreatedAt: created,
		UpdatedAt: created,
	}
}

func createAudit(k *store.Key) store.AuditEntry {
	return store.AuditEntry{Time: k.CreatedAt, Actor: "signup", Action: "key.create", KeyID: k.ID,
		Details: map[string]string{"plan": k.Plan}}
}

func activate(t *testing.T, s store.Store, k *store.Key) {
	t.Helper()
	if err := s.Activate(t.Context(), k, createAudit(k)); err != nil {
		t.Fatalf("Activate(%s): %v", k.ID, err)
	}
}

func createPending(t *testing.T, s store.Store, p store.Pending) {
	t.Helper()
	if err := s.CreatePending(t.Context(), p); err != nil {
		t.Fatalf("CreatePending(%s): %v", p.KeyID, err)
	}
}

func wantKind(t *testing.T, what string, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Errorf("%s: got error %v (kind %v), want kind %v", what, err, errs.KindOf(err), k)
	}
}

func wantKey(t *testing.T, s store.Store, want *store.Key) {
	t.Helper()
	got, err := s.GetKey(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetKey(%s): %v", want.ID, err)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("GetKey(%s) mismatch (-want +got):\n%s", want.ID, d)
	}
}

func auditOf(t *testing.T, s store.Store, keyID string) []store.AuditEntry {
	t.Helper()
	got, next, err := s.ListAudit(t.Context(), store.AuditQuery{KeyID: keyID, PageSize: 1000})
	if err != nil {
		t.Fatalf("ListAudit(%q): %v", keyID, err)
	}
	if next != "" {
		t.Fatalf("ListAudit(%q): got next token %q, want none", keyID, next)
	}
	return got
}

// retryConflict calls f again, a bounded number of times, while it returns
// a Conflict: the contract allows a store to report contention that way.
func retryConflict(f func() error) (err error) {
	for range 100 {
		if err = f(); !errs.Is(err, errs.Conflict) {
			return err
		}
	}
	return err
}

func testCreatePendingThenGet(t *testing.T, s store.Store) {
	want := store.Pending{KeyID: "key-1", Owner: "owner-1", Prefix: "kp_test", CreatedAt: base}
	createPending(t, s, want)
	got, err := s.GetPending(t.Context(), "key-1")
	if err != nil {
		t.Fatalf("GetPending: %v", err)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("GetPending mismatch (-want +got):\n%s", d)
	}
	_, err = s.GetPending(t.Context(), "key-2")
	wantKind(t, "GetPending(unknown)", err, errs.NotFound)
}

func testCreatePendingDuplicateIsExists(t *testing.T, s store.Store) {
	first := store.Pending{KeyID: "key-1", Owner: "owner-1", Prefix: "kp_test", CreatedAt: base}
	createPending(t, s, first)
	err := s.CreatePending(t.Context(), store.Pending{KeyID: "key-1", Owner: "owner-2", Prefix: "kp_live", CreatedAt: at(time.Second)})
	wantKind(t, "second CreatePending", err, errs.Exists)
	got, err := s.GetPending(t.Context(), "key-1")
	if err != nil {
		t.Fatalf("GetPending: %v", err)
	}
	if d := cmp.Diff(first, got, cmpOpts); d != "" {
		t.Errorf("GetPending after duplicate (-want +got):\n%s", d)
	}
}

func testCreatePendingForStoredKeyIsExists(t *testing.T, s store.Store) {
	activate(t, s, newKey("key-1", "owner-1", base))
	err := s.CreatePending(t.Context(), store.Pending{KeyID: "key-1", Owner: "owner-1", Prefix: "kp_test", CreatedAt: base})
	wantKind(t, "CreatePending for a stored key", err, errs.Exists)
	_, err = s.GetPending(t.Context(), "key-1")
	wantKind(t, "GetPending", err, errs.NotFound)
}

func testDeletePendingIsIdempotent(t *testing.T, s store.Store) {
	createPending(t, s, store.Pending{KeyID: "key-1", Owner: "owner-1", Prefix: "kp_test", CreatedAt: base})
	for i := range 2 {
		if err := s.DeletePending(t.Context(), "key-1"); err != nil {
			t.Fatalf("DeletePending #%d: got %v, want nil", i+1, err)
		}
	}
	_, err := s.GetPending(t.Context(), "key-1")
	wantKind(t, "GetPending after delete", err, errs.NotFound)
}

func testListPendingOldestFirstBeforeAndLimit(t *testing.T, s store.Store) {
	for _, m := range []int{3, 1, 4, 0, 2} {
		createPending(t, s, store.Pending{KeyID: fmt.Sprintf("key-%d", m), Owner: "owner-1", Prefix: "kp_test",
			CreatedAt: at(time.Duration(m) * time.Minute)})
	}
	tests := []struct {
		before time.Time
		limit  int
		want   []string
	}{
		{at(time.Hour), 10, []string{"key-0", "key-1", "key-2", "key-3", "key-4"}},
		{at(3 * time.Minute), 10, []string{"key-0", "key-1", "key-2"}}, // created before, not at
		{at(time.Hour), 2, []string{"key-0", "key-1"}},
		{base, 10, nil},
		{at(time.Hour), 0, nil},
	}
	for _, tc := range tests {
		got, err := s.ListPending(t.Context(), tc.before, tc.limit)
		if err != nil {
			t.Fatalf("ListPending(%v, %d): %v", tc.before, tc.limit, err)
		}
		var ids []string
		for _, p := range got {
			ids = append(ids, p.KeyID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("ListPending(base+%v, %d): got %v, want %v", tc.before.Sub(base), tc.limit, ids, tc.want)
		}
	}
}

func testActivateWritesKeyLookupAuditAndDeletesIntent(t *testing.T, s store.Store) {
	ctx := t.Context()
	createPending(t, s, store.Pending{KeyID: "key-1", Owner: "owner-1", Prefix: "kp_test", CreatedAt: base})
	k := newKey("key-1", "owner-1", base)
	audit := createAudit(k)
	if err := s.Activate(ctx, k, audit); err != nil {
		t.Fatalf("Activate: %v", err)
	}
	wantKey(t, s, k)
	got, err := s.LookupHash(ctx, k.Hash)
	if err != nil {
		t.Fatalf("LookupHash: %v", err)
	}
	if d := cmp.Diff(k, got, cmpOpts); d != "" {
		t.Errorf("LookupHash mismatch (-want +got):\n%s", d)
	}
	entries := auditOf(t, s, k.ID)
	if d := cmp.Diff([]store.AuditEntry{audit}, entries, cmpOpts, ignoreAuditID); d != "" {
		t.Errorf("audit mismatch (-want +got):\n%s", d)
	}
	if len(entries) == 1 && entries[0].ID == "" {
		t.Errorf("audit entry ID: got empty, want one assigned by the store")
	}
	_, err = s.GetPending(ctx, k.ID)
	wantKind(t, "GetPending after Activate", err, errs.NotFound)
}

func testActivateWithoutIntent(t *testing.T, s store.Store) {
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	wantKey(t, s, k)
}

func testActivateDuplicateIDIsExistsAndWritesNothing(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := newKey("key-1", "owner-1", base)
	activate(t, s, first)
	dup := newKey("key-1", "owner-2", at(time.Second))
	dup.Hash = hashOf("another secret")
	err := s.Activate(ctx, dup, createAudit(dup))
	wantKind(t, "Activate(duplicate id)", err, errs.Exists)

	wantKey(t, s, first)
	_, err = s.LookupHash(ctx, dup.Hash)
	wantKind(t, "LookupHash(duplicate's hash)", err, errs.NotFound)
	if got := auditOf(t, s, "key-1"); len(got) != 1 {
		t.Errorf("audit entries of key-1: got %d, want 1 (the duplicate must not write one)", len(got))
	}
}

func testActivateDuplicateHashIsExistsAndWritesNothing(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := newKey("key-1", "owner-1", base)
	activate(t, s, first)
	intent := store.Pending{KeyID: "key-2", Owner: "owner-1", Prefix: "kp_test", CreatedAt: base}
	createPending(t, s, intent)
	dup := newKey("key-2", "owner-1", at(time.Second))
	dup.Hash = first.Hash
	err := s.Activate(ctx, dup, createAudit(dup))
	wantKind(t, "Activate(duplicate hash)", err, errs.Exists)

	_, err = s.GetKey(ctx, "key-2")
	wantKind(t, "GetKey(key-2)", err, errs.NotFound)
	got, err := s.LookupHash(ctx, first.Hash)
	if err != nil {
		t.Fatalf("LookupHash: %v", err)
	}
	if got.ID != "key-1" {
		t.Errorf("LookupHash: got key %s, want key-1", got.ID)
	}
	if got := auditOf(t, s, "key-2"); len(got) != 0 {
		t.Errorf("audit entries of key-2: got %d, want 0", len(got))
	}
	p, err := s.GetPending(ctx, "key-2")
	if err != nil {
		t.Fatalf("GetPending(key-2): got %v, want the intent kept", err)
	}
	if d := cmp.Diff(intent, p, cmpOpts); d != "" {
		t.Errorf("intent after failed Activate (-want +got):\n%s", d)
	}
}

func testKeyRoundTripsEveryField(t *testing.T, s store.Store) {
	full := &store.Key{
		ID:            "key-full",
		Owner:         "owner-1",
		Name:          "production: ünïcode ✓",
		Plan:          "pro",
		Scopes:        []string{"read", "write", "admin:keys"},
		Status:        store.Disabled,
		StatusReason:  "quota: requests_per_day",
		DisabledUntil: ptr(at(24 * time.Hour)),
		Prefix:        "kp_live",
		Last4:         "Zz09",
		Hash:          hashOf("key-full"),
		CreatedAt:     base,
		UpdatedAt:     at(time.Minute),
		ExpiresAt:     ptr(at(365 * 24 * time.Hour)),
		Metadata:      map[string]string{"team": "ml", "a.b/c": "d e"},
		Limits:        plan.Limits{"requests_per_minute": 600, "units_per_month": 1 << 40},
		Restrictions: store.Restrictions{
			AllowedIPs:       []string{"10.0.0.0/8", "2001:db8::/32"},
			AllowedReferrers: []string{"https://example.com/*"},
			AllowedFeatures:  []string{"gpt-4.1", "embed:v2"},
		},
		RotatedFrom: "key-old",
		RotatedTo:   "key-new",
		LastUsedAt:  ptr(at(2 * time.Minute)),
	}
	minimal := newKey("key-min", "owner-2", time.Date(2031, 1, 1, 0, 0, 0, 1000, time.UTC))
	minimal.Scopes = nil
	for _, k := range []*store.Key{full, minimal} {
		activate(t, s, k)
		wantKey(t, s, k)
		got, err := s.LookupHash(t.Context(), k.Hash)
		if err != nil {
			t.Fatalf("LookupHash(%s): %v", k.ID, err)
		}
		if d := cmp.Diff(k, got, cmpOpts); d != "" {
			t.Errorf("LookupHash(%s) mismatch (-want +got):\n%s", k.ID, d)
		}
	}
}

func testUnknownKeyIsNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	activate(t, s, newKey("key-1", "owner-1", base))
	for _, id := range []string{"key-2", "", "key-1/x/y"} {
		_, err := s.GetKey(ctx, id)
		wantKind(t, fmt.Sprintf("GetKey(%q)", id), err, errs.NotFound)
		_, err = s.GetPending(ctx, id)
		wantKind(t, fmt.Sprintf("GetPending(%q)", id), err, errs.NotFound)
		_, err = s.UpdateKey(ctx, id, func(*store.Key) (*store.AuditEntry, error) {
			t.Errorf("UpdateKey(%q) called mutate for a key that does not exist", id)
			return nil, nil
		})
		wantKind(t, fmt.Sprintf("UpdateKey(%q)", id), err, errs.NotFound)
	}
	_, err := s.LookupHash(ctx, hashOf("key-2"))
	wantKind(t, "LookupHash(unknown)", err, errs.NotFound)
}

func disable(at time.Time) func(*store.Key) (*store.AuditEntry, error) {
	return func(k *store.Key) (*store.AuditEntry, error) {
		k.Status = store.Disabled
		k.StatusReason = "abuse"
		k.DisabledUntil = &at
		k.UpdatedAt = at
		return &store.AuditEntry{Time: at, Actor: "sweep", Action: "key.disable", KeyID: k.ID,
			Details: map[string]string{"reason": "abuse"}}, nil
	}
}

func testUpdateKeyWritesKeyAndAuditAtomically(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	got, err := s.UpdateKey(ctx, "key-1", disable(at(time.Hour)))
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	want := *k
	disable(at(time.Hour))(&want)
	if d := cmp.Diff(&want, got, cmpOpts); d != "" {
		t.Errorf("UpdateKey result (-want +got):\n%s", d)
	}
	wantKey(t, s, &want)
	byHash, err := s.LookupHash(ctx, k.Hash)
	if err != nil {
		t.Fatalf("LookupHash: %v", err)
	}
	if byHash.Status != store.Disabled {
		t.Errorf("LookupHash after update: got status %s, want %s", byHash.Status, store.Disabled)
	}
	entries := auditOf(t, s, "key-1")
	wantAudit, _ := disable(at(time.Hour))(&store.Key{ID: "key-1"})
	if d := cmp.Diff([]store.AuditEntry{*wantAudit, createAudit(k)}, entries, cmpOpts, ignoreAuditID); d != "" {
		t.Errorf("audit after UpdateKey (-want +got):\n%s", d)
	}
}

func testUpdateKeyWithoutAuditWritesOnlyKey(t *testing.T, s store.Store) {
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	got, err := s.UpdateKey(t.Context(), "key-1", func(k *store.Key) (*store.AuditEntry, error) {
		k.LastUsedAt = ptr(at(time.Minute))
		return nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	want := *k
	want.LastUsedAt = ptr(at(time.Minute))
	if d := cmp.Diff(&want, got, cmpOpts); d != "" {
		t.Errorf("UpdateKey result (-want +got):\n%s", d)
	}
	wantKey(t, s, &want)
	if got := auditOf(t, s, "key-1"); len(got) != 1 {
		t.Errorf("audit entries: got %d, want 1 (only the activation)", len(got))
	}
}

func testUpdateKeyMutateErrorWritesNothing(t *testing.T, s store.Store) {
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	errStop := errors.New("mutate refused")
	_, err := s.UpdateKey(t.Context(), "key-1", func(k *store.Key) (*store.AuditEntry, error) {
		audit, _ := disable(at(time.Hour))(k)
		return audit, fmt.Errorf("wrapped: %w", errStop)
	})
	if !errors.Is(err, errStop) {
		t.Errorf("UpdateKey: got error %v, want the one mutate returned", err)
	}
	wantKey(t, s, k)
	if got := auditOf(t, s, "key-1"); len(got) != 1 {
		t.Errorf("audit entries: got %d, want 1 (only the activation)", len(got))
	}
}

func testUpdateKeyRejectsImmutableFieldChange(t *testing.T, s store.Store) {
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	changes := map[string]func(*store.Key){
		"ID":        func(k *store.Key) { k.ID = "key-2" },
		"Owner":     func(k *store.Key) { k.Owner = "owner-2" },
		"Hash":      func(k *store.Key) { k.Hash = hashOf("other") },
		"CreatedAt": func(k *store.Key) { k.CreatedAt = at(time.Hour) },
	}
	for _, field := range slices.Sorted(maps.Keys(changes)) {
		_, err := s.UpdateKey(t.Context(), "key-1", func(k *store.Key) (*store.AuditEntry, error) {
			changes[field](k)
			k.Name = "changed"
			return nil, nil
		})
		wantKind(t, "UpdateKey changing "+field, err, errs.Internal)
	}
	wantKey(t, s, k)
}

func testUpdateKeyConcurrentLosesNoUpdate(t *testing.T, s store.Store) {
	const n = 20
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errc <- retryConflict(func() error {
				_, err := s.UpdateKey(t.Context(), "key-1", func(k *store.Key) (*store.AuditEntry, error) {
					m := maps.Clone(k.Metadata)
					if m == nil {
						m = map[string]string{}
					}
					m[fmt.Sprintf("w%02d", i)] = "x"
					k.Metadata = m
					return &store.AuditEntry{Time: at(time.Duration(i+1) * time.Second), Actor: fmt.Sprintf("w%02d", i),
						Action: "key.tag", KeyID: k.ID}, nil
				})
				return err
			})
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Errorf("UpdateKey: %v", err)
		}
	}
	got, err := s.GetKey(t.Context(), "key-1")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if len(got.Metadata) != n {
		t.Errorf("metadata after %d concurrent updates: got %d entries %v, want %d", n, len(got.Metadata), slices.Sorted(maps.Keys(got.Metadata)), n)
	}
	if got := auditOf(t, s, "key-1"); len(got) != n+1 {
		t.Errorf("audit entries: got %d, want %d (one per update plus the activation)", len(got), n+1)
	}
}

// listKeys seeds seven keys of two owners, with ties in CreatedAt, in an
// order unrelated to their age, and returns them newest first.
func listKeys(t *testing.T, s store.Store) []*store.Key {
	t.Helper()
	keys := []*store.Key{
		newKey("key-5", "owner-1", at(-time.Hour)),
		newKey("key-2", "owner-2", at(time.Second)),
		newKey("key-7", "owner-1", at(3*time.Second)),
		newKey("key-1", "owner-1", base),
		newKey("key-6", "owner-2", at(2*time.Second)),
		newKey("key-3", "owner-1", at(time.Second)),
		newKey("key-4", "owner-1", at(2*time.Second)),
	}
	for _, k := range keys {
		activate(t, s, k)
	}
	slices.SortFunc(keys, func(a, b *store.Key) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return keys
}

func keyIDs(keys []*store.Key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

func ownedBy(keys []*store.Key, owner string) []*store.Key {
	return slices.DeleteFunc(slices.Clone(keys), func(k *store.Key) bool { return k.Owner != owner })
}

func testListKeysNewestFirstTiesByIDDescending(t *testing.T, s store.Store) {
	want := listKeys(t, s)
	got, next, err := s.ListKeys(t.Context(), store.ListKeysQuery{PageSize: 100})
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if next != "" {
		t.Errorf("ListKeys: got next token %q on the only page, want none", next)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("ListKeys (-want +got):\n%s", d)
	}
}

func testListKeysFiltersByOwner(t *testing.T, s store.Store) {
	all := listKeys(t, s)
	for _, owner := range []string{"owner-1", "owner-2", "owner-3"} {
		got, _, err := s.ListKeys(t.Context(), store.ListKeysQuery{Owner: owner, PageSize: 100})
		if err != nil {
			t.Fatalf("ListKeys(%s): %v", owner, err)
		}
		if g, w := keyIDs(got), keyIDs(ownedBy(all, owner)); !slices.Equal(g, w) {
			t.Errorf("ListKeys(%s): got %v, want %v", owner, g, w)
		}
	}
}

// pages follows next tokens from the first page and returns every item seen.
func pages[T any](t *testing.T, size, n int, list func(token string) ([]T, string, error)) []T {
	t.Helper()
	var all []T
	token := ""
	for range n + 1 {
		page, next, err := list(token)
		if err != nil {
			t.Fatalf("page size %d, token %q: %v", size, token, err)
		}
		if len(page) > size {
			t.Fatalf("page size %d: got a page of %d", size, len(page))
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		token = next
	}
	t.Fatalf("page size %d: still a next token after %d pages of %d items", size, n+1, n)
	return nil
}

func testListKeysPagesWithoutGapsOrDuplicates(t *testing.T, s store.Store) {
	all := listKeys(t, s)
	for _, owner := range []string{"", "owner-1"} {
		want := all
		if owner != "" {
			want = ownedBy(all, owner)
		}
		for _, size := range []int{1, 2, 3} {
			got := pages(t, size, len(want), func(token string) ([]*store.Key, string, error) {
				return s.ListKeys(t.Context(), store.ListKeysQuery{Owner: owner, PageSize: size, PageToken: token})
			})
			if g, w := keyIDs(got), keyIDs(want); !slices.Equal(g, w) {
				t.Errorf("owner %q, pages of %d: got %v, want %v", owner, size, g, w)
			}
		}
	}
}

func testListKeysUnusedSinceKeepsStaleKeys(t *testing.T, s store.Store) {
	all := listKeys(t, s)
	since := at(30 * time.Minute)
	markUsed(t, s, map[string]time.Time{
		"key-5": at(time.Hour),                // used after since: not stale
		"key-3": since,                        // used at since: not stale
		"key-7": at(time.Minute),              // last used before since: stale
		"key-2": since.Add(-time.Microsecond), // just before: stale
	})
	var stale []*store.Key
	for _, k := range all {
		if k.ID != "key-5" && k.ID != "key-3" {
			stale = append(stale, k)
		}
	}
	for _, owner := range []string{"", "owner-1"} {
		want := stale
		if owner != "" {
			want = ownedBy(stale, owner)
		}
		for _, size := range []int{1, 2, 10} {
			got := pages(t, size, len(want), func(token string) ([]*store.Key, string, error) {
				return s.ListKeys(t.Context(), store.ListKeysQuery{Owner: owner, PageSize: size, UnusedSince: since, PageToken: token})
			})
			if g, w := keyIDs(got), keyIDs(want); !slices.Equal(g, w) {
				t.Errorf("owner %q, unused since %v, pages of %d: got %v, want %v", owner, since, size, g, w)
			}
			for _, k := range got {
				if k.ID == "key-7" && (k.LastUsedAt == nil || !k.LastUsedAt.Equal(at(time.Minute))) {
					t.Errorf("key-7's LastUsedAt: got %v, want %v", k.LastUsedAt, at(time.Minute))
				}
			}
		}
	}
}

func testListKeysEmpty(t *testing.T, s store.Store) {
	got, next, err := s.ListKeys(t.Context(), store.ListKeysQuery{PageSize: 10})
	if err != nil || len(got) != 0 || next != "" {
		t.Errorf("ListKeys on an empty store: got %d keys, next %q, error %v; want none, \"\", nil", len(got), next, err)
	}
}

var badTokens = []string{"%%%", "Zm9vYmFy", "eyJ0IjoxfQ"} // not base64; base64 of "foobar"; of {"t":1}

func testListKeysBadQueryIsInvalid(t *testing.T, s store.Store) {
	listKeys(t, s)
	for _, tok := range badTokens {
		_, _, err := s.ListKeys(t.Context(), store.ListKeysQuery{PageSize: 2, PageToken: tok})
		wantKind(t, fmt.Sprintf("ListKeys(token %q)", tok), err, errs.Invalid)
	}
	for _, size := range []int{-1, 0, 1001} {
		_, _, err := s.ListKeys(t.Context(), store.ListKeysQuery{PageSize: size})
		wantKind(t, fmt.Sprintf("ListKeys(page size %d)", size), err, errs.Invalid)
	}
}

func appendAudit(t *testing.T, s store.Store, e store.AuditEntry) {
	t.Helper()
	if err := s.AppendAudit(t.Context(), e); err != nil {
		t.Fatalf("AppendAudit(%+v): %v", e, err)
	}
}

func testAppendAuditAssignsTimeSortableID(t *testing.T, s store.Store) {
	for _, sec := range []int{2, 0, 3, 1} {
		appendAudit(t, s, store.AuditEntry{Time: at(time.Duration(sec) * time.Second), Actor: "op",
			Action: "key.reveal", KeyID: "key-1", Details: map[string]string{"n": fmt.Sprint(sec)}})
	}
	got := auditOf(t, s, "")
	var ids, details []string
	for _, e := range got {
		ids = append(ids, e.ID)
		details = append(details, e.Details["n"])
	}
	if want := []string{"3", "2", "1", "0"}; !slices.Equal(details, want) {
		t.Fatalf("ListAudit: got entries %v, want %v (newest first)", details, want)
	}
	if slices.Contains(ids, "") {
		t.Errorf("assigned IDs: got %q, want none empty", ids)
	}
	if !slices.IsSortedFunc(ids, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Errorf("assigned IDs newest first: got %q, want them in descending order (IDs sort by time)", ids)
	}

	given := store.AuditEntry{ID: "given-id", Time: at(time.Hour), Actor: "op", Action: "key.reveal", KeyID: "key-2"}
	appendAudit(t, s, given)
	if d := cmp.Diff([]store.AuditEntry{given}, auditOf(t, s, "key-2"), cmpOpts); d != "" {
		t.Errorf("entry with an ID (-want +got):\n%s", d)
	}
}

func testListAuditNewestFirstFilteredAndPaged(t *testing.T, s store.Store) {
	var all []store.AuditEntry
	for i, sec := range []int{5, 1, 3, 1, 0, 3, 4} { // two ties
		e := store.AuditEntry{ID: fmt.Sprintf("e%d", i), Time: at(time.Duration(sec) * time.Second), Actor: "op",
			Action: "key.update", KeyID: fmt.Sprintf("key-%d", i%2), Details: map[string]string{"i": fmt.Sprint(i)}}
		appendAudit(t, s, e)
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b store.AuditEntry) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	for _, keyID := range []string{"", "key-0", "key-1"} {
		want := slices.DeleteFunc(slices.Clone(all), func(e store.AuditEntry) bool { return keyID != "" && e.KeyID != keyID })
		if d := cmp.Diff(want, auditOf(t, s, keyID), cmpOpts); d != "" {
			t.Errorf("ListAudit(%q) (-want +got):\n%s", keyID, d)
		}
		for _, size := range []int{1, 2, 3} {
			got := pages(t, size, len(want), func(token string) ([]store.AuditEntry, string, error) {
				return s.ListAudit(t.Context(), store.AuditQuery{KeyID: keyID, PageSize: size, PageToken: token})
			})
			if d := cmp.Diff(want, got, cmpOpts); d != "" {
				t.Errorf("ListAudit(%q) in pages of %d (-want +got):\n%s", keyID, size, d)
			}
		}
	}
}

func testListAuditBadQueryIsInvalid(t *testing.T, s store.Store) {
	appendAudit(t, s, store.AuditEntry{Time: base, Actor: "op", Action: "key.reveal", KeyID: "key-1"})
	for _, tok := range badTokens {
		_, _, err := s.ListAudit(t.Context(), store.AuditQuery{PageSize: 2, PageToken: tok})
		wantKind(t, fmt.Sprintf("ListAudit(token %q)", tok), err, errs.Invalid)
	}
	for _, size := range []int{-1, 0, 1001} {
		_, _, err := s.ListAudit(t.Context(), store.AuditQuery{PageSize: size})
		wantKind(t, fmt.Sprintf("ListAudit(page size %d)", size), err, errs.Invalid)
	}
}

// idem returns a fresh reservation of key for a request with hash, leased
// for a minute from base and kept for a day.
func idem(key, hash, keyID string) store.Idempotency {
	return store.Idempotency{Key: key, RequestHash: hash, KeyID: keyID, LeaseUntil: at(time.Minute),
		CreatedAt: base, ExpiresAt: at(24 * time.Hour)}
}

func pendingIdem(rec store.Idempotency) store.Idempotency {
	rec.State = store.IdemPending
	return rec
}

func reserve(t *testing.T, s store.Store, rec store.Idempotency, now time.Time, wantOwned bool, want store.Idempotency) {
	t.Helper()
	got, owned, err := s.ReserveIdempotency(t.Context(), rec, now)
	if err != nil {
		t.Fatalf("ReserveIdempotency(%s, %s) at base+%v: %v", rec.Key, rec.KeyID, now.Sub(base), err)
	}
	if owned != wantOwned {
		t.Errorf("ReserveIdempotency(%s, %s) at base+%v: got owned %v, want %v", rec.Key, rec.KeyID, now.Sub(base), owned, wantOwned)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("ReserveIdempotency(%s, %s) at base+%v stored record (-want +got):\n%s", rec.Key, rec.KeyID, now.Sub(base), d)
	}
}

func testReserveIdempotencyFirstCallOwns(t *testing.T, s store.Store) {
	a := idem("POST /keys:abc", "h1", "key-a")
	reserve(t, s, a, base, true, pendingIdem(a))
	b := idem("POST /keys:def", "h1", "key-b") // another key is independent
	reserve(t, s, b, base, true, pendingIdem(b))
}

func testReserveIdempotencySecondCallGetsStored(t *testing.T, s store.Store) {
	first := idem("k", "h1", "key-a")
	reserve(t, s, first, base, true, pendingIdem(first))
	second := idem("k", "h1", "key-b")
	second.LeaseUntil = at(2 * time.Minute)
	reserve(t, s, second, at(30*time.Second), false, pendingIdem(first)) // lease still held
}

func testReserveIdempotencyConcurrentOneOwner(t *testing.T, s store.Store) {
	const n = 50
	type result struct {
		stored store.Idempotency
		owned  bool
		err    error
	}
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range n {
		wg.Go(func() {
			r := &results[i]
			r.err = retryConflict(func() (err error) {
				r.stored, r.owned, err = s.ReserveIdempotency(t.Context(), idem("k", "h1", fmt.Sprintf("key-%02d", i)), base)
				return err
			})
		})
	}
	wg.Wait()
	var owners []string
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("ReserveIdempotency #%d: %v", i, r.err)
		}
		if r.owned {
			owners = append(owners, r.stored.KeyID)
		}
	}
	if len(owners) != 1 {
		t.Fatalf("owners among %d concurrent reservations: got %v, want exactly one", n, owners)
	}
	for i, r := range results {
		if r.stored.KeyID != owners[0] {
			t.Errorf("ReserveIdempotency #%d: got stored key %s, want the owner's %s", i, r.stored.KeyID, owners[0])
		}
	}
}

func testReserveIdempotencyTakeoverAfterLeaseKeepsKeyID(t *testing.T, s store.Store) {
	first := idem("k", "h1", "key-a")
	reserve(t, s, first, base, true, pendingIdem(first))
	retry := idem("k", "h1", "key-b")
	retry.LeaseUntil = at(3 * time.Minute)
	want := pendingIdem(first)
	want.LeaseUntil = retry.LeaseUntil
	reserve(t, s, retry, first.LeaseUntil, true, want) // LeaseUntil <= now: the lease is over
	reserve(t, s, idem("k", "h1", "key-c"), at(2*time.Minute), false, want)
}

func testReserveIdempotencyNoTakeoverWithDifferentHash(t *testing.T, s store.Store) {
	first := idem("k", "h1", "key-a")
	reserve(t, s, first, base, true, pendingIdem(first))
	reserve(t, s, idem("k", "h2", "key-b"), at(5*time.Minute), false, pendingIdem(first))
}

func testReserveIdempotencyReplacesExpiredRecord(t *testing.T, s store.Store) {
	first := idem("k", "h1", "key-a")
	reserve(t, s, first, base, true, pendingIdem(first))
	if err := s.CompleteIdempotency(t.Context(), "k", 201); err != nil {
		t.Fatalf("CompleteIdempotency: %v", err)
	}
	later := idem("k", "h2", "key-b")
	later.CreatedAt, later.LeaseUntil, later.ExpiresAt = at(25*time.Hour), at(25*time.Hour+time.Minute), at(49*time.Hour)
	reserve(t, s, later, at(25*time.Hour), true, pendingIdem(later))
}

func testCompleteIdempotencyMarksDone(t *testing.T, s store.Store) {
	first := idem("k", "h1", "key-a")
	reserve(t, s, first, base, true, pendingIdem(first))
	if err := s.CompleteIdempotency(t.Context(), "k", 201); err != nil {
		t.Fatalf("CompleteIdempotency: %v", err)
	}
	want := first
	want.State, want.Status = store.IdemDone, 201
	// Done records are never taken over, even by the same request after the lease.
	reserve(t, s, idem("k", "h1", "key-b"), at(5*time.Minute), false, want)
}

func testCompleteIdempotencyUnknownIsNotFound(t *testing.T, s store.Store) {
	err := s.CompleteIdempotency(t.Context(), "k", 201)
	wantKind(t, "CompleteIdempotency(unknown)", err, errs.NotFound)
}

func testReleaseIdempotencyAllowsImmediateTakeover(t *testing.T, s store.Store) {
	first := idem("k", "h1", "key-a")
	first.LeaseUntil = at(10 * time.Minute)
	reserve(t, s, first, base, true, pendingIdem(first))
	if err := s.ReleaseIdempotency(t.Context(), "k"); err != nil {
		t.Fatalf("ReleaseIdempotency: %v", err)
	}
	retry := idem("k", "h1", "key-b")
	want := pendingIdem(first)
	want.LeaseUntil = retry.LeaseUntil
	reserve(t, s, retry, at(time.Second), true, want)
}

func testReleaseIdempotencyIgnoresDoneAndUnknown(t *testing.T, s store.Store) {
	if err := s.ReleaseIdempotency(t.Context(), "unknown"); err != nil {
		t.Errorf("ReleaseIdempotency(unknown): got %v, want nil", err)
	}
	first := idem("k", "h1", "key-a")
	reserve(t, s, first, base, true, pendingIdem(first))
	if err := s.CompleteIdempotency(t.Context(), "k", 200); err != nil {
		t.Fatalf("CompleteIdempotency: %v", err)
	}
	if err := s.ReleaseIdempotency(t.Context(), "k"); err != nil {
		t.Errorf("ReleaseIdempotency(done): got %v, want nil", err)
	}
	want := first
	want.State, want.Status = store.IdemDone, 200
	reserve(t, s, idem("k", "h1", "key-b"), at(time.Second), false, want)
}

func testChangedKeysFeedsEveryChangeInOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i := range 5 {
		activate(t, s, newKey(fmt.Sprintf("key-%d", i), "o", base.Add(time.Duration(i)*time.Second)))
	}
	// A later change moves key-1 to the end of the feed.
	if _, err := s.UpdateKey(ctx, "key-1", func(k *store.Key) (*store.AuditEntry, error) {
		k.Status, k.UpdatedAt = store.Disabled, base.Add(time.Minute)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	ids := func(ks []*store.Key) (out []string) {
		for _, k := range ks {
			out = append(out, k.ID)
		}
		return out
	}
	// Read the feed two at a time from the start, as a poller does.
	var got []string
	since, after := time.Time{}, ""
	for {
		ks, err := s.ChangedKeys(ctx, since, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(ks) == 0 {
			break
		}
		got = append(got, ids(ks)...)
		last := ks[len(ks)-1]
		since, after = last.UpdatedAt, last.ID
	}
	want := []string{"key-0", "key-2", "key-3", "key-4", "key-1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("feed order (-want +got):\n%s", diff)
	}
	ks, err := s.ChangedKeys(ctx, base.Add(3*time.Second), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"key-3", "key-4", "key-1"}, ids(ks)); diff != "" {
		t.Errorf("feed since key-3's change, inclusive (-want +got):\n%s", diff)
	}
	if ks[2].Status != store.Disabled {
		t.Errorf("feed carries status %q, want the changed record", ks[2].Status)
	}
	if _, err := s.ChangedKeys(ctx, base, "", 0); !errs.Is(err, errs.Invalid) {
		t.Errorf("ChangedKeys(limit 0) = %v, want Invalid", err)
	}
}

// suspended returns a key the sweep suspended until until.
func suspended(id string, until time.Time) *store.Key {
	k := newKey(id, "owner-1", base)
	k.Status, k.StatusReason, k.DisabledUntil = store.Disabled, "quota: requests_per_day", ptr(until)
	return k
}

// dueSuspensions seeds keys in every state around t = at(3h) and returns
// the due ones in (DisabledUntil, ID) order.
func dueSuspensions(t *testing.T, s store.Store) []*store.Key {
	t.Helper()
	activeWithUntil := newKey("key-active-until", "owner-1", base)
	activeWithUntil.DisabledUntil = ptr(at(time.Hour))
	manual := newKey("key-manual", "owner-1", base)
	manual.Status, manual.StatusReason = store.Disabled, "operator"
	revoked := suspended("key-revoked", at(time.Hour))
	revoked.Status = store.Revoked
	due := []*store.Key{
		suspended("key-f", at(time.Hour)),
		suspended("key-g", at(time.Hour)),
		suspended("key-j", at(time.Hour)),
		suspended("key-a", at(2*time.Hour)),
		suspended("key-e", at(3*time.Hour)), // at t: due
	}
	seed := []*store.Key{
		due[3], newKey("key-active", "owner-1", base), due[1], activeWithUntil, manual, due[4], revoked,
		suspended("key-later", at(3*time.Hour+time.Microsecond)), due[0], due[2],
	}
	for _, k := range seed {
		activate(t, s, k)
	}
	return due
}

func dueIDs(t *testing.T, s store.Store, now, afterUntil time.Time, afterID string, limit int) []string {
	t.Helper()
	ks, err := s.DueSuspensions(t.Context(), now, afterUntil, afterID, limit)
	if err != nil {
		t.Fatalf("DueSuspensions(base+%v, base+%v, %q, %d): %v", now.Sub(base), afterUntil.Sub(base), afterID, limit, err)
	}
	return keyIDs(ks)
}

func testDueSuspensionsOnlyDueSuspendedKeysInOrder(t *testing.T, s store.Store) {
	due := dueSuspensions(t, s)
	now := at(3 * time.Hour)
	got, err := s.DueSuspensions(t.Context(), now, time.Time{}, "", 100)
	if err != nil {
		t.Fatalf("DueSuspensions: %v", err)
	}
	if d := cmp.Diff(due, got, cmpOpts); d != "" {
		t.Errorf("DueSuspensions(base+3h) (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		name       string
		now        time.Time
		afterUntil time.Time
		afterID    string
		want       []string
	}{
		{"earlier t", at(2 * time.Hour), time.Time{}, "", []string{"key-f", "key-g", "key-j", "key-a"}},
		{"before any", at(time.Hour - time.Microsecond), time.Time{}, "", nil},
		{"afterUntil ignored without afterID", now, at(2 * time.Hour), "", keyIDs(due)},
		{"after a tie", now, at(time.Hour), "key-g", []string{"key-j", "key-a", "key-e"}},
		{"after an id not stored", now, at(time.Hour), "key-h", []string{"key-j", "key-a", "key-e"}},
		{"after the last", now, at(3 * time.Hour), "key-e", nil},
	} {
		if got := dueIDs(t, s, tc.now, tc.afterUntil, tc.afterID, 100); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, limit := range []int{-1, 0, 1001} {
		_, err := s.DueSuspensions(t.Context(), now, time.Time{}, "", limit)
		wantKind(t, fmt.Sprintf("DueSuspensions(limit %d)", limit), err, errs.Invalid)
	}
}

func testDueSuspensionsPagesWithoutGapsOrRepeats(t *testing.T, s store.Store) {
	want := keyIDs(dueSuspensions(t, s))
	now := at(3 * time.Hour)
	for _, limit := range []int{1, 2, 3} {
		var (
			got        []string
			afterUntil time.Time
			afterID    string
		)
		for range len(want) + 1 {
			ks, err := s.DueSuspensions(t.Context(), now, afterUntil, afterID, limit)
			if err != nil {
				t.Fatalf("DueSuspensions(limit %d, after %q): %v", limit, afterID, err)
			}
			if len(ks) > limit {
				t.Fatalf("DueSuspensions(limit %d): got %d keys", limit, len(ks))
			}
			got = append(got, keyIDs(ks)...)
			if len(ks) < limit {
				break
			}
			last := ks[len(ks)-1]
			afterUntil, afterID = *last.DisabledUntil, last.ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages of %d: got %v, want %v", limit, got, want)
		}
	}
}

func testDueSuspensionsDropsReenabledKeys(t *testing.T, s store.Store) {
	dueSuspensions(t, s)
	for id, mutate := range map[string]func(*store.Key){
		"key-f": func(k *store.Key) { k.Status, k.StatusReason, k.DisabledUntil = store.Active, "", nil }, // the sweep re-enables
		"key-a": func(k *store.Key) { k.StatusReason, k.DisabledUntil = "operator", nil },                 // a manual disable
		"key-e": func(k *store.Key) { k.Status = store.Revoked },
	} {
		if _, err := s.UpdateKey(t.Context(), id, func(k *store.Key) (*store.AuditEntry, error) {
			mutate(k)
			k.UpdatedAt = at(4 * time.Hour)
			return nil, nil
		}); err != nil {
			t.Fatalf("UpdateKey(%s): %v", id, err)
		}
	}
	if got, want := dueIDs(t, s, at(3*time.Hour), time.Time{}, "", 100), []string{"key-g", "key-j"}; !slices.Equal(got, want) {
		t.Errorf("after re-enabling key-f, disabling key-a by hand and revoking key-e: got %v, want %v", got, want)
	}
}

func testGetKeysReturnsPresentKeysOnce(t *testing.T, s store.Store) {
	keys := map[string]*store.Key{}
	for _, id := range []string{"key-1", "key-2", "key-3"} {
		keys[id] = newKey(id, "owner-1", base)
		activate(t, s, keys[id])
	}
	got, err := s.GetKeys(t.Context(), []string{"key-3", "key-9", "key-1", "key-3", "", "key-1/x/y"})
	if err != nil {
		t.Fatalf("GetKeys: %v", err)
	}
	want := map[string]*store.Key{"key-1": keys["key-1"], "key-3": keys["key-3"]}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("GetKeys (-want +got):\n%s", d)
	}
	for _, ids := range [][]string{nil, {"key-9"}} {
		got, err := s.GetKeys(t.Context(), ids)
		if err != nil || len(got) != 0 {
			t.Errorf("GetKeys(%q): got %v, %v; want no keys, nil", ids, got, err)
		}
	}
	ids := make([]string, 1000) // the most allowed
	for i := range ids {
		ids[i] = fmt.Sprintf("key-%d", i)
	}
	got, err = s.GetKeys(t.Context(), ids)
	if err != nil {
		t.Fatalf("GetKeys(1000 ids): %v", err)
	}
	if d := cmp.Diff(keys, got, cmpOpts); d != "" {
		t.Errorf("GetKeys(1000 ids) (-want +got):\n%s", d)
	}
}

func testGetKeysTooManyIDsIsInvalid(t *testing.T, s store.Store) {
	activate(t, s, newKey("key-1", "owner-1", base))
	ids := make([]string, 1001)
	for i := range ids {
		ids[i] = "key-1"
	}
	_, err := s.GetKeys(t.Context(), ids)
	wantKind(t, "GetKeys(1001 ids)", err, errs.Invalid)
}

// checkpointOpts compares checkpoints with Data by bytes.Equal (nil and
// empty alike), far faster than cmp's element-wise diff on 64 KiB.
var checkpointOpts = cmp.Comparer(bytes.Equal)

func saveCheckpoint(t *testing.T, s store.Store, c store.Checkpoint, now time.Time) store.Checkpoint {
	t.Helper()
	got, err := s.SaveCheckpoint(t.Context(), c, now)
	if err != nil {
		t.Fatalf("SaveCheckpoint(%s, version %d): %v", c.Name, c.Version, err)
	}
	want := c
	want.Version, want.UpdatedAt = c.Version+1, now
	if d := cmp.Diff(want, got, checkpointOpts); d != "" {
		t.Errorf("SaveCheckpoint(%s, version %d) result (-want +got):\n%s", c.Name, c.Version, d)
	}
	return got
}

func wantCheckpoint(t *testing.T, s store.Store, want store.Checkpoint) {
	t.Helper()
	got, err := s.GetCheckpoint(t.Context(), want.Name)
	if err != nil {
		t.Fatalf("GetCheckpoint(%s): %v", want.Name, err)
	}
	if d := cmp.Diff(want, got, checkpointOpts); d != "" {
		t.Errorf("GetCheckpoint(%s) (-want +got):\n%s", want.Name, d)
	}
}

func testGetCheckpointMissingIsNotFound(t *testing.T, s store.Store) {
	saveCheckpoint(t, s, store.Checkpoint{Name: "other", Data: []byte("x")}, base)
	_, err := s.GetCheckpoint(t.Context(), "sweep")
	wantKind(t, "GetCheckpoint(missing)", err, errs.NotFound)
}

func testSaveCheckpointComparesVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	v1 := saveCheckpoint(t, s, store.Checkpoint{Name: "sweep", Data: []byte(`{"after":"key-1"}`)}, base)
	wantCheckpoint(t, s, v1)
	for _, version := range []int64{0, 2, 7} { // stale, and never stored
		_, err := s.SaveCheckpoint(ctx, store.Checkpoint{Name: "sweep", Data: []byte("lost"), Version: version}, at(time.Minute))
		wantKind(t, fmt.Sprintf("SaveCheckpoint(version %d) over version 1", version), err, errs.Conflict)
	}
	wantCheckpoint(t, s, v1)
	_, err := s.SaveCheckpoint(ctx, store.Checkpoint{Name: "other", Version: 1}, at(time.Minute))
	wantKind(t, "SaveCheckpoint(version 1) of a checkpoint never saved", err, errs.Conflict)
	_, err = s.GetCheckpoint(ctx, "other")
	wantKind(t, "GetCheckpoint after a failed first save", err, errs.NotFound)

	v1.Data = []byte(`{"after":"key-9"}`)
	v2 := saveCheckpoint(t, s, v1, at(2*time.Minute))
	wantCheckpoint(t, s, v2)
	v2.Data = nil
	wantCheckpoint(t, s, saveCheckpoint(t, s, v2, at(3*time.Minute)))
}

func testSaveCheckpointConcurrentOneWins(t *testing.T, s store.Store) {
	const n = 20
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, results[i] = s.SaveCheckpoint(t.Context(), store.Checkpoint{Name: "sweep", Data: []byte(fmt.Sprint(i))}, base)
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("savers %d and %d both won the save of version 0", winner, i)
		case err == nil:
			winner = i
		default:
			wantKind(t, fmt.Sprintf("saver %d", i), err, errs.Conflict)
		}
	}
	if winner < 0 {
		t.Fatalf("none of %d concurrent savers of version 0 won", n)
	}
	wantCheckpoint(t, s, store.Checkpoint{Name: "sweep", Data: []byte(fmt.Sprint(winner)), Version: 1, UpdatedAt: base})
}

func testCheckpointBadArgumentsAreInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	long := strings.Repeat("a", 100)
	saveCheckpoint(t, s, store.Checkpoint{Name: long, Data: make([]byte, store.MaxCheckpointData)}, base) // the largest allowed
	for _, name := range []string{"", long + "a", ".", "..", "__x__", "-x", "_x", "a/b", "a b", "ü"} {
		_, err := s.GetCheckpoint(ctx, name)
		wantKind(t, fmt.Sprintf("GetCheckpoint(%q)", name), err, errs.Invalid)
		_, err = s.SaveCheckpoint(ctx, store.Checkpoint{Name: name}, base)
		wantKind(t, fmt.Sprintf("SaveCheckpoint(%q)", name), err, errs.Invalid)
	}
	_, err := s.SaveCheckpoint(ctx, store.Checkpoint{Name: "sweep", Data: make([]byte, store.MaxCheckpointData+1)}, base)
	wantKind(t, "SaveCheckpoint(64 KiB + 1 of data)", err, errs.Invalid)
	_, err = s.SaveCheckpoint(ctx, store.Checkpoint{Name: "sweep", Version: -1}, base)
	wantKind(t, "SaveCheckpoint(version -1)", err, errs.Invalid)
	_, err = s.GetCheckpoint(ctx, "sweep")
	wantKind(t, "GetCheckpoint after invalid saves", err, errs.NotFound)
}

func markUsed(t *testing.T, s store.Store, uses map[string]time.Time) {
	t.Helper()
	if err := s.MarkUsed(t.Context(), uses); err != nil {
		t.Fatalf("MarkUsed(%v): %v", uses, err)
	}
}

func testMarkUsedOnlyMovesForward(t *testing.T, s store.Store) {
	k1, k2 := newKey("key-1", "owner-1", base), newKey("key-2", "owner-1", base)
	activate(t, s, k1)
	activate(t, s, k2)
	markUsed(t, s, map[string]time.Time{"key-1": at(time.Hour), "no-such-key": at(time.Hour)})
	markUsed(t, s, map[string]time.Time{"key-1": at(time.Minute), "key-2": at(2 * time.Hour)}) // key-1 older: kept
	want1, want2 := *k1, *k2
	want1.LastUsedAt, want2.LastUsedAt = ptr(at(time.Hour)), ptr(at(2*time.Hour))
	wantKey(t, s, &want1) // UpdatedAt unchanged: not a state change
	wantKey(t, s, &want2)
	if _, err := s.GetKey(t.Context(), "no-such-key"); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetKey(no-such-key) after MarkUsed: got %v, want NotFound (MarkUsed creates no key)", err)
	}
	changed, err := s.ChangedKeys(t.Context(), at(time.Second), "", 10)
	if err != nil {
		t.Fatalf("ChangedKeys: %v", err)
	}
	if len(changed) != 0 {
		t.Errorf("ChangedKeys after MarkUsed: got %d keys, want none (a use is not a change)", len(changed))
	}
}

func testMarkUsedConcurrentKeepsLatest(t *testing.T, s store.Store) {
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := s.MarkUsed(t.Context(), map[string]time.Time{"key-1": at(time.Duration(i+1) * time.Minute)}); err != nil {
				t.Errorf("MarkUsed %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	want := *k
	want.LastUsedAt = ptr(at(8 * time.Minute))
	wantKey(t, s, &want)
}

func testMarkUsedBadArgumentsAreInvalidAndWriteNothing(t *testing.T, s store.Store) {
	k := newKey("key-1", "owner-1", base)
	activate(t, s, k)
	tooMany := map[string]time.Time{"key-1": at(time.Hour)}
	for i := range store.MaxMarkUsed {
		tooMany[fmt.Sprintf("id-%d", i)] = at(time.Hour)
	}
	wantKind(t, "MarkUsed with too many keys", s.MarkUsed(t.Context(), tooMany), errs.Invalid)
	wantKind(t, "MarkUsed with a zero time", s.MarkUsed(t.Context(), map[string]time.Time{"key-1": at(time.Hour), "key-2": {}}), errs.Invalid)
	wantKey(t, s, k)
	if err := s.MarkUsed(t.Context(), nil); err != nil {
		t.Errorf("MarkUsed(nil): got %v, want nil", err)
	}
}

// newOwner returns a minimal valid owner: no override set.
func newOwner(id string, created time.Time) *store.Owner {
	return &store.Owner{ID: id, Plan: "free", CreatedAt: created, UpdatedAt: created}
}

func ensureOwner(t *testing.T, s store.Store, o *store.Owner) {
	t.Helper()
	got, created, err := s.EnsureOwner(t.Context(), o)
	if err != nil {
		t.Fatalf("EnsureOwner(%s): %v", o.ID, err)
	}
	if !created {
		t.Fatalf("EnsureOwner(%s): got created = false for a new owner", o.ID)
	}
	if d := cmp.Diff(o, got, cmpOpts); d != "" {
		t.Fatalf("EnsureOwner(%s) result (-want +got):\n%s", o.ID, d)
	}
}

func wantOwner(t *testing.T, s store.Store, want *store.Owner) {
	t.Helper()
	got, err := s.GetOwner(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetOwner(%s): %v", want.ID, err)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("GetOwner(%s) mismatch (-want +got):\n%s", want.ID, d)
	}
}

func ownerIDs(os []*store.Owner) (out []string) {
	for _, o := range os {
		out = append(out, o.ID)
	}
	return out
}

func testEnsureOwnerKeepsTheFirstRecord(t *testing.T, s store.Store) {
	first := newOwner("proj-1", base)
	ensureOwner(t, s, first)
	second := newOwner("proj-1", at(time.Hour))
	second.Plan, second.Limits = "pro", plan.Limits{"requests_per_minute": 10}
	got, created, err := s.EnsureOwner(t.Context(), second)
	if err != nil {
		t.Fatalf("EnsureOwner again: %v", err)
	}
	if created {
		t.Errorf("EnsureOwner again: got created = true, want false")
	}
	if d := cmp.Diff(first, got, cmpOpts); d != "" {
		t.Errorf("EnsureOwner again: got a record other than the first (-want +got):\n%s", d)
	}
	wantOwner(t, s, first)
}

func testOwnerRoundTripsEveryField(t *testing.T, s store.Store) {
	full := &store.Owner{
		ID:     "team.ml:prod@example.com_1-a",
		Plan:   "enterprise",
		Limits: plan.Limits{"requests_per_minute": 6000, "units_per_month": 1 << 40},
		Features: map[string]plan.Limits{
			"gpt-4.1":  {"requests_per_minute": 60, "tokens_per_day": 0},
			"embed:v2": {"requests_per_day": 1 << 33},
		},
		Suspension: &store.OwnerSuspension{Limit: "requests_per_day", Feature: "gpt-4.1", Used: 1001, Max: 1000,
			Until: at(24 * time.Hour), At: at(time.Minute)},
		Billing: &store.OwnerBilling{SpendCap: ptr(int64(25_000_000)),
			Credits: &store.Credits{Since: at(0), Offset: 1_234_567, Grants: []store.CreditGrant{
				{ID: "topup_1", Amount: 10_000_000, At: at(time.Second)}, {ID: "topup_2", Amount: 1, At: at(2 * time.Second)}}},
			AlertMonth: at(0), AlertPercent: 80},
		CreatedAt: base,
		UpdatedAt: at(time.Minute),
	}
	zeroCap := newOwner("zero-cap", at(3*time.Second))
	zeroCap.Billing = &store.OwnerBilling{SpendCap: ptr(int64(0))}
	// "." and ".." are owner ids a backend with path-like ids must not
	// take literally.
	for _, o := range []*store.Owner{full, newOwner(".", at(time.Second)), newOwner("..", at(2*time.Second)), zeroCap} {
		ensureOwner(t, s, o)
		wantOwner(t, s, o)
	}
}

func testUnknownOwnerIsNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	ensureOwner(t, s, newOwner("proj-1", base))
	for _, id := range []string{"proj-2", "", ".", "..", "proj-1/x/y"} {
		_, err := s.GetOwner(ctx, id)
		wantKind(t, fmt.Sprintf("GetOwner(%q)", id), err, errs.NotFound)
		_, err = s.UpdateOwner(ctx, id, func(*store.Owner) (*store.AuditEntry, error) {
			t.Errorf("UpdateOwner(%q) called mutate for an owner that does not exist", id)
			return nil, nil
		})
		wantKind(t, fmt.Sprintf("UpdateOwner(%q)", id), err, errs.NotFound)
	}
}

// upgrade moves an owner to the pro plan with an override, at t.
func upgrade(t time.Time) func(*store.Owner) (*store.AuditEntry, error) {
	return func(o *store.Owner) (*store.AuditEntry, error) {
		o.Plan = "pro"
		o.Limits = plan.Limits{"requests_per_minute": 1200}
		o.Features = map[string]plan.Limits{"gpt-4.1": {"requests_per_minute": 100}}
		o.UpdatedAt = t
		return &store.AuditEntry{Time: t, Actor: "admin", Action: "owner.update",
			Details: map[string]string{"owner": o.ID, "plan": "pro"}}, nil
	}
}

func testUpdateOwnerWritesOwnerAndAuditAtomically(t *testing.T, s store.Store) {
	o := newOwner("proj-1", base)
	ensureOwner(t, s, o)
	got, err := s.UpdateOwner(t.Context(), "proj-1", upgrade(at(time.Hour)))
	if err != nil {
		t.Fatalf("UpdateOwner: %v", err)
	}
	want := *o
	wantAudit, _ := upgrade(at(time.Hour))(&want)
	if d := cmp.Diff(&want, got, cmpOpts); d != "" {
		t.Errorf("UpdateOwner result (-want +got):\n%s", d)
	}
	wantOwner(t, s, &want)
	// An owner's audit entry has no KeyID: the unfiltered list holds it.
	if d := cmp.Diff([]store.AuditEntry{*wantAudit}, auditOf(t, s, ""), cmpOpts, ignoreAuditID); d != "" {
		t.Errorf("audit after UpdateOwner (-want +got):\n%s", d)
	}
}

func testUpdateOwnerMutateErrorWritesNothing(t *testing.T, s store.Store) {
	o := newOwner("proj-1", base)
	ensureOwner(t, s, o)
	errStop := errors.New("mutate refused")
	_, err := s.UpdateOwner(t.Context(), "proj-1", func(o *store.Owner) (*store.AuditEntry, error) {
		audit, _ := upgrade(at(time.Hour))(o)
		return audit, fmt.Errorf("wrapped: %w", errStop)
	})
	if !errors.Is(err, errStop) {
		t.Errorf("UpdateOwner: got error %v, want the one mutate returned", err)
	}
	wantOwner(t, s, o)
	if got := auditOf(t, s, ""); len(got) != 0 {
		t.Errorf("audit entries: got %d, want none", len(got))
	}
}

func testUpdateOwnerRejectsImmutableFieldChange(t *testing.T, s store.Store) {
	o := newOwner("proj-1", base)
	ensureOwner(t, s, o)
	changes := map[string]func(*store.Owner){
		"ID":        func(o *store.Owner) { o.ID = "proj-2" },
		"CreatedAt": func(o *store.Owner) { o.CreatedAt = at(time.Hour) },
	}
	for _, field := range slices.Sorted(maps.Keys(changes)) {
		_, err := s.UpdateOwner(t.Context(), "proj-1", func(o *store.Owner) (*store.AuditEntry, error) {
			changes[field](o)
			o.Plan = "changed"
			return nil, nil
		})
		wantKind(t, "UpdateOwner changing "+field, err, errs.Internal)
	}
	wantOwner(t, s, o)
}

// listOwners seeds owners whose ids use every character an owner id may
// hold, in an order unrelated to their ids, and returns them by id.
func listOwners(t *testing.T, s store.Store) []*store.Owner {
	t.Helper()
	var want []*store.Owner
	for i, id := range []string{"proj_2", "a@b.c", "..", "proj-3", "proj:1", ".", "Proj", "proj", "a.b"} {
		o := newOwner(id, at(time.Duration(-i)*time.Second))
		ensureOwner(t, s, o)
		want = append(want, o)
	}
	slices.SortFunc(want, func(a, b *store.Owner) int { return strings.Compare(a.ID, b.ID) })
	return want
}

func testListOwnersByIDPagesWithoutGapsOrDuplicates(t *testing.T, s store.Store) {
	want := listOwners(t, s)
	for _, size := range []int{1, 2, 4, len(want), 1000} {
		got := pages(t, size, len(want), func(token string) ([]*store.Owner, string, error) {
			return s.ListOwners(t.Context(), store.ListOwnersQuery{PageSize: size, PageToken: token})
		})
		if d := cmp.Diff(want, got, cmpOpts); d != "" {
			t.Errorf("pages of %d (-want +got):\n%s", size, d)
		}
	}
	// A page that ends exactly at the last owner has no next token.
	_, next, err := s.ListOwners(t.Context(), store.ListOwnersQuery{PageSize: len(want)})
	if err != nil {
		t.Fatalf("ListOwners: %v", err)
	}
	if next != "" {
		t.Errorf("ListOwners(page of all %d): got next token %q, want none", len(want), next)
	}
}

func testListOwnersSuspendedListsOnlySuspendedOwners(t *testing.T, s store.Store) {
	all := listOwners(t, s)
	var want []*store.Owner
	for i, o := range all {
		if i%3 != 1 {
			continue
		}
		sp := &store.OwnerSuspension{Limit: "units_per_month", Used: 11, Max: 10, Until: at(time.Hour), At: at(time.Duration(i) * time.Second)}
		got, err := s.UpdateOwner(t.Context(), o.ID, func(o *store.Owner) (*store.AuditEntry, error) {
			o.Suspension, o.UpdatedAt = sp, at(time.Minute)
			return nil, nil
		})
		if err != nil {
			t.Fatalf("UpdateOwner(%s): %v", o.ID, err)
		}
		want = append(want, got)
	}
	for _, size := range []int{1, 2, 1000} {
		got := pages(t, size, len(want), func(token string) ([]*store.Owner, string, error) {
			return s.ListOwners(t.Context(), store.ListOwnersQuery{PageSize: size, PageToken: token, Suspended: true})
		})
		if d := cmp.Diff(want, got, cmpOpts); d != "" {
			t.Errorf("suspended owners, pages of %d (-want +got):\n%s", size, d)
		}
	}
	// Lifting a suspension takes the owner off the list.
	if _, err := s.UpdateOwner(t.Context(), want[0].ID, func(o *store.Owner) (*store.AuditEntry, error) {
		o.Suspension = nil
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.ListOwners(t.Context(), store.ListOwnersQuery{PageSize: 1000, Suspended: true})
	if err != nil || len(got) != len(want)-1 {
		t.Errorf("suspended owners after a lift: got %d, %v; want %d", len(got), err, len(want)-1)
	}
}

func testListOwnersBadQueryIsInvalid(t *testing.T, s store.Store) {
	listOwners(t, s)
	for _, tok := range badTokens {
		_, _, err := s.ListOwners(t.Context(), store.ListOwnersQuery{PageSize: 2, PageToken: tok})
		wantKind(t, fmt.Sprintf("ListOwners(token %q)", tok), err, errs.Invalid)
	}
	for _, size := range []int{-1, 0, 1001} {
		_, _, err := s.ListOwners(t.Context(), store.ListOwnersQuery{PageSize: size})
		wantKind(t, fmt.Sprintf("ListOwners(page size %d)", size), err, errs.Invalid)
	}
}

func testChangedOwnersFeedsEveryChangeInOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	// proj-b and proj-c change at the same time: the id breaks the tie.
	for _, o := range []*store.Owner{newOwner("proj-c", at(time.Second)), newOwner("proj-a", base),
		newOwner("proj-b", at(time.Second)), newOwner("proj-d", at(2*time.Second))} {
		ensureOwner(t, s, o)
	}
	// A later change moves proj-a to the end of the feed.
	if _, err := s.UpdateOwner(ctx, "proj-a", upgrade(at(time.Minute))); err != nil {
		t.Fatal(err)
	}
	// Read the feed two at a time from the start, as a poller does.
	var got []string
	since, after := time.Time{}, ""
	for range 10 {
		os, err := s.ChangedOwners(ctx, since, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(os) == 0 {
			break
		}
		got = append(got, ownerIDs(os)...)
		last := os[len(os)-1]
		since, after = last.UpdatedAt, last.ID
	}
	if d := cmp.Diff([]string{"proj-b", "proj-c", "proj-d", "proj-a"}, got); d != "" {
		t.Errorf("feed order (-want +got):\n%s", d)
	}
	// After proj-b's position, proj-c (same time, later id) is still due.
	os, err := s.ChangedOwners(ctx, at(time.Second), "proj-b", 10)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"proj-c", "proj-d", "proj-a"}, ownerIDs(os)); d != "" {
		t.Errorf("feed after (1s, proj-b) (-want +got):\n%s", d)
	}
	if os[2].Plan != "pro" {
		t.Errorf("feed carries plan %q, want the changed record", os[2].Plan)
	}
	for _, limit := range []int{0, 1001} {
		if _, err := s.ChangedOwners(ctx, base, "", limit); !errs.Is(err, errs.Invalid) {
			t.Errorf("ChangedOwners(limit %d) = %v, want Invalid", limit, err)
		}
	}
}

func quarantined(id string, until time.Time) *store.Key {
	k := newKey(id, "owner-1", base)
	k.Quarantine = &store.Quarantine{Since: base, Until: until, AllowedIPs: []string{"203.0.113.7", "2001:db8::/64"},
		Reporter: "github", URL: "https://github.com/o/r/blob/abc/config.env", Source: "content"}
	return k
}

func testQuarantineRoundTrips(t *testing.T, s store.Store) {
	k := quarantined("key-q", at(72*time.Hour))
	activate(t, s, k)
	wantKey(t, s, k)
	got, err := s.LookupHash(t.Context(), k.Hash)
	if err != nil {
		t.Fatalf("LookupHash: %v", err)
	}
	if d := cmp.Diff(k, got, cmpOpts); d != "" {
		t.Errorf("LookupHash mismatch (-want +got):\n%s", d)
	}
	// Ending it keeps the record; removing it leaves none.
	ended, err := s.UpdateKey(t.Context(), k.ID, func(k *store.Key) (*store.AuditEntry, error) {
		k.Quarantine.EndedAt, k.Status, k.StatusReason, k.UpdatedAt = ptr(at(72*time.Hour)), store.Disabled, "leaked", at(72*time.Hour)
		return nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	wantKey(t, s, ended)
	if ended.Quarantine.InForce() {
		t.Errorf("an ended quarantine is in force")
	}
	cleared, err := s.UpdateKey(t.Context(), k.ID, func(k *store.Key) (*store.AuditEntry, error) {
		k.Quarantine, k.UpdatedAt = nil, at(73*time.Hour)
		return nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	wantKey(t, s, cleared)
	if cleared.Quarantine != nil {
		t.Errorf("Quarantine = %+v after it was removed, want nil", cleared.Quarantine)
	}
}

func dueQuarantineIDs(t *testing.T, s store.Store, now, afterUntil time.Time, afterID string, limit int) []string {
	t.Helper()
	ks, err := s.DueQuarantines(t.Context(), now, afterUntil, afterID, limit)
	if err != nil {
		t.Fatalf("DueQuarantines(base+%v, base+%v, %q, %d): %v", now.Sub(base), afterUntil.Sub(base), afterID, limit, err)
	}
	return keyIDs(ks)
}

// dueQuarantines seeds keys around t = at(3h) and returns the due ones in
// (Quarantine.Until, ID) order.
func dueQuarantines(t *testing.T, s store.Store) []*store.Key {
	t.Helper()
	ended := quarantined("key-ended", at(time.Hour))
	ended.Quarantine.EndedAt = ptr(at(time.Hour))
	ended.Status, ended.StatusReason = store.Disabled, "leaked"
	suspendedOnly := suspended("key-suspended", at(time.Hour))
	disabled := quarantined("key-disabled", at(2*time.Hour)) // disabled by hand while in force: still due
	disabled.Status, disabled.StatusReason = store.Disabled, "operator"
	due := []*store.Key{
		quarantined("key-f", at(time.Hour)),
		quarantined("key-g", at(time.Hour)),
		quarantined("key-a", at(2*time.Hour)),
		disabled,
		quarantined("key-e", at(3*time.Hour)), // at t: due
	}
	seed := []*store.Key{due[2], newKey("key-plain", "owner-1", base), ended, due[4], suspendedOnly, due[0],
		quarantined("key-later", at(3*time.Hour+time.Microsecond)), due[3], due[1]}
	for _, k := range seed {
		activate(t, s, k)
	}
	return due
}

func testDueQuarantinesOnlyInForceDueInOrderAndPaged(t *testing.T, s store.Store) {
	due := dueQuarantines(t, s)
	now := at(3 * time.Hour)
	got, err := s.DueQuarantines(t.Context(), now, time.Time{}, "", 100)
	if err != nil {
		t.Fatalf("DueQuarantines: %v", err)
	}
	if d := cmp.Diff(due, got, cmpOpts); d != "" {
		t.Errorf("DueQuarantines(base+3h) (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		name       string
		now        time.Time
		afterUntil time.Time
		afterID    string
		want       []string
	}{
		{"earlier t", at(2 * time.Hour), time.Time{}, "", []string{"key-f", "key-g", "key-a", "key-disabled"}},
		{"before any", at(time.Hour - time.Microsecond), time.Time{}, "", nil},
		{"after a tie", now, at(time.Hour), "key-f", []string{"key-g", "key-a", "key-disabled", "key-e"}},
		{"after the last", now, at(3 * time.Hour), "key-e", nil},
	} {
		if got := dueQuarantineIDs(t, s, tc.now, tc.afterUntil, tc.afterID, 100); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	want := keyIDs(due)
	for _, limit := range []int{1, 2, 3} {
		var (
			got        []string
			afterUntil time.Time
			afterID    string
		)
		for range len(want) + 1 {
			ks, err := s.DueQuarantines(t.Context(), now, afterUntil, afterID, limit)
			if err != nil {
				t.Fatalf("DueQuarantines(limit %d, after %q): %v", limit, afterID, err)
			}
			if len(ks) > limit {
				t.Fatalf("DueQuarantines(limit %d): got %d keys", limit, len(ks))
			}
			got = append(got, keyIDs(ks)...)
			if len(ks) < limit {
				break
			}
			last := ks[len(ks)-1]
			afterUntil, afterID = last.Quarantine.Until, last.ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages of %d: got %v, want %v", limit, got, want)
		}
	}
	for _, limit := range []int{-1, 0, 1001} {
		_, err := s.DueQuarantines(t.Context(), now, time.Time{}, "", limit)
		wantKind(t, fmt.Sprintf("DueQuarantines(limit %d)", limit), err, errs.Invalid)
	}
}

func testDueQuarantinesDropsEndedQuarantines(t *testing.T, s store.Store) {
	dueQuarantines(t, s)
	for id, mutate := range map[string]func(*store.Key){
		"key-f": func(k *store.Key) { k.Quarantine.EndedAt = ptr(at(4 * time.Hour)) },
		"key-a": func(k *store.Key) { k.Quarantine = nil },
	} {
		if _, err := s.UpdateKey(t.Context(), id, func(k *store.Key) (*store.AuditEntry, error) {
			mutate(k)
			k.UpdatedAt = at(4 * time.Hour)
			return nil, nil
		}); err != nil {
			t.Fatalf("UpdateKey(%s): %v", id, err)
		}
	}
	if got, want := dueQuarantineIDs(t, s, at(3*time.Hour), time.Time{}, "", 100), []string{"key-g", "key-disabled", "key-e"}; !slices.Equal(got, want) {
		t.Errorf("after ending key-f's quarantine and removing key-a's: got %v, want %v", got, want)
	}
}
