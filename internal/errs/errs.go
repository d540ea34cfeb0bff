package errs

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds, with the HTTP status httpapi gives each.
const (
	Internal           Kind = iota // 500: a bug or an unexpected backend answer
	Invalid                        // 400: the request is malformed; the message says what to fix
	Unauthenticated                // 401
	PermissionDenied               // 403
	NotFound                       // 404
	Exists                         // 409 ALREADY_EXISTS
	Conflict                       // 409 ABORTED: concurrent work on the same thing (retry later)
	FailedPrecondition             // 409: the resource's state forbids the operation
	TooLarge                       // 413
	Unprocessable                  // 422: e.g. an Idempotency-Key reused with a different body
	Exhausted                      // 429: the caller exceeded a limit
	Unavailable                    // 503: a backend is down or over its quota; retry later
)

var kindNames = [...]string{
	Internal:           "INTERNAL",
	Invalid:            "INVALID_ARGUMENT",
	Unauthenticated:    "UNAUTHENTICATED",
	PermissionDenied:   "PERMISSION_DENIED",
	NotFound:           "NOT_FOUND",
	Exists:             "ALREADY_EXISTS",
	Conflict:           "ABORTED",
	FailedPrecondition: "FAILED_PRECONDITION",
	TooLarge:           "PAYLOAD_TOO_LARGE",
	Unprocessable:      "UNPROCESSABLE",
	Exhausted:          "RESOURCE_EXHAUSTED",
	Unavailable:        "UNAVAILABLE",
}

// String returns the canonical code name used in API error bodies.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "INTERNAL"
	}
	return kindNames[k]
}

// Detail is one machine-readable detail of an error, e.g. which field of
// which event was invalid.
type Detail struct {
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// Error is a classified error. Msg is safe to show to a client; Err is the
// underlying cause, which is logged but never shown.
type Error struct {
	Kind       Kind
	Msg        string
	Details    []Detail
	RetryAfter time.Duration // for Conflict, Exhausted and Unavailable: when to try again
	Err        error
}

func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Msg
	case e.Msg == "":
		return e.Err.Error()
	default:
		return e.Msg + ": " + e.Err.Error()
	}
}

func (e *Error) Unwrap() error { return e.Err }

// E returns an error of kind k with a client-safe message.
func E(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies err as kind k with a client-safe message. The text of err
// itself is kept for logs only.
func Wrap(k Kind, err error, msg string) *Error {
	return &Error{Kind: k, Msg: msg, Err: err}
}

// KindOf reports the kind of the outermost *Error in err's chain, or
// Internal if there is none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// As returns the outermost *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
