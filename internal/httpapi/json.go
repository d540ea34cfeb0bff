package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/keyplane/keyplane/internal/errs"
)

// writeJSON encodes v as the response body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"INTERNAL","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// readBody reads at most limit bytes of the request body: 413 above it.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return readBodyInto(w, r, limit, nil)
}

// readBodyInto is readBody appending to buf, which it grows as needed.
// A body whose Content-Length is within limit is read as it is: net/http
// (HTTP/1.1 and HTTP/2 alike) delivers no more than the declared length,
// so the MaxBytesReader, one allocation per request, is only for bodies
// declared larger (413, and the connection closed after the answer) or
// of unknown length.
func readBodyInto(w http.ResponseWriter, r *http.Request, limit int64, buf []byte) ([]byte, error) {
	rd := r.Body
	if r.ContentLength < 0 || r.ContentLength > limit {
		rd = http.MaxBytesReader(w, r.Body, limit)
	}
	body, err := readAll(rd, buf)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errs.E(errs.TooLarge, "request body is larger than %d bytes", limit)
		}
		return nil, errs.Wrap(errs.Invalid, err, "reading the request body failed")
	}
	return body, nil
}

// readAll is io.ReadAll appending to b.
func readAll(rd io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// decode reads at most limit bytes of JSON into v, rejecting unknown
// fields and trailing data. An empty body leaves v unchanged when
// optional is true.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any, optional bool) error {
	body, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return errs.E(errs.Invalid, "request body is required: send a JSON object")
	}
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		// encoding/json leaves v unchanged for null: it is not an object.
		return errs.E(errs.Invalid, "request body must be a JSON object, not null")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errs.E(errs.Invalid, "request body: %s", describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errs.E(errs.Invalid, "request body: unexpected data after the JSON object")
	}
	return nil
}

// describeJSONError turns a decoding error into a message that says what to
// fix, without echoing the input.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("expected a JSON %s", jsonKind(typ.Type.Kind().String()))
		}
		return fmt.Sprintf("field %q must be a JSON %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	var ue *errs.Error
	if errors.As(err, &ue) {
		return ue.Msg
	}
	if strings.Contains(err.Error(), "parsing time") {
		return "timestamps must be RFC 3339, like 2030-01-02T15:04:05Z"
	}
	return "invalid JSON value"
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	case "bool":
		return "boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	}
	return "value"
}
