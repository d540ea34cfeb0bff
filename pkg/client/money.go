package client

import (
	"context"
	"net/http"
	"net/url"
)

// SpendCap is an owner's monthly spend cap: a decimal amount in its
// plan's currency, such as "25.00".
type SpendCap struct {
	Monthly string `json:"monthly"`
}

// Spend is what an owner's usage of one UTC month cost. Amounts are
// decimal strings with 6 decimals in Currency.
type Spend struct {
	Owner     string         `json:"owner"`
	Month     string         `json:"month"` // 2026-12
	Currency  string         `json:"currency"`
	Amount    string         `json:"amount"`
	ByFeature []FeatureSpend `json:"by_feature"`
	Cap       *string        `json:"cap"` // the monthly spend cap; nil for none
	CapSource string         `json:"cap_source,omitempty"`
	Credits   *string        `json:"credits"` // a prepaid owner's balance now; nil if not prepaid
}

// FeatureSpend is one feature's part of a month's spend; Feature "" is
// usage reported without a feature.
type FeatureSpend struct {
	Feature  string `json:"feature"`
	Amount   string `json:"amount"`
	Requests int64  `json:"requests"`
	Units    int64  `json:"units"`
}

// GetSpend reads owner's spend in month ("2026-12"; "" for the current
// UTC month).
func (c *Client) GetSpend(ctx context.Context, owner, month string) (*Spend, error) {
	p, err := ownerPath(owner)
	if err != nil {
		return nil, err
	}
	var q url.Values
	if month != "" {
		q = url.Values{"month": {month}}
	}
	var out Spend
	if _, err := c.do(ctx, http.MethodGet, p+"/spend", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Credit is one prepaid top-up. Balance, the owner's credits left, is set
// in AddCredits' answer.
type Credit struct {
	Owner    string `json:"owner"`
	ID       string `json:"id"`
	Amount   string `json:"amount"`
	At       string `json:"at"`
	Currency string `json:"currency"`
	Balance  string `json:"balance,omitempty"`
}

// CreditList is an owner's top-ups, oldest first, and its balance.
type CreditList struct {
	Owner    string   `json:"owner"`
	Currency string   `json:"currency"`
	Granted  string   `json:"granted"`
	Balance  string   `json:"balance"`
	Credits  []Credit `json:"credits"`
}

// AddCredits grants owner a prepaid top-up of amount ("10.00"), once per
// id (the payment's reference): a replay with the same id and amount
// returns the top-up first granted (its At unchanged) and changes
// nothing; one with another amount is an *APIError with status 409.
func (c *Client) AddCredits(ctx context.Context, owner, id, amount string) (*Credit, error) {
	p, err := ownerPath(owner)
	if err != nil {
		return nil, err
	}
	var out Credit
	if _, err := c.do(ctx, http.MethodPost, p+"/credits", nil, map[string]string{"id": id, "amount": amount}, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListCredits returns owner's top-ups and credit balance.
func (c *Client) ListCredits(ctx context.Context, owner string) (*CreditList, error) {
	p, err := ownerPath(owner)
	if err != nil {
		return nil, err
	}
	var out CreditList
	if _, err := c.do(ctx, http.MethodGet, p+"/credits", nil, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
