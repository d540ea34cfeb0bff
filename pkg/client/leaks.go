package client

import (
	"context"
	"net/http"
	"time"
)

// Quarantine is a key's leak quarantine: until Until the key verifies
// only from AllowedIPs (the client IPs it was seen from before the
// report, or its own allowed_ips), then the sweep disables it and sets
// EndedAt. A quarantine the key was disabled at once for (no IP seen) has
// EndedAt equal to Since.
type Quarantine struct {
	Since      time.Time  `json:"since"`
	Until      time.Time  `json:"until"`
	AllowedIPs []string   `json:"allowed_ips"`
	Reporter   string     `json:"reporter"`         // "github", or the caller of ReportLeaks
	URL        string     `json:"url,omitempty"`    // where the key was found, as reported
	Source     string     `json:"source,omitempty"` // the kind of place, as reported
	EndedAt    *time.Time `json:"ended_at"`         // nil while in force
}

// LeakEntry is one string found by a scanner or a person. Only Token is
// required.
type LeakEntry struct {
	Token  string `json:"token"`
	Type   string `json:"type,omitempty"`   // the token type matched, e.g. keyplane_api_key
	URL    string `json:"url,omitempty"`    // where it was found
	Source string `json:"source,omitempty"` // the kind of place: content, commit, …
}

// The labels of a LeakResult.
const (
	LeakTruePositive  = "true_positive"  // the token is one of the deployment's keys
	LeakFalsePositive = "false_positive" // it is not
)

// LeakResult is the answer for one entry of a report.
type LeakResult struct {
	TokenRaw  string `json:"token_raw"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"` // LeakTruePositive or LeakFalsePositive
}

// ReportLeaks reports strings found leaked (POST /v1/leaks; the token
// needs keys:revoke and must not be owner-scoped). Each entry that is one
// of the deployment's keys is acted on by its leak policy (disable,
// revoke or quarantine); it returns one result per entry, in order. A
// report can be sent again safely: a key already acted on is not changed
// twice.
func (c *Client) ReportLeaks(ctx context.Context, entries []LeakEntry) ([]LeakResult, error) {
	var out []LeakResult
	if _, err := c.do(ctx, http.MethodPost, "/v1/leaks", nil, entries, "", &out); err != nil {
		return nil, err
	}
	return out, nil
}
