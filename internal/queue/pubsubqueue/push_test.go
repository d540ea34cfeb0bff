package pubsubqueue_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/queue/pubsubqueue"
)

// TestDecodeMessagePublished decodes the data the Functions Framework
// (v1.9) builds from a push envelope: the message with the framework's
// @type, its id and publish time, and no subscription.
func TestDecodeMessagePublished(t *testing.T) {
	data := []byte(`{"message": {"@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
		"attributes": {"type": "usage"}, "data": "eyJldmVudHMiOltdfQ==",
		"messageId": "1234", "publishTime": "2031-05-06T10:00:00.5Z"}}`)
	got, err := pubsubqueue.DecodeMessagePublished(data)
	if err != nil {
		t.Fatalf("DecodeMessagePublished: %v", err)
	}
	want := queue.Message{ID: "1234", Data: []byte(`{"events":[]}`), Attributes: map[string]string{"type": "usage"},
		PublishTime: time.Date(2031, time.May, 6, 10, 0, 0, 5e8, time.UTC)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DecodeMessagePublished: (-want +got)\n%s", diff)
	}
	if _, err := pubsubqueue.DecodeMessagePublished([]byte("not json")); err == nil {
		t.Errorf("DecodeMessagePublished(not json): got nil error, want one")
	}
}
