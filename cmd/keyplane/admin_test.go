package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/pkg/client"
)

// cli runs keyplane's command line in the test's process, with env as its
// whole environment, as main would (run, then exit for the code): the
// many commands of a test then cost no process start each, which matters
// with the race detector. A few commands run as processes of their own
// too, to hold the real binary to the same exit codes and streams.
type cli struct {
	t   *testing.T
	env []string
}

func (c cli) run(args ...string) result {
	c.t.Helper()
	getenv := func(name string) string {
		for _, kv := range c.env {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				return v
			}
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := exit(run(ctx, args, getenv, &stdout, &stderr), &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// process runs args as a process of its own and checks its exit code and
// that stdout holds wantOut and stderr wantErr.
func (c cli) process(code int, wantOut, wantErr string, args ...string) {
	c.t.Helper()
	r := runKeyplane(c.t, c.env, args...)
	if r.code != code || !strings.Contains(r.stdout, wantOut) || !strings.Contains(r.stderr, wantErr) {
		c.t.Errorf("keyplane %v as a process: exit %d, stdout %q, stderr %q; want %d, stdout with %q, stderr with %q", args, r.code, r.stdout, r.stderr, code, wantOut, wantErr)
	}
}

// ok runs a command that must succeed and returns its stdout.
func (c cli) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("keyplane %v: exit %d, stderr %q; want 0", args, r.code, r.stderr)
	}
	return r.stdout
}

// json runs a command with -o json that must succeed, and decodes its
// stdout into out, disallowing fields out does not have.
func (c cli) json(out any, args ...string) {
	c.t.Helper()
	stdout := c.ok(append(args, "-o", "json")...)
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		c.t.Fatalf("keyplane %v -o json: %v; stdout:\n%s", args, err, stdout)
	}
}

// fails runs a command that must exit with code, nothing on stdout and one
// line on stderr holding every one of want.
func (c cli) fails(code int, want []string, args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code || r.stdout != "" {
		c.t.Errorf("keyplane %v: exit %d, stdout %q, stderr %q; want %d and nothing on stdout", args, r.code, r.stdout, r.stderr, code)
	}
	first, _, _ := strings.Cut(r.stderr, "\n")
	for _, w := range want {
		if !strings.Contains(first, w) {
			c.t.Errorf("keyplane %v: stderr's first line %q does not say %q", args, first, w)
		}
	}
	if code == 1 && strings.Count(r.stderr, "\n") != 1 {
		c.t.Errorf("keyplane %v: stderr %q, want one line", args, r.stderr)
	}
	if code == 2 && !strings.Contains(r.stderr, "usage:") {
		c.t.Errorf("keyplane %v: stderr %q, want the usage", args, r.stderr)
	}
	return r
}

// TestAdminCLIAgainstServe walks a key's life through the CLI against one
// real serve process: create, list, get, update, disable, enable, rotate,
// reveal, revoke; usage after metering; the audit log; owners; a dry-run
// sweep; the money commands (spend cap, spend, credits) under a plan that
// prices usage; the exit codes of refusals and mistakes; the environment
// and the flags that override it.
func TestAdminCLIAgainstServe(t *testing.T) {
	dir := t.TempDir()
	plans := filepath.Join(dir, "plans.yaml")
	if err := os.WriteFile(plans, []byte(`default: free
plans:
  free:
    scopes: [embed, generate]
    limits: {requests_per_day: 1500}
    prices:
      "*": {per_request: "0.001", per_1k_units: "0.01"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := startServe(t, filepath.Join(dir, "data"), "KEYPLANE_PLANS="+plans)
	base := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(out)
	token := regexp.MustCompile(`KEYPLANE_ADMIN_TOKEN=(kpadm_\w+)`).FindStringSubmatch(out)
	secret := regexp.MustCompile(`KEYPLANE_WEBHOOK_SECRET=(whsec_\S+)`).FindStringSubmatch(out)
	if base == nil || token == nil || secret == nil {
		t.Fatalf("serve printed:\n%s\nwant its URL, an admin token and a webhook secret", out)
	}
	c := cli{t, []string{"KEYPLANE_URL=" + base[1], "KEYPLANE_ADMIN_TOKEN=" + token[1]}}

	// create: the table sets the secret apart; JSON carries it.
	table := c.ok("keys", "create", "--owner", "acct_cli", "--name", "first")
	shown := regexp.MustCompile(`secret \(shown only now; store it safely\):\n  (kp_live_\w+)\n$`).FindStringSubmatch(table)
	if shown == nil {
		t.Fatalf("keys create printed:\n%s\nwant the secret set apart at the end", table)
	}
	var k client.KeyWithSecret
	c.json(&k, "keys", "create", "--owner", "acct_cli", "--name", "second", "--metadata", "team=a", "--limit", "requests_per_day=100", "--scopes", "embed")
	if !strings.HasPrefix(k.Secret, "kp_live_") || k.Owner != "acct_cli" || k.Metadata["team"] != "a" || k.Limits["requests_per_day"] != 100 || !reflect.DeepEqual(k.Scopes, []string{"embed"}) {
		t.Fatalf("keys create -o json = %+v", k)
	}

	// list and get, flags after the positional argument too.
	var list client.KeyList
	c.json(&list, "keys", "list", "--owner", "acct_cli")
	if len(list.Keys) != 2 || list.Keys[0].ID != k.ID {
		t.Errorf("keys list = %+v, want the two keys, newest first", list)
	}
	if table := c.ok("keys", "list"); !strings.Contains(table, k.ID) || !strings.HasPrefix(table, "ID ") || strings.Contains(table, k.Secret) || strings.Contains(table, shown[1]) {
		t.Errorf("keys list printed:\n%s\nwant a table naming %s without any secret", table, k.ID)
	}
	var got client.Key
	c.json(&got, "keys", "get", k.ID)
	if got.ID != k.ID || got.Name != "second" {
		t.Errorf("keys get = %+v", got)
	}

	// update changes only what is given; restrictions not given are kept.
	c.json(&got, "keys", "update", k.ID, "--name", "renamed", "--allowed-ips", "10.0.0.0/8")
	c.json(&got, "keys", "update", k.ID, "--allowed-referrers", "example.com")
	if got.Name != "renamed" || got.Metadata["team"] != "a" || !reflect.DeepEqual(got.Restrictions.AllowedIPs, []string{"10.0.0.0/8"}) || !reflect.DeepEqual(got.Restrictions.AllowedReferrers, []string{"example.com"}) {
		t.Errorf("after keys update: %+v", got)
	}
	c.fails(2, []string{"nothing to change"}, "keys", "update", k.ID)

	c.json(&got, "keys", "disable", k.ID, "--reason", "investigating")
	if got.Status != client.StatusDisabled || got.StatusReason != "investigating" {
		t.Errorf("keys disable = %+v", got)
	}
	c.json(&got, "keys", "enable", k.ID)
	if got.Status != client.StatusActive {
		t.Errorf("keys enable = %+v", got)
	}

	var rotated client.KeyWithSecret
	c.json(&rotated, "keys", "rotate", k.ID, "--grace", "1h")
	if rotated.ID == k.ID || rotated.RotatedFrom != k.ID || !strings.HasPrefix(rotated.Secret, "kp_live_") || rotated.Secret == k.Secret {
		t.Errorf("keys rotate = %+v", rotated)
	}

	// reveal needs --yes, warns on stderr, and is audited.
	c.fails(2, []string{"pass --yes"}, "keys", "reveal", rotated.ID)
	r := c.run("keys", "reveal", rotated.ID, "--yes")
	if r.code != 0 || strings.TrimSpace(r.stdout) != rotated.Secret || !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "audit log") {
		t.Errorf("keys reveal --yes: exit %d, stdout %q, stderr %q; want the secret and a warning", r.code, r.stdout, r.stderr)
	}

	// Usage after metering: counted asynchronously, so polled.
	if r := runKeyplane(t, []string{"KEYPLANE_WEBHOOK_SECRET=" + secret[1]}, "report-usage", "--url", base[1], "--key-id", rotated.ID, "--units", "7", "--feature", "pro-model"); r.code != 0 {
		t.Fatalf("report-usage: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	var u client.Usage
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c.json(&u, "usage", "--key", rotated.ID)
		if u.Requests == 1 || time.Now().After(deadline) {
			break
		}
	}
	if u.Requests != 1 || u.Units != 7 || u.Window != "day" || u.Limits["requests_per_day"].Limit != 100 {
		t.Errorf("usage --key = %+v, want the reported event in today's window with the key's limit", u)
	}
	var export client.UsagePage
	c.json(&export, "usage", "--owner", "acct_cli", "--window", "day")
	var counted int64
	for _, row := range export.Usage {
		if row.KeyID == rotated.ID {
			counted = row.Units
		}
	}
	if export.Window != "day" || counted != 7 {
		t.Errorf("usage --owner = %+v, want %s with 7 units", export, rotated.ID)
	}
	var series client.UsageSeries
	c.json(&series, "usage", "--owner", "acct_cli", "--bucket", "hour", "--group-by", "feature")
	var units int64
	for _, s := range series.Series {
		for _, p := range s.Points {
			if s.Group["feature"] == "pro-model" {
				units += p.Units
			}
		}
	}
	if series.Bucket != "hour" || series.GroupBy != "feature" || units != 7 {
		t.Errorf("usage --bucket hour --group-by feature = %+v, want 7 units of pro-model", series)
	}
	if table := c.ok("usage", "--key", rotated.ID); !strings.Contains(table, "units") || !strings.Contains(table, "7") {
		t.Errorf("usage --key printed:\n%s", table)
	}

	var audit client.AuditList
	c.json(&audit, "audit", "--key-id", rotated.ID)
	var actions []string
	for _, e := range audit.Entries {
		actions = append(actions, e.Action)
	}
	if !reflect.DeepEqual(actions, []string{"key.secret.reveal", "key.create"}) {
		t.Errorf("audit --key-id %s: actions %v, want the reveal and the creation, newest first", rotated.ID, actions)
	}
	c.json(&audit, "audit", "--page-size", "2")
	if len(audit.Entries) != 2 || audit.NextPageToken == "" {
		t.Errorf("audit --page-size 2 = %d entries, next %q; want 2 and a next page", len(audit.Entries), audit.NextPageToken)
	}
	c.json(&audit, "audit", "--page-size", "2", "--all")
	if len(audit.Entries) < 9 || audit.NextPageToken != "" {
		t.Errorf("audit --all = %d entries, next %q; want every entry", len(audit.Entries), audit.NextPageToken)
	}

	// owners: list, update the tier's limits, get.
	var owners client.OwnerList
	c.json(&owners, "owners", "list")
	if len(owners.Owners) != 1 || owners.Owners[0].Owner != "acct_cli" {
		t.Errorf("owners list = %+v", owners)
	}
	var o client.Owner
	c.json(&o, "owners", "update", "acct_cli", "--limit", "requests_per_day=1000", "--feature-limit", "pro-model.units_per_day=500")
	if o.Limits["requests_per_day"] != 1000 || o.Features["pro-model"]["units_per_day"] != 500 {
		t.Errorf("owners update = %+v", o)
	}
	c.json(&o, "owners", "get", "acct_cli")
	if o.Effective.OwnerLimits["requests_per_day"].Limit != 1000 || o.Effective.OwnerLimits["requests_per_day"].Source != "owner override" {
		t.Errorf("owners get = %+v", o)
	}
	c.fails(1, []string{"owners update: keyplane refused: 400", "no-such-plan"}, "owners", "update", "acct_cli", "--plan", "no-such-plan")
	c.fails(2, []string{"an owner exists once it has a key", "keys create --owner acct_new"}, "owners", "create", "acct_new")

	// Money: the owner's spend cap, what its metered usage cost (1
	// request at 0.001 and 7 units at 0.01 per 1000), its credits.
	c.json(&o, "owners", "update", "acct_cli", "--spend-cap", "25.00")
	if o.SpendCap == nil || o.SpendCap.Monthly != "25.000000" {
		t.Errorf("owners update --spend-cap 25.00: spend_cap %+v", o.SpendCap)
	}
	c.json(&o, "owners", "get", "acct_cli")
	if o.SpendCap == nil || o.SpendCap.Monthly != "25.000000" || o.Limits["requests_per_day"] != 1000 {
		t.Errorf("owners get after --spend-cap: %+v, want the cap and the limits kept", o)
	}
	if table := c.ok("owners", "get", "acct_cli"); !regexp.MustCompile(`spend cap\s+25\.000000 a month \(owner override\)`).MatchString(table) {
		t.Errorf("owners get printed:\n%s\nwant the spend cap", table)
	}
	c.fails(2, []string{"--spend-cap and --clear-spend-cap exclude each other"}, "owners", "update", "acct_cli", "--spend-cap", "5", "--clear-spend-cap")
	c.fails(1, []string{"owners update: keyplane refused: 400", "spend_cap"}, "owners", "update", "acct_cli", "--spend-cap", "lots")

	var spend client.Spend
	c.json(&spend, "owners", "spend", "acct_cli")
	month := time.Now().UTC().Format("2006-01")
	if spend.Owner != "acct_cli" || spend.Month != month || spend.Currency != "USD" || spend.Amount != "0.001070" ||
		spend.Cap == nil || *spend.Cap != "25.000000" || spend.CapSource != "owner override" || spend.Credits != nil ||
		!reflect.DeepEqual(spend.ByFeature, []client.FeatureSpend{{Feature: "pro-model", Amount: "0.001070", Requests: 1, Units: 7}}) {
		t.Errorf("owners spend = %+v, want 0.001070 USD of pro-model this month, capped at 25 by the owner", spend)
	}
	table = c.ok("owners", "spend", "acct_cli")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`month\s+` + month), regexp.MustCompile(`amount\s+0\.001070\n`),
		regexp.MustCompile(`cap\s+25\.000000 \(owner override\)`), regexp.MustCompile(`credits\s+- \(not prepaid\)`),
		regexp.MustCompile(`FEATURE\s+AMOUNT\s+REQUESTS\s+UNITS\n\s*pro-model\s+0\.001070\s+1\s+7\n`),
	} {
		if !want.MatchString(table) {
			t.Errorf("owners spend printed:\n%s\nwant it to match %s", table, want)
		}
	}
	c.json(&spend, "owners", "spend", "acct_cli", "--month", "2020-01")
	if spend.Month != "2020-01" || spend.Amount != "0.000000" || len(spend.ByFeature) != 0 {
		t.Errorf("owners spend --month 2020-01 = %+v, want nothing spent", spend)
	}
	c.fails(1, []string{"owners spend: keyplane refused: 400", "month must be a UTC month"}, "owners", "spend", "acct_cli", "--month", "2026/12")
	c.fails(2, []string{"OWNER is required"}, "owners", "spend")
	c.json(&o, "owners", "update", "acct_cli", "--clear-spend-cap")
	if o.SpendCap != nil {
		t.Errorf("owners update --clear-spend-cap: spend_cap %+v, want none", o.SpendCap)
	}
	c.json(&spend, "owners", "spend", "acct_cli")
	if spend.Cap != nil || spend.Amount != "0.001070" {
		t.Errorf("owners spend after --clear-spend-cap = %+v, want no cap (the plan has none)", spend)
	}

	var credit, replay client.Credit
	c.json(&credit, "credits", "add", "acct_cli", "--id", "pay_42", "--amount", "10.00")
	if credit.Owner != "acct_cli" || credit.ID != "pay_42" || credit.Amount != "10.000000" || credit.Currency != "USD" || credit.Balance != "10.000000" || credit.At == "" {
		t.Errorf("credits add = %+v, want the top-up of 10 and a balance of 10", credit)
	}
	c.json(&replay, "credits", "add", "acct_cli", "--id", "pay_42", "--amount", "10.00")
	if replay != credit {
		t.Errorf("credits add replayed = %+v, want the same top-up %+v", replay, credit)
	}
	c.fails(1, []string{"credits add: keyplane refused: 409", "top-up pay_42 was already applied with amount 10.000000"}, "credits", "add", "acct_cli", "--id", "pay_42", "--amount", "11.00")
	c.fails(1, []string{"credits add: keyplane refused: 400", "amount"}, "credits", "add", "acct_cli", "--id", "pay_43", "--amount", "ten")
	c.fails(2, []string{"--amount is required"}, "credits", "add", "acct_cli", "--id", "pay_43")
	c.fails(2, []string{"--id is required"}, "credits", "add", "acct_cli", "--amount", "1")
	if table := c.ok("credits", "add", "acct_cli", "--id", "pay_43", "--amount", "2.5"); !regexp.MustCompile(`amount\s+2\.500000 USD\n`).MatchString(table) || !regexp.MustCompile(`balance\s+12\.500000 USD\n`).MatchString(table) {
		t.Errorf("credits add printed:\n%s\nwant the top-up and the balance", table)
	}
	var credits client.CreditList
	c.json(&credits, "credits", "list", "acct_cli")
	if credits.Owner != "acct_cli" || credits.Currency != "USD" || credits.Granted != "12.500000" || credits.Balance != "12.500000" ||
		len(credits.Credits) != 2 || credits.Credits[0].ID != "pay_42" || credits.Credits[0].At != credit.At || credits.Credits[1].Amount != "2.500000" {
		t.Errorf("credits list = %+v, want pay_42 and pay_43, 12.50 granted and left", credits)
	}
	if table := c.ok("credits", "list", "acct_cli"); !regexp.MustCompile(`balance\s+12\.500000 USD\n`).MatchString(table) || !regexp.MustCompile(`\npay_42\s+10\.000000\s+`+regexp.QuoteMeta(credit.At)).MatchString(table) {
		t.Errorf("credits list printed:\n%s", table)
	}
	c.json(&spend, "owners", "spend", "acct_cli")
	if spend.Credits == nil || *spend.Credits != "12.500000" {
		t.Errorf("owners spend of a prepaid owner: credits %v, want 12.500000", spend.Credits)
	}
	c.fails(1, []string{"credits list: keyplane refused: 404"}, "credits", "list", "acct_nope")

	var sweep client.SweepReport
	c.json(&sweep, "sweep", "--dry-run")
	if !sweep.DryRun || sweep.Scanned == 0 {
		t.Errorf("sweep --dry-run = %+v", sweep)
	}

	c.json(&got, "keys", "revoke", k.ID, "--reason", "done")
	if got.Status != client.StatusRevoked {
		t.Errorf("keys revoke = %+v", got)
	}

	// Refusals: exit 1 with keyplane's message on one line.
	c.fails(1, []string{"keys enable: keyplane refused: 409", "revoked"}, "keys", "enable", k.ID)
	c.fails(1, []string{"keys get: keyplane refused: 404 NOT_FOUND", "key_nope"}, "keys", "get", "key_nope")
	c.fails(1, []string{"keys reveal: keyplane refused: 409"}, "keys", "reveal", k.ID, "--yes")

	// Command-line mistakes: exit 2 with the usage.
	c.fails(2, []string{"KEY_ID is required"}, "keys", "get")
	c.fails(2, []string{`unexpected argument "extra"`}, "keys", "get", k.ID, "extra")
	c.fails(2, []string{`unknown command "frob"`}, "keys", "frob")
	c.fails(2, []string{"--owner is required"}, "keys", "create")
	c.fails(2, []string{`-o "yaml"`}, "keys", "list", "-o", "yaml")
	c.fails(2, []string{"need --owner"}, "usage", "--bucket", "day")
	c.fails(2, []string{"want name=N"}, "keys", "create", "--owner", "a", "--limit", "requests_per_day")

	// The flags override the environment.
	wrong := cli{t, []string{"KEYPLANE_URL=http://127.0.0.1:1", "KEYPLANE_ADMIN_TOKEN=kpadm_wrong"}}
	wrong.fails(1, []string{"keys get:", "127.0.0.1:1"}, "keys", "get", k.ID)
	if out := wrong.ok("keys", "get", k.ID, "--url", base[1], "--token", token[1]); !strings.Contains(out, k.ID) {
		t.Errorf("keys get with --url and --token printed %q", out)
	}
	c.fails(1, []string{"keyplane refused: 401"}, "keys", "get", k.ID, "--token", "kpadm_wrong")
	cli{t, []string{"KEYPLANE_URL=" + base[1]}}.fails(2, []string{"no token", "KEYPLANE_ADMIN_TOKEN"}, "keys", "list")

	// The real binary: the same exit codes and streams.
	c.process(0, `"id": "`+k.ID+`"`, "", "keys", "get", k.ID, "-o", "json")
	c.process(1, "", "keyplane: keys get: keyplane refused: 404 NOT_FOUND", "keys", "get", "key_nope")
	c.process(2, "", "usage: keyplane keys get KEY_ID", "keys", "get")
	wrong.process(0, k.ID, "", "keys", "list", "--url", base[1], "--token", token[1])
}

// TestAdminCLIPortalLink runs portal-link against a server answering as
// POST /v1/portal/sessions is specified: it sends the owner, return URL
// and permissions, prints the link, and exits 1 with the server's message
// when refused.
func TestAdminCLIPortalLink(t *testing.T) {
	var mu sync.Mutex
	var sent map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/portal/sessions" || r.Header.Get("Authorization") != "Bearer kpadm_test" {
			http.Error(w, `{"error":{"code":"NOT_FOUND","message":"wrong request"}}`, http.StatusNotFound)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		sent = body
		mu.Unlock()
		if body["owner"] == "acct_other" {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":{"code":"PERMISSION_DENIED","message":"this token is scoped to another owner"}}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"url":"https://portal.example.com/s/ps_1#t=abc","expires_at":"2026-12-07T13:00:00Z"}`))
	}))
	t.Cleanup(srv.Close)
	c := cli{t, []string{"KEYPLANE_URL=" + srv.URL, "KEYPLANE_ADMIN_TOKEN=kpadm_test"}}

	var s client.PortalSession
	c.json(&s, "portal-link", "--owner", "acct_1", "--return-url", "https://app.example.com/", "--permissions", "keys:read,keys:create")
	if s.URL != "https://portal.example.com/s/ps_1#t=abc" || !s.ExpiresAt.Equal(time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("portal-link -o json = %+v", s)
	}
	want := map[string]any{"owner": "acct_1", "return_url": "https://app.example.com/", "permissions": []any{"keys:read", "keys:create"}}
	mu.Lock()
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("portal-link sent %v, want %v", sent, want)
	}
	mu.Unlock()
	if out := c.ok("portal-link", "--owner", "acct_1"); !strings.Contains(out, "https://portal.example.com/s/ps_1#t=abc") || !strings.Contains(out, "2026-12-07T13:00:00Z") {
		t.Errorf("portal-link printed %q", out)
	}
	c.fails(1, []string{"portal-link: keyplane refused: 403 PERMISSION_DENIED: this token is scoped to another owner"}, "portal-link", "--owner", "acct_other")
	c.fails(2, []string{"--owner is required"}, "portal-link")
}

// TestAdminCLIHelp: every admin command's help goes to stdout with exit 0.
func TestAdminCLIHelp(t *testing.T) {
	for _, args := range [][]string{
		{"help", "keys"}, {"keys", "--help"}, {"keys", "help"}, {"keys", "help", "create"}, {"keys", "create", "--help"},
		{"keys", "reveal", "-h"}, {"owners", "--help"}, {"owners", "update", "--help"}, {"owners", "spend", "--help"},
		{"credits", "--help"}, {"credits", "add", "-h"}, {"help", "credits"},
		{"usage", "--help"}, {"audit", "-h"}, {"sweep", "--help"}, {"portal-link", "--help"}, {"help", "usage"},
	} {
		r := runKeyplane(t, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "usage:") || r.stderr != "" {
			t.Errorf("keyplane %v: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout only", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := runKeyplane(t, nil, "help"); !strings.Contains(r.stdout, "keyplane keys create|list|get|update|disable|enable|rotate|revoke|reveal") {
		t.Errorf("keyplane help does not list the admin commands:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"keys"}, {"owners"}, {"owners", "delete"}, {"credits"}, {"credits", "remove"}} {
		r := runKeyplane(t, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "usage:") || r.stdout != "" {
			t.Errorf("keyplane %v: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr only", args, r.code, r.stdout, r.stderr)
		}
	}
}
