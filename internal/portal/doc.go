// Package portal is the owner portal: server-rendered pages where an
// owner (a platform's customer) sees its own keys, usage, limits and
// spend, and creates, rolls and revokes keys, without keyplane holding
// user accounts (the Unkey portal's model).
//
// The platform's back end asks for a session (POST /v1/portal/sessions,
// Portal.Open) for an owner and a set of portal permissions, and gets a
// single-use link valid for at most 10 minutes. Only the SHA-256 of the
// link's token is stored (store.PortalLinks), and redeeming it is one
// atomic write, so a link works once across every instance. The exchange
// (GET /portal/exchange?token=…) sets a session cookie: the owner, the
// permissions, an expiry (at most an hour) and a session id, signed with
// HMAC-SHA256 under the key pepper, so every instance can check it
// without a read. Every state-changing form carries a CSRF token derived
// from the session id, compared in constant time, and the request's
// Origin and Sec-Fetch-Site must be this site's.
//
// Every page re-reads the keys it shows: a key whose owner is not the
// session's is a 404, as a key that does not exist. Templates are
// html/template (escaped everywhere) and the stylesheet is embedded; the
// pages need no JavaScript and load nothing from elsewhere.
package portal
