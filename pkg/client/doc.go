// Package client is the Go client of keyplane's HTTP API (docs/openapi.yaml)
// and a net/http middleware that protects an API with it.
//
// It depends on the standard library only, so a customer's gateway can
// import it without keyplane's server dependencies (Firestore, SQLite).
// Its types mirror the API's JSON; they are defined here rather than
// shared with the server for that reason. The server's tests hold them to
// its answers: field by field from both declarations, and by decoding
// every answer of the server's test suite into them with unknown fields
// disallowed.
//
// # Client
//
// [New] returns a [Client] with one method per route, context first. A
// non-2xx answer is returned as an [*APIError] with the status, the
// canonical code (NOT_FOUND, FAILED_PRECONDITION, …), the server's
// message, its details and Retry-After. A Client is safe for concurrent use
// and should be created once per process: its http.Client keeps
// connections to keyplane alive. Neither a key's plaintext nor the admin
// token ever appears in an error the client returns.
//
// # Middleware
//
// [Middleware] verifies the API key of every request before the protected
// handler runs, through any [Verifier] (a [*Client] is one). The key is
// read from the X-Api-Key header, or else from Authorization: Bearer. The
// outcome maps to a status:
//
//	no key                                        401 UNAUTHENTICATED, WWW-Authenticate: Bearer
//	NOT_FOUND, EXPIRED, REVOKED, DISABLED         401 <code>, WWW-Authenticate: Bearer error="invalid_token"
//	FORBIDDEN                                     403 FORBIDDEN
//	INSUFFICIENT_PERMISSIONS                      403 <code>, WWW-Authenticate: Bearer error="insufficient_scope"
//	RATE_LIMITED, USAGE_EXCEEDED                  429 <code>, Retry-After
//	the verifier failed (network, keyplane 5xx)   503 UNAVAILABLE (fail closed; see FailOpen)
//	VALID                                         the protected handler, with the decision in the context
//
// Error bodies are {"error": {"code": "…", "message": "…"}} and never
// echo the key. VALID and 429 answers carry the IETF RateLimit header
// fields of the most constrained limit (RateLimit-Limit, RateLimit-Remaining,
// RateLimit-Reset in seconds). The protected handler reads the decision
// with [FromContext]. By default the header that carried the key is removed
// before the handler runs, so the backend never sees or logs the key.
//
// [MiddlewareOptions.OnResponse] is the hook for usage reporting: it runs
// after the handler with the decision, the status and the bytes written.
//
// # Usage reporting
//
// A [UsageReporter] sends usage events to keyplane's usage webhook
// (POST /v1/usage, signed with the whsec_ usage webhook secret, Standard
// Webhooks) in batches, from one background goroutine. [UsageReporter.Report]
// never blocks: it validates the event against the webhook's rules (an
// invalid event would get its whole batch refused), gives it a random id
// if it has none, and queues it, or drops it when the queue is full.
// Batches go when they hold MaxBatch events, every FlushInterval, on
// [UsageReporter.Flush] and on [UsageReporter.Close]. A batch that fails
// for a transient reason (network, 408, 429, 5xx) is retried with
// exponential backoff and Retry-After, keeping its webhook-id and its
// events' ids, so keyplane counts each event once however often it
// arrives; other answers are logged and not retried. [UsageReporter.Stats]
// counts what was sent, dropped, given up on and refused as invalid.
//
// To meter the requests the middleware serves, wrap it in [UsageMeter] and
// set OnResponse to [ReportUsage]: one event per request served with a
// VALID decision, with the response's bytes and the units the handler
// recorded with [SetUnits] or [AddUnits]:
//
//	reporter, err := client.NewUsageReporter("https://keyplane.example.com/v1/usage", webhookSecret, nil)
//	…
//	defer reporter.Close(ctx)
//	protect := client.Middleware(kp, &client.MiddlewareOptions{OnResponse: client.ReportUsage(reporter, nil)})
//	http.ListenAndServe(addr, client.UsageMeter(protect(api)))
//
// UsageMeter must be outside Middleware: it puts the per-request holder
// that SetUnits writes and ReportUsage reads into the context, and the
// middleware reports with the request it received. [Client.KeyUsage]
// reads a key's counted usage.
package client
