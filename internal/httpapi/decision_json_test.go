package httpapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/verify"
)

// The reference encoding appendDecision must match: the decision as
// encoding/json renders this struct.

// DecisionJSON is the body of a verify answer (API.md, "Verify decision").
// It never holds the secret.
type DecisionJSON struct {
	Valid      bool                 `json:"valid"`
	Code       verify.Code          `json:"code"`
	KeyID      string               `json:"key_id,omitempty"`
	Owner      string               `json:"owner,omitempty"`
	Plan       string               `json:"plan,omitempty"`
	Scopes     []string             `json:"scopes,omitempty"`
	Metadata   map[string]string    `json:"metadata,omitempty"`
	ExpiresAt  *time.Time           `json:"expires_at,omitempty"`
	Limits     map[string]limitState `json:"limits,omitempty"`
	RetryAfter int64                `json:"retry_after,omitempty"` // seconds, with RATE_LIMITED
}

// DecisionBody renders a decision.
func DecisionBody(d *verify.Decision) DecisionJSON {
	out := DecisionJSON{Valid: d.Valid(), Code: d.Code}
	if k := d.Key; k != nil {
		out.KeyID, out.Owner, out.Plan, out.Scopes, out.Metadata, out.ExpiresAt = k.ID, k.Owner, k.Plan, k.Scopes, k.Metadata, k.ExpiresAt
	}
	if ls := d.Limits(); len(ls) > 0 {
		out.Limits = make(map[string]limitState, len(ls))
		for _, l := range ls {
			j := limitState{Limit: l.Limit, Remaining: l.Remaining, ResetAt: l.ResetAt}
			if l.HasUsed {
				used := l.Used
				j.Used = &used
			}
			out.Limits[l.Name] = j
		}
	}
	if d.RetryAfter > 0 {
		out.RetryAfter = int64((d.RetryAfter + time.Second - 1) / time.Second)
	}
	return out
}

func decisionFor(code verify.Code, k *store.Key, retry time.Duration) verify.Decision {
	return verify.Decision{Code: code, Key: k, RetryAfter: retry}
}

func TestAppendDecisionMatchesEncodingJSON(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	full := &store.Key{ID: "key_0123456789abcdef", Owner: "acct_1", Plan: "pro", Scopes: []string{"embed", "generate"},
		Metadata:  map[string]string{"z": "last", "a": "quote \" slash \\ <tag> & \n\t\x01 \u2028 é 🙂", "m": "\xff bad utf8"},
		ExpiresAt: &exp}
	for name, d := range map[string]verify.Decision{
		"not found":    decisionFor(verify.NotFound, nil, 0),
		"valid, bare":  decisionFor(verify.Valid, &store.Key{ID: "key_x", Owner: "o", Plan: "free"}, 0),
		"valid, full":  decisionFor(verify.Valid, full, 0),
		"rate limited": decisionFor(verify.RateLimited, full, 1500*time.Millisecond),
	} {
		want, err := json.Marshal(DecisionBody(&d))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendDecision(nil, &d); string(got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
}

// FuzzAppendString: for any string, the hand-written escaping equals
// encoding/json's.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "<>&", "\x00\x1f\x7f", "\u2028\u2029", "\xff\xfe", "é🙂", "a\nb\rc\td"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}
