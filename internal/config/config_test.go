package config

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestWebhookAllowPrivateFromEnv(t *testing.T) {
	for _, tc := range []struct {
		value   string
		want    bool
		wantErr bool
	}{
		{"", false, false},
		{"1", true, false},
		{"true", true, false},
		{"TRUE", true, false},
		{"0", false, false},
		{"false", false, false},
		{"yes", false, true},
	} {
		c, err := FromEnv(Embedded(), env(map[string]string{"KEYPLANE_WEBHOOK_ALLOW_PRIVATE": tc.value}))
		if (err != nil) != tc.wantErr || err == nil && c.WebhookAllowPrivate != tc.want {
			t.Errorf("KEYPLANE_WEBHOOK_ALLOW_PRIVATE=%q: got %v, %v; want %v (error: %v)", tc.value, c.WebhookAllowPrivate, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "KEYPLANE_WEBHOOK_ALLOW_PRIVATE") {
			t.Errorf("the error %q does not name the variable", err)
		}
	}
}

func TestNotificationsTopic(t *testing.T) {
	c, err := FromEnv(Cloud(), env(nil))
	if err != nil || c.NotificationsTopic != "notifications" {
		t.Fatalf("default notifications topic = %q, %v; want notifications", c.NotificationsTopic, err)
	}
	c, _ = FromEnv(Embedded(), env(map[string]string{"KEYPLANE_NOTIFICATIONS_TOPIC": "kp-notifications"}))
	if c.NotificationsTopic != "kp-notifications" || c.Validate() != nil {
		t.Errorf("KEYPLANE_NOTIFICATIONS_TOPIC=kp-notifications: got %q, Validate %v", c.NotificationsTopic, c.Validate())
	}
	for _, topic := range []string{"usage-events", "usage-events-dead-letter"} {
		c := Embedded()
		c.NotificationsTopic = topic
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "KEYPLANE_NOTIFICATIONS_TOPIC") {
			t.Errorf("notifications topic %q beside usage topic %q: Validate = %v, want an error naming KEYPLANE_NOTIFICATIONS_TOPIC", topic, c.UsageTopic, err)
		}
	}
}

func TestIDTokenSettingsFromEnv(t *testing.T) {
	const sa = "scheduler@proj.iam.gserviceaccount.com"
	for _, tc := range []struct {
		name                   string
		env                    map[string]string
		wantAccounts, wantAuds []string
		wantErr                string // the variable the error names
	}{
		{name: "unset"},
		{name: "one account", env: map[string]string{"KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS": sa}, wantAccounts: []string{sa}},
		{name: "trimmed list",
			env:          map[string]string{"KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS": " " + sa + " , ops@example.com,,"},
			wantAccounts: []string{sa, "ops@example.com"}},
		{name: "project id instead of email", env: map[string]string{"KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS": "my-project"}, wantErr: "KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS"},
		{name: "email without dotted domain", env: map[string]string{"KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS": sa + ",scheduler@proj"}, wantErr: "KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS"},
		{name: "email with a space", env: map[string]string{"KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS": "sched uler@proj.iam.gserviceaccount.com"}, wantErr: "KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS"},
		{name: "audiences",
			env: map[string]string{
				"KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS": sa,
				"KEYPLANE_ID_TOKEN_AUDIENCES":        "https://keyplane-sweep-abc-uc.a.run.app, https://api.example.com/v1/sweep",
			},
			wantAccounts: []string{sa},
			wantAuds:     []string{"https://keyplane-sweep-abc-uc.a.run.app", "https://api.example.com/v1/sweep"}},
		{name: "http audience", env: map[string]string{"KEYPLANE_ID_TOKEN_AUDIENCES": "http://keyplane.example.com"}, wantErr: "KEYPLANE_ID_TOKEN_AUDIENCES"},
		{name: "audience without scheme", env: map[string]string{"KEYPLANE_ID_TOKEN_AUDIENCES": "keyplane.example.com"}, wantErr: "KEYPLANE_ID_TOKEN_AUDIENCES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromEnv(Cloud(), env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.IDTokenServiceAccounts, tc.wantAccounts) || !slices.Equal(c.IDTokenAudiences, tc.wantAuds) {
				t.Errorf("got accounts %q, audiences %q; want %q, %q", c.IDTokenServiceAccounts, c.IDTokenAudiences, tc.wantAccounts, tc.wantAuds)
			}
		})
	}
}

func TestIDTokenAudiencesNeedServiceAccounts(t *testing.T) {
	c := Embedded()
	c.IDTokenAudiences = []string{"https://keyplane.example.com"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS") {
		t.Errorf("audiences without service accounts: Validate = %v, want an error naming KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS", err)
	}
	c.IDTokenServiceAccounts = []string{"scheduler@proj.iam.gserviceaccount.com"}
	if err := c.Validate(); err != nil {
		t.Errorf("audiences with service accounts: Validate = %v, want nil", err)
	}
}

func TestClockOffsetIsForEmbeddedTrialsOnly(t *testing.T) {
	c, err := FromEnv(Embedded(), env(map[string]string{"KEYPLANE_CLOCK_OFFSET": "24h"}))
	c.DataDir = t.TempDir()
	if err != nil || c.ClockOffset.Hours() != 24 || c.Validate() != nil {
		t.Errorf("KEYPLANE_CLOCK_OFFSET=24h embedded: %v, %v, Validate %v", c.ClockOffset, err, c.Validate())
	}
	if _, err := FromEnv(Embedded(), env(map[string]string{"KEYPLANE_CLOCK_OFFSET": "tomorrow"})); err == nil || !strings.Contains(err.Error(), "KEYPLANE_CLOCK_OFFSET") {
		t.Errorf("KEYPLANE_CLOCK_OFFSET=tomorrow: %v, want an error naming the variable", err)
	}
	c, _ = FromEnv(Cloud(), env(map[string]string{"KEYPLANE_CLOCK_OFFSET": "1h", "GOOGLE_CLOUD_PROJECT": "p"}))
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "KEYPLANE_CLOCK_OFFSET") {
		t.Errorf("KEYPLANE_CLOCK_OFFSET with the cloud backends: Validate = %v, want refused", err)
	}
}

func TestTelemetrySettings(t *testing.T) {
	if c, _ := FromEnv(Embedded(), env(nil)); c.Telemetry != "off" || c.MetricsAddr != "127.0.0.1:9464" {
		t.Errorf("serve's telemetry = %q on %q, want off on 127.0.0.1:9464", c.Telemetry, c.MetricsAddr)
	}
	for _, tc := range []struct {
		env     map[string]string
		problem string // "" if valid
	}{
		{map[string]string{"KEYPLANE_TELEMETRY": "prometheus", "KEYPLANE_METRICS_ADDR": ":9464"}, ""},
		{map[string]string{"KEYPLANE_TELEMETRY": "stdout"}, ""},
		{map[string]string{"KEYPLANE_TELEMETRY": "datadog"}, "KEYPLANE_TELEMETRY must be off, stdout, prometheus or gcp"},
		{map[string]string{"KEYPLANE_TELEMETRY": "prometheus", "KEYPLANE_METRICS_ADDR": "9464"}, "KEYPLANE_METRICS_ADDR must be host:port"},
		{map[string]string{"KEYPLANE_TELEMETRY": "gcp"}, "GOOGLE_CLOUD_PROJECT is required with KEYPLANE_TELEMETRY=gcp"},
	} {
		c, err := FromEnv(Embedded(), env(tc.env))
		if err == nil {
			err = c.Validate()
		}
		if tc.problem == "" && err != nil || tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)) {
			t.Errorf("%v: error %v, want %q", tc.env, err, tc.problem)
		}
	}
}

func TestLeakSettings(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		policy  string
		wantErr string // part of Validate's error, "" for none
	}{
		{map[string]string{}, LeakDisable, ""},
		{map[string]string{"KEYPLANE_LEAK_POLICY": "revoke"}, LeakRevoke, ""},
		{map[string]string{"KEYPLANE_LEAK_POLICY": "quarantine"}, LeakQuarantine, ""},
		{map[string]string{"KEYPLANE_LEAK_POLICY": "quarantine", "KEYPLANE_LEAK_QUARANTINE_DAYS": "1", "KEYPLANE_LEAK_QUARANTINE_GRACE": "720h"}, LeakQuarantine, ""},
		{map[string]string{"KEYPLANE_LEAK_QUARANTINE_DAYS": "0"}, LeakDisable, "KEYPLANE_LEAK_QUARANTINE_DAYS must be from 1 to 7"},
		{map[string]string{"KEYPLANE_LEAK_QUARANTINE_DAYS": "8"}, LeakDisable, "KEYPLANE_LEAK_QUARANTINE_DAYS must be from 1 to 7"},
		{map[string]string{"KEYPLANE_LEAK_QUARANTINE_GRACE": "30s"}, LeakDisable, "KEYPLANE_LEAK_QUARANTINE_GRACE must be from 1m0s to 720h0m0s"},
		{map[string]string{"KEYPLANE_LEAK_QUARANTINE_GRACE": "721h"}, LeakDisable, "KEYPLANE_LEAK_QUARANTINE_GRACE must be from"},
		{map[string]string{"KEYPLANE_LEAK_POLICY": "delete"}, "delete", "KEYPLANE_LEAK_POLICY must be"},
		{map[string]string{"KEYPLANE_GITHUB_SCANNING_KEYS_URL": "http://example.com/keys"}, LeakDisable, "KEYPLANE_GITHUB_SCANNING_KEYS_URL"},
		{map[string]string{"KEYPLANE_GITHUB_SCANNING_KEYS_URL": "http://example.com/keys", "KEYPLANE_GITHUB_SCANNING_KEYS": "keys.json"}, LeakDisable, ""},
	} {
		c, err := FromEnv(Embedded(), env(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if c.LeakPolicy != tc.policy {
			t.Errorf("%v: LeakPolicy %q, want %q", tc.env, c.LeakPolicy, tc.policy)
		}
		err = c.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: got error %v, want one containing %q", tc.env, err, tc.wantErr)
		}
	}
	if c := Embedded(); c.GitHubScanningKeysURL != "https://api.github.com/meta/public_keys/secret_scanning" {
		t.Errorf("default keys URL %q", c.GitHubScanningKeysURL)
	}
	if c := Embedded(); c.LeakQuarantineDays != 7 || c.LeakQuarantineGrace != 72*time.Hour {
		t.Errorf("default quarantine: %d days, grace %s; want 7 and 72h", c.LeakQuarantineDays, c.LeakQuarantineGrace)
	}
	for name, v := range map[string]string{"KEYPLANE_LEAK_QUARANTINE_DAYS": "seven", "KEYPLANE_LEAK_QUARANTINE_GRACE": "3 days"} {
		if _, err := FromEnv(Embedded(), env(map[string]string{name: v})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: error %v, want one naming it", name, v, err)
		}
	}
}

func TestLogValidSample(t *testing.T) {
	if c := Embedded(); c.LogValidSample != 10 {
		t.Errorf("default LogValidSample %d, want 10", c.LogValidSample)
	}
	for v, want := range map[string]int{"1": 1, "25": 25, "10000": 10_000} {
		c, err := FromEnv(Embedded(), env(map[string]string{"KEYPLANE_LOG_VALID_SAMPLE": v}))
		if err != nil || c.LogValidSample != want {
			t.Errorf("KEYPLANE_LOG_VALID_SAMPLE=%s: %d, %v; want %d", v, c.LogValidSample, err, want)
		}
	}
	for _, v := range []string{"0", "-3", "10001", "ten", "1.5"} {
		_, err := FromEnv(Embedded(), env(map[string]string{"KEYPLANE_LOG_VALID_SAMPLE": v}))
		if err == nil || !strings.Contains(err.Error(), "KEYPLANE_LOG_VALID_SAMPLE must be a whole number from 1") {
			t.Errorf("KEYPLANE_LOG_VALID_SAMPLE=%q: error %v, want one saying the range", v, err)
		}
	}
}

// testCA returns the PEM of a certificate, to stand for Memorystore's
// server CA.
func testCA(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func TestRedisSettings(t *testing.T) {
	ca := testCA(t)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string // a variable the error names; "" for none
	}{
		{"off by default", nil, ""},
		{"address", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6379"}, ""},
		{"memorystore with auth and TLS", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6378", "KEYPLANE_REDIS_AUTH": "s3cret",
			"KEYPLANE_REDIS_TLS": "true", "KEYPLANE_REDIS_CA": ca, "KEYPLANE_REDIS_TIMEOUT": "100ms"}, ""},
		{"TLS with the system roots", map[string]string{"KEYPLANE_REDIS_ADDR": "redis.example.com:6380", "KEYPLANE_REDIS_TLS": "1"}, ""},
		{"no port", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3"}, "KEYPLANE_REDIS_ADDR"},
		{"no host", map[string]string{"KEYPLANE_REDIS_ADDR": ":6379"}, "KEYPLANE_REDIS_ADDR"},
		{"auth without an address", map[string]string{"KEYPLANE_REDIS_AUTH": "s3cret"}, "KEYPLANE_REDIS_ADDR"},
		{"TLS not a boolean", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6378", "KEYPLANE_REDIS_TLS": "yes"}, "KEYPLANE_REDIS_TLS"},
		{"CA without TLS", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6378", "KEYPLANE_REDIS_CA": ca}, "KEYPLANE_REDIS_TLS"},
		{"CA not PEM", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6378", "KEYPLANE_REDIS_TLS": "1", "KEYPLANE_REDIS_CA": "not a cert"}, "KEYPLANE_REDIS_CA"},
		{"timeout not a duration", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6379", "KEYPLANE_REDIS_TIMEOUT": "50"}, "KEYPLANE_REDIS_TIMEOUT"},
		{"timeout too long", map[string]string{"KEYPLANE_REDIS_ADDR": "10.0.0.3:6379", "KEYPLANE_REDIS_TIMEOUT": "5s"}, "KEYPLANE_REDIS_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromEnv(Cloud(), env(tc.env))
			if err == nil {
				c.Project = "proj"
				err = c.Validate()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error naming %s", err, tc.wantErr)
			}
			if tc.wantErr == "" && c.RedisAddr != tc.env["KEYPLANE_REDIS_ADDR"] {
				t.Errorf("RedisAddr = %q, want %q", c.RedisAddr, tc.env["KEYPLANE_REDIS_ADDR"])
			}
		})
	}
}

func TestStripeSettings(t *testing.T) {
	const key = "rk_test_0123456789abcdef"
	for _, tc := range []struct {
		env     map[string]string
		wantErr string // part of Validate's error, "" for none
	}{
		{map[string]string{}, ""},
		{map[string]string{"KEYPLANE_STRIPE_API_KEY": key, "KEYPLANE_STRIPE_METERS": "requests=api_requests,units@search=search_tokens"}, ""},
		{map[string]string{"KEYPLANE_STRIPE_API_KEY": key, "KEYPLANE_STRIPE_METERS": "units=t", "KEYPLANE_STRIPE_URL": "http://127.0.0.1:12111"}, ""},
		{map[string]string{"KEYPLANE_STRIPE_API_KEY": key}, "KEYPLANE_STRIPE_METERS is required"},
		{map[string]string{"KEYPLANE_STRIPE_API_KEY": key, "KEYPLANE_STRIPE_METERS": "calls=x"}, "KEYPLANE_STRIPE_METERS: \"calls=x\""},
		{map[string]string{"KEYPLANE_STRIPE_API_KEY": key, "KEYPLANE_STRIPE_METERS": "units=t", "KEYPLANE_STRIPE_URL": "127.0.0.1:12111"}, "KEYPLANE_STRIPE_URL must be"},
		{map[string]string{"KEYPLANE_STRIPE_METERS": "units=t"}, "need KEYPLANE_STRIPE_API_KEY"},
	} {
		c, err := FromEnv(Embedded(), env(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: got error %v, want one containing %q", tc.env, err, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("the API key is in an error: %v", err)
		}
	}
}

// TestPortalURL: KEYPLANE_PORTAL_URL is an http(s) origin, nothing more,
// since the portal appends /portal/exchange to it.
func TestPortalURL(t *testing.T) {
	for v, ok := range map[string]bool{
		"":                                   true,
		"https://keyplane-faces-1.a.run.app": true,
		"https://faces.example.com/":         true,
		"http://localhost:8080":              true,
		"ftp://faces.example.com":            false,
		"faces.example.com":                  false,
		"https://faces.example.com/portal":   false,
		"https://faces.example.com?x=1":      false,
		"https://user@faces.example.com":     false,
	} {
		c, err := FromEnv(Embedded(), env(map[string]string{"KEYPLANE_PORTAL_URL": v}))
		if err != nil {
			t.Fatal(err)
		}
		if c.PortalURL != v {
			t.Errorf("PortalURL %q, want %q", c.PortalURL, v)
		}
		err = c.Validate()
		if ok && err != nil {
			t.Errorf("%q: %v", v, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "KEYPLANE_PORTAL_URL")) {
			t.Errorf("%q: error %v, want one naming KEYPLANE_PORTAL_URL", v, err)
		}
	}
}
