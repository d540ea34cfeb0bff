package webhook

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

// The example from the Standard Webhooks specification's test vectors.
func TestSignMatchesSpecVector(t *testing.T) {
	s, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	old, _ := ParseSecret(NewSecret())
	cur, _ := ParseSecret(NewSecret())
	body := []byte(`{"events": []}`)
	signed := func(s Secret, ts time.Time) http.Header {
		h := http.Header{}
		s.SetHeaders(h, "msg_1", ts, body)
		return h
	}
	for _, tc := range []struct {
		name    string
		h       http.Header
		secrets []Secret
		body    []byte
		want    error
	}{
		{"valid", signed(cur, now), []Secret{cur}, body, nil},
		{"rotation: old secret still accepted", signed(old, now), []Secret{cur, old}, body, nil},
		{"wrong secret", signed(old, now), []Secret{cur}, body, ErrSignature},
		{"tampered body", signed(cur, now), []Secret{cur}, []byte(`{"events": [1]}`), ErrSignature},
		{"too old", signed(cur, now.Add(-6*time.Minute)), []Secret{cur}, body, ErrTimestamp},
		{"too new", signed(cur, now.Add(6*time.Minute)), []Secret{cur}, body, ErrTimestamp},
		{"within tolerance", signed(cur, now.Add(-4*time.Minute)), []Secret{cur}, body, nil},
		{"no headers", http.Header{}, []Secret{cur}, body, ErrMissingHeaders},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.secrets, tc.h, tc.body, now, DefaultTolerance)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	h := signed(cur, now)
	h.Set(HeaderSignature, "v1,bogus "+h.Get(HeaderSignature))
	if _, err := Verify([]Secret{cur}, h, body, now, DefaultTolerance); err != nil {
		t.Errorf("a list with one matching signature = %v, want nil", err)
	}
}

func TestParseSecretRejects(t *testing.T) {
	for _, s := range []string{"", "whsec_", "whsec_!!!", "whsec_c2hvcnQ="} {
		if _, err := ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) accepted", s)
		}
	}
}
