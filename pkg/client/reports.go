package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// UsageRow is one key's usage in an export's window. Of a closed month it
// is what had been counted when the month closed; what late events added
// since is in Adjustments.
type UsageRow struct {
	KeyID       string            `json:"key_id"`
	Owner       string            `json:"owner"`
	Requests    int64             `json:"requests"`
	Units       int64             `json:"units"`
	Bytes       int64             `json:"bytes"`
	Amount      string            `json:"amount"` // the cost, 6 decimals in the plan's currency
	Adjustments []UsageAdjustment `json:"adjustments,omitempty"`
}

// UsageAdjustment is what late events added to a key's usage in a closed
// month, counted in the month starting at CountedIn.
type UsageAdjustment struct {
	CountedIn time.Time `json:"counted_in"`
	Requests  int64     `json:"requests"`
	Units     int64     `json:"units"`
	Bytes     int64     `json:"bytes"`
	Amount    string    `json:"amount"`
}

// UsagePage is a page of the billing export: every key's usage in one
// window.
type UsagePage struct {
	Window        string     `json:"window"`
	Start         time.Time  `json:"start"`
	End           time.Time  `json:"end"`
	Usage         []UsageRow `json:"usage"`
	NextPageToken string     `json:"next_page_token"` // "" on the last page
}

// UsageExportOptions select a page of the billing export; zero fields mean
// the defaults.
type UsageExportOptions struct {
	Owner     string    // only this owner's keys; "" for all
	Window    string    // minute, hour, day or month; "" means month
	At        time.Time // a time inside the window; zero means now
	PageSize  int       // 1–1000; 0 means the server's default (50)
	PageToken string    // a previous page's NextPageToken
}

// UsageExport returns a page of the billing export (GET /v1/usage as JSON).
func (c *Client) UsageExport(ctx context.Context, opts UsageExportOptions) (*UsagePage, error) {
	q := pageQuery(opts.PageSize, opts.PageToken)
	if opts.Owner != "" {
		q.Set("owner", opts.Owner)
	}
	if opts.Window != "" {
		q.Set("window", opts.Window)
	}
	if !opts.At.IsZero() {
		q.Set("at", opts.At.UTC().Format(time.RFC3339))
	}
	var out UsagePage
	if _, err := c.do(ctx, http.MethodGet, "/v1/usage", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UsagePoint is the usage counted in one bucket starting at Start.
type UsagePoint struct {
	Start    time.Time `json:"start"`
	Requests int64     `json:"requests"`
	Units    int64     `json:"units"`
	Bytes    int64     `json:"bytes"`
}

// Series is one group's usage, a point for every bucket of the range.
type Series struct {
	// Group is empty without GroupBy, else {"key_id": …} or {"feature": …}
	// (feature "" is usage reported without one).
	Group  map[string]string `json:"group"`
	Points []UsagePoint      `json:"points"`
}

// UsageSeries is an owner's usage per bucket over a range.
type UsageSeries struct {
	Owner   string    `json:"owner"`
	Bucket  string    `json:"bucket"`
	GroupBy string    `json:"group_by,omitempty"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Series  []Series  `json:"series"`
}

// UsageSeriesOptions select an owner's usage series. Owner is required;
// zero fields mean the server's defaults.
type UsageSeriesOptions struct {
	Owner   string
	Bucket  string    // minute, hour, day or month; "" means day
	GroupBy string    // "", "key" or "feature"
	Start   time.Time // the first bucket (rounded down); zero: a default span before End
	End     time.Time // the end of the range, exclusive (rounded up); zero: the end of the current bucket
}

// UsageSeries returns an owner's usage as time series, one per key or per
// feature with GroupBy, zero-filled for every bucket of the range. A range
// longer than the server allows is a 400.
func (c *Client) UsageSeries(ctx context.Context, opts UsageSeriesOptions) (*UsageSeries, error) {
	if opts.Owner == "" {
		return nil, errors.New("keyplane: owner is required")
	}
	q := url.Values{"owner": {opts.Owner}}
	// bucket is always sent: it is what makes GET /v1/usage a series query.
	q.Set("bucket", "day")
	if opts.Bucket != "" {
		q.Set("bucket", opts.Bucket)
	}
	if opts.GroupBy != "" {
		q.Set("group_by", opts.GroupBy)
	}
	if !opts.Start.IsZero() {
		q.Set("start", opts.Start.UTC().Format(time.RFC3339))
	}
	if !opts.End.IsZero() {
		q.Set("end", opts.End.UTC().Format(time.RFC3339))
	}
	var out UsageSeries
	if _, err := c.do(ctx, http.MethodGet, "/v1/usage", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SweepReport is what a sweep did (or, in a dry run, would do).
type SweepReport struct {
	DryRun          bool             `json:"dry_run"`
	Scanned         int              `json:"scanned"`
	Complete        bool             `json:"complete"` // false when the run stopped at its budget
	Disabled        []SweepDisabled  `json:"disabled"`
	Reenabled       []SweepReenabled `json:"reenabled"`
	Thresholds      []SweepThreshold `json:"thresholds"`
	Unchanged       int              `json:"unchanged"`
	OwnersScanned   int              `json:"owners_scanned"`
	OwnersSuspended []OwnerSuspended `json:"owners_suspended"`
	OwnersLifted    []OwnerLifted    `json:"owners_lifted"`
	SpendAlerts     []SpendAlert     `json:"spend_alerts"`
	Recovered       int              `json:"recovered"`
	Reaped          int              `json:"reaped"`
	StartedAt       time.Time        `json:"started_at"`
	FinishedAt      time.Time        `json:"finished_at"`
	// Quarantined are leak quarantines whose grace ended (reason leaked:
	// each key disabled); Until is when the grace ended.
	Quarantined []SweepReenabled `json:"quarantined"`
}

// SpendAlert is a spend.threshold notification the sweep queued: the
// owner's spend this month reached Threshold % (50, 80 or 100) of its
// monthly cap. Amounts are decimal strings in Currency.
type SpendAlert struct {
	Owner     string `json:"owner"`
	Threshold int    `json:"threshold"`
	Spend     string `json:"spend"`
	Cap       string `json:"cap"`
	Currency  string `json:"currency"`
}

// SweepDisabled is a key the sweep disabled.
type SweepDisabled struct {
	KeyID           string     `json:"key_id"`
	Reason          string     `json:"reason"` // quota_exceeded, abuse_spike or abuse_distinct_ips
	Limit           string     `json:"limit"`
	Window          string     `json:"window"`
	Used            int64      `json:"used"`
	Max             int64      `json:"max"`
	Until           *time.Time `json:"until,omitempty"`             // quota suspensions only
	BaselinePerHour float64    `json:"baseline_per_hour,omitempty"` // abuse_spike only
	IPs             []string   `json:"ips,omitempty"`               // abuse_distinct_ips only
}

// SweepReenabled is a key whose quota suspension the sweep lifted.
type SweepReenabled struct {
	KeyID  string    `json:"key_id"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
}

// SweepThreshold is a usage.threshold notification the sweep queued.
type SweepThreshold struct {
	KeyID       string    `json:"key_id"`
	Limit       string    `json:"limit"`
	Threshold   int       `json:"threshold"` // 80 or 100
	Used        int64     `json:"used"`
	Max         int64     `json:"max"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
}

// OwnerSuspended is an owner the sweep suspended over a quota.
type OwnerSuspended struct {
	Owner   string    `json:"owner"`
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Window  string    `json:"window"`
	Used    int64     `json:"used"`
	Max     int64     `json:"max"`
	Until   time.Time `json:"until"`
}

// OwnerLifted is an owner suspension the sweep lifted.
type OwnerLifted struct {
	Owner   string    `json:"owner"`
	Reason  string    `json:"reason"` // window_reset or limit_raised
	Limit   string    `json:"limit"`
	Feature string    `json:"feature,omitempty"`
	Until   time.Time `json:"until"`
}

// RunSweep runs the quota and abuse sweep now and returns its report. A
// dry run changes nothing and notifies no one. A sweep already running is
// a 409.
func (c *Client) RunSweep(ctx context.Context, dryRun bool) (*SweepReport, error) {
	body := struct {
		DryRun bool `json:"dry_run"`
	}{dryRun}
	var out SweepReport
	if _, err := c.do(ctx, http.MethodPost, "/v1/sweep", nil, body, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
