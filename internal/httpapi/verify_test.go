package httpapi

import (
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/errs"
)

func TestDecodeVerifyRequest(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
		msg  string
	}{
		{`{"key": "kp_x", "scope": "generate", "ip": "1.2.3.4", "referrer": "https://a.b/", "units": 5}`, true, ""},
		{`{"key": "kp_x"}`, true, ""},
		{``, false, "body is required"},
		{`{}`, false, "key is required"},
		{`{"key": "k", "units": -1}`, false, "units must be >= 0"},
		{`{"key": "k", "units": 9007199254740992}`, true, ""},
		{`{"key": "k", "units": 9007199254740993}`, false, "units must be at most 9007199254740992 (2^53)"},
		{`{"key": "k", "units": 9223372036854775807}`, false, "units must be at most 9007199254740992 (2^53)"},
		{`{"key": "k", "units": 1.5}`, false, `"units" must be a JSON number`},
		{`{"key": "k", "extra": 1}`, false, `unknown field "extra"`},
		{`{"key": "k"} x`, false, "after the JSON object"},
		{`[1]`, false, "JSON object"},
	} {
		_, err := decodeVerifyRequest([]byte(tc.body))
		if tc.ok != (err == nil) || (err != nil && (!errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), tc.msg))) {
			t.Errorf("decode(%s) = %v; want ok=%v, message containing %q", tc.body, err, tc.ok, tc.msg)
		}
	}
}

// FuzzDecodeVerifyRequest: whatever the body, decoding never panics, and
// any failure is a client error (400), never an internal one.
func FuzzDecodeVerifyRequest(f *testing.F) {
	for _, s := range []string{
		`{"key": "kp_live_abc", "scope": "generate", "ip": "::1", "referrer": "x", "units": 3}`,
		`{"key": ""}`, `{"units": -9223372036854775808}`, `{"key": "\u0000"}`, `null`, `{"key": "a"}{}`,
		`{"key": 1e400}`, `{"key":"k","units":99999999999999999999}`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeVerifyRequest(body)
		if err != nil {
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("decode(%q) = %v: not a client error", body, err)
			}
			return
		}
		if req.Key == "" || req.Units < 0 {
			t.Fatalf("decode(%q) accepted %+v", body, req)
		}
	})
}

// FuzzScanVerifyRequest: wherever the fast scanner accepts a body,
// encoding/json accepts it too and decodes the same request.
func FuzzScanVerifyRequest(f *testing.F) {
	for _, s := range []string{
		`{"key": "kp_live_abc", "scope": "generate", "ip": "::1", "referrer": "https://a.b/c", "units": 3}`,
		`{"key":"k","units":-0}`, `{"key":"k","units":007}`, `{"KEY":"k"}`, `{"key":"k","key":"l"}`,
		`{"key":"\u00e9"}`, `{"key":"é"}`, "{\"key\":\"\xff\"}", `{"units":9223372036854775807}`,
		`{"units":9223372036854775808}`, `{"units":1e3}`, `{}`, ` { } `, `{"key":"k",}`, `{"key":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := scanVerifyRequest(body)
		if !ok {
			return
		}
		slow, err := decodeVerifyJSON(body)
		if err != nil {
			t.Fatalf("scanner accepted %q, encoding/json refused it: %v", body, err)
		}
		if fast != slow {
			t.Fatalf("%q: scanner %+v, encoding/json %+v", body, fast, slow)
		}
	})
}
