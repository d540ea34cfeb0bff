package client

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestUsageSeriesAndExportOfCountedUsage: usage reported through the
// webhook shows in the billing export's row of the key and in the owner's
// series, grouped by key and by feature.
func TestUsageSeriesAndExportOfCountedUsage(t *testing.T) {
	base, secret := newUsageServer(t)
	kp, err := New(base, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := mustCreate(t, kp, CreateKeyRequest{Owner: "acct_series", Plan: "pro"})
	other := mustCreate(t, kp, CreateKeyRequest{Owner: "acct_other", Plan: "pro"})
	rep, err := NewUsageReporter(base+"/v1/usage", secret, &UsageReporterOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close(ctx)
	for _, ev := range []UsageEvent{{KeyID: key.ID, Units: 5, Feature: "pro-model"}, {KeyID: key.ID, Units: 7}, {KeyID: other.ID}} {
		if err := rep.Report(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := rep.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitForUsage(t, kp, key.ID, func(u *Usage) bool { return u.Requests == 2 })
	waitForUsage(t, kp, other.ID, func(u *Usage) bool { return u.Requests == 1 })

	page, err := kp.UsageExport(ctx, UsageExportOptions{Owner: "acct_series", Window: "day"})
	if err != nil {
		t.Fatal(err)
	}
	if page.Window != "day" || len(page.Usage) != 1 || !reflect.DeepEqual(page.Usage[0], UsageRow{KeyID: key.ID, Owner: "acct_series", Requests: 2, Units: 12, Amount: "0.000000"}) {
		t.Errorf("UsageExport(owner acct_series, day) = %+v, want the one key's row with 2 requests, 12 units", page)
	}

	byKey, err := kp.UsageSeries(ctx, UsageSeriesOptions{Owner: "acct_series", Bucket: "hour", GroupBy: "key"})
	if err != nil {
		t.Fatal(err)
	}
	if byKey.Bucket != "hour" || byKey.GroupBy != "key" || len(byKey.Series) != 1 || byKey.Series[0].Group["key_id"] != key.ID {
		t.Fatalf("UsageSeries(group_by key) = %+v, want one series of %s", byKey, key.ID)
	}
	if got := sumPoints(byKey.Series[0].Points); got != (UsagePoint{Requests: 2, Units: 12}) {
		t.Errorf("the key's series sums to %+v, want 2 requests and 12 units", got)
	}
	if n := len(byKey.Series[0].Points); n != 24 {
		t.Errorf("hourly series over the default range has %d points, want 24 (zero-filled)", n)
	}

	byFeature, err := kp.UsageSeries(ctx, UsageSeriesOptions{Owner: "acct_series", GroupBy: "feature"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, s := range byFeature.Series {
		got[s.Group["feature"]] = sumPoints(s.Points).Units
	}
	if len(got) != 2 || got["pro-model"] != 5 || got[""] != 7 {
		t.Errorf("units by feature = %v, want pro-model 5 and \"\" (none) 7", got)
	}
}

func sumPoints(ps []UsagePoint) UsagePoint {
	var s UsagePoint
	for _, p := range ps {
		s.Requests += p.Requests
		s.Units += p.Units
		s.Bytes += p.Bytes
	}
	return s
}

// TestUsageSeriesRefusesABadRange: the server's 400 for a range too long
// comes back as an APIError saying so; a series without an owner is
// refused before any request.
func TestUsageSeriesRefusesABadRange(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	mustCreate(t, c, CreateKeyRequest{Owner: "acct_1"})
	end := time.Now().UTC()
	_, err := c.UsageSeries(ctx, UsageSeriesOptions{Owner: "acct_1", Bucket: "minute", Start: end.Add(-48 * time.Hour), End: end})
	if e := apiErr(t, err); e.Status != 400 || e.Message == "" {
		t.Errorf("a 48-hour range of minutes: got %d %q, want 400 with a message", e.Status, e.Message)
	}
	if _, err := c.UsageSeries(ctx, UsageSeriesOptions{}); err == nil || !strings.Contains(err.Error(), "owner is required") {
		t.Errorf("UsageSeries without an owner = %v, want \"owner is required\"", err)
	}
	s, err := c.UsageSeries(ctx, UsageSeriesOptions{Owner: "acct_1"})
	if err != nil || s.Bucket != "day" || len(s.Series) != 1 || sumPoints(s.Series[0].Points) != (UsagePoint{}) {
		t.Errorf("UsageSeries of an owner without usage = %+v, %v; want one zero-filled daily series", s, err)
	}
}

// TestRunSweepDryRunChangesNothing: a dry run over a key over its daily
// quota reports it and leaves it active; the real run disables it.
func TestRunSweepDryRunChangesNothing(t *testing.T) {
	base, secret := newUsageServer(t)
	kp, err := New(base, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := mustCreate(t, kp, CreateKeyRequest{Owner: "acct_sweep", Plan: "pro", Limits: Limits{"requests_per_day": 1}})
	rep, err := NewUsageReporter(base+"/v1/usage", secret, &UsageReporterOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close(ctx)
	rep.Report(UsageEvent{KeyID: key.ID, Requests: Ptr[int64](3)})
	if err := rep.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitForUsage(t, kp, key.ID, func(u *Usage) bool { return u.Requests == 3 })

	dry, err := kp.RunSweep(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Disabled) != 1 || dry.Disabled[0].KeyID != key.ID || dry.Disabled[0].Reason != "quota_exceeded" {
		t.Errorf("dry run report = %+v, want %s disabled for quota_exceeded", dry, key.ID)
	}
	if k, err := kp.GetKey(ctx, key.ID); err != nil || k.Status != StatusActive {
		t.Fatalf("after the dry run the key is %+v, %v; want active", k, err)
	}
	real, err := kp.RunSweep(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if real.DryRun || len(real.Disabled) != 1 || real.Disabled[0].Until == nil {
		t.Errorf("real run report = %+v, want the key disabled until the day ends", real)
	}
	if k, err := kp.GetKey(ctx, key.ID); err != nil || k.Status != StatusDisabled {
		t.Errorf("after the sweep the key is %+v, %v; want disabled", k, err)
	}
}
