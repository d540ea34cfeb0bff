// Package httpapi serves keyplane's HTTP API (../../docs/openapi.yaml): the
// routing table, bearer-token authentication, strict JSON decoding with
// per-route body limits, one summary log entry per request, and the one
// mapping from errs kinds to HTTP statuses. Handlers decode, call a
// service, and encode; they hold no business logic.
package httpapi
