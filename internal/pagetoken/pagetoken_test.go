package pagetoken

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

func TestDecodeReturnsTheEncodedPosition(t *testing.T) {
	for _, tc := range []struct {
		t  time.Time
		id string
	}{
		{time.Date(2025, 3, 1, 12, 30, 0, 123456000, time.UTC), "key-1"},
		{time.Time{}, "owner/key with spaces"},
	} {
		token := Encode(tc.t, tc.id)
		gotT, gotID, err := Decode(token, nil)
		if err != nil || !gotT.Equal(tc.t) || gotID != tc.id {
			t.Errorf("Decode(Encode(%v, %q)): got %v, %q, %v; want the same position", tc.t, tc.id, gotT, gotID, err)
		}
	}
}

// TestTokenFormatIsStable pins the format, so tokens handed out before a
// change keep working after it.
func TestTokenFormatIsStable(t *testing.T) {
	const token = "eyJ0IjoiMjAyNS0wMy0wMVQxMjozMDowMFoiLCJpIjoia2V5LTEifQ"
	if got := Encode(time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC), "key-1"); got != token {
		t.Errorf("Encode: got %q, want %q", got, token)
	}
}

func TestDecodeRejectsABadToken(t *testing.T) {
	noSlash := func(id string) bool { return !strings.Contains(id, "/") }
	for _, tc := range []struct {
		name  string
		token string
		valid func(string) bool
	}{
		{"not base64", "!!!", nil},
		{"not JSON", base64.RawURLEncoding.EncodeToString([]byte("key-1")), nil},
		{"no id", Encode(time.Now(), ""), nil},
		{"id the backend refuses", Encode(time.Now(), "a/b"), noSlash},
	} {
		_, _, err := Decode(tc.token, tc.valid)
		if e, ok := errs.As(err); !ok || e.Kind != errs.Invalid || e.Msg != "invalid page token" {
			t.Errorf("%s: Decode(%q): got %v, want Invalid \"invalid page token\"", tc.name, tc.token, err)
		}
	}
}
