package config

import (
	"strings"
	"testing"
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
