package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
)

// Limits of the webhook contract.
const (
	MaxBody       = 1 << 20 // bytes of one webhook body
	MaxBatch      = 1000
	MaxIDLen      = 128
	MaxFeatureLen = ids.MaxFeatureLen
	MaxAge        = 35 * 24 * time.Hour
	MaxSkew       = 5 * time.Minute
	// Retention is how long counted event ids are remembered: longer than
	// the oldest event accepted, so a late duplicate is still recognised.
	Retention = MaxAge + 5*24*time.Hour
)

// Event is one usage event as gateways report it (docs/openapi.yaml, UsageBatch).
type Event struct {
	ID       string    `json:"id"`
	KeyID    string    `json:"key_id"`
	Time     time.Time `json:"time"`
	Requests int64     `json:"requests"`
	Units    int64     `json:"units"`
	Bytes    int64     `json:"bytes"`
	Feature  string    `json:"feature,omitempty"`
}

// Batch is the usage webhook body and the usage message's data.
type Batch struct {
	Events []Event `json:"events"`
}

// wireEvent distinguishes an omitted requests field (default 1) from 0.
type wireEvent struct {
	ID       string    `json:"id"`
	KeyID    string    `json:"key_id"`
	Time     time.Time `json:"time"`
	Requests *int64    `json:"requests"`
	Units    int64     `json:"units"`
	Bytes    int64     `json:"bytes"`
	Feature  string    `json:"feature"`
}

// DecodeBatch strictly decodes a batch (unknown fields are errors) and
// validates it whole against now: any invalid event makes the batch
// invalid, with one errs.Detail per problem naming the event's index.
func DecodeBatch(body []byte, now time.Time) (Batch, error) {
	var raw struct {
		Events []wireEvent `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Batch{}, errs.E(errs.Invalid, "request body must be {\"events\": [...]}: %s", JSONProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Batch{}, errs.E(errs.Invalid, "request body: unexpected data after the JSON object")
	}
	if len(raw.Events) == 0 || len(raw.Events) > MaxBatch {
		return Batch{}, errs.E(errs.Invalid, "events must hold 1 to %d events, got %d", MaxBatch, len(raw.Events))
	}
	b := Batch{Events: fromWire(raw.Events)}
	if details := b.Validate(now); len(details) > 0 {
		return Batch{}, &errs.Error{Kind: errs.Invalid, Msg: fmt.Sprintf("%d problem(s) in the batch; nothing was accepted", len(details)), Details: details}
	}
	return b, nil
}

// fromWire applies the defaults of the wire format: requests is 1 when
// omitted; times are UTC.
func fromWire(ws []wireEvent) []Event {
	out := make([]Event, len(ws))
	for i, w := range ws {
		out[i] = Event{ID: w.ID, KeyID: w.KeyID, Time: w.Time.UTC(), Requests: 1, Units: w.Units, Bytes: w.Bytes, Feature: w.Feature}
		if w.Requests != nil {
			out[i].Requests = *w.Requests
		}
	}
	return out
}

// DecodeMessage decodes a usage message's data: the webhook's batch format,
// from the webhook or from a gateway publishing to the topic directly. It
// is lenient about unknown fields (the webhook is the strict edge) but
// applies the same defaults.
func DecodeMessage(data []byte) ([]Event, error) {
	var raw struct {
		Events []wireEvent `json:"events"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if raw.Events == nil {
		return nil, errors.New(`no "events" array`)
	}
	return fromWire(raw.Events), nil
}

// JSONProblem describes a JSON decoding error safely, for a client or
// a dead letter: what is wrong and where, never more than 200 bytes.
func JSONProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("invalid JSON at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("field %q has the wrong type", e.Field)
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return "truncated JSON"
	}
	if _, ok := err.(*time.ParseError); ok {
		return "time must be RFC 3339, like 2030-01-02T15:04:05Z"
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Validate checks every event and returns one detail per problem; ids must
// be unique within the batch.
func (b Batch) Validate(now time.Time) []errs.Detail {
	var out []errs.Detail
	seen := make(map[string]int, len(b.Events))
	for i, e := range b.Events {
		field := func(f string) string { return fmt.Sprintf("events[%d].%s", i, f) }
		if f, msg := e.Problem(now); msg != "" {
			out = append(out, errs.Detail{Field: field(f), Message: msg})
			continue
		}
		if j, dup := seen[e.ID]; dup {
			out = append(out, errs.Detail{Field: field("id"), Message: fmt.Sprintf("duplicates the id of events[%d]", j)})
		}
		seen[e.ID] = i
	}
	return out
}

// Problem returns the field and message of the first thing wrong with e,
// or "", "".
func (e Event) Problem(now time.Time) (field, msg string) {
	switch {
	case len(e.ID) == 0 || len(e.ID) > MaxIDLen:
		return "id", fmt.Sprintf("must be 1-%d characters", MaxIDLen)
	case !ids.ValidKeyID(e.KeyID):
		return "key_id", "must be a key id (" + ids.KeyIDSyntax + ")"
	case e.Time.IsZero():
		return "time", "is required (RFC 3339)"
	case e.Time.Before(now.Add(-MaxAge)):
		return "time", "is more than 35 days old"
	case e.Time.After(now.Add(MaxSkew)):
		return "time", "is more than 5 minutes in the future"
	case e.Requests < 0:
		return "requests", "must be >= 0"
	case e.Units < 0:
		return "units", "must be >= 0"
	case e.Bytes < 0:
		return "bytes", "must be >= 0"
	case e.Feature != "" && !ids.ValidFeature(e.Feature):
		return "feature", "must be a feature name (" + ids.FeatureSyntax + ") or absent"
	}
	return "", ""
}
