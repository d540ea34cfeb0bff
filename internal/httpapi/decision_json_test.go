package httpapi

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/verify"
)

// decisionResponse is the body of a verify answer, as docs/openapi.yaml's
// Decision describes it: the reference encoding appendDecision must match
// byte for byte, being this struct as encoding/json renders it. It never
// holds the secret.
type decisionResponse struct {
	Valid         bool                  `json:"valid"`
	Code          verify.Code           `json:"code"`
	Message       string                `json:"message,omitempty"`
	KeyID         string                `json:"key_id,omitempty"`
	Owner         string                `json:"owner,omitempty"`
	Plan          string                `json:"plan,omitempty"`
	Scopes        []string              `json:"scopes,omitempty"`
	Metadata      map[string]string     `json:"metadata,omitempty"`
	ExpiresAt     *time.Time            `json:"expires_at,omitempty"`
	Limits        map[string]limitState `json:"limits,omitempty"`
	OwnerLimits   map[string]limitState `json:"owner_limits,omitempty"`
	Feature       string                `json:"feature,omitempty"`
	FeatureLimits map[string]limitState `json:"feature_limits,omitempty"`
	Limit         *refusedLimit         `json:"limit,omitempty"`
	RetryAfter    int64                 `json:"retry_after,omitempty"` // seconds, with RATE_LIMITED
}

// refusedLimit is the limit that refused a decision.
type refusedLimit struct {
	Scope     string    `json:"scope"`
	Feature   string    `json:"feature,omitempty"`
	Name      string    `json:"name"`
	Limit     int64     `json:"limit"`
	Used      *int64    `json:"used,omitempty"`
	Remaining int64     `json:"remaining"`
	ResetAt   time.Time `json:"reset_at,omitzero"`
	Currency  string    `json:"currency,omitempty"`
	Source    string    `json:"source,omitempty"`
}

// decision is a verify decision's parts, as verifyKey hands them to
// appendDecision.
type decision struct {
	code       verify.Code
	message    string
	key        *store.Key
	limits     []verify.LimitState
	refused    int // index in limits, or -1
	retryAfter time.Duration
}

func (d decision) response() decisionResponse {
	out := decisionResponse{Valid: d.code == verify.Valid, Code: d.code, Message: d.message}
	if k := d.key; k != nil {
		out.KeyID, out.Owner, out.Plan, out.Scopes, out.Metadata, out.ExpiresAt = k.ID, k.Owner, k.Plan, k.Scopes, k.Metadata, k.ExpiresAt
	}
	for i, l := range d.limits {
		j := limitState{Limit: l.Limit, Remaining: l.Remaining, ResetAt: l.ResetAt, Currency: l.Currency}
		if l.HasUsed {
			used := l.Used
			j.Used = &used
		}
		group := &out.Limits
		switch {
		case l.Scope == verify.ScopeOwner && l.Feature != "":
			group, out.Feature = &out.FeatureLimits, l.Feature
		case l.Scope == verify.ScopeOwner:
			group = &out.OwnerLimits
		}
		if *group == nil {
			*group = map[string]limitState{}
		}
		(*group)[l.Name] = j
		if i == d.refused {
			out.Limit = &refusedLimit{Scope: l.Scope, Feature: l.Feature, Name: l.Name, Limit: l.Limit, Used: j.Used,
				Remaining: l.Remaining, ResetAt: l.ResetAt, Currency: l.Currency, Source: l.Source}
		}
	}
	if d.retryAfter > 0 {
		out.RetryAfter = int64((d.retryAfter + time.Second - 1) / time.Second)
	}
	return out
}

// matchesEncodingJSON reports how appendDecision's encoding of d differs
// from encoding/json's of d.response(), if it does.
func matchesEncodingJSON(d decision) error {
	want, err := json.Marshal(d.response())
	if err != nil {
		return err
	}
	if got := appendDecision(nil, d.code, d.message, d.key, d.limits, d.refused, d.retryAfter); string(got) != string(want) {
		return fmt.Errorf("\n got %s\nwant %s", got, want)
	}
	return nil
}

var (
	codes = []verify.Code{verify.Valid, verify.NotFound, verify.Disabled, verify.Revoked, verify.Expired,
		verify.Forbidden, verify.InsufficientPermissions, verify.RateLimited, verify.UsageExceeded}
	// awkward are strings that need escaping, or look like JSON.
	awkward = []string{"", "plain", `quote " slash \`, "<tag> & amp", "\n\t\x01\x1f", "\u2028\u2029", "é🙂", "\xff bad utf8", `{"a":1}`}
	// limitNames are every limit name verify can report.
	limitNames = func() []string {
		var out []string
		for _, m := range plan.Metrics {
			for _, w := range plan.LimitWindows {
				out = append(out, plan.LimitName(m, w))
			}
		}
		return out
	}()
)

// genDecision returns a decision made from r: any code, with or without a
// key (scopes, metadata, expiry), and any subset of the limit names in any
// order, each with or without metered usage, including the extremes of
// int64, zero reset times and times in other zones. Every part varies
// independently, so a few thousand draws cover their combinations.
func genDecision(r *rand.Rand) decision {
	d := decision{code: codes[r.IntN(len(codes))], refused: -1}
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	if r.IntN(2) == 0 {
		d.message = pick(awkward)
	}
	if d.code != verify.NotFound || r.IntN(4) == 0 {
		k := &store.Key{ID: "key_" + pick(awkward), Owner: pick(awkward), Plan: pick([]string{"", "free", "pro", pick(awkward)})}
		for range r.IntN(4) {
			k.Scopes = append(k.Scopes, pick(awkward))
		}
		if n := r.IntN(5); n > 0 {
			k.Metadata = map[string]string{}
			for range n {
				k.Metadata[pick(awkward)+pick(awkward)] = pick(awkward)
			}
		}
		if r.IntN(2) == 0 {
			t := genTime(r)
			k.ExpiresAt = &t
		}
		d.key = k
	}
	names := append([]string(nil), limitNames...)
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, name := range names[:r.IntN(len(names)+1)] {
		l := verify.LimitState{Scope: verify.ScopeKey, Source: pick([]string{"plan free", verify.SourceKeyOverride}),
			Name: name, Limit: genInt(r), Remaining: genInt(r), ResetAt: genTime(r)}
		if r.IntN(2) == 0 {
			l.Used, l.HasUsed = genInt(r), true
		}
		d.limits = append(d.limits, l)
	}
	// The owner's and one feature's per-minute limits, in verify's order.
	feature := pick(awkward[1:])
	for _, f := range []string{"", feature} {
		for _, name := range []string{"requests_per_minute", "units_per_minute"} {
			if r.IntN(3) == 0 {
				d.limits = append(d.limits, verify.LimitState{Scope: verify.ScopeOwner, Feature: f,
					Source: pick([]string{"plan " + pick(awkward), verify.SourceOwnerOverride}),
					Name:   name, Limit: genInt(r), Remaining: genInt(r), ResetAt: genTime(r)})
			}
		}
	}
	// The owner's money limits: micro-unit figures with a currency,
	// credits without a reset.
	if r.IntN(3) == 0 {
		d.limits = append(d.limits, verify.LimitState{Scope: verify.ScopeOwner, Source: verify.SourceOwnerOverride, Name: verify.LimitSpendPerMonth,
			Limit: genInt(r), Used: genInt(r), HasUsed: true, Remaining: genInt(r), ResetAt: genTime(r), Currency: pick([]string{"USD", "EUR"})})
	}
	if r.IntN(3) == 0 {
		d.limits = append(d.limits, verify.LimitState{Scope: verify.ScopeOwner, Source: verify.SourceCredits, Name: verify.LimitCredits,
			Limit: genInt(r), Used: genInt(r), HasUsed: true, Remaining: genInt(r), Currency: "USD"})
	}
	if len(d.limits) > 0 && r.IntN(2) == 0 {
		d.refused = r.IntN(len(d.limits))
	}
	switch r.IntN(4) {
	case 0:
		d.retryAfter = time.Duration(r.Int64N(int64(48 * time.Hour)))
	case 1:
		d.retryAfter = time.Duration(r.IntN(3)) * time.Second // on and next to whole seconds
	}
	return d
}

func genInt(r *rand.Rand) int64 {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return math.MaxInt64
	case 2:
		return math.MinInt64
	case 3:
		return -r.Int64N(1000)
	}
	return r.Int64N(1 << uint(r.IntN(62)+1)) // magnitudes of every size
}

func genTime(r *rand.Rand) time.Time {
	switch r.IntN(5) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(r.Int64N(1<<34), 0).UTC()
	case 2:
		return time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).In(time.FixedZone("", (r.IntN(48)-24)*1800))
	}
	return time.Date(2030, 1, 2, 3, 4, 5, r.IntN(1e9), time.UTC)
}

func TestAppendDecisionMatchesEncodingJSON(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	reset := time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC)
	day := time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC)
	full := &store.Key{ID: "key_0123456789abcdef", Owner: "acct_1", Plan: "pro", Scopes: []string{"embed", "generate"},
		Metadata:  map[string]string{"z": "last", "a": "quote \" slash \\ <tag> & \n\t\x01 \u2028 é 🙂", "m": "\xff bad utf8"},
		ExpiresAt: &exp}
	perMinute := verify.LimitState{Name: "requests_per_minute", Limit: 60, Remaining: 59, ResetAt: reset}
	perDay := verify.LimitState{Name: "requests_per_day", Limit: 1500, Used: 12, HasUsed: true, Remaining: 1488, ResetAt: day}
	unitsPerDay := verify.LimitState{Name: "units_per_day", Limit: 100, Used: 0, HasUsed: true, Remaining: 100, ResetAt: day}
	ownerPerMinute := verify.LimitState{Scope: verify.ScopeOwner, Source: "plan tier1", Name: "requests_per_minute", Limit: 3, Remaining: 0, ResetAt: reset}
	featurePerMinute := verify.LimitState{Scope: verify.ScopeOwner, Feature: "pro-model", Source: verify.SourceOwnerOverride, Name: "requests_per_minute", Limit: 1, Remaining: 0, ResetAt: reset}
	for name, d := range map[string]decision{
		"not found":   {code: verify.NotFound, refused: -1},
		"valid, bare": {code: verify.Valid, key: &store.Key{ID: "key_x", Owner: "o", Plan: "free"}, refused: -1},
		"valid, full": {code: verify.Valid, key: full, refused: -1},
		"refused by the owner's feature limit": {code: verify.RateLimited, key: full, retryAfter: time.Second,
			limits: []verify.LimitState{perMinute, ownerPerMinute, featurePerMinute}, refused: 2},
		"refused by the owner's limit": {code: verify.RateLimited, key: full, retryAfter: time.Second,
			limits: []verify.LimitState{perMinute, ownerPerMinute}, refused: 1},
		// Limits in verify's order (per-minute last), which is not the
		// order of their names: the encoding sorts them, as encoding/json
		// sorts a map's keys.
		"valid, limits": {code: verify.Valid, key: full, limits: []verify.LimitState{perDay, unitsPerDay, perMinute}, refused: -1},
		"rate limited": {code: verify.RateLimited, key: full, retryAfter: 1500 * time.Millisecond,
			limits: []verify.LimitState{perDay, {Name: "requests_per_minute", Limit: 60, Remaining: 0, ResetAt: reset}}, refused: 1},
		"usage exceeded": {code: verify.UsageExceeded, key: full,
			limits: []verify.LimitState{{Name: "requests_per_day", Limit: 1500, Used: 1500, HasUsed: true, Remaining: 0, ResetAt: day}, perMinute}, refused: 0},
		"quota with no usage yet": {code: verify.Valid, key: full, limits: []verify.LimitState{unitsPerDay}, refused: -1},
	} {
		if err := matchesEncodingJSON(d); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestAppendDecisionMatchesEncodingJSONOnGeneratedDecisions compares the
// encodings of thousands of generated decisions, limits and quota states
// included.
func TestAppendDecisionMatchesEncodingJSONOnGeneratedDecisions(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	withLimits, withUsed := 0, 0
	for i := range 5000 {
		d := genDecision(r)
		if err := matchesEncodingJSON(d); err != nil {
			t.Fatalf("decision %d: %v", i, err)
		}
		if len(d.limits) > 0 {
			withLimits++
		}
		for _, l := range d.limits {
			if l.HasUsed {
				withUsed++
				break
			}
		}
	}
	if withLimits < 1000 || withUsed < 1000 {
		t.Errorf("only %d decisions had limits and %d quota states: the generator does not cover them", withLimits, withUsed)
	}
}

// FuzzAppendDecision: for any generated decision, with any strings for
// the key's fields, the hand-written encoding equals encoding/json's.
func FuzzAppendDecision(f *testing.F) {
	for i := range 16 {
		f.Add(uint64(i), "", "")
	}
	f.Add(uint64(99), "quote \" slash \\", "\xff\u2028<&>")
	f.Fuzz(func(t *testing.T, seed uint64, owner, metadata string) {
		d := genDecision(rand.New(rand.NewPCG(seed, seed>>32)))
		if d.key != nil {
			d.key.Owner = owner
			d.key.Metadata = map[string]string{metadata: owner, owner: metadata}
		}
		if err := matchesEncodingJSON(d); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAppendDecisionAllocatesNothing: encoding a decision into a buffer
// with room for it allocates nothing, even with every limit and the most
// metadata a key can have.
func TestAppendDecisionAllocatesNothing(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	k := &store.Key{ID: "key_0123456789abcdef", Owner: "acct_1", Plan: "pro", Scopes: []string{"embed", "generate"},
		Metadata: map[string]string{}, ExpiresAt: &exp}
	for i := range keys.MaxMetadataPairs {
		k.Metadata[fmt.Sprintf("name%02d", i)] = "value"
	}
	var limits []verify.LimitState
	for i, name := range limitNames {
		limits = append(limits, verify.LimitState{Scope: verify.ScopeKey, Source: "plan pro", Name: name, Limit: 100, Used: int64(i), HasUsed: i%2 == 0, Remaining: 50, ResetAt: exp})
	}
	for _, f := range []string{"", "pro-model"} {
		for _, name := range []string{"requests_per_minute", "units_per_minute"} {
			limits = append(limits, verify.LimitState{Scope: verify.ScopeOwner, Feature: f, Source: verify.SourceOwnerOverride, Name: name, Limit: 10, Remaining: 0, ResetAt: exp})
		}
	}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		buf = appendDecision(buf[:0], verify.RateLimited, "", k, limits, len(limits)-1, time.Second)
	}); n != 0 {
		t.Errorf("appendDecision allocates %v times per decision, want 0", n)
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

// FuzzAppendTime: the whole-second UTC fast path writes what AppendFormat
// writes, and any other time goes through AppendFormat.
func FuzzAppendTime(f *testing.F) {
	for _, sec := range []int64{0, 59, 86399, 86400, 951782400, 951868800, 1796601600, 4107542400, 253402300799, 253402300800, -1} {
		f.Add(sec, int64(0), false)
	}
	f.Add(int64(1796601600), int64(5), false)
	f.Add(int64(1796601600), int64(0), true)
	f.Fuzz(func(t *testing.T, sec, nsec int64, local bool) {
		tm := time.Unix(sec, nsec).UTC()
		if local {
			tm = tm.In(time.FixedZone("X", 3600))
		}
		want := `"` + tm.Format(time.RFC3339Nano) + `"`
		if tm.Year() < 0 || tm.Year() > 9999 {
			return // encoding/json refuses them; appendTime is never given one
		}
		if got := string(appendTime(nil, tm)); got != want {
			t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	})
}

func TestAppendTimeEveryDayOfFourCenturies(t *testing.T) {
	for d := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() < 2370; d = d.AddDate(0, 0, 1) {
		for _, tm := range []time.Time{d, d.Add(23*time.Hour + 59*time.Minute + 59*time.Second)} {
			if got, want := string(appendTime(nil, tm)), `"`+tm.Format(time.RFC3339Nano)+`"`; got != want {
				t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
			}
		}
	}
}
