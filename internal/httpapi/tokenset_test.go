package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

func TestTokenAuthAcceptsExactlyItsTokens(t *testing.T) {
	long := strings.Repeat("L", 300) // past the comparison's stack buffer
	a := NewTokenAuth("kpadm_first", "", "kpadm_second_longer", long)
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"kpadm_first", true},
		{"kpadm_second_longer", true},
		{long, true},
		{"kpadm_firs", false},      // a prefix
		{"kpadm_first_", false},    // a token as a prefix
		{"kpadm_first\x00", false}, // the padding the comparison adds
		{"kpadm_second_longe", false},
		{long + "L", false},
		{long[:299], false},
		{"KPADM_FIRST", false},
		{strings.Repeat("x", 1000), false},
	} {
		r := &http.Request{Header: http.Header{"Authorization": {"Bearer " + tc.token}}}
		actor, err := a.Authenticate(r)
		if tc.ok != (err == nil) || (tc.ok && actor != "admin") {
			t.Errorf("token %.20q (%d bytes): actor %q, err %v; want accepted=%v", tc.token, len(tc.token), actor, err, tc.ok)
		}
	}
	if _, err := NewTokenAuth("").Authenticate(&http.Request{Header: http.Header{"Authorization": {"Bearer x"}}}); err == nil {
		t.Error("a TokenAuth without tokens accepted a token")
	}
}
