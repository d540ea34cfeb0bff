package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// seriesAnswer is the JSON of a usage series, decoded strictly enough to
// compare.
type seriesAnswer struct {
	Owner   string    `json:"owner"`
	Bucket  string    `json:"bucket"`
	GroupBy string    `json:"group_by"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Series  []struct {
		Group  map[string]string `json:"group"`
		Points []struct {
			Start    time.Time `json:"start"`
			Requests int64     `json:"requests"`
			Units    int64     `json:"units"`
		} `json:"points"`
	} `json:"series"`
}

// compact is each series as "group: requests/units per point", the
// points that are zero left out.
func (s seriesAnswer) compact() []string {
	var out []string
	for _, sr := range s.Series {
		var pts []string
		for i, p := range sr.Points {
			if p.Requests != 0 || p.Units != 0 {
				pts = append(pts, fmt.Sprintf("%d:%d/%d", i, p.Requests, p.Units))
			}
		}
		out = append(out, fmt.Sprintf("%v %d points %s", sr.Group, len(sr.Points), strings.Join(pts, " ")))
	}
	return out
}

func (a *api) series(query string) seriesAnswer {
	a.t.Helper()
	r := a.do("GET", "/v1/usage?"+query, "")
	if r.Status != 200 {
		a.t.Fatalf("GET /v1/usage?%s = %d %s", query, r.Status, r.Raw)
	}
	var s seriesAnswer
	if err := json.Unmarshal([]byte(r.Raw), &s); err != nil {
		a.t.Fatal(err)
	}
	return s
}

func TestUsageSeriesByFeatureAndKey(t *testing.T) {
	a := newAPI(t)
	keyA, _ := a.create(`{"owner": "acct_s"}`)
	keyB, _ := a.create(`{"owner": "acct_s"}`)
	other, _ := a.create(`{"owner": "acct_other"}`)
	base := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	if base.Hour() == 23 {
		base = base.Add(-time.Hour) // every event on one day, for the billing CSV
	}
	ev := func(id, key, feature string, at time.Duration, units int) string {
		f := ""
		if feature != "" {
			f = fmt.Sprintf(`, "feature": %q`, feature)
		}
		return fmt.Sprintf(`{"id": %q, "key_id": %q, "time": %q, "units": %d%s}`, id, key, base.Add(at).Format(time.RFC3339), units, f)
	}
	body := `{"events": [` + strings.Join([]string{
		ev("e1", keyA, "pro-model", time.Minute, 100),
		ev("e2", keyA, "pro-model", time.Minute+10*time.Second, 50),
		ev("e3", keyB, "flash", time.Minute, 7),
		ev("e4", keyA, "", 5*time.Minute, 1),
		ev("e5", keyB, "pro-model", 70*time.Minute, 9), // the next hour
		ev("e6", other, "pro-model", time.Minute, 1000),
	}, ",") + `]}`
	if r := a.sendUsage(body, true); r.Status != 202 {
		t.Fatalf("usage webhook = %d %s", r.Status, r.Raw)
	}
	start, end := base.Format(time.RFC3339), base.Add(10*time.Minute).Format(time.RFC3339)
	q := url.Values{"owner": {"acct_s"}, "bucket": {"minute"}, "start": {start}, "end": {end}}
	waitFor(t, "the events counted", func() bool {
		s := a.series(q.Encode())
		return len(s.Series) == 1 && s.Series[0].Points[5].Requests == 1
	})

	s := a.series(q.Encode())
	if s.Owner != "acct_s" || s.Bucket != "minute" || !s.Start.Equal(base) || !s.End.Equal(base.Add(10*time.Minute)) {
		t.Errorf("series header: got %+v", s)
	}
	if d := gocmp.Diff([]string{"map[] 10 points 1:3/157 5:1/1"}, s.compact()); d != "" {
		t.Errorf("owner series mismatch (-want +got):\n%s", d)
	}
	q.Set("group_by", "feature")
	want := []string{
		"map[feature:] 10 points 5:1/1", // usage without a feature
		"map[feature:flash] 10 points 1:1/7",
		"map[feature:pro-model] 10 points 1:2/150",
	}
	if d := gocmp.Diff(want, a.series(q.Encode()).compact()); d != "" {
		t.Errorf("series by feature mismatch (-want +got):\n%s", d)
	}
	q.Set("group_by", "key")
	want = []string{
		fmt.Sprintf("map[key_id:%s] 10 points 1:2/150 5:1/1", keyA),
		fmt.Sprintf("map[key_id:%s] 10 points 1:1/7", keyB),
	}
	if keyB < keyA {
		want[0], want[1] = want[1], want[0]
	}
	if d := gocmp.Diff(want, a.series(q.Encode()).compact()); d != "" {
		t.Errorf("series by key mismatch (-want +got):\n%s", d)
	}
	// Hours, with start and end rounded out to hour bounds.
	hq := url.Values{"owner": {"acct_s"}, "bucket": {"hour"}, "group_by": {"feature"},
		"start": {base.Add(30 * time.Minute).Format(time.RFC3339)}, "end": {base.Add(61 * time.Minute).Format(time.RFC3339)}}
	want = []string{
		"map[feature:] 2 points 0:1/1",
		"map[feature:flash] 2 points 0:1/7",
		"map[feature:pro-model] 2 points 0:2/150 1:1/9",
	}
	if d := gocmp.Diff(want, a.series(hq.Encode()).compact()); d != "" {
		t.Errorf("hourly series by feature mismatch (-want +got):\n%s", d)
	}
	// Defaults: the last 30 days, one series of zeros for an owner with no usage.
	if s := a.series("owner=acct_none&bucket=day"); len(s.Series) != 1 || len(s.Series[0].Points) != 30 {
		t.Errorf("default day series of an owner without usage: got %v", s.compact())
	}

	csv := a.do("GET", "/v1/usage?owner=acct_s&window=day&at="+base.Format(time.RFC3339)+"&format=csv", "").Raw
	for _, line := range []string{
		"key_id,owner,window,start,end,requests,units,bytes,level,feature,amount,counted_in\n",
		",acct_s,day," + base.Truncate(24*time.Hour).Format(time.RFC3339),
		",5,167,0,owner,,0.000000,\n",
		",3,159,0,feature,pro-model,0.000000,\n",
		",1,7,0,feature,flash,0.000000,\n",
		keyA + ",acct_s,day,",
	} {
		if !strings.Contains(csv, line) {
			t.Errorf("billing CSV lacks %q:\n%s", line, csv)
		}
	}
	if strings.Contains(csv, "acct_other") {
		t.Errorf("billing CSV of acct_s holds another owner's rows:\n%s", csv)
	}
	all := a.do("GET", "/v1/usage?window=day&at="+base.Format(time.RFC3339)+"&format=csv", "").Raw
	if !strings.Contains(all, ",acct_other,day,") || !strings.Contains(all, ",1,1000,0,feature,pro-model,0.000000,\n") {
		t.Errorf("billing CSV of every owner lacks acct_other's owner and feature rows:\n%s", all)
	}
}

func TestUsageSeriesRejectsBadQueries(t *testing.T) {
	a := newAPI(t)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	at := func(d time.Duration) string { return url.QueryEscape(day.Add(d).Format(time.RFC3339)) }
	for _, tc := range []struct{ query, want string }{
		{"bucket=day", "needs owner"},
		{"owner=a%20b&bucket=day", "owner must be"},
		{"owner=acct_1&bucket=week", "bucket must be one of"},
		{"owner=acct_1&group_by=model", "group_by must be key or feature"},
		{"owner=acct_1&bucket=minute&start=" + at(0) + "&end=" + at(25*time.Hour), "at most 1440"},
		{"owner=acct_1&bucket=hour&start=" + at(0) + "&end=" + at(32*24*time.Hour), "at most 744"},
		{"owner=acct_1&bucket=day&start=" + at(48*time.Hour) + "&end=" + at(0), "start must be before end"},
		{"owner=acct_1&bucket=day&start=yesterday", "start must be an RFC 3339 time"},
		{"owner=acct_1&bucket=day&end=0001-01-01T00:00:00Z", "end must be from"},
		{"owner=acct_1&bucket=day&window=day", "window belongs to the billing export"},
		{"owner=acct_1&group_by=key&format=csv", "format belongs to the billing export"},
	} {
		r := a.do("GET", "/v1/usage?"+tc.query, "")
		if r.Status != 400 || !strings.Contains(errMessage(r), tc.want) {
			t.Errorf("GET /v1/usage?%s = %d %s, want 400 saying %q", tc.query, r.Status, r.Raw, tc.want)
		}
	}
}
