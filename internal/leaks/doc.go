// Package leaks owns leaked-key intake: the report format (a JSON array
// of {"token", "type", "url", "source"}, as GitHub's secret scanning
// partner program sends it), the check of GitHub's signature over a
// report (ECDSA P-256 with SHA-256, by the key GitHub's published key
// list names, cached and refreshed at a bounded rate), and the policy:
// which reported tokens are keyplane keys (parsed with internal/apikey,
// found by their lookup hash, never logged or stored) and what is done to
// them (keys.Service.Leaked: disable, revoke or quarantine, with reason "leaked").
//
// The answer to a report is one result per entry, in order:
// {"token_raw", "token_type", "label"}, where label is "true_positive"
// when the token is one of our keys, whatever its state, and
// "false_positive" otherwise. A report is safe to repeat: a key already
// stopped for a leak is not changed, audited or notified again.
package leaks
