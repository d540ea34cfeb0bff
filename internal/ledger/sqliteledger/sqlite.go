package sqliteledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/pagetoken"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/sqlitedb"
)

// Options are the optional settings of OpenWith. The zero value means the
// defaults.
type Options struct {
	// Clock tells the time from which an event id's retention runs and
	// against which expired ids are deleted. Default: the wall clock.
	Clock clock.Clock
}

// Ledger is a ledger.Ledger in one SQLite database file.
type Ledger struct {
	db    *sqlitedb.DB
	w     *sql.DB // db.W, one connection: every write, serialised
	r     *sql.DB // db.R, read-only connections
	clock clock.Clock
	// failCommit, set by this package's tests, is called before each
	// commit; a non-nil error rolls the transaction back and is returned.
	failCommit func() error
	// The per-key reads the sweep makes for every key with usage,
	// prepared once: parsing the SQL cost more than running it.
	totals, clientIPs *sql.Stmt
}

var _ ledger.Ledger = (*Ledger)(nil)

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{`
CREATE TABLE usage_events (
	id        TEXT PRIMARY KEY,
	key_id    TEXT NOT NULL,
	time      INTEGER NOT NULL,
	expire_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_events_by_expiry ON usage_events (expire_at);

CREATE TABLE usage_counters (
	key_id   TEXT NOT NULL,
	win      TEXT NOT NULL,
	start    INTEGER NOT NULL,
	owner    TEXT NOT NULL,
	requests INTEGER NOT NULL,
	units    INTEGER NOT NULL,
	bytes    INTEGER NOT NULL,
	PRIMARY KEY (key_id, win, start)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_counters_by_window ON usage_counters (win, start, key_id);
CREATE INDEX usage_counters_by_owner ON usage_counters (owner, win, start, key_id);

CREATE TABLE usage_dead_letters (
	id      TEXT PRIMARY KEY,
	time    INTEGER NOT NULL,
	reason  TEXT NOT NULL,
	detail  TEXT NOT NULL,
	payload BLOB
) STRICT;
CREATE INDEX usage_dead_letters_by_time ON usage_dead_letters (time DESC, id DESC);
`, `
CREATE TABLE usage_client_ips (
	key_id TEXT NOT NULL,
	day    INTEGER NOT NULL,
	ip     TEXT NOT NULL,
	PRIMARY KEY (key_id, day, ip)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_client_ips_by_day ON usage_client_ips (day);
`, `
CREATE TABLE usage_owner_counters (
	owner    TEXT NOT NULL,
	win      TEXT NOT NULL,
	start    INTEGER NOT NULL,
	feature  TEXT NOT NULL,
	requests INTEGER NOT NULL,
	units    INTEGER NOT NULL,
	bytes    INTEGER NOT NULL,
	PRIMARY KEY (owner, win, start, feature)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_owner_counters_by_window ON usage_owner_counters (win, start, feature, owner);
`, `
ALTER TABLE usage_counters ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_owner_counters ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
`, `
CREATE TABLE usage_adjustments (
	month      INTEGER NOT NULL,
	key_id     TEXT NOT NULL,
	counted_in INTEGER NOT NULL,
	feature    TEXT NOT NULL,
	owner      TEXT NOT NULL,
	requests   INTEGER NOT NULL,
	units      INTEGER NOT NULL,
	bytes      INTEGER NOT NULL,
	cost       INTEGER NOT NULL,
	PRIMARY KEY (month, key_id, counted_in, feature)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_adjustments_by_owner ON usage_adjustments (owner, month, key_id, counted_in, feature);
`}

// Open opens the ledger database file at path with the default options,
// creating it and migrating its schema as needed. ":memory:" opens a
// private in-memory database.
func Open(path string) (*Ledger, error) { return OpenWith(path, Options{}) }

// OpenWith is Open with options.
func OpenWith(path string, opts Options) (*Ledger, error) {
	db, err := sqlitedb.Open(path, migrations, &sqlitedb.Options{Busy: busy})
	if err != nil {
		return nil, err
	}
	l := &Ledger{db: db, w: db.W, r: db.R, clock: opts.Clock}
	if l.clock == nil {
		l.clock = clock.Real{}
	}
	if l.totals, err = l.r.Prepare(`SELECT requests, units, bytes, cost FROM usage_counters WHERE key_id = ? AND win = ? AND start = ?`); err == nil {
		// count(*) OVER () is the number of rows before LIMIT: one query
		// reads both from one snapshot. With sample 0 it reads one row
		// for the count.
		l.clientIPs, err = l.r.Prepare(`SELECT ip, count(*) OVER () FROM usage_client_ips WHERE key_id = ? AND day = ? ORDER BY ip LIMIT ?`)
	}
	if err != nil {
		db.Close()
		return nil, translate(err, "sqlite: prepare statements")
	}
	return l, nil
}

// Close closes the database.
func (l *Ledger) Close() error {
	l.totals.Close()
	l.clientIPs.Close()
	return l.db.Close()
}

// write runs fn in an IMMEDIATE transaction on the writer connection and
// commits it if fn, and then failCommit (tests), return nil. fn's error is
// returned as is.
func (l *Ledger) write(ctx context.Context, fn func(*sql.Tx) error) error {
	return l.db.Write(ctx, func(tx *sql.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		if l.failCommit != nil {
			return l.failCommit()
		}
		return nil
	})
}

// busy is the kind of error for a database another process keeps locked:
// Unavailable, one of the kinds the Ledger contract allows.
const busy = errs.Unavailable

// translate classifies a database/sql or SQLite error (sqlitedb.Translate);
// msg says what failed and is safe to show.
func translate(err error, msg string) error { return sqlitedb.Translate(err, msg, busy) }

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

// addSat returns a+b for b >= 0, saturating at math.MaxInt64 instead of
// wrapping around.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// counter names one row of usage_counters.
type counter struct {
	key   string
	w     plan.Window
	start int64 // Unix microseconds
}

// pending is an increment of one counter.
type pending struct {
	owner string
	ledger.Totals
}

// purgeLimit bounds how many expired event rows one Count deletes: more
// than it inserts, so that the table shrinks to what retention keeps.
func purgeLimit(events int) int { return 2*events + 100 }

// rowsPerStatement bounds the rows of one multi-row INSERT (4 or 8
// parameters each, 8 for counters), well under SQLite's limit of 32766 parameters.
const rowsPerStatement = 200

// values returns n parenthesised groups of k placeholders.
func values(n, k int) string {
	group := "(?" + strings.Repeat(", ?", k-1) + ")"
	return group + strings.Repeat(", "+group, n-1)
}

const saturatingSum = `CASE WHEN %[1]s > 9223372036854775807 - excluded.%[1]s THEN 9223372036854775807 ELSE %[1]s + excluded.%[1]s END`

var (
	addSums = `requests = ` + fmt.Sprintf(saturatingSum, "requests") +
		`, units = ` + fmt.Sprintf(saturatingSum, "units") + `, bytes = ` + fmt.Sprintf(saturatingSum, "bytes") + `, cost = ` + fmt.Sprintf(saturatingSum, "cost")
	upsertCounters = `INSERT INTO usage_counters (key_id, win, start, owner, requests, units, bytes, cost) VALUES %s
	ON CONFLICT (key_id, win, start) DO UPDATE SET ` + addSums
	upsertOwnerCounters = `INSERT INTO usage_owner_counters (owner, win, start, feature, requests, units, bytes, cost) VALUES %s
	ON CONFLICT (owner, win, start, feature) DO UPDATE SET ` + addSums
	upsertAdjustments = `INSERT INTO usage_adjustments (month, key_id, counted_in, feature, owner, requests, units, bytes, cost) VALUES %s
	ON CONFLICT (month, key_id, counted_in, feature) DO UPDATE SET ` + addSums
)

// adjustment names one row of usage_adjustments: the part of a key's
// month counted in a later month (feature ""), or of one feature's.
type adjustment struct {
	month     int64 // Unix microseconds
	key       string
	countedIn int64 // Unix microseconds
	feature   string
}

// ownerCounter names one row of usage_owner_counters: an owner's totals in
// a window (feature "") or the part of them of one feature.
type ownerCounter struct {
	owner   string
	w       plan.Window
	start   int64 // Unix microseconds
	feature string
}

// Count counts the events not counted before, in one IMMEDIATE
// transaction: it deletes a bounded number of expired event rows, inserts
// the events' ids (INSERT … ON CONFLICT DO NOTHING RETURNING id: a
// duplicate id inserts nothing), and adds the amounts of the inserted
// events, summed per counter, to the counters. Counters saturate at
// math.MaxInt64.
func (l *Ledger) Count(ctx context.Context, events []ledger.Counted, retention time.Duration) (int, error) {
	if err := ledger.CheckCount(events, retention); err != nil {
		return 0, err
	}
	if len(events) == 0 {
		return 0, nil
	}
	now := l.clock.Now()
	expireAt := micros(now.Add(retention))
	var counted int
	err := l.write(ctx, func(tx *sql.Tx) error {
		counted = 0
		if _, err := tx.ExecContext(ctx, `DELETE FROM usage_events WHERE id IN
			(SELECT id FROM usage_events WHERE expire_at <= ? ORDER BY expire_at LIMIT ?)`,
			micros(now), purgeLimit(len(events))); err != nil {
			return translate(err, "sqlite: delete expired usage events")
		}
		inserted := make(map[string]bool, len(events))
		for chunk := range slices.Chunk(events, rowsPerStatement) {
			args := make([]any, 0, 4*len(chunk))
			for _, e := range chunk {
				args = append(args, e.ID, e.KeyID, micros(e.Time), expireAt)
			}
			if err := insertEvents(ctx, tx, args, inserted); err != nil {
				return err
			}
		}
		var (
			order  []counter
			sums   = map[counter]*pending{}
			oorder []ownerCounter
			osums  = map[ownerCounter]*ledger.Totals{}
			aorder []adjustment
			asums  = map[adjustment]*pending{}
		)
		addOwner := func(c ownerCounter, e ledger.Counted) {
			t := osums[c]
			if t == nil {
				t = &ledger.Totals{}
				osums[c] = t
				oorder = append(oorder, c)
			}
			addTo(t, e)
		}
		addAdjustment := func(a adjustment, e ledger.Counted) {
			p := asums[a]
			if p == nil {
				p = &pending{owner: e.Owner}
				asums[a] = p
				aorder = append(aorder, a)
			}
			addTo(&p.Totals, e)
		}
		for _, e := range events {
			if !inserted[e.ID] {
				continue // counted before, or earlier in this call
			}
			delete(inserted, e.ID)
			counted++
			for _, w := range plan.Windows {
				start, _ := w.Bounds(e.Time)
				c := counter{e.KeyID, w, micros(start)}
				p := sums[c]
				if p == nil {
					p = &pending{owner: e.Owner}
					sums[c] = p
					order = append(order, c)
				}
				addTo(&p.Totals, e)
				if e.Owner != "" {
					addOwner(ownerCounter{e.Owner, w, c.start, ""}, e)
					if e.Feature != "" {
						addOwner(ownerCounter{e.Owner, w, c.start, e.Feature}, e)
					}
				}
			}
			if in, late := ledger.Late(e.Time, now); late {
				a := adjustment{windowStart(plan.Month, e.Time), e.KeyID, micros(in), ""}
				addAdjustment(a, e)
				if e.Feature != "" {
					a.feature = e.Feature
					addAdjustment(a, e)
				}
			}
		}
		for chunk := range slices.Chunk(order, rowsPerStatement) {
			args := make([]any, 0, 8*len(chunk))
			for _, c := range chunk {
				p := sums[c]
				args = append(args, c.key, string(c.w), c.start, p.owner, p.Requests, p.Units, p.Bytes, p.Cost)
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(upsertCounters, values(len(chunk), 8)), args...); err != nil {
				return translate(err, "sqlite: add to usage counters")
			}
		}
		for chunk := range slices.Chunk(oorder, rowsPerStatement) {
			args := make([]any, 0, 8*len(chunk))
			for _, c := range chunk {
				t := osums[c]
				args = append(args, c.owner, string(c.w), c.start, c.feature, t.Requests, t.Units, t.Bytes, t.Cost)
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(upsertOwnerCounters, values(len(chunk), 8)), args...); err != nil {
				return translate(err, "sqlite: add to owner usage counters")
			}
		}
		for chunk := range slices.Chunk(aorder, rowsPerStatement) {
			args := make([]any, 0, 9*len(chunk))
			for _, a := range chunk {
				p := asums[a]
				args = append(args, a.month, a.key, a.countedIn, a.feature, p.owner, p.Requests, p.Units, p.Bytes, p.Cost)
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(upsertAdjustments, values(len(chunk), 9)), args...); err != nil {
				return translate(err, "sqlite: add to usage adjustments")
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return counted, nil
}

// addTo adds e's amounts to t, saturating.
func addTo(t *ledger.Totals, e ledger.Counted) {
	t.Requests = addSat(t.Requests, e.Requests)
	t.Units = addSat(t.Units, e.Units)
	t.Bytes = addSat(t.Bytes, e.Bytes)
	t.Cost = addSat(t.Cost, e.Cost)
}

// insertEvents inserts event rows (4 arguments each) and adds the ids that
// were inserted, not already present, to inserted.
func insertEvents(ctx context.Context, tx *sql.Tx, args []any, inserted map[string]bool) error {
	rows, err := tx.QueryContext(ctx, `INSERT INTO usage_events (id, key_id, time, expire_at) VALUES `+values(len(args)/4, 4)+`
		ON CONFLICT (id) DO NOTHING RETURNING id`, args...)
	if err != nil {
		return translate(err, "sqlite: record usage events")
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return translate(err, "sqlite: record usage events")
		}
		inserted[id] = true
	}
	return translate(rows.Err(), "sqlite: record usage events")
}

// windowStart returns the start of the window of kind w containing start:
// start itself when it is a window start.
func windowStart(w plan.Window, start time.Time) int64 {
	s, _ := w.Bounds(start)
	return micros(s)
}

// Totals returns key id's totals in the window of kind w containing start.
func (l *Ledger) Totals(ctx context.Context, keyID string, w plan.Window, start time.Time) (ledger.Totals, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return ledger.Totals{}, err
	}
	var t ledger.Totals
	err := l.totals.QueryRowContext(ctx, keyID, string(w), windowStart(w, start)).Scan(&t.Requests, &t.Units, &t.Bytes, &t.Cost)
	if errors.Is(err, sql.ErrNoRows) {
		return ledger.Totals{}, nil
	}
	if err != nil {
		return ledger.Totals{}, translate(err, "sqlite: read usage totals")
	}
	return t, nil
}

// keyPage reads one page of the counters of window (w, start), of owner's
// keys unless owner is "", ordered by key id, and scans each with scan.
func (l *Ledger) keyPage(ctx context.Context, cols, owner string, w plan.Window, start time.Time, size int, token string,
	scan func(*sql.Rows) (keyID string, err error)) (string, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return "", err
	}
	if err := ledger.CheckPageSize(size); err != nil {
		return "", err
	}
	where, args := []string{"win = ?", "start = ?"}, []any{string(w), windowStart(w, start)}
	if owner != "" {
		where, args = append(where, "owner = ?"), append(args, owner)
	}
	if token != "" {
		_, after, err := pagetoken.Decode(token, nil)
		if err != nil {
			return "", err
		}
		where, args = append(where, "key_id > ?"), append(args, after)
	}
	rows, err := l.r.QueryContext(ctx, "SELECT "+cols+" FROM usage_counters WHERE "+strings.Join(where, " AND ")+
		" ORDER BY key_id LIMIT ?", append(args, size+1)...)
	if err != nil {
		return "", translate(err, "sqlite: list usage counters")
	}
	defer rows.Close()
	var (
		n    int
		last string
	)
	for rows.Next() {
		if n == size {
			return pagetoken.Encode(time.Time{}, last), nil
		}
		if last, err = scan(rows); err != nil {
			return "", translate(err, "sqlite: list usage counters")
		}
		n++
	}
	return "", translate(rows.Err(), "sqlite: list usage counters")
}

// OwnerTotals returns one page of per-key totals of owner's keys (every
// key if owner is "") in the window of kind w containing start, ordered by
// key id.
func (l *Ledger) OwnerTotals(ctx context.Context, owner string, w plan.Window, start time.Time, pageSize int, pageToken string) ([]ledger.KeyTotals, string, error) {
	var out []ledger.KeyTotals
	next, err := l.keyPage(ctx, "key_id, owner, requests, units, bytes, cost", owner, w, start, pageSize, pageToken,
		func(r *sql.Rows) (string, error) {
			var kt ledger.KeyTotals
			err := r.Scan(&kt.KeyID, &kt.Owner, &kt.Requests, &kt.Units, &kt.Bytes, &kt.Cost)
			out = append(out, kt)
			return kt.KeyID, err
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// ActiveKeys returns one page of ids of keys with usage in the window of
// kind w containing start, ordered by key id.
func (l *Ledger) ActiveKeys(ctx context.Context, w plan.Window, start time.Time, pageSize int, pageToken string) ([]string, string, error) {
	var out []string
	next, err := l.keyPage(ctx, "key_id", "", w, start, pageSize, pageToken,
		func(r *sql.Rows) (string, error) {
			var id string
			err := r.Scan(&id)
			out = append(out, id)
			return id, err
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// OwnerUsage returns owner's usage in the window of kind w containing
// start: its total row and its feature rows.
func (l *Ledger) OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (ledger.Usage, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return ledger.Usage{}, err
	}
	s := windowStart(w, start)
	points, err := l.ownerPoints(ctx, owner, w, s, s+1)
	if err != nil || len(points) == 0 {
		return ledger.Usage{}, err
	}
	return points[0].Usage, nil
}

// OwnerSeries returns owner's usage in each window of kind w starting in
// [from, to) that has usage, ordered by start.
func (l *Ledger) OwnerSeries(ctx context.Context, owner string, w plan.Window, from, to time.Time) ([]ledger.Point, error) {
	if err := ledger.CheckSeries(w, from, to); err != nil {
		return nil, err
	}
	return l.ownerPoints(ctx, owner, w, micros(from), micros(to))
}

// ownerPoints reads the owner counter rows of windows starting in [from,
// to) (Unix microseconds), the total row of each window first.
func (l *Ledger) ownerPoints(ctx context.Context, owner string, w plan.Window, from, to int64) ([]ledger.Point, error) {
	rows, err := l.r.QueryContext(ctx, `SELECT start, feature, requests, units, bytes, cost FROM usage_owner_counters
		WHERE owner = ? AND win = ? AND start >= ? AND start < ? ORDER BY start, feature`, owner, string(w), from, to)
	if err != nil {
		return nil, translate(err, "sqlite: read owner usage counters")
	}
	defer rows.Close()
	var out []ledger.Point
	for rows.Next() {
		var (
			start   int64
			feature string
			t       ledger.Totals
		)
		if err := rows.Scan(&start, &feature, &t.Requests, &t.Units, &t.Bytes, &t.Cost); err != nil {
			return nil, translate(err, "sqlite: read owner usage counters")
		}
		if len(out) == 0 || !out[len(out)-1].Start.Equal(fromMicros(start)) {
			out = append(out, ledger.Point{Start: fromMicros(start)})
		}
		p := &out[len(out)-1]
		if feature == "" {
			p.Totals = t
		} else {
			p.AddFeature(feature, t)
		}
	}
	return out, translate(rows.Err(), "sqlite: read owner usage counters")
}

// Adjustments returns one page of the adjustments of the month starting
// at month, of owner's keys unless owner is "", ordered by key id and
// then the month they were counted in. The page is chosen among the key
// rows (feature ""), which every adjustment has, and their feature rows
// are read with them.
func (l *Ledger) Adjustments(ctx context.Context, owner string, month time.Time, pageSize int, pageToken string) ([]ledger.Adjustment, string, error) {
	if err := ledger.CheckPageSize(pageSize); err != nil {
		return nil, "", err
	}
	m := windowStart(plan.Month, month)
	where, args := []string{"month = ?", "feature = ''"}, []any{m}
	if owner != "" {
		where, args = append(where, "owner = ?"), append(args, owner)
	}
	if pageToken != "" {
		in, after, err := pagetoken.Decode(pageToken, nil)
		if err != nil {
			return nil, "", err
		}
		if in.IsZero() { // a token of OwnerTotals: after its key
			where, args = append(where, "key_id > ?"), append(args, after)
		} else {
			where, args = append(where, "(key_id, counted_in) > (?, ?)"), append(args, after, micros(in))
		}
	}
	rows, err := l.r.QueryContext(ctx, `SELECT a.key_id, a.counted_in, a.feature, a.owner, a.requests, a.units, a.bytes, a.cost
		FROM (SELECT key_id, counted_in FROM usage_adjustments WHERE `+strings.Join(where, " AND ")+`
			ORDER BY key_id, counted_in LIMIT ?) AS g
		JOIN usage_adjustments AS a ON a.month = ? AND a.key_id = g.key_id AND a.counted_in = g.counted_in
		ORDER BY a.key_id, a.counted_in, a.feature`, append(args, pageSize+1, m)...)
	if err != nil {
		return nil, "", translate(err, "sqlite: read usage adjustments")
	}
	defer rows.Close()
	var out []ledger.Adjustment
	for rows.Next() {
		var (
			a         ledger.Adjustment
			countedIn int64
			feature   string
			t         ledger.Totals
		)
		if err := rows.Scan(&a.KeyID, &countedIn, &feature, &a.Owner, &t.Requests, &t.Units, &t.Bytes, &t.Cost); err != nil {
			return nil, "", translate(err, "sqlite: read usage adjustments")
		}
		a.CountedIn = fromMicros(countedIn)
		if feature == "" { // the first row of each adjustment
			a.Totals = t
			out = append(out, a)
			continue
		}
		out[len(out)-1].AddFeature(feature, t)
	}
	if err := rows.Err(); err != nil {
		return nil, "", translate(err, "sqlite: read usage adjustments")
	}
	if len(out) <= pageSize {
		return out, "", nil
	}
	out = out[:pageSize]
	last := out[pageSize-1]
	return out, pagetoken.Encode(last.CountedIn, last.KeyID), nil
}

// KeySeries returns the totals of owner's keys in each window of kind w
// starting in [from, to), ordered by start and key id, at most limit.
func (l *Ledger) KeySeries(ctx context.Context, owner string, w plan.Window, from, to time.Time, limit int) ([]ledger.KeyPoint, bool, error) {
	if err := ledger.CheckSeries(w, from, to); err != nil {
		return nil, false, err
	}
	if err := ledger.CheckSeriesLimit(limit); err != nil {
		return nil, false, err
	}
	rows, err := l.r.QueryContext(ctx, `SELECT key_id, start, requests, units, bytes, cost FROM usage_counters
		WHERE owner = ? AND win = ? AND start >= ? AND start < ? ORDER BY start, key_id LIMIT ?`,
		owner, string(w), micros(from), micros(to), limit+1)
	if err != nil {
		return nil, false, translate(err, "sqlite: read usage counters")
	}
	defer rows.Close()
	var out []ledger.KeyPoint
	for rows.Next() {
		var (
			p     ledger.KeyPoint
			start int64
		)
		if err := rows.Scan(&p.KeyID, &start, &p.Requests, &p.Units, &p.Bytes, &p.Cost); err != nil {
			return nil, false, translate(err, "sqlite: read usage counters")
		}
		p.Start = fromMicros(start)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, false, translate(err, "sqlite: read usage counters")
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// ActiveOwners returns one page of the owners with usage in the window of
// kind w containing start, ordered by owner id.
func (l *Ledger) ActiveOwners(ctx context.Context, w plan.Window, start time.Time, pageSize int, pageToken string) ([]string, string, error) {
	if err := ledger.CheckWindow(w); err != nil {
		return nil, "", err
	}
	if err := ledger.CheckPageSize(pageSize); err != nil {
		return nil, "", err
	}
	var after string
	if pageToken != "" {
		var err error
		if _, after, err = pagetoken.Decode(pageToken, nil); err != nil {
			return nil, "", err
		}
	}
	rows, err := l.r.QueryContext(ctx, `SELECT owner FROM usage_owner_counters
		WHERE win = ? AND start = ? AND feature = '' AND owner > ? ORDER BY owner LIMIT ?`,
		string(w), windowStart(w, start), after, pageSize+1)
	if err != nil {
		return nil, "", translate(err, "sqlite: list owners with usage")
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, "", translate(err, "sqlite: list owners with usage")
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, "", translate(err, "sqlite: list owners with usage")
	}
	if len(out) > pageSize {
		out = out[:pageSize]
		return out, pagetoken.Encode(time.Time{}, out[len(out)-1]), nil
	}
	return out, "", nil
}

// maxPayload is the most of a dead letter's payload that is kept.
const maxPayload = 64 << 10

// AddDeadLetter records d unless a dead letter with its ID exists, in which
// case the first one is kept. A payload over 64 KiB is truncated.
func (l *Ledger) AddDeadLetter(ctx context.Context, d ledger.DeadLetter) error {
	if err := ledger.CheckDeadLetter(d); err != nil {
		return err
	}
	if len(d.Payload) > maxPayload {
		d.Payload = d.Payload[:maxPayload]
	}
	return l.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO usage_dead_letters (id, time, reason, detail, payload) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`, d.ID, micros(d.Time), d.Reason, d.Detail, d.Payload)
		return translate(err, "sqlite: record dead letter")
	})
}

// ListDeadLetters returns one page of dead letters, newest first (ties by
// id, descending).
func (l *Ledger) ListDeadLetters(ctx context.Context, pageSize int, pageToken string) ([]ledger.DeadLetter, string, error) {
	if err := ledger.CheckPageSize(pageSize); err != nil {
		return nil, "", err
	}
	q, args := `SELECT id, time, reason, detail, payload FROM usage_dead_letters`, []any{}
	if pageToken != "" {
		t, id, err := pagetoken.Decode(pageToken, nil)
		if err != nil {
			return nil, "", err
		}
		q, args = q+` WHERE (time, id) < (?, ?)`, append(args, micros(t), id)
	}
	rows, err := l.r.QueryContext(ctx, q+` ORDER BY time DESC, id DESC LIMIT ?`, append(args, pageSize+1)...)
	if err != nil {
		return nil, "", translate(err, "sqlite: list dead letters")
	}
	defer rows.Close()
	var out []ledger.DeadLetter
	for rows.Next() {
		if len(out) == pageSize {
			last := out[len(out)-1]
			return out, pagetoken.Encode(last.Time, last.ID), nil
		}
		var (
			d ledger.DeadLetter
			t int64
		)
		if err := rows.Scan(&d.ID, &t, &d.Reason, &d.Detail, &d.Payload); err != nil {
			return nil, "", translate(err, "sqlite: list dead letters")
		}
		d.Time = fromMicros(t)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", translate(err, "sqlite: list dead letters")
	}
	return out, "", nil
}

// dayStart returns the start of the UTC day containing t, in Unix
// microseconds.
func dayStart(t time.Time) int64 { return windowStart(plan.Day, t) }

// AddClientIPs records the client IPs of each key on the UTC day
// containing day, in one IMMEDIATE transaction: it deletes a bounded
// number of rows older than ledger.ClientIPRetention, then inserts a row
// per (key, day, IP) with ON CONFLICT DO NOTHING. Invalid input writes
// nothing.
func (l *Ledger) AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error {
	clean, err := ledger.CleanClientIPs(day, ips)
	if err != nil {
		return err
	}
	if len(clean) == 0 {
		return nil
	}
	d := dayStart(day)
	args := make([]any, 0, 3*len(clean))
	for _, id := range slices.Sorted(maps.Keys(clean)) {
		for _, ip := range clean[id] {
			args = append(args, id, d, ip)
		}
	}
	rows := len(args) / 3
	cutoff := micros(l.clock.Now().Add(-ledger.ClientIPRetention))
	return l.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM usage_client_ips WHERE (key_id, day, ip) IN
			(SELECT key_id, day, ip FROM usage_client_ips WHERE day < ? ORDER BY day LIMIT ?)`,
			cutoff, purgeLimit(rows)); err != nil {
			return translate(err, "sqlite: delete expired client IPs")
		}
		for chunk := range slices.Chunk(args, 3*rowsPerStatement) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO usage_client_ips (key_id, day, ip) VALUES `+values(len(chunk)/3, 3)+`
				ON CONFLICT DO NOTHING`, chunk...); err != nil {
				return translate(err, "sqlite: record client IPs")
			}
		}
		return nil
	})
}

// ClientIPs returns how many distinct IPs key id was used from on the UTC
// day containing day, and the first sample of them in byte order, in one
// query.
func (l *Ledger) ClientIPs(ctx context.Context, keyID string, day time.Time, sample int) (int, []string, error) {
	if err := ledger.CheckClientIPsQuery(keyID, day, sample); err != nil {
		return 0, nil, err
	}
	rows, err := l.clientIPs.QueryContext(ctx, keyID, dayStart(day), max(sample, 1))
	if err != nil {
		return 0, nil, translate(err, "sqlite: read client IPs")
	}
	defer rows.Close()
	var (
		count int
		ips   []string
	)
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip, &count); err != nil {
			return 0, nil, translate(err, "sqlite: read client IPs")
		}
		ips = append(ips, ip)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, translate(err, "sqlite: read client IPs")
	}
	if sample == 0 {
		ips = nil
	}
	return count, ips, nil
}
