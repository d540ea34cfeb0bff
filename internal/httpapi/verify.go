package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ids"
	"github.com/keyplane/keyplane/internal/limiter"
	"github.com/keyplane/keyplane/internal/verify"
)

// VerifyBodyLimit bounds the body of POST /v1/verify.
const VerifyBodyLimit = 8 << 10

type verifyRequest struct {
	Key      string `json:"key"`
	Scope    string `json:"scope"`
	IP       string `json:"ip"`
	Referrer string `json:"referrer"`
	Units    int64  `json:"units"`
	Feature  string `json:"feature"`
}

// decodeVerifyRequest parses and validates a verify body.
func decodeVerifyRequest(body []byte) (verify.Request, error) {
	req, ok := scanVerifyRequest(body)
	if !ok {
		var err error
		if req, err = decodeVerifyJSON(body); err != nil {
			return verify.Request{}, err
		}
	}
	switch {
	case req.Key == "":
		return verify.Request{}, errs.E(errs.Invalid, "key is required")
	case req.Units < 0:
		return verify.Request{}, errs.E(errs.Invalid, "units must be >= 0")
	case req.Units > limiter.MaxValue:
		// The shared limiter's counters hold integers up to 2^53 exactly.
		return verify.Request{}, errs.E(errs.Invalid, "units must be at most 9007199254740992 (2^53)")
	case len(req.Scope) > 64:
		return verify.Request{}, errs.E(errs.Invalid, "scope must be at most 64 characters")
	case len(req.IP) > 64:
		return verify.Request{}, errs.E(errs.Invalid, "ip must be at most 64 characters")
	case len(req.Referrer) > 2048:
		return verify.Request{}, errs.E(errs.Invalid, "referrer must be at most 2048 characters")
	case req.Feature != "" && !ids.ValidFeature(req.Feature):
		return verify.Request{}, errs.E(errs.Invalid, "feature must be a feature name (%s) or absent", ids.FeatureSyntax)
	}
	return verify.Request{Key: req.Key, Scope: req.Scope, IP: req.IP, Referrer: req.Referrer, Units: req.Units, Feature: req.Feature}, nil
}

// decodeVerifyJSON is the strict encoding/json decoding of a verify body:
// the reference semantics, used whenever scanVerifyRequest declines.
func decodeVerifyJSON(body []byte) (verifyRequest, error) {
	var req verifyRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return req, errs.E(errs.Invalid, "request body is required: {\"key\": \"…\"}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, errs.E(errs.Invalid, "request body: %s", describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, errs.E(errs.Invalid, "request body: unexpected data after the JSON object")
	}
	return req, nil
}

// verifyBodies recycles the buffers verify requests are read into and
// decisions encoded in; the ResponseWriter copies what it is given.
var verifyBodies = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// decisions recycles the decisions of verify requests, which VerifyInto
// overwrites: over 2 KB each, mostly limit states a decision leaves unused.
var decisions = sync.Pool{New: func() any { return new(verify.Decision) }}

// jsonContentType is the Content-Type header value of JSON responses,
// shared: net/http never modifies a header's values.
var jsonContentType = []string{"application/json"}

// contentLengths holds the Content-Length values of bodies up to 4 KiB,
// which covers verify decisions, so that answering allocates no string.
var contentLengths = func() [][]string {
	vs := make([][]string, 4<<10+1)
	for n := range vs {
		vs[n] = []string{strconv.Itoa(n)}
	}
	return vs
}()

// contentLength returns the Content-Length header value for n bytes.
func contentLength(n int) []string {
	if n < len(contentLengths) {
		return contentLengths[n]
	}
	return []string{strconv.Itoa(n)}
}

func (s *Server) verifyKey(w http.ResponseWriter, r *http.Request, _ string) error {
	bp := verifyBodies.Get().(*[]byte)
	defer verifyBodies.Put(bp)
	body, err := readBodyInto(w, r, VerifyBodyLimit, (*bp)[:0])
	if err != nil {
		return err
	}
	*bp = body[:0]                        // keep a buffer that grew
	req, err := decodeVerifyRequest(body) // copies what it keeps
	if err != nil {
		return err
	}
	d := decisions.Get().(*verify.Decision)
	defer decisions.Put(d)
	if err := s.Verifier.VerifyInto(r.Context(), req, d); err != nil {
		return err
	}
	if d.Key != nil && !callerOf(r).Sees(d.Key.Owner) {
		*d = verify.Decision{Code: verify.NotFound} // another owner's key: as if it did not exist
	}
	if d.Code == verify.Valid {
		answeredValid(w)
	}
	if d.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((d.RetryAfter+time.Second-1)/time.Second), 10))
	}
	dp := verifyBodies.Get().(*[]byte)
	defer verifyBodies.Put(dp)
	buf := appendDecision((*dp)[:0], d.Code, d.Reason, d.Key, d.Limits(), d.Refused(), d.RetryAfter)
	buf = append(buf, '\n')
	*dp = buf[:0]
	// Canonical keys set directly, with values net/http only reads.
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = contentLength(len(buf))
	w.WriteHeader(http.StatusOK)
	w.Write(buf)
	return nil
}
