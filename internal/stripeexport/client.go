package stripeexport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v82"

	"github.com/keyplane/keyplane/internal/errs"
)

// MeterEvent is one meter event as Stripe takes it.
type MeterEvent struct {
	EventName  string
	Customer   string // the Stripe customer id (payload[stripe_customer_id])
	Value      int64  // payload[value]
	Identifier string // Stripe's dedupe key; also the request's Idempotency-Key
	Time       time.Time
}

// Client is the part of Stripe's API the exporter uses, through stripe-go.
type Client struct {
	sc *stripe.Client
}

// NewClient returns a Client with API key apiKey. url, if not "", replaces
// https://api.stripe.com (stripe-mock, a test server); hc, if not nil, is
// the HTTP client. stripe-go's own retries are off: the exporter retries.
func NewClient(apiKey, url string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	cfg := &stripe.BackendConfig{
		HTTPClient:        hc,
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		EnableTelemetry:   stripe.Bool(false),
	}
	if url != "" {
		cfg.URL = stripe.String(url)
	}
	b := stripe.GetBackendWithConfig(stripe.APIBackend, cfg)
	return &Client{sc: stripe.NewClient(apiKey, stripe.WithBackends(&stripe.Backends{API: b, Connect: b, Uploads: b, MeterEvents: b}))}
}

// Send creates ev. A nil error means Stripe has the event: created now, or
// before (the Idempotency-Key's replay, or resource_already_exists for its
// identifier). Errors are errs.Unavailable (429, 5xx, network: retry) or
// errs.Invalid (any other refusal: retrying will not help), with Stripe's
// message.
func (c *Client) Send(ctx context.Context, ev MeterEvent) error {
	p := &stripe.BillingMeterEventCreateParams{
		EventName:  stripe.String(ev.EventName),
		Identifier: stripe.String(ev.Identifier),
		Payload:    map[string]string{"stripe_customer_id": ev.Customer, "value": strconv.FormatInt(ev.Value, 10)},
		Timestamp:  stripe.Int64(ev.Time.Unix()),
	}
	p.SetIdempotencyKey("keyplane-" + ev.Identifier)
	_, err := c.sc.V1BillingMeterEvents.Create(ctx, p)
	return classify(err)
}

// CustomerMetadataKey is the metadata key of a Stripe customer that names
// its keyplane owner.
const CustomerMetadataKey = "keyplane_owner"

// Customer returns the id of the Stripe customer whose metadata
// keyplane_owner is owner, or "" if there is none; several such customers
// are an *AmbiguousError (which one to bill is the operator's to say). owner
// must be a valid owner id (no quotes, so it is safe inside the query).
func (c *Client) Customer(ctx context.Context, owner string) (string, error) {
	p := &stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{
		Query: fmt.Sprintf("metadata['%s']:'%s'", CustomerMetadataKey, owner),
		Limit: stripe.Int64(2),
	}}
	var found []string
	for cust, err := range c.sc.V1Customers.Search(ctx, p) {
		if err != nil {
			return "", classify(err)
		}
		if found = append(found, cust.ID); len(found) == 2 {
			break
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", &AmbiguousError{Owner: owner, Customers: found}
}

// AmbiguousError says that several Stripe customers name one owner.
type AmbiguousError struct {
	Owner     string
	Customers []string // two of them
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("stripe: customers %s and %s both have metadata %s=%s", e.Customers[0], e.Customers[1], CustomerMetadataKey, e.Owner)
}

// classify turns a stripe-go error into an errs kind.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if !errors.As(err, &se) {
		return errs.Wrap(errs.Unavailable, err, "stripe: no answer")
	}
	switch {
	case se.Code == stripe.ErrorCodeResourceAlreadyExists:
		return nil
	case se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500 || se.HTTPStatusCode == 0:
		return errs.E(errs.Unavailable, "stripe: %d %s", se.HTTPStatusCode, se.Msg)
	}
	return errs.E(errs.Invalid, "stripe: %d %s: %s", se.HTTPStatusCode, se.Type, se.Msg)
}
