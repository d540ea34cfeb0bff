package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/keyplane/keyplane/pkg/client"
)

const keysHelp = `usage: keyplane keys <command> [flags]

commands:
  create  --owner OWNER [--plan P] [--name N] [--scopes a,b] [--expires T] [--metadata k=v]…
          [--limit name=N]… [--allowed-ips …] [--allowed-referrers …] [--allowed-features …]
          prints the new key and its secret, which is shown only this once
  list    [--owner OWNER] [--unused-since T] [--page-size N] [--page-token T] [--all]
  get     KEY_ID
  update  KEY_ID [--name N] [--plan P] [--scopes a,b] [--metadata k=v]… [--clear-metadata]
          [--limit name=N]… [--clear-limits] [--expires T | --no-expiry] [--allowed-… …]
  disable KEY_ID [--reason R]
  enable  KEY_ID
  rotate  KEY_ID [--grace 24h]      a new key with the old one's settings, and its secret
  revoke  KEY_ID [--reason R]       permanent: the secret is destroyed
  reveal  KEY_ID --yes              prints the key's secret; every reveal is audited

keyplane keys <command> --help lists a command's flags.

` + connectionHelp

func keysCmd(e adminEnv, args []string) error {
	return group(e, "keys", keysHelp, map[string]func(adminEnv, []string) error{
		"create":  keysCreate,
		"list":    keysList,
		"get":     keysGet,
		"update":  keysUpdate,
		"disable": keysDisable,
		"enable":  keysEnable,
		"rotate":  keysRotate,
		"revoke":  keysRevoke,
		"reveal":  keysReveal,
	}, args)
}

// restrictionFlags are the --allowed-* flags of create and update.
type restrictionFlags struct {
	ips, referrers, features listFlag
}

func addRestrictionFlags(fs *flag.FlagSet) *restrictionFlags {
	r := &restrictionFlags{}
	fs.Var(&r.ips, "allowed-ips", "addresses or CIDR prefixes the key may be used from, a comma-separated `list`")
	fs.Var(&r.referrers, "allowed-referrers", "referrers the key may be used from (example.com, *.example.com), a comma-separated `list`")
	fs.Var(&r.features, "allowed-features", "the only features (models) the key may be verified for, a comma-separated `list`")
	return r
}

func (r *restrictionFlags) any() bool { return r.ips.set || r.referrers.set || r.features.set }

// apply replaces the restrictions given on the command line in base.
func (r *restrictionFlags) apply(base client.Restrictions) client.Restrictions {
	if r.ips.set {
		base.AllowedIPs = r.ips.v
	}
	if r.referrers.set {
		base.AllowedReferrers = r.referrers.v
	}
	if r.features.set {
		base.AllowedFeatures = r.features.v
	}
	return base
}

func keysCreate(e adminEnv, args []string) error {
	fs, c := adminFlags("keys create", "keys create --owner OWNER [flags]")
	var req client.CreateKeyRequest
	fs.StringVar(&req.Owner, "owner", "", "the owner (project, account) the key is for (required)")
	fs.StringVar(&req.Plan, "plan", "", "the key's plan (default: the server's, free)")
	fs.StringVar(&req.Name, "name", "", "a name, at most 200 characters")
	var scopes listFlag
	fs.Var(&scopes, "scopes", "scopes, a subset of the plan's, a comma-separated `list` (default: all of the plan's)")
	expires := timeFlag{rel: +1}
	fs.Var(&expires, "expires", "expiry: an RFC 3339 `time`, or a duration from now (720h)")
	meta := pairsFlag{}
	fs.Var(meta, "metadata", "metadata `key=value`; repeat for more")
	limits := limitsFlag{}
	fs.Var(limits, "limit", "override of a plan limit, `name=N` (requests_per_day=1000); repeat for more")
	restr := addRestrictionFlags(fs)
	idem := fs.String("idempotency-key", "", "retrying with the same key returns the key created first instead of another")
	if _, err := parseArgs(fs, args, e.stdout); err != nil {
		return err
	}
	if req.Owner == "" {
		return &usageError{fs, errors.New("keys create: --owner is required")}
	}
	cl, err := c.client(fs, e.getenv)
	if err != nil {
		return err
	}
	if scopes.set {
		req.Scopes = scopes.v
	}
	if !expires.t.IsZero() {
		req.ExpiresAt = &expires.t
	}
	if len(meta) > 0 {
		req.Metadata = meta
	}
	if len(limits) > 0 {
		req.Limits = client.Limits(limits)
	}
	if restr.any() {
		r := restr.apply(client.Restrictions{})
		req.Restrictions = &r
	}
	k, err := cl.CreateKey(e.ctx, req, *idem)
	if err != nil {
		return apiFailure("keys create", err)
	}
	if k.Replayed && c.output == "table" {
		fmt.Fprintln(e.stderr, "keyplane: this idempotency key was used before: this is the key created then")
	}
	return renderSecret(c, e.stdout, k)
}

// renderSecret writes a new key with its secret, set apart so that it is
// not missed: it is shown only this once.
func renderSecret(c *conn, stdout io.Writer, k *client.KeyWithSecret) error {
	return render(c, stdout, k, func(w io.Writer) {
		keyDetails(w, &k.Key)
		row(w)
		row(w, "secret (shown only now; store it safely):")
		row(w, "  "+k.Secret)
	})
}

// keyDetails writes one key as name/value lines.
func keyDetails(w io.Writer, k *client.Key) {
	row(w, "id", k.ID)
	row(w, "owner", k.Owner)
	row(w, "name", orDash(k.Name))
	row(w, "plan", k.Plan)
	row(w, "status", string(k.Status))
	if k.StatusReason != "" {
		row(w, "status_reason", k.StatusReason)
	}
	if k.DisabledUntil != nil {
		row(w, "disabled_until", fmtTimePtr(k.DisabledUntil))
	}
	row(w, "secret", k.Prefix+"…"+k.Last4)
	row(w, "scopes", fmtList(k.Scopes))
	row(w, "limits", fmtLimits(k.Limits))
	row(w, "allowed_ips", fmtList(k.Restrictions.AllowedIPs))
	row(w, "allowed_referrers", fmtList(k.Restrictions.AllowedReferrers))
	row(w, "allowed_features", fmtList(k.Restrictions.AllowedFeatures))
	row(w, "metadata", fmtStrings(k.Metadata))
	row(w, "created_at", fmtTime(k.CreatedAt))
	row(w, "updated_at", fmtTime(k.UpdatedAt))
	row(w, "expires_at", fmtTimePtr(k.ExpiresAt))
	row(w, "last_used_at", fmtTimePtr(k.LastUsedAt))
	if k.RotatedFrom != "" {
		row(w, "rotated_from", k.RotatedFrom)
	}
	if k.RotatedTo != "" {
		row(w, "rotated_to", k.RotatedTo)
	}
}

func keysList(e adminEnv, args []string) error {
	fs, c := adminFlags("keys list", "keys list [--owner OWNER] [--unused-since T] [--page-size N] [--page-token T] [--all]")
	owner := fs.String("owner", "", "only this owner's keys")
	unused := timeFlag{rel: -1}
	fs.Var(&unused, "unused-since", "only keys never used or last used before this: an RFC 3339 `time`, or a duration ago (720h)")
	p := addPageFlags(fs)
	cl, _, err := c.start(e, fs, args)
	if err != nil {
		return err
	}
	keys, next, err := collect(p, func(token string) ([]client.Key, string, error) {
		l, err := cl.ListKeys(e.ctx, client.ListKeysOptions{Owner: *owner, UnusedSince: unused.t, PageSize: p.size, PageToken: token})
		if err != nil {
			return nil, "", err
		}
		return l.Keys, l.NextPageToken, nil
	})
	if err != nil {
		return apiFailure("keys list", err)
	}
	if keys == nil {
		keys = []client.Key{}
	}
	err = render(c, e.stdout, client.KeyList{Keys: keys, NextPageToken: next}, func(w io.Writer) {
		row(w, "ID", "OWNER", "NAME", "PLAN", "STATUS", "SECRET", "CREATED", "LAST USED")
		for _, k := range keys {
			row(w, k.ID, k.Owner, orDash(k.Name), k.Plan, string(k.Status), k.Prefix+"…"+k.Last4, fmtTime(k.CreatedAt), fmtTimePtr(k.LastUsedAt))
		}
	})
	moreHint(e.stderr, c, next)
	return err
}

func renderKey(c *conn, stdout io.Writer, k *client.Key) error {
	return render(c, stdout, k, func(w io.Writer) { keyDetails(w, k) })
}

func keysGet(e adminEnv, args []string) error {
	fs, c := adminFlags("keys get", "keys get KEY_ID")
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	k, err := cl.GetKey(e.ctx, pos[0])
	if err != nil {
		return apiFailure("keys get", err)
	}
	return renderKey(c, e.stdout, k)
}

func keysUpdate(e adminEnv, args []string) error {
	fs, c := adminFlags("keys update", "keys update KEY_ID [flags]; only the fields given change")
	name := fs.String("name", "", "the key's name")
	planName := fs.String("plan", "", "the key's plan")
	var scopes listFlag
	fs.Var(&scopes, "scopes", "the key's scopes, a comma-separated `list`; replaces them")
	meta := pairsFlag{}
	fs.Var(meta, "metadata", "metadata `key=value`, repeat for more; replaces all of the key's metadata")
	clearMeta := fs.Bool("clear-metadata", false, "remove all of the key's metadata")
	limits := limitsFlag{}
	fs.Var(limits, "limit", "override of a plan limit, `name=N`, repeat for more; replaces all of the key's overrides")
	clearLimits := fs.Bool("clear-limits", false, "remove the key's overrides: the plan's limits apply")
	expires := timeFlag{rel: +1}
	fs.Var(&expires, "expires", "expiry: an RFC 3339 `time`, or a duration from now (720h)")
	noExpiry := fs.Bool("no-expiry", false, "remove the key's expiry")
	restr := addRestrictionFlags(fs)
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !givesMoreThanConnection(set) {
		return &usageError{fs, errors.New("keys update: nothing to change; give at least one field's flag")}
	}
	var req client.UpdateKeyRequest
	if set["name"] {
		req.Name = name
	}
	if set["plan"] {
		req.Plan = planName
	}
	if scopes.set {
		req.Scopes = &scopes.v
	}
	switch {
	case len(meta) > 0 && *clearMeta:
		return &usageError{fs, errors.New("keys update: --metadata and --clear-metadata exclude each other")}
	case len(meta) > 0:
		m := map[string]string(meta)
		req.Metadata = &m
	case *clearMeta:
		req.Metadata = &map[string]string{}
	}
	switch {
	case len(limits) > 0 && *clearLimits:
		return &usageError{fs, errors.New("keys update: --limit and --clear-limits exclude each other")}
	case len(limits) > 0:
		l := client.Limits(limits)
		req.Limits = &l
	case *clearLimits:
		req.Limits = &client.Limits{}
	}
	switch {
	case !expires.t.IsZero() && *noExpiry:
		return &usageError{fs, errors.New("keys update: --expires and --no-expiry exclude each other")}
	case !expires.t.IsZero():
		req.ExpiresAt = &expires.t
	case *noExpiry:
		req.ClearExpiresAt = true
	}
	if restr.any() {
		// The API replaces the restrictions as a whole: keep the ones not
		// given on the command line.
		cur, err := cl.GetKey(e.ctx, pos[0])
		if err != nil {
			return apiFailure("keys update", err)
		}
		r := restr.apply(cur.Restrictions)
		req.Restrictions = &r
	}
	k, err := cl.UpdateKey(e.ctx, pos[0], req)
	if err != nil {
		return apiFailure("keys update", err)
	}
	return renderKey(c, e.stdout, k)
}

func keysDisable(e adminEnv, args []string) error {
	fs, c := adminFlags("keys disable", "keys disable KEY_ID [--reason R]")
	reason := fs.String("reason", "", "why, recorded as the key's status_reason and in the audit log")
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	k, err := cl.DisableKey(e.ctx, pos[0], *reason)
	if err != nil {
		return apiFailure("keys disable", err)
	}
	return renderKey(c, e.stdout, k)
}

func keysEnable(e adminEnv, args []string) error {
	fs, c := adminFlags("keys enable", "keys enable KEY_ID")
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	k, err := cl.EnableKey(e.ctx, pos[0])
	if err != nil {
		return apiFailure("keys enable", err)
	}
	return renderKey(c, e.stdout, k)
}

func keysRevoke(e adminEnv, args []string) error {
	fs, c := adminFlags("keys revoke", "keys revoke KEY_ID [--reason R]")
	reason := fs.String("reason", "", "why, recorded in the audit log")
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	k, err := cl.RevokeKey(e.ctx, pos[0], *reason)
	if err != nil {
		return apiFailure("keys revoke", err)
	}
	return renderKey(c, e.stdout, k)
}

func keysRotate(e adminEnv, args []string) error {
	fs, c := adminFlags("keys rotate", "keys rotate KEY_ID [--grace 24h] [--idempotency-key K]")
	grace := fs.Duration("grace", 0, "how long the old key keeps verifying, at most 720h; 0 ends it at once (default: the server's, 24h)")
	idem := fs.String("idempotency-key", "", "retrying with the same key returns the key created first instead of another")
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	g := time.Duration(0) // the server's default
	if setFlags(fs)["grace"] {
		if *grace < 0 {
			return &usageError{fs, fmt.Errorf("keys rotate: --grace %s is negative", *grace)}
		}
		g = *grace
		if g == 0 {
			g = client.NoGracePeriod
		}
	}
	k, err := cl.RotateKey(e.ctx, pos[0], g, *idem)
	if err != nil {
		return apiFailure("keys rotate", err)
	}
	return renderSecret(c, e.stdout, k)
}

func keysReveal(e adminEnv, args []string) error {
	fs, c := adminFlags("keys reveal", "keys reveal KEY_ID --yes")
	yes := fs.Bool("yes", false, "print the key's secret; the reveal is recorded in the audit log (required)")
	cl, pos, err := c.start(e, fs, args, "KEY_ID")
	if err != nil {
		return err
	}
	if !*yes {
		return &usageError{fs, errors.New("keys reveal: prints the key's secret and records the reveal in the audit log; pass --yes to do so")}
	}
	secret, err := cl.RevealSecret(e.ctx, pos[0])
	if err != nil {
		return apiFailure("keys reveal", err)
	}
	fmt.Fprintf(e.stderr, "keyplane: warning: printing %s's secret; this reveal is recorded in the audit log\n", pos[0])
	out := struct {
		KeyID  string `json:"key_id"`
		Secret string `json:"secret"`
	}{pos[0], secret}
	return render(c, e.stdout, out, func(w io.Writer) { row(w, secret) })
}
