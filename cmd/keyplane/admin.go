package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyplane/keyplane/pkg/client"
)

// The admin commands call keyplane's HTTP API through pkg/client, as any
// other program would: they need only a URL and a token, not the data
// directory, and work against a deployment as against a local serve.

// adminEnv is what an admin command runs with.
type adminEnv struct {
	ctx            context.Context
	getenv         func(string) string
	stdout, stderr io.Writer
}

// adminCommands are the commands run by the API's client, by name.
var adminCommands = map[string]func(e adminEnv, args []string) error{
	"keys":        keysCmd,
	"usage":       usageCmd,
	"audit":       auditCmd,
	"owners":      ownersCmd,
	"credits":     creditsCmd,
	"sweep":       sweepCmd,
	"portal-link": portalLinkCmd,
}

// defaultURL is the API's address when neither --url nor KEYPLANE_URL says.
const defaultURL = "http://127.0.0.1:8080"

const connectionHelp = `Every command takes --url (default $KEYPLANE_URL, else ` + defaultURL + `),
--token (default $KEYPLANE_ADMIN_TOKEN; a token on the command line is visible
to other users of the machine, prefer the environment) and -o table|json.
Exit codes: 0 done, 1 keyplane refused (its message on stderr) or could not
be reached, 2 a mistake in the command line.
`

// conn holds the flags every admin command takes.
type conn struct {
	url, token, output string
}

// adminFlags returns the FlagSet of an admin command whose usage line is
// synopsis, with --url, --token and -o defined.
func adminFlags(name, synopsis string) (*flag.FlagSet, *conn) {
	fs := newFlags(name, synopsis)
	c := &conn{}
	fs.StringVar(&c.url, "url", "", "keyplane's base URL (default $KEYPLANE_URL, else "+defaultURL+")")
	fs.StringVar(&c.token, "token", "", "admin or caller token (default $KEYPLANE_ADMIN_TOKEN)")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
	return fs, c
}

// client checks the output format and returns a client for the URL and
// token of the flags, or else of the environment.
func (c *conn) client(fs *flag.FlagSet, getenv func(string) string) (*client.Client, error) {
	if c.output != "table" && c.output != "json" {
		return nil, &usageError{fs, fmt.Errorf("%s: -o %q: want table or json", fs.Name(), c.output)}
	}
	url := c.url
	if url == "" {
		url = getenv("KEYPLANE_URL")
	}
	if url == "" {
		url = defaultURL
	}
	token := c.token
	if token == "" {
		token = getenv("KEYPLANE_ADMIN_TOKEN")
	}
	if token == "" {
		return nil, &usageError{fs, fmt.Errorf("%s: no token: set KEYPLANE_ADMIN_TOKEN or pass --token", fs.Name())}
	}
	cl, err := client.New(url, token, &client.Options{UserAgent: "keyplane-cli"})
	if err != nil {
		return nil, &usageError{fs, fmt.Errorf("%s: %s", fs.Name(), strings.TrimPrefix(err.Error(), "keyplane: "))}
	}
	return cl, nil
}

// start parses a command's flags and its positional arguments, whose
// names are want, as parseArgs does, and returns the client and the
// arguments. A command that checks its flags before it needs the client
// calls parseArgs and client itself.
func (c *conn) start(e adminEnv, fs *flag.FlagSet, args []string, want ...string) (*client.Client, []string, error) {
	pos, err := parseArgs(fs, args, e.stdout, want...)
	if err != nil {
		return nil, nil, err
	}
	cl, err := c.client(fs, e.getenv)
	if err != nil {
		return nil, nil, err
	}
	return cl, pos, nil
}

// parseArgs parses a command's flags, which may come before, between or
// after its positional arguments, whose names are want (e.g. "KEY_ID"). On
// -h/--help it prints the command's usage to stdout and returns
// errHelpShown; a bad flag, a missing or a stray argument is a usageError.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer, want ...string) ([]string, error) {
	fs.SetOutput(io.Discard) // exit reports errors, with the usage
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, errHelpShown
		}
		if err != nil {
			return nil, &usageError{fs, fmt.Errorf("%s: %w", fs.Name(), err)}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < len(want) {
		return nil, &usageError{fs, fmt.Errorf("%s: %s is required", fs.Name(), want[len(pos)])}
	}
	if len(pos) > len(want) {
		return nil, &usageError{fs, fmt.Errorf("%s: unexpected argument %q", fs.Name(), pos[len(want)])}
	}
	return pos, nil
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// givesMoreThanConnection reports whether set, the flags given, holds any
// but --url, --token and -o.
func givesMoreThanConnection(set map[string]bool) bool {
	for name := range set {
		switch name {
		case "url", "token", "o":
		default:
			return true
		}
	}
	return false
}

// group runs the subcommand of a command group (keys, owners) named by
// args[0], or prints the group's help.
func group(e adminEnv, name, help string, subs map[string]func(adminEnv, []string) error, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), help) }
	if len(args) == 0 {
		return &usageError{fs, fmt.Errorf("%s: no command given", name)}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) == 2 && subs[args[1]] != nil {
			return subs[args[1]](e, []string{"--help"})
		}
		if len(args) > 1 {
			return &usageError{fs, fmt.Errorf("%s help: unexpected argument %q", name, args[len(args)-1])}
		}
		fmt.Fprint(e.stdout, help)
		return errHelpShown
	}
	sub := subs[args[0]]
	if sub == nil {
		return &usageError{fs, fmt.Errorf("%s: unknown command %q", name, args[0])}
	}
	return sub(e, args[1:])
}

// apiFailure turns a client error into the command's error: keyplane's
// refusal with its status, code, message and details, or why it could not
// be asked.
func apiFailure(cmd string, err error) error {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("%s: %s", cmd, strings.TrimPrefix(err.Error(), "keyplane: "))
	}
	msg := strings.TrimPrefix(ae.Error(), "keyplane: ")
	for _, d := range ae.Details {
		if d.Field != "" {
			msg += "; " + d.Field + ": " + d.Message
		} else {
			msg += "; " + d.Message
		}
	}
	return fmt.Errorf("%s: keyplane refused: %s", cmd, msg)
}

// render writes v as indented JSON, or as the table that table writes.
func render(c *conn, stdout io.Writer, v any, table func(w io.Writer)) error {
	if c.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// row writes one tab-separated line.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }

// fmtLimits lists limits by name: "requests_per_day=100, units_per_month=5".
func fmtLimits(l map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+fmtInt(l[k]))
	}
	return orDash(strings.Join(parts, ", "))
}

func fmtStrings(s map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+"="+s[k])
	}
	return orDash(strings.Join(parts, ", "))
}

func fmtList(s []string) string { return orDash(strings.Join(s, ",")) }

// listFlag is a comma-separated list; given more than once, the lists add
// up. "" is an empty list (to clear one).
type listFlag struct {
	v   []string
	set bool
}

func (f *listFlag) String() string { return strings.Join(f.v, ",") }
func (f *listFlag) Set(s string) error {
	if f.v == nil {
		f.v = []string{}
	}
	f.set = true
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			f.v = append(f.v, p)
		}
	}
	return nil
}

// pairsFlag collects repeated key=value flags.
type pairsFlag map[string]string

func (f pairsFlag) String() string { return fmtStrings(f) }
func (f pairsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	f[k] = v
	return nil
}

// limitsFlag collects repeated name=N flags.
type limitsFlag client.Limits

func (f limitsFlag) String() string { return fmtLimits(f) }
func (f limitsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	n, err := strconv.ParseInt(v, 10, 64)
	if !ok || k == "" || err != nil {
		return fmt.Errorf("%q: want name=N, e.g. requests_per_day=1000", s)
	}
	f[k] = n
	return nil
}

// featureLimitsFlag collects repeated FEATURE.name=N flags. Limit names
// have no dot, so the last one separates the feature from the limit.
type featureLimitsFlag map[string]client.Limits

func (f featureLimitsFlag) String() string { return "" }
func (f featureLimitsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	i := strings.LastIndex(k, ".")
	n, err := strconv.ParseInt(v, 10, 64)
	if !ok || i <= 0 || i == len(k)-1 || err != nil {
		return fmt.Errorf("%q: want FEATURE.name=N, e.g. pro-model.requests_per_day=100", s)
	}
	feature, name := k[:i], k[i+1:]
	if f[feature] == nil {
		f[feature] = client.Limits{}
	}
	f[feature][name] = n
	return nil
}

// timeFlag is a time given as RFC 3339, or (when rel is not 0) as a Go
// duration from now: rel +1 adds it (an expiry), -1 subtracts it (a time
// in the past, "720h" for 30 days ago).
type timeFlag struct {
	t   time.Time
	rel int
}

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return fmtTime(f.t)
}

func (f *timeFlag) Set(s string) error {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		f.t = t
		return nil
	}
	if f.rel != 0 {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			f.t = time.Now().Add(time.Duration(f.rel) * d).UTC().Truncate(time.Second)
			return nil
		}
		return fmt.Errorf("%q: want an RFC 3339 time (2026-01-31T00:00:00Z) or a positive duration (720h)", s)
	}
	return fmt.Errorf("%q: want an RFC 3339 time, e.g. 2026-01-31T00:00:00Z", s)
}

// pageFlags are the flags of a listing: one page, or --all of them.
type pageFlags struct {
	size  int
	token string
	all   bool
}

func addPageFlags(fs *flag.FlagSet) *pageFlags {
	p := &pageFlags{}
	fs.IntVar(&p.size, "page-size", 0, "entries per page, 1-1000 (default: the server's, 50)")
	fs.StringVar(&p.token, "page-token", "", "the next page's token, from the previous page")
	fs.BoolVar(&p.all, "all", false, "follow the pages to the end")
	return p
}

// collect reads one page, or all pages from p.token with --all, through
// get, and returns the items and the token of the page after them.
func collect[T any](p *pageFlags, get func(token string) ([]T, string, error)) ([]T, string, error) {
	var all []T
	token := p.token
	for {
		items, next, err := get(token)
		if err != nil {
			return nil, "", err
		}
		all = append(all, items...)
		if !p.all || next == "" {
			return all, next, nil
		}
		token = next
	}
}

// moreHint tells a table's reader on stderr how to read the next page.
func moreHint(stderr io.Writer, c *conn, next string) {
	if next != "" && c.output == "table" {
		fmt.Fprintf(stderr, "more: pass --page-token %s (or --all)\n", next)
	}
}
