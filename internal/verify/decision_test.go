package verify

import (
	"reflect"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/store"
)

// reset leaves a reused Decision as a new one reads: every field but the
// limit states zero (a field added to Decision and not to reset fails
// here), no limits and no refusal.
func TestResetLeavesADecisionAsANewOneReads(t *testing.T) {
	d := Decision{Code: RateLimited, Reason: ReasonIPMissing, Key: &store.Key{ID: "key-1"}, RetryAfter: time.Second}
	for range MaxLimits {
		d.refuse(d.addLimit(LimitState{Name: "requests_per_minute", Limit: 1}))
	}
	d.reset()
	v := reflect.ValueOf(d)
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.Name != "limits" && !v.Field(i).IsZero() {
			t.Errorf("after reset, %s = %v, want its zero value", f.Name, v.Field(i))
		}
	}
	if len(d.Limits()) != 0 || d.Refused() != -1 {
		t.Errorf("after reset: %d limits, refused %d; want 0 and -1", len(d.Limits()), d.Refused())
	}
}
