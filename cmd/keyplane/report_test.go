package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	usageevent "github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/webhook"
)

// report-usage sends one signed event with the feature it is given.
func TestReportUsageSendsASignedEventWithItsFeature(t *testing.T) {
	secret := webhook.NewSecret()
	var got usageevent.Batch
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := webhook.Verify([]webhook.Secret{mustSecret(t, secret)}, r.Header, body, time.Now(), webhook.DefaultTolerance); err != nil {
			t.Errorf("signature: %v", err)
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"accepted":1}`)
	}))
	defer srv.Close()
	env := func(k string) string {
		if k == "KEYPLANE_WEBHOOK_SECRET" {
			return secret
		}
		return ""
	}
	var out strings.Builder
	err := reportUsage(context.Background(), []string{"--url", srv.URL, "--key-id", "key_1", "--feature", "pro-model", "--units", "1200", "--id", "evt_1"}, env, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Events) != 1 || got.Events[0].ID != "evt_1" || got.Events[0].Feature != "pro-model" || got.Events[0].Units != 1200 || got.Events[0].Requests != 1 {
		t.Errorf("sent %+v, want one event evt_1 of pro-model with 1200 units", got.Events)
	}
}

func mustSecret(t *testing.T, s string) webhook.Secret {
	t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}
