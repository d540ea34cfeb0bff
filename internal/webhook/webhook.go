// Package webhook implements Standard Webhooks (standardwebhooks.com)
// signing and verification with the standard library: a webhook-id, a
// webhook-timestamp (unix seconds) and a webhook-signature header holding
// space-separated "v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>"
// signatures, any of which may match. Secrets are "whsec_<base64>".
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a timestamp may be from now.
const DefaultTolerance = 5 * time.Minute

const secretPrefix = "whsec_"

// Errors of Verify. None includes any part of the secret or signature.
var (
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrTimestamp      = errors.New("webhook: webhook-timestamp is not within 5 minutes of now")
	ErrSignature      = errors.New("webhook: no signature matches")
)

// Secret is a decoded signing secret.
type Secret []byte

// ParseSecret decodes a "whsec_<base64>" secret (the prefix is optional).
func ParseSecret(s string) (Secret, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
	if err != nil || len(b) < 16 {
		return nil, errors.New("webhook: a secret must be whsec_ followed by base64 of at least 16 bytes")
	}
	return b, nil
}

// NewSecret returns a new random secret in its "whsec_" form.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return secretPrefix + base64.StdEncoding.EncodeToString(b)
}

// Sign returns the "v1,<base64>" signature of a message.
func (s Secret) Sign(id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, s)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// SetHeaders signs body and sets the three headers on h.
func (s Secret) SetHeaders(h http.Header, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(id, ts, body))
}

// Verify checks a request's headers and body against any of secrets (more
// than one during a rotation), with timestamps accepted within tolerance
// of now. Signatures are compared in constant time.
func Verify(secrets []Secret, h http.Header, body []byte, now time.Time, tolerance time.Duration) (id string, err error) {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	sec, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return "", fmt.Errorf("webhook: webhook-timestamp must be unix seconds")
	}
	ts := time.Unix(sec, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return "", ErrTimestamp
	}
	for _, s := range secrets {
		want := s.Sign(id, ts, body)
		for _, got := range strings.Fields(sigs) {
			if hmac.Equal([]byte(got), []byte(want)) {
				return id, nil
			}
		}
	}
	return "", ErrSignature
}
