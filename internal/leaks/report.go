package leaks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/keyplane/keyplane/internal/errs"
)

// Bounds of one report.
const (
	// MaxBodyBytes bounds a report's body.
	MaxBodyBytes = 1 << 20
	// MaxEntries bounds the entries of one report.
	MaxEntries = 1000
	// MaxTokenLen, MaxTypeLen, MaxURLLen and MaxSourceLen bound an entry's
	// fields, in bytes.
	MaxTokenLen  = 1024
	MaxTypeLen   = 256
	MaxURLLen    = 4096
	MaxSourceLen = 128
	// maxDetails bounds the per-entry problems one error lists.
	maxDetails = 20
)

// Entry is one reported token.
type Entry struct {
	Token  string `json:"token"`            // the matched string: never logged or stored
	Type   string `json:"type,omitempty"`   // the token type the scanner matched
	URL    string `json:"url,omitempty"`    // where it was found
	Source string `json:"source,omitempty"` // the kind of place (content, commit, …), lowercased by Parse
}

// Strictness says whether Parse rejects fields it does not know.
type Strictness bool

// Strictness values.
const (
	// Lenient ignores unknown fields: GitHub may add fields to its
	// reports, and a report GitHub cannot deliver protects nobody.
	Lenient Strictness = false
	// Strict rejects unknown fields, as every keyplane route does.
	Strict Strictness = true
)

// Parse decodes a report: a JSON array of 1 to MaxEntries entries, each
// with a non-empty token and every field a string within its bound.
// Source is lowercased (GitHub's values are compared case-insensitively).
// The whole report is checked: any bad entry is an Invalid error whose
// details name each bad entry by index, and no entry is returned. Error
// messages never echo the input.
func Parse(body []byte, strictness Strictness) ([]Entry, error) {
	if len(body) > MaxBodyBytes {
		return nil, errs.E(errs.TooLarge, "a leak report is at most %d bytes, got %d", MaxBodyBytes, len(body))
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, errs.E(errs.Invalid, `the report must be a JSON array of {"token", "type", "url", "source"} objects`)
	}
	var raw []json.RawMessage
	if err := decodeOne(trimmed, &raw, false); err != nil {
		return nil, errs.E(errs.Invalid, "the report: %s", err)
	}
	switch {
	case len(raw) == 0:
		return nil, errs.E(errs.Invalid, "the report is empty: send 1 to %d entries", MaxEntries)
	case len(raw) > MaxEntries:
		return nil, errs.E(errs.Invalid, "the report has %d entries; send at most %d per request", len(raw), MaxEntries)
	}
	entries := make([]Entry, len(raw))
	var problems []errs.Detail
	bad := 0
	for i, r := range raw {
		msg := parseEntry(r, strictness, &entries[i])
		if msg == "" {
			continue
		}
		bad++
		if len(problems) < maxDetails {
			problems = append(problems, errs.Detail{Field: fmt.Sprintf("[%d]", i), Message: msg})
		}
	}
	if bad > 0 {
		e := errs.E(errs.Invalid, "%d of the report's %d entries are invalid, the first: %s %s; nothing was done",
			bad, len(raw), problems[0].Field, problems[0].Message)
		e.Details = problems
		return nil, e
	}
	return entries, nil
}

// parseEntry decodes one entry into e, or says what is wrong with it.
func parseEntry(raw json.RawMessage, strictness Strictness, e *Entry) string {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return "an entry must be a JSON object"
	}
	if err := decodeOne(raw, e, bool(strictness)); err != nil {
		return err.Error()
	}
	for _, f := range []struct {
		name  string
		value string
		max   int
	}{{"token", e.Token, MaxTokenLen}, {"type", e.Type, MaxTypeLen}, {"url", e.URL, MaxURLLen}, {"source", e.Source, MaxSourceLen}} {
		switch {
		case len(f.value) > f.max:
			return fmt.Sprintf("%s is %d bytes; at most %d", f.name, len(f.value), f.max)
		case !utf8.ValidString(f.value):
			return f.name + " is not valid UTF-8"
		}
	}
	if e.Token == "" {
		return "token is required"
	}
	e.Source = strings.ToLower(e.Source)
	return ""
}

// decodeOne decodes exactly one JSON value from b into v.
func decodeOne(b []byte, v any, disallowUnknown bool) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if disallowUnknown {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return errors.New(describe(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// describe says what a decoding error found, without echoing the input.
func describe(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%s must be a JSON string", typ.Field)
		}
		return "wrong JSON type"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ") + ` (fields: token, type, url, source)`
	}
	return "invalid JSON value"
}
