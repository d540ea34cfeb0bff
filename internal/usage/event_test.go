package usage

import (
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestDecodeBatchDefaultsAndValid(t *testing.T) {
	b, err := DecodeBatch([]byte(`{"events": [
		{"id": "evt_1", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z", "units": 350, "bytes": 2048, "feature": "generate"},
		{"id": "evt_2", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00+01:00", "requests": 0}]}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if b.Events[0].Requests != 1 || b.Events[1].Requests != 0 || b.Events[0].Units != 350 {
		t.Errorf("requests default: got %+v", b.Events)
	}
	if b.Events[1].Time.Location() != time.UTC {
		t.Error("times are not normalised to UTC")
	}
}

func TestInvalidBatchNamesEveryProblemByIndex(t *testing.T) {
	_, err := DecodeBatch([]byte(`{"events": [
		{"id": "ok", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z"},
		{"id": "", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z"},
		{"id": "a", "key_id": "nope", "time": "2026-11-25T11:59:00Z"},
		{"id": "b", "key_id": "key_0123456789abcdef", "time": "2026-10-01T00:00:00Z"},
		{"id": "c", "key_id": "key_0123456789abcdef", "time": "2026-11-25T12:06:00Z"},
		{"id": "d", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z", "units": -1},
		{"id": "ok", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z"}]}`), now)
	e, ok := errs.As(err)
	if !ok || e.Kind != errs.Invalid {
		t.Fatalf("got %v, want Invalid", err)
	}
	want := []string{"events[1].id", "events[2].key_id", "events[3].time", "events[4].time", "events[5].units", "events[6].id"}
	if len(e.Details) != len(want) {
		t.Fatalf("details = %+v, want fields %v", e.Details, want)
	}
	for i, d := range e.Details {
		if d.Field != want[i] || d.Message == "" {
			t.Errorf("detail %d = %+v, want field %s", i, d, want[i])
		}
	}
}

func TestDecodeBatchRejectsShape(t *testing.T) {
	for body, msg := range map[string]string{
		`{"events": []}`:                      "1 to 1000",
		`{}`:                                  "1 to 1000",
		`{"events": [{"id": "x", "who": 1}]}`: "unknown field",
		`{"events": [`:                        "truncated",
		`{"events": [{"id": 5}]}`:             "wrong type",
		`{"events": [{"time": "yesterday"}]}`: "RFC 3339",
		`[]`:                                  "wrong type",
		`{"events": []} {}`:                   "after the JSON object",
		`{"events": [` + strings.Repeat(`{"id":"x"},`, 1000) + `{"id":"y"}]}`: "1 to 1000",
	} {
		_, err := DecodeBatch([]byte(body), now)
		if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), msg) {
			t.Errorf("DecodeBatch(%.40s) = %v, want Invalid containing %q", body, err, msg)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{
		`{"events": [{"id": "evt_1", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z", "units": 1}]}`,
		`{"events": [{"id": "e", "key_id": "key_0123456789abcdef", "time": "2026-11-25T11:59:00Z", "requests": -1}]}`,
		`{"events": null}`, `null`, `{"events": [{}]}`, "\x00", `{"events": [{"units": 1e99}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := DecodeBatch(body, now)
		if err != nil {
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("DecodeBatch(%q) = %v: not a client error", body, err)
			}
			return
		}
		if d := b.Validate(now); len(d) > 0 || len(b.Events) == 0 || len(b.Events) > MaxBatch {
			t.Fatalf("DecodeBatch(%q) accepted an invalid batch: %+v", body, d)
		}
	})
}
