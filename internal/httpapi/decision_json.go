package httpapi

import (
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/verify"
)

// appendDecision appends the JSON of a verify decision (docs/openapi.yaml, Decision) to b without
// reflection or maps: verify answers every request of a customer's API,
// and encoding/json was its largest cost after net/http itself
// (docs/benchmarks.md). TestAppendDecisionMatchesEncodingJSON keeps the two
// encodings equal.
//
// It takes the decision's parts (d.Code, d.Reason, d.Key, d.Limits(), d.Refused(), d.RetryAfter)
// rather than the decision, whose limits only package verify can set, so
// that the test can encode any limits.
func appendDecision(b []byte, code verify.Code, message string, k *store.Key, ls []verify.LimitState, refused int, retryAfter time.Duration) []byte {
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, code == verify.Valid)
	b = append(b, `,"code":`...)
	b = appendString(b, string(code))
	b = appendField(b, "message", message)
	if k != nil {
		b = appendField(b, "key_id", k.ID)
		b = appendField(b, "owner", k.Owner)
		b = appendField(b, "plan", k.Plan)
		if len(k.Scopes) > 0 {
			b = append(b, `,"scopes":[`...)
			for i, s := range k.Scopes {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, s)
			}
			b = append(b, ']')
		}
		if len(k.Metadata) > 0 {
			b = append(b, `,"metadata":{`...)
			// A fixed-size array stays on the stack, where a slice made
			// with a variable length stays only up to 32 bytes. A key has
			// at most MaxMetadataPairs; more would still encode, allocating.
			var buf [keys.MaxMetadataPairs]string
			names := buf[:0]
			for name := range k.Metadata {
				names = append(names, name)
			}
			slices.Sort(names)
			for i, name := range names {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, name)
				b = append(b, ':')
				b = appendString(b, k.Metadata[name])
			}
			b = append(b, '}')
		}
		if k.ExpiresAt != nil {
			b = append(b, `,"expires_at":`...)
			b = appendTime(b, *k.ExpiresAt)
		}
	}
	b = appendLimits(b, "limits", ls, groupKey)
	b = appendLimits(b, "owner_limits", ls, groupOwner)
	for _, l := range ls {
		if l.Feature != "" {
			b = appendField(b, "feature", l.Feature)
			b = appendLimits(b, "feature_limits", ls, groupFeature)
			break
		}
	}
	if refused >= 0 && refused < len(ls) {
		l := ls[refused]
		b = append(b, `,"limit":{"scope":`...)
		b = appendString(b, l.Scope)
		b = appendField(b, "feature", l.Feature)
		b = appendField(b, "name", l.Name)
		b = append(b, ',')
		b = appendLimitState(b, l)
		b = appendField(b, "source", l.Source)
		b = append(b, '}')
	}
	if retryAfter > 0 {
		b = append(b, `,"retry_after":`...)
		b = strconv.AppendInt(b, int64((retryAfter+time.Second-1)/time.Second), 10)
	}
	return append(b, '}')
}

// The groups of a decision's limits, each encoded as one JSON object by
// limit name: the key's own (a state without a scope is the key's), its
// owner's, and its owner's on the request's feature.
const (
	groupKey = iota
	groupOwner
	groupFeature
)

func inGroup(l *verify.LimitState, g int) bool {
	switch g {
	case groupKey:
		return l.Scope != verify.ScopeOwner
	case groupOwner:
		return l.Scope == verify.ScopeOwner && l.Feature == ""
	}
	return l.Scope == verify.ScopeOwner && l.Feature != ""
}

// appendLimits appends ,"field":{name: state, …} for the limits of group
// g, sorted by name as encoding/json sorts a map, or nothing if there are
// none.
func appendLimits(b []byte, field string, ls []verify.LimitState, g int) []byte {
	// On the stack, like the metadata's names.
	var buf [verify.MaxLimits]int
	order := buf[:0]
	for i := range ls {
		if inGroup(&ls[i], g) {
			order = append(order, i)
		}
	}
	if len(order) == 0 {
		return b
	}
	slices.SortFunc(order, func(x, y int) int { return strings.Compare(ls[x].Name, ls[y].Name) })
	b = append(b, ',', '"')
	b = append(b, field...)
	b = append(b, '"', ':', '{')
	for n, i := range order {
		if n > 0 {
			b = append(b, ',')
		}
		b = appendString(b, ls[i].Name)
		b = append(b, ':', '{')
		b = appendLimitState(b, ls[i])
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendLimitState appends "limit":…,"used":…,"remaining":…,"reset_at":…,"currency":…
// (reset_at omitted for credits, which do not reset; currency only for money).
func appendLimitState(b []byte, l verify.LimitState) []byte {
	b = append(b, `"limit":`...)
	b = strconv.AppendInt(b, l.Limit, 10)
	if l.HasUsed {
		b = append(b, `,"used":`...)
		b = strconv.AppendInt(b, l.Used, 10)
	}
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, l.Remaining, 10)
	if !l.ResetAt.IsZero() {
		b = append(b, `,"reset_at":`...)
		b = appendTime(b, l.ResetAt)
	}
	return appendField(b, "currency", l.Currency)
}

// appendField appends ,"name":"value" unless value is empty (omitempty).
func appendField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// appendTime appends t as encoding/json does (RFC 3339 with nanoseconds).
// A limit's reset_at is a whole second in UTC, which every decision
// carries several of: that case is written from the Unix time directly,
// without AppendFormat's general path (FuzzAppendTime keeps them equal).
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	if sec := t.Unix(); t.Location() == time.UTC && t.Nanosecond() == 0 && sec >= 0 && sec < maxUnix4DigitYear {
		b = appendUTCSecond(b, sec)
	} else {
		b = t.AppendFormat(b, time.RFC3339Nano)
	}
	return append(b, '"')
}

// maxUnix4DigitYear is 10000-01-01T00:00:00Z.
const maxUnix4DigitYear = 253402300800

// appendUTCSecond appends YYYY-MM-DDTHH:MM:SSZ for a Unix time from 1970
// through year 9999, with the civil-from-days conversion of Howard
// Hinnant's date algorithms (days counted in 400-year eras from March 1st).
func appendUTCSecond(b []byte, sec int64) []byte {
	days, rem := sec/86400, sec%86400
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day := doy - (153*mp+2)/5 + 1
	month := mp + 3
	if month > 12 {
		month -= 12
	}
	year := yoe + era*400
	if month <= 2 {
		year++
	}
	two := func(b []byte, v int64) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }
	b = two(b, year/100)
	b = two(b, year%100)
	b = append(b, '-')
	b = two(b, month)
	b = append(b, '-')
	b = two(b, day)
	b = append(b, 'T')
	b = two(b, rem/3600)
	b = append(b, ':')
	b = two(b, rem/60%60)
	b = append(b, ':')
	b = two(b, rem%60)
	return append(b, 'Z')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json does:
// quotes, backslashes, control characters, <, >, &, U+2028 and U+2029;
// invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
