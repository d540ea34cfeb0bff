package firestoresent

import (
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/stripeexport/senttest"
	"github.com/keyplane/keyplane/internal/testenv"
)

var _ stripeexport.Sent = (*Sent)(nil)

// TestConformance runs the suite on the emulator, each subtest in a
// project of its own. testenv skips it without the emulator, and fails it
// when KEYPLANE_REQUIRE_EMULATORS is set (scripts/with-emulators.sh, CI).
func TestConformance(t *testing.T) {
	testenv.Firestore(t)
	senttest.Run(t, func(t *testing.T) senttest.Harness {
		c := clock.NewFake(time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC))
		return senttest.Harness{Sent: NewFromClient(testenv.FirestoreClient(t), Options{Clock: c}), Advance: c.Advance}
	})
}

// TestRecordIsItsDocumentWithTheTTLField: the layout doc.go documents and
// infra/firestore.tf's TTL policy relies on: one document per identifier
// in stripe_sent, named by the identifier's SHA-256, whose expire_at is a
// timestamp retention after the mark.
func TestRecordIsItsDocumentWithTheTTLField(t *testing.T) {
	c := testenv.FirestoreClient(t)
	at := time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC)
	s := NewFromClient(c, Options{Clock: clock.NewFake(at)})
	if err := s.MarkSent(t.Context(), []string{"evt/1"}, stripeexport.SentRetention); err != nil {
		t.Fatal(err)
	}
	snaps, err := c.Collection("stripe_sent").Documents(t.Context()).GetAll()
	if err != nil || len(snaps) != 1 {
		t.Fatalf("stripe_sent holds %d documents (%v), want 1", len(snaps), err)
	}
	// echo -n evt/1 | sha256sum
	if id, want := snaps[0].Ref.ID, "457b022a5a38b0675c5501044405a4a9c73a3a9401296fbca580387715c61677"; id != want {
		t.Errorf("document id %s, want %s", id, want)
	}
	exp, err := snaps[0].DataAt("expire_at")
	if got, ok := exp.(time.Time); err != nil || !ok || !got.Equal(at.Add(stripeexport.SentRetention)) {
		t.Errorf("expire_at = %v (%T, %v), want the timestamp %v", exp, exp, err, at.Add(stripeexport.SentRetention))
	}
	if id, _ := snaps[0].DataAt("id"); id != "evt/1" {
		t.Errorf("id = %v, want evt/1", id)
	}
}
