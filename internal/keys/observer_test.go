package keys_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/verify"
)

// TestOwnChangesVerifyAtOnce: with the Verifier as the service's
// Observer, a change answers from the new state on the next verify, though
// the change feed is not polled for an hour (the fake clock never moves).
func TestOwnChangesVerifyAtOnce(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(e *env, id string) error
		want   verify.Code
	}{
		{"disable", func(e *env, id string) error { _, err := e.svc.Disable(ctx, "op", id, "investigating"); return err }, verify.Disabled},
		{"revoke", func(e *env, id string) error { _, err := e.svc.Revoke(ctx, "op", id, "leaked"); return err }, verify.Revoked},
		{"rotate without grace", func(e *env, id string) error {
			_, err := e.svc.Rotate(ctx, "op", id, keys.RotateRequest{GracePeriod: "0s"}, "")
			return err
		}, verify.Expired},
		{"scopes", func(e *env, id string) error {
			_, err := e.svc.Update(ctx, "op", id, keys.UpdateRequest{Scopes: &[]string{"embed"}})
			return err
		}, verify.InsufficientPermissions},
		{"restrictions", func(e *env, id string) error {
			_, err := e.svc.Update(ctx, "op", id, keys.UpdateRequest{Restrictions: &store.Restrictions{AllowedIPs: []string{"10.0.0.0/8"}}})
			return err
		}, verify.Forbidden},
		{"limits", func(e *env, id string) error {
			_, err := e.svc.Update(ctx, "op", id, keys.UpdateRequest{Limits: &plan.Limits{"requests_per_minute": 0}})
			return err
		}, verify.RateLimited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			v := verify.New(e.store, e.svc.Hasher, e.svc.Plans, e.clock, &verify.Options{SyncInterval: time.Hour})
			e.svc.Observer = v
			c, err := e.svc.Create(ctx, "op", keys.CreateRequest{Owner: "o", Scopes: []string{"generate"}}, "")
			if err != nil {
				t.Fatal(err)
			}
			req := verify.Request{Key: c.Secret, Scope: "generate", IP: "192.0.2.1", Units: 1}
			if d, err := v.Verify(ctx, req); err != nil || d.Code != verify.Valid {
				t.Fatalf("before the change: verify = %v, %v; want VALID", d.Code, err)
			}
			if err := tc.change(e, c.Key.ID); err != nil {
				t.Fatal(err)
			}
			if d, err := v.Verify(ctx, req); err != nil || d.Code != tc.want {
				t.Errorf("right after the change: verify = %v, %v; want %v", d.Code, err, tc.want)
			}
		})
	}
}
