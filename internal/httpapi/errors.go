package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/keyplane/keyplane/internal/errs"
)

// status maps an error kind to its HTTP status (errs.HTTPStatus, the
// only such mapping in keyplane).
func status(k errs.Kind) int { return errs.HTTPStatus(k) }

// errorBody is every error answer: {"error": {"code", "message",
// "details"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string       `json:"code"` // a canonical code: errs.Kind's name, or METHOD_NOT_ALLOWED
	Message string       `json:"message"`
	Details []fieldError `json:"details,omitempty"`
}

// fieldError says what is wrong with one field of the request.
type fieldError struct {
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// writeError answers with err's status and a client-safe body. Internal
// and Unavailable errors get a fixed message: their text is logged, never
// sent. A canceled request context is logged at a lower severity.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	kind := errs.KindOf(err)
	body := errorDetail{Code: kind.String()}
	e, _ := errs.As(err)
	switch kind {
	case errs.Internal:
		body.Message = "internal error"
	case errs.Unavailable:
		body.Message = "service temporarily unavailable; retry later"
		if e != nil && e.Msg != "" {
			body.Message = e.Msg
		}
	default:
		body.Message = e.Msg
		for _, d := range e.Details {
			body.Details = append(body.Details, fieldError{Field: d.Field, Message: d.Message})
		}
	}
	if e != nil && e.RetryAfter > 0 {
		secs := int((e.RetryAfter + 999e6) / 1e9) // round up
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	if kind == errs.Internal || kind == errs.Unavailable {
		lvl := slog.LevelError
		if errors.Is(err, context.Canceled) {
			lvl = slog.LevelWarn
		}
		log.Log(r.Context(), lvl, "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeJSON(w, status(kind), errorBody{Error: body})
}
