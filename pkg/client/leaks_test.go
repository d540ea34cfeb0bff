package client

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/httpapi/contracttest"
	"github.com/keyplane/keyplane/internal/wire"
)

// ReportLeaks labels each entry and has the deployment's policy act on
// its keys; under the quarantine policy a key seen from no IP is disabled
// at once, and GetKey shows its (ended) quarantine.
func TestReportLeaksUnderTheQuarantinePolicy(t *testing.T) {
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken, cfg.LeakPolicy = t.TempDir(), adminToken, config.LeakQuarantine
	app, err := wire.ServeAll(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(contracttest.Load(t).Handler(t, app.Server.Handler(), nil))
	t.Cleanup(func() { srv.Close(); app.Close() })
	c, err := New(srv.URL, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := mustCreate(t, c, CreateKeyRequest{Owner: "acct_1"})
	entries := []LeakEntry{
		{Token: k.Secret, Type: "keyplane_api_key", URL: "https://example.com/paste/1", Source: "paste"},
		{Token: "not-a-key", Type: "keyplane_api_key"},
	}
	res, err := c.ReportLeaks(ctx, entries)
	if err != nil {
		t.Fatalf("ReportLeaks: %v", err)
	}
	if len(res) != 2 || res[0].Label != LeakTruePositive || res[0].TokenRaw != k.Secret || res[1].Label != LeakFalsePositive {
		t.Fatalf("ReportLeaks = %+v", res)
	}
	got, err := c.GetKey(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	q := got.Quarantine
	if got.Status != StatusDisabled || got.StatusReason != "leaked" || q == nil || q.EndedAt == nil || q.URL != "https://example.com/paste/1" ||
		q.Source != "paste" || len(q.AllowedIPs) != 0 {
		t.Errorf("key after the report: %s %q, quarantine %+v; want disabled for the leak at once (no IP seen)", got.Status, got.StatusReason, q)
	}
	if _, err := c.ReportLeaks(ctx, entries[:1]); err != nil {
		t.Errorf("ReportLeaks again: %v", err)
	}
	again, _ := c.GetKey(ctx, k.ID)
	if !again.UpdatedAt.Equal(got.UpdatedAt) {
		t.Errorf("a repeated report changed the key: updated_at %v, was %v", again.UpdatedAt, got.UpdatedAt)
	}
}
