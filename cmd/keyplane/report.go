package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/webhook"
)

// reportUsage sends one signed usage event, as a gateway would.
func reportUsage(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("report-usage", "report-usage --key-id key_… [--requests 1] [--units 0] [--bytes 0] [--feature pro-model] [--id evt_…] [--url http://127.0.0.1:8080]")
	url := fs.String("url", "http://127.0.0.1:8080", "keyplane's base URL")
	keyID := fs.String("key-id", "", "the key the usage is for (required)")
	id := fs.String("id", "", "event id (default: a new random id; reuse one to see it counted once)")
	requests := fs.Int64("requests", 1, "requests")
	units := fs.Int64("units", 0, "units, e.g. tokens")
	size := fs.Int64("bytes", 0, "bytes")
	feature := fs.String("feature", "", "the feature (model) the usage is of; none if empty")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *keyID == "" {
		return &usageError{fs, errors.New("report-usage: --key-id is required")}
	}
	secret, err := webhook.ParseSecret(getenv("KEYPLANE_WEBHOOK_SECRET"))
	if err != nil {
		return fmt.Errorf("report-usage: KEYPLANE_WEBHOOK_SECRET: %w", err)
	}
	if *id == "" {
		*id = "evt_" + apikey.RandomString(20)
	}
	event := map[string]any{
		"id": *id, "key_id": *keyID, "time": time.Now().UTC().Format(time.RFC3339),
		"requests": *requests, "units": *units, "bytes": *size,
	}
	if *feature != "" {
		event["feature"] = *feature
	}
	body, _ := json.Marshal(map[string]any{"events": []map[string]any{event}})
	req, err := http.NewRequestWithContext(ctx, "POST", *url+"/v1/usage", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	secret.SetHeaders(req.Header, "msg_"+apikey.RandomString(16), time.Now(), body)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	fmt.Fprintf(stdout, "%d %s", res.StatusCode, out)
	if res.StatusCode != http.StatusAccepted {
		return fmt.Errorf("report-usage: keyplane answered %d", res.StatusCode)
	}
	return nil
}
