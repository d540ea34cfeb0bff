package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/keyplane/keyplane/pkg/client"
)

func usageCmd(e adminEnv, args []string) error {
	fs, c := adminFlags("usage", `usage --key KEY_ID [--window day] [--at T]
       keyplane usage [--owner OWNER] [--window month] [--at T] [--page-size N] [--page-token T] [--all]
       keyplane usage --owner OWNER --bucket day [--group-by key|feature] [--start T] [--end T]

With --key: that key's usage in one window, with its limits. Without --bucket: every key's
usage (an owner's with --owner) in one window, as the billing export. With --bucket: the
owner's usage per bucket from --start to --end, one series per key or feature with --group-by.
`)
	key := fs.String("key", "", "one key's usage")
	owner := fs.String("owner", "", "one owner's usage")
	window := fs.String("window", "", "minute, hour, day or month (default: day with --key, month otherwise)")
	var at timeFlag
	fs.Var(&at, "at", "a `time` inside the window, RFC 3339 (default: now)")
	bucket := fs.String("bucket", "", "series: minute, hour, day or month buckets")
	groupBy := fs.String("group-by", "", "series: key or feature, for one series per key or per feature")
	var start, end timeFlag
	fs.Var(&start, "start", "series: the first bucket, an RFC 3339 `time` (default: the server's span before --end)")
	fs.Var(&end, "end", "series: the end of the range, an RFC 3339 `time`, exclusive (default: the end of the current bucket)")
	p := addPageFlags(fs)
	if _, err := parseArgs(fs, args, e.stdout); err != nil {
		return err
	}
	set := setFlags(fs)
	series := *bucket != "" || *groupBy != "" || set["start"] || set["end"]
	switch {
	case *key != "" && *owner != "":
		return &usageError{fs, errors.New("usage: --key and --owner exclude each other")}
	case series && *owner == "":
		return &usageError{fs, errors.New("usage: --bucket, --group-by, --start and --end need --owner")}
	case series && (*window != "" || set["at"] || set["page-size"] || set["page-token"] || p.all):
		return &usageError{fs, errors.New("usage: --window, --at and the page flags do not go with a series (--bucket)")}
	case *key != "" && (set["page-size"] || set["page-token"] || p.all):
		return &usageError{fs, errors.New("usage: the page flags do not go with --key")}
	}
	cl, err := c.client(fs, e.getenv)
	if err != nil {
		return err
	}
	switch {
	case *key != "":
		u, err := cl.KeyUsage(e.ctx, *key, *window, at.t)
		if err != nil {
			return apiFailure("usage", err)
		}
		return render(c, e.stdout, u, func(w io.Writer) {
			row(w, "key", u.KeyID)
			row(w, "window", u.Window+" "+fmtTime(u.Start)+" – "+fmtTime(u.End))
			row(w, "requests", fmtInt(u.Requests))
			row(w, "units", fmtInt(u.Units))
			row(w, "bytes", fmtInt(u.Bytes))
			for _, name := range slices.Sorted(maps.Keys(u.Limits)) {
				l := u.Limits[name]
				used := "-"
				if l.Used != nil {
					used = fmtInt(*l.Used)
				}
				row(w, "limit "+name, "used "+used+" of "+fmtInt(l.Limit)+", remaining "+fmtInt(l.Remaining)+", resets "+fmtTime(l.ResetAt))
			}
		})
	case series:
		s, err := cl.UsageSeries(e.ctx, client.UsageSeriesOptions{Owner: *owner, Bucket: *bucket, GroupBy: *groupBy, Start: start.t, End: end.t})
		if err != nil {
			return apiFailure("usage", err)
		}
		return render(c, e.stdout, s, func(w io.Writer) {
			row(w, "GROUP", "START", "REQUESTS", "UNITS", "BYTES")
			for _, sr := range s.Series {
				g := orDash(fmtStrings(sr.Group))
				for _, pt := range sr.Points {
					row(w, g, fmtTime(pt.Start), fmtInt(pt.Requests), fmtInt(pt.Units), fmtInt(pt.Bytes))
				}
			}
		})
	}
	var first *client.UsagePage
	rows, next, err := collect(p, func(token string) ([]client.UsageRow, string, error) {
		pg, err := cl.UsageExport(e.ctx, client.UsageExportOptions{Owner: *owner, Window: *window, At: at.t, PageSize: p.size, PageToken: token})
		if err != nil {
			return nil, "", err
		}
		if first == nil {
			first = pg
		}
		return pg.Usage, pg.NextPageToken, nil
	})
	if err != nil {
		return apiFailure("usage", err)
	}
	if rows == nil {
		rows = []client.UsageRow{}
	}
	out := client.UsagePage{Window: first.Window, Start: first.Start, End: first.End, Usage: rows, NextPageToken: next}
	err = render(c, e.stdout, out, func(w io.Writer) {
		row(w, "KEY", "OWNER", "REQUESTS", "UNITS", "BYTES", "AMOUNT", "ADJUSTMENTS")
		for _, r := range rows {
			var adj []string
			for _, a := range r.Adjustments {
				adj = append(adj, fmt.Sprintf("%s: %d req, %s", a.CountedIn.Format("2006-01"), a.Requests, a.Amount))
			}
			row(w, r.KeyID, r.Owner, fmtInt(r.Requests), fmtInt(r.Units), fmtInt(r.Bytes), r.Amount, orDash(strings.Join(adj, "; ")))
		}
	})
	if c.output == "table" {
		fmt.Fprintf(e.stderr, "window: %s %s – %s\n", out.Window, fmtTime(out.Start), fmtTime(out.End))
	}
	moreHint(e.stderr, c, next)
	return err
}

func auditCmd(e adminEnv, args []string) error {
	fs, c := adminFlags("audit", "audit [--key-id KEY_ID] [--page-size N] [--page-token T] [--all]\n\nThe audit log, newest first: every key state change and secret reveal.\n")
	keyID := fs.String("key-id", "", "only this key's entries")
	p := addPageFlags(fs)
	cl, _, err := c.start(e, fs, args)
	if err != nil {
		return err
	}
	entries, next, err := collect(p, func(token string) ([]client.AuditEntry, string, error) {
		l, err := cl.ListAudit(e.ctx, client.AuditOptions{KeyID: *keyID, PageSize: p.size, PageToken: token})
		if err != nil {
			return nil, "", err
		}
		return l.Entries, l.NextPageToken, nil
	})
	if err != nil {
		return apiFailure("audit", err)
	}
	if entries == nil {
		entries = []client.AuditEntry{}
	}
	err = render(c, e.stdout, client.AuditList{Entries: entries, NextPageToken: next}, func(w io.Writer) {
		row(w, "TIME", "ACTOR", "ACTION", "KEY", "DETAILS")
		for _, a := range entries {
			row(w, fmtTime(a.Time), a.Actor, a.Action, orDash(a.KeyID), fmtStrings(a.Details))
		}
	})
	moreHint(e.stderr, c, next)
	return err
}

const ownersHelp = `usage: keyplane owners <command> [flags]

commands:
  list    [--page-size N] [--page-token T] [--all]
  get     OWNER
  update  OWNER [--plan P] [--limit name=N]… [--clear-limits]
          [--feature-limit FEATURE.name=N]… [--clear-feature-limits]
          [--spend-cap AMOUNT | --clear-spend-cap]
          the owner's tier (plan), its overrides of the plan's shared limits
          and its monthly spend cap
  spend   OWNER [--month 2026-12]
          what the owner's usage of a UTC month cost, by feature, with its cap

An owner's prepaid credits: keyplane credits add|list OWNER.

An owner exists once it has a key: keyplane keys create --owner OWNER creates it.
keyplane owners <command> --help lists a command's flags.

` + connectionHelp

func ownersCmd(e adminEnv, args []string) error {
	return group(e, "owners", ownersHelp, map[string]func(adminEnv, []string) error{
		"list":   ownersList,
		"get":    ownersGet,
		"update": ownersUpdate,
		"spend":  ownersSpend,
		"create": ownersCreate,
	}, args)
}

// ownersCreate explains where owners come from: the API creates an owner
// with its first key, and has no route of its own for it.
func ownersCreate(e adminEnv, args []string) error {
	fs, _ := adminFlags("owners create", "owners create: there is no such operation; an owner exists once it has a key")
	pos, err := parseArgs(fs, args, e.stdout, "OWNER")
	if err != nil {
		return err
	}
	return &usageError{fs, fmt.Errorf("owners create: an owner exists once it has a key: run keyplane keys create --owner %s, then keyplane owners update %s to set its tier and limits", pos[0], pos[0])}
}

func ownersList(e adminEnv, args []string) error {
	fs, c := adminFlags("owners list", "owners list [--page-size N] [--page-token T] [--all]")
	p := addPageFlags(fs)
	cl, _, err := c.start(e, fs, args)
	if err != nil {
		return err
	}
	owners, next, err := collect(p, func(token string) ([]client.Owner, string, error) {
		l, err := cl.ListOwners(e.ctx, p.size, token)
		if err != nil {
			return nil, "", err
		}
		return l.Owners, l.NextPageToken, nil
	})
	if err != nil {
		return apiFailure("owners list", err)
	}
	if owners == nil {
		owners = []client.Owner{}
	}
	err = render(c, e.stdout, client.OwnerList{Owners: owners, NextPageToken: next}, func(w io.Writer) {
		row(w, "OWNER", "PLAN", "SUSPENDED", "OVERRIDES", "CREATED")
		for _, o := range owners {
			row(w, o.Owner, o.Plan, suspension(o.Suspension), fmtLimits(o.Limits), fmtTime(o.CreatedAt))
		}
	})
	moreHint(e.stderr, c, next)
	return err
}

func suspension(s *client.OwnerSuspension) string {
	if s == nil {
		return "-"
	}
	what := s.Limit
	if s.Feature != "" {
		what = s.Feature + "." + s.Limit
	}
	return fmt.Sprintf("%s %d/%d until %s", what, s.Used, s.Max, fmtTime(s.Until))
}

func renderOwner(c *conn, stdout io.Writer, o *client.Owner) error {
	return render(c, stdout, o, func(w io.Writer) {
		row(w, "owner", o.Owner)
		row(w, "plan", o.Plan)
		row(w, "suspended", suspension(o.Suspension))
		row(w, "limit overrides", fmtLimits(o.Limits))
		for _, f := range slices.Sorted(maps.Keys(o.Features)) {
			row(w, "feature overrides "+f, fmtLimits(o.Features[f]))
		}
		for _, name := range slices.Sorted(maps.Keys(o.Effective.OwnerLimits)) {
			l := o.Effective.OwnerLimits[name]
			row(w, "limit "+name, fmtInt(l.Limit)+" ("+l.Source+")")
		}
		for _, f := range slices.Sorted(maps.Keys(o.Effective.Features)) {
			var parts []string
			for _, name := range slices.Sorted(maps.Keys(o.Effective.Features[f])) {
				l := o.Effective.Features[f][name]
				parts = append(parts, name+"="+fmtInt(l.Limit)+" ("+l.Source+")")
			}
			row(w, "feature "+f, orDash(strings.Join(parts, ", ")))
		}
		other := "no"
		if o.Effective.OtherFeatures {
			other = "yes"
		}
		row(w, "other features", other)
		spendCap := "- (the plan's, if any)"
		if o.SpendCap != nil {
			spendCap = o.SpendCap.Monthly + " a month (owner override)"
		}
		row(w, "spend cap", spendCap)
		row(w, "created_at", fmtTime(o.CreatedAt))
		row(w, "updated_at", fmtTime(o.UpdatedAt))
	})
}

func ownersGet(e adminEnv, args []string) error {
	fs, c := adminFlags("owners get", "owners get OWNER")
	cl, pos, err := c.start(e, fs, args, "OWNER")
	if err != nil {
		return err
	}
	o, err := cl.GetOwner(e.ctx, pos[0])
	if err != nil {
		return apiFailure("owners get", err)
	}
	return renderOwner(c, e.stdout, o)
}

func ownersUpdate(e adminEnv, args []string) error {
	fs, c := adminFlags("owners update", "owners update OWNER [flags]; only what is given changes")
	planName := fs.String("plan", "", "the owner's tier: a plan, whose owner_limits its keys share")
	limits := limitsFlag{}
	fs.Var(limits, "limit", "override of the plan's owner limit, `name=N`, repeat for more; replaces all of the owner's overrides")
	clearLimits := fs.Bool("clear-limits", false, "remove the owner's limit overrides")
	features := featureLimitsFlag{}
	fs.Var(features, "feature-limit", "override of a feature's limit, `feature.name=N`, repeat for more; replaces all feature overrides")
	clearFeatures := fs.Bool("clear-feature-limits", false, "remove the owner's feature overrides")
	spendCap := fs.String("spend-cap", "", "the owner's monthly spend cap, a decimal `amount` in its plan's currency (25.00); overrides the plan's")
	clearSpendCap := fs.Bool("clear-spend-cap", false, "remove the owner's spend cap (the plan's applies again)")
	pos, err := parseArgs(fs, args, e.stdout, "OWNER")
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !givesMoreThanConnection(set) {
		return &usageError{fs, errors.New("owners update: nothing to change; give --plan, --limit, --feature-limit or --spend-cap")}
	}
	var req client.UpdateOwnerRequest
	if set["plan"] {
		req.Plan = planName
	}
	switch {
	case len(limits) > 0 && *clearLimits:
		return &usageError{fs, errors.New("owners update: --limit and --clear-limits exclude each other")}
	case len(limits) > 0:
		l := client.Limits(limits)
		req.Limits = &l
	case *clearLimits:
		req.Limits = &client.Limits{}
	}
	switch {
	case len(features) > 0 && *clearFeatures:
		return &usageError{fs, errors.New("owners update: --feature-limit and --clear-feature-limits exclude each other")}
	case len(features) > 0:
		f := map[string]client.Limits(features)
		req.Features = &f
	case *clearFeatures:
		req.Features = &map[string]client.Limits{}
	}
	switch {
	case set["spend-cap"] && *clearSpendCap:
		return &usageError{fs, errors.New("owners update: --spend-cap and --clear-spend-cap exclude each other")}
	case set["spend-cap"]:
		req.SpendCap = &client.SpendCap{Monthly: *spendCap}
	case *clearSpendCap:
		req.ClearSpendCap = true
	}
	cl, err := c.client(fs, e.getenv)
	if err != nil {
		return err
	}
	o, err := cl.UpdateOwner(e.ctx, pos[0], req)
	if err != nil {
		return apiFailure("owners update", err)
	}
	return renderOwner(c, e.stdout, o)
}

func ownersSpend(e adminEnv, args []string) error {
	fs, c := adminFlags("owners spend", "owners spend OWNER [--month 2026-12]\n\nWhat the owner's usage of one UTC month cost, priced by its plan, in total and by feature;\nwith its monthly spend cap and, if it is prepaid, its credits left.\n")
	month := fs.String("month", "", "the UTC `month`, YYYY-MM (default: the current one)")
	cl, pos, err := c.start(e, fs, args, "OWNER")
	if err != nil {
		return err
	}
	s, err := cl.GetSpend(e.ctx, pos[0], *month)
	if err != nil {
		return apiFailure("owners spend", err)
	}
	return render(c, e.stdout, s, func(w io.Writer) {
		row(w, "owner", s.Owner)
		row(w, "month", s.Month)
		row(w, "currency", s.Currency)
		row(w, "amount", s.Amount)
		spendCap := "-"
		if s.Cap != nil {
			spendCap = *s.Cap
			if s.CapSource != "" {
				spendCap += " (" + s.CapSource + ")"
			}
		}
		row(w, "cap", spendCap)
		credits := "- (not prepaid)"
		if s.Credits != nil {
			credits = *s.Credits
		}
		row(w, "credits", credits)
		if len(s.ByFeature) > 0 {
			row(w, "")
			row(w, "FEATURE", "AMOUNT", "REQUESTS", "UNITS")
			for _, f := range s.ByFeature {
				row(w, orDash(f.Feature), f.Amount, fmtInt(f.Requests), fmtInt(f.Units))
			}
		}
	})
}

const creditsHelp = `usage: keyplane credits <command> [flags]

commands:
  add   OWNER --id PAYMENT_ID --amount AMOUNT
        grants a prepaid top-up, once per id (your payment's reference): the same id
        and amount again changes nothing; the same id with another amount is refused
  list  OWNER
        the owner's top-ups, oldest first, and its balance

An owner's first top-up makes it prepaid: its priced requests are refused once its
credits are spent. keyplane owners spend OWNER shows what it spent.
keyplane credits <command> --help lists a command's flags.

` + connectionHelp

func creditsCmd(e adminEnv, args []string) error {
	return group(e, "credits", creditsHelp, map[string]func(adminEnv, []string) error{
		"add":  creditsAdd,
		"list": creditsList,
	}, args)
}

func creditsAdd(e adminEnv, args []string) error {
	fs, c := adminFlags("credits add", "credits add OWNER --id PAYMENT_ID --amount AMOUNT")
	id := fs.String("id", "", "the top-up's id, your payment's reference (required); a replay with it changes nothing")
	amount := fs.String("amount", "", "the top-up, a decimal `amount` in the owner's plan's currency, e.g. 10.00 (required)")
	pos, err := parseArgs(fs, args, e.stdout, "OWNER")
	if err != nil {
		return err
	}
	switch {
	case *id == "":
		return &usageError{fs, errors.New("credits add: --id is required")}
	case *amount == "":
		return &usageError{fs, errors.New("credits add: --amount is required")}
	}
	cl, err := c.client(fs, e.getenv)
	if err != nil {
		return err
	}
	g, err := cl.AddCredits(e.ctx, pos[0], *id, *amount)
	if err != nil {
		return apiFailure("credits add", err)
	}
	return render(c, e.stdout, g, func(w io.Writer) {
		row(w, "owner", g.Owner)
		row(w, "id", g.ID)
		row(w, "amount", g.Amount+" "+g.Currency)
		row(w, "at", g.At)
		row(w, "balance", g.Balance+" "+g.Currency)
	})
}

func creditsList(e adminEnv, args []string) error {
	fs, c := adminFlags("credits list", "credits list OWNER")
	cl, pos, err := c.start(e, fs, args, "OWNER")
	if err != nil {
		return err
	}
	l, err := cl.ListCredits(e.ctx, pos[0])
	if err != nil {
		return apiFailure("credits list", err)
	}
	return render(c, e.stdout, l, func(w io.Writer) {
		row(w, "owner", l.Owner)
		row(w, "granted", l.Granted+" "+l.Currency)
		row(w, "balance", l.Balance+" "+l.Currency)
		if len(l.Credits) > 0 {
			row(w, "")
			row(w, "ID", "AMOUNT", "AT")
			for _, g := range l.Credits {
				row(w, g.ID, g.Amount, g.At)
			}
		}
	})
}

func sweepCmd(e adminEnv, args []string) error {
	fs, c := adminFlags("sweep", "sweep [--dry-run]\n\nRuns the quota and abuse sweep now and prints what it did; with --dry-run, what it would do.\n")
	dry := fs.Bool("dry-run", false, "change nothing and notify no one; report what a sweep would do")
	cl, _, err := c.start(e, fs, args)
	if err != nil {
		return err
	}
	r, err := cl.RunSweep(e.ctx, *dry)
	if err != nil {
		return apiFailure("sweep", err)
	}
	return render(c, e.stdout, r, func(w io.Writer) {
		verb := "did"
		if r.DryRun {
			verb = "would do (dry run)"
		}
		row(w, "sweep", verb)
		complete := "complete"
		if !r.Complete {
			complete = "stopped at its budget"
		}
		row(w, "scanned", fmt.Sprintf("%d keys, %d owners, %s", r.Scanned, r.OwnersScanned, complete))
		for _, d := range r.Disabled {
			row(w, "disable key", fmt.Sprintf("%s: %s, %s %d/%d until %s", d.KeyID, d.Reason, d.Limit, d.Used, d.Max, fmtTimePtr(d.Until)))
		}
		for _, d := range r.Reenabled {
			row(w, "re-enable key", d.KeyID+": "+d.Reason)
		}
		for _, t := range r.Thresholds {
			row(w, "notify", fmt.Sprintf("%s: %s at %d%% (%d/%d)", t.KeyID, t.Limit, t.Threshold, t.Used, t.Max))
		}
		for _, o := range r.OwnersSuspended {
			what := o.Limit
			if o.Feature != "" {
				what = o.Feature + "." + o.Limit
			}
			row(w, "suspend owner", fmt.Sprintf("%s: %s %d/%d until %s", o.Owner, what, o.Used, o.Max, fmtTime(o.Until)))
		}
		for _, o := range r.OwnersLifted {
			row(w, "lift owner", o.Owner+": "+o.Reason)
		}
		row(w, "unchanged", fmtInt(int64(r.Unchanged)))
		row(w, "took", r.FinishedAt.Sub(r.StartedAt).String())
	})
}

func portalLinkCmd(e adminEnv, args []string) error {
	fs, c := adminFlags("portal-link", "portal-link --owner OWNER [--return-url URL] [--permissions keys:read,keys:create]\n\nCreates a link to the self-service portal for one owner's keys. The link is a credential:\nhand it only to that owner.\n")
	owner := fs.String("owner", "", "the owner the portal is for (required)")
	returnURL := fs.String("return-url", "", "where the portal's back link leads")
	var perms listFlag
	fs.Var(&perms, "permissions", "what the portal's visitor may do, a comma-separated `list` of permissions (default: the server's)")
	if _, err := parseArgs(fs, args, e.stdout); err != nil {
		return err
	}
	if *owner == "" {
		return &usageError{fs, errors.New("portal-link: --owner is required")}
	}
	cl, err := c.client(fs, e.getenv)
	if err != nil {
		return err
	}
	s, err := cl.CreatePortalSession(e.ctx, client.PortalSessionRequest{Owner: *owner, ReturnURL: *returnURL, Permissions: perms.v})
	if err != nil {
		return apiFailure("portal-link", err)
	}
	return render(c, e.stdout, s, func(w io.Writer) {
		row(w, "url", s.URL)
		row(w, "expires_at", fmtTime(s.ExpiresAt))
	})
}
