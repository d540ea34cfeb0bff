package pubsubqueue

import (
	"encoding/json"
	"time"

	"github.com/keyplane/keyplane/internal/queue"
)

// MessagePublished is the data of a google.cloud.pubsub.topic.v1.messagePublished
// CloudEvent: what a CloudEvent function (RecordUsage, DeliverNotification)
// receives from a push subscription. Pub/Sub POSTs the plain push envelope
//
//	{"message": {"data": "<base64>", "attributes": {…}, "messageId": "…", "publishTime": "…"},
//	 "subscription": "projects/…/subscriptions/…"}
//
// and the Functions Framework, recognising it by the push path (which names
// the topic), hands the function a CloudEvent whose data has the same
// "message" (it drops "subscription" and the delivery attempt).
type MessagePublished struct {
	Message struct {
		Data        []byte            `json:"data"` // base64 in JSON
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime time.Time         `json:"publishTime"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// DecodeMessagePublished decodes the data of a messagePublished CloudEvent
// into the message it carries. DeliveryAttempt is 0: the Functions
// Framework does not pass it on. An error means the data is not a Pub/Sub
// message at all, which retrying cannot change.
func DecodeMessagePublished(data []byte) (queue.Message, error) {
	var m MessagePublished
	if err := json.Unmarshal(data, &m); err != nil {
		return queue.Message{}, err
	}
	return queue.Message{
		ID: m.Message.MessageID, Data: m.Message.Data, Attributes: m.Message.Attributes,
		PublishTime: m.Message.PublishTime,
	}, nil
}
