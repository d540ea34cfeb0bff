// Package errs is keyplane's small vocabulary of error kinds.
//
// Adapters translate backend errors (gRPC codes, SQLite constraint errors,
// Firestore errors) into a Kind at the boundary; services add context with
// %w wrapping; one function in httpapi maps a Kind to an HTTP status. Only
// the message given to E is ever shown to a client, and only for kinds that
// describe the client's own mistake; Internal and Unavailable errors show a
// fixed text.
package errs
