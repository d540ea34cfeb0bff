package embeddedqueue

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/sqlitedb"
)

// Options configure a Queue. The zero value means every default.
type Options struct {
	// Clock measures backoffs, leases and publish times. Default clock.Real.
	Clock clock.Clock
	// Logger receives failures Receive cannot return: a claim or an
	// outcome the database did not record. Default slog.Default().
	Logger *slog.Logger
	// PollInterval is the longest Receive waits before it looks for due
	// messages again when nothing wakes it. Default 1 s.
	PollInterval time.Duration
	// VisibilityTimeout is how long a delivered message stays leased
	// without an extension; Receive extends the leases of running handlers
	// every third of it. After a crash, messages in flight are delivered
	// again once it has passed. Default 60 s.
	VisibilityTimeout time.Duration
	// Concurrency is the most handler calls one Receive runs at a time.
	// Default 8.
	Concurrency int
}

func (o Options) withDefaults() (Options, error) {
	if o.PollInterval < 0 || o.VisibilityTimeout < 0 || o.Concurrency < 0 {
		return o, errs.E(errs.Invalid, "embedded queue: PollInterval, VisibilityTimeout and Concurrency must not be negative")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.VisibilityTimeout == 0 {
		o.VisibilityTimeout = time.Minute
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	return o, nil
}

// Queue is a durable queue in one SQLite database file. Its methods are
// safe for concurrent use.
type Queue struct {
	file *sqlitedb.DB
	db   *sql.DB // file.W, the one connection: every statement, serialised
	opt  Options

	mu      sync.Mutex
	closed  bool
	closing chan struct{}            // closed by Close
	active  sync.WaitGroup           // running Publish, Subscription and Receive calls
	wake    map[string]chan struct{} // subscription → closed when a message is added to it

	closeOnce sync.Once
	closeErr  error
}

// migrations[i] moves the schema from version i to i+1. Append only.
var migrations = []string{`
CREATE TABLE subscriptions (
	name              TEXT PRIMARY KEY,
	topic             TEXT NOT NULL,
	dead_letter_topic TEXT NOT NULL,
	min_backoff       INTEGER NOT NULL,
	max_backoff       INTEGER NOT NULL,
	max_attempts      INTEGER NOT NULL
) STRICT;
CREATE INDEX subscriptions_by_topic ON subscriptions (topic);

CREATE TABLE messages (
	seq          INTEGER PRIMARY KEY,
	subscription TEXT NOT NULL,
	id           TEXT NOT NULL,
	data         BLOB NOT NULL,
	attributes   TEXT NOT NULL,
	publish_time INTEGER NOT NULL,
	attempts     INTEGER NOT NULL,
	due          INTEGER NOT NULL,
	lease        INTEGER NOT NULL
) STRICT;
CREATE INDEX messages_by_due ON messages (subscription, due, seq);
`}

// Open opens the queue database at path, creating it and migrating its
// schema as needed. ":memory:" opens a private queue that is not durable.
func Open(path string, opt Options) (*Queue, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	file, err := sqlitedb.Open(path, migrations, &sqlitedb.Options{Name: "embedded queue", Busy: busy})
	if err != nil {
		return nil, err
	}
	return &Queue{file: file, db: file.W, opt: opt, closing: make(chan struct{}), wake: map[string]chan struct{}{}}, nil
}

// Close stops every Receive, waits for running handlers and for Publish
// calls in progress, and closes the database. Later calls return the first
// call's result.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		close(q.closing)
		q.mu.Unlock()
		q.active.Wait()
		q.closeErr = translate(q.file.Close(), "embedded queue: close")
	})
	return q.closeErr
}

func errClosed() error { return errs.E(errs.Unavailable, "embedded queue: closed") }

// enter registers a call that uses the database; it reports false if the
// queue is closed. A true return must be paired with q.active.Done().
func (q *Queue) enter() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.active.Add(1)
	return true
}

// woken returns a channel that is closed when a message is next added to
// subscription sub by this process.
func (q *Queue) woken(sub string) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	ch, ok := q.wake[sub]
	if !ok {
		ch = make(chan struct{})
		q.wake[sub] = ch
	}
	return ch
}

func (q *Queue) notify(subs []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range subs {
		if ch, ok := q.wake[s]; ok {
			close(ch)
			delete(q.wake, s)
		}
	}
}

// Depth returns how many messages each subscription holds (due, leased
// or waiting for a retry), by subscription name; subscriptions holding
// none are absent.
func (q *Queue) Depth(ctx context.Context) (map[string]int64, error) {
	if !q.enter() {
		return nil, errClosed()
	}
	defer q.active.Done()
	rows, err := q.db.QueryContext(ctx, `SELECT subscription, COUNT(*) FROM messages GROUP BY subscription`)
	if err != nil {
		return nil, translate(err, "embedded queue: depth")
	}
	defer rows.Close()
	depth := map[string]int64{}
	for rows.Next() {
		var sub string
		var n int64
		if err := rows.Scan(&sub, &n); err != nil {
			return nil, translate(err, "embedded queue: depth")
		}
		depth[sub] = n
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err, "embedded queue: depth")
	}
	return depth, nil
}

// Topic returns the topic called name. Publishing to it reaches the
// subscriptions declared on it so far.
func (q *Queue) Topic(name string) *Topic { return &Topic{q: q, name: name} }

// Topic publishes to a topic of a Queue.
type Topic struct {
	q      *Queue
	name   string
	closed atomic.Bool
}

var _ queue.Topic = (*Topic)(nil)

// Publish commits msgs, one copy per subscription of the topic, and returns
// once they are committed. Errors: Invalid for a message over Pub/Sub's
// limits (then nothing is published), Unavailable when the queue or topic
// is closed, the context ends or the database is busy, Internal otherwise.
func (t *Topic) Publish(ctx context.Context, msgs ...queue.Message) error {
	for i, m := range msgs {
		if err := queue.Validate(m); err != nil {
			return errs.E(errs.Invalid, "embedded queue: message %d of %d: %v", i+1, len(msgs), err)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if t.closed.Load() {
		return errs.E(errs.Unavailable, "embedded queue: topic %q is closed", t.name)
	}
	q := t.q
	if !q.enter() {
		return errClosed()
	}
	defer q.active.Done()
	now := q.opt.Clock.Now()
	var subs []string
	err := q.file.Write(ctx, func(tx *sql.Tx) error {
		var err error
		subs, err = insert(ctx, tx, t.name, msgs, now)
		return err
	})
	if err != nil {
		return err
	}
	q.notify(subs)
	return nil
}

// Close makes later Publish calls on t fail. Publish is synchronous, so
// there is nothing to flush.
func (t *Topic) Close() error {
	t.closed.Store(true)
	return nil
}

// insert adds a copy of every message to every subscription of topic and
// returns the subscriptions.
func insert(ctx context.Context, tx *sql.Tx, topic string, msgs []queue.Message, now time.Time) ([]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT name FROM subscriptions WHERE topic = ? ORDER BY name", topic)
	if err != nil {
		return nil, translate(err, "embedded queue: list subscriptions")
	}
	var subs []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, translate(err, "embedded queue: list subscriptions")
		}
		subs = append(subs, s)
	}
	if err := rows.Close(); err != nil {
		return nil, translate(err, "embedded queue: list subscriptions")
	}
	if len(subs) == 0 {
		return nil, nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO messages
		(subscription, id, data, attributes, publish_time, attempts, due, lease) VALUES (?, ?, ?, ?, ?, 0, ?, 0)`)
	if err != nil {
		return nil, translate(err, "embedded queue: publish")
	}
	defer stmt.Close()
	for _, m := range msgs {
		attrs, err := json.Marshal(m.Attributes)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "embedded queue: encode attributes")
		}
		id, data := newID(), m.Data
		if data == nil {
			data = []byte{}
		}
		for _, s := range subs {
			if _, err := stmt.ExecContext(ctx, s, id, data, string(attrs), now.UnixMicro(), now.UnixMicro()); err != nil {
				return nil, translate(err, "embedded queue: publish")
			}
		}
	}
	return subs, nil
}

// Subscription declares the subscription called name on topic, or updates
// the policy and dead-letter topic of an existing one, and returns it. From
// then on, every message published to topic is delivered to it.
// deadLetterTopic "" means failing messages are retried forever; otherwise
// policy.MaxAttempts must be 5 to 100. Both backoffs are 0 to 600 s with
// MinBackoff ≤ MaxBackoff (Pub/Sub's ranges; 0 means retry at once).
//
// A declaration that fails is logged, and the returned Subscription's
// Receive declares again and returns the error if it fails again: Invalid
// for a bad name or policy, FailedPrecondition if the subscription exists
// on another topic, Unavailable if the queue is closed or busy. Until a
// declaration succeeds, messages published to topic do not reach the
// subscription.
func (q *Queue) Subscription(topic, name string, policy queue.RetryPolicy, deadLetterTopic string) *Subscription {
	s := &Subscription{q: q, topic: topic, name: name, policy: policy, deadLetter: deadLetterTopic}
	if err := s.declare(context.Background()); err != nil {
		q.opt.Logger.Error("embedded queue: declaring a subscription failed; its Receive will try again",
			"subscription", name, "topic", topic, "error", err)
	}
	return s
}

// DeleteSubscription removes the subscription called name, if it exists,
// with every message it holds: from then on nothing published reaches it.
// For a subscription that is no longer consumed (an export turned off),
// which would otherwise keep a copy of every message for ever. A Receive
// still running on it finds nothing more.
func (q *Queue) DeleteSubscription(ctx context.Context, name string) error {
	if !q.enter() {
		return errClosed()
	}
	defer q.active.Done()
	return q.file.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM messages WHERE subscription = ?", name); err != nil {
			return translate(err, "embedded queue: delete subscription")
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM subscriptions WHERE name = ?", name)
		return translate(err, "embedded queue: delete subscription")
	})
}

// declare records s, with its policy, in the subscriptions table.
func (s *Subscription) declare(ctx context.Context) error {
	if err := validatePolicy(s.topic, s.name, s.policy, s.deadLetter); err != nil {
		return err
	}
	q := s.q
	if !q.enter() {
		return errClosed()
	}
	defer q.active.Done()
	return q.file.Write(ctx, func(tx *sql.Tx) error {
		var existing string
		switch err := tx.QueryRowContext(ctx, "SELECT topic FROM subscriptions WHERE name = ?", s.name).Scan(&existing); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return translate(err, "embedded queue: read subscription")
		case existing != s.topic:
			return errs.E(errs.FailedPrecondition, "embedded queue: subscription %q is on topic %q, not %q", s.name, existing, s.topic)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO subscriptions
			(name, topic, dead_letter_topic, min_backoff, max_backoff, max_attempts) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET dead_letter_topic = excluded.dead_letter_topic,
				min_backoff = excluded.min_backoff, max_backoff = excluded.max_backoff, max_attempts = excluded.max_attempts`,
			s.name, s.topic, s.deadLetter, s.policy.MinBackoff.Microseconds(), s.policy.MaxBackoff.Microseconds(), s.policy.MaxAttempts)
		return translate(err, "embedded queue: declare subscription")
	})
}

func validatePolicy(topic, name string, p queue.RetryPolicy, deadLetterTopic string) error {
	const maxBackoff = 600 * time.Second
	switch {
	case topic == "" || name == "":
		return errs.E(errs.Invalid, "embedded queue: a subscription needs a name and a topic")
	case deadLetterTopic == topic:
		return errs.E(errs.Invalid, "embedded queue: subscription %q: the dead-letter topic must not be the topic itself", name)
	case p.MinBackoff < 0 || p.MaxBackoff > maxBackoff || p.MinBackoff > p.MaxBackoff:
		return errs.E(errs.Invalid, "embedded queue: subscription %q: backoffs must satisfy 0 ≤ MinBackoff ≤ MaxBackoff ≤ 600s", name)
	case deadLetterTopic != "" && (p.MaxAttempts < 5 || p.MaxAttempts > 100):
		return errs.E(errs.Invalid, "embedded queue: subscription %q: MaxAttempts must be 5 to 100 with a dead-letter topic", name)
	}
	return nil
}

// Subscription receives the messages of one subscription, with the policy
// it was declared with (a Subscription declared later with another policy
// does not change this one's).
type Subscription struct {
	q          *Queue
	topic      string
	name       string
	policy     queue.RetryPolicy
	deadLetter string
}

var _ queue.Subscription = (*Subscription)(nil)

// leased is a message delivered under a lease.
type leased struct {
	seq, lease int64
	msg        queue.Message
}

// Receive declares the subscription again (see Queue.Subscription) and
// returns the error if that fails; then it calls h for due messages, at
// most Options.Concurrency at a time, until ctx ends or the queue is
// closed, when it waits for running handlers, records their outcomes and
// returns nil. Any number of Receive calls may share a subscription; each
// message goes to one of them at a time.
func (s *Subscription) Receive(ctx context.Context, h queue.Handler) error {
	q := s.q
	if !q.enter() {
		return errClosed()
	}
	defer q.active.Done()
	if err := s.declare(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-q.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

	r := &receiver{s: s, h: h, running: map[[2]int64]bool{}, freed: make(chan struct{}, 1)}
	defer r.wg.Wait()
	lastExtend := q.opt.Clock.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		woken := q.woken(s.name)
		wait := q.opt.PollInterval
		if free := q.opt.Concurrency - r.count(); free > 0 && ctx.Err() == nil {
			msgs, next, full, err := q.claim(ctx, s, free)
			switch {
			case err != nil && ctx.Err() == nil:
				q.opt.Logger.ErrorContext(ctx, "embedded queue: claiming messages failed; retrying",
					"subscription", s.name, "error", err)
			case ctx.Err() != nil:
				q.release(context.WithoutCancel(ctx), s, msgs)
				msgs = nil
			}
			for _, m := range msgs {
				r.start(ctx, m)
			}
			if full {
				wait = 0 // there may be more due
			} else if !next.IsZero() {
				wait = min(wait, max(next.Sub(q.opt.Clock.Now()), 0))
			}
		}
		if now := q.opt.Clock.Now(); now.Sub(lastExtend) >= q.opt.VisibilityTimeout/3 {
			r.extend(ctx, now)
			lastExtend = now
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-woken:
		case <-r.freed:
		case <-timer.C:
		}
	}
}

// receiver is one Receive call's state.
type receiver struct {
	s  *Subscription
	h  queue.Handler
	wg sync.WaitGroup

	mu      sync.Mutex
	running map[[2]int64]bool // {seq, lease} of each message whose handler runs
	freed   chan struct{}     // signalled when a handler finishes
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

func (r *receiver) start(ctx context.Context, m leased) {
	key := [2]int64{m.seq, m.lease}
	r.mu.Lock()
	r.running[key] = true
	r.mu.Unlock()
	r.wg.Go(func() {
		err := r.h(ctx, m.msg)
		q, rctx := r.s.q, context.WithoutCancel(ctx)
		if err == nil {
			err = q.ack(rctx, m)
		} else {
			err = q.nack(rctx, r.s, m)
		}
		if err != nil {
			q.opt.Logger.ErrorContext(rctx, "embedded queue: recording a handler's outcome failed; the message will be delivered again when its lease expires",
				"subscription", r.s.name, "message_id", m.msg.ID, "error", err)
		}
		r.mu.Lock()
		delete(r.running, key)
		r.mu.Unlock()
		select {
		case r.freed <- struct{}{}:
		default:
		}
	})
}

// extend renews the leases of the running handlers' messages.
func (r *receiver) extend(ctx context.Context, now time.Time) {
	r.mu.Lock()
	leases := slices.Collect(maps.Keys(r.running))
	r.mu.Unlock()
	if len(leases) == 0 {
		return
	}
	q := r.s.q
	due := now.Add(q.opt.VisibilityTimeout).UnixMicro()
	wctx := context.WithoutCancel(ctx)
	err := q.file.Write(wctx, func(tx *sql.Tx) error {
		for _, l := range leases {
			if _, err := tx.ExecContext(wctx, "UPDATE messages SET due = ? WHERE seq = ? AND lease = ?", due, l[0], l[1]); err != nil {
				return translate(err, "embedded queue: extend lease")
			}
		}
		return nil
	})
	if err != nil {
		q.opt.Logger.ErrorContext(wctx, "embedded queue: extending leases failed; messages may be delivered twice",
			"subscription", r.s.name, "error", err)
	}
}

// claim leases up to limit due messages of s. A due message whose last
// lease was its final attempt is dead-lettered instead. next is when the
// earliest message not yet due will be (zero if none); full reports that
// limit messages were due, so more may be.
func (q *Queue) claim(ctx context.Context, s *Subscription, limit int) (msgs []leased, next time.Time, full bool, err error) {
	now := q.opt.Clock.Now()
	var woken []string
	err = q.file.Write(ctx, func(tx *sql.Tx) error {
		msgs, next, full, woken = nil, time.Time{}, false, nil
		rows, err := tx.QueryContext(ctx, `SELECT seq, id, data, attributes, publish_time, attempts FROM messages
			WHERE subscription = ? AND due <= ? ORDER BY due, seq LIMIT ?`, s.name, now.UnixMicro(), limit)
		if err != nil {
			return translate(err, "embedded queue: find due messages")
		}
		var due []leased
		for rows.Next() {
			var (
				m           leased
				attrs       string
				publishTime int64
			)
			if err := rows.Scan(&m.seq, &m.msg.ID, &m.msg.Data, &attrs, &publishTime, &m.msg.DeliveryAttempt); err != nil {
				rows.Close()
				return translate(err, "embedded queue: read message")
			}
			if err := json.Unmarshal([]byte(attrs), &m.msg.Attributes); err != nil {
				rows.Close()
				return errs.Wrap(errs.Internal, err, "embedded queue: decode attributes")
			}
			m.msg.PublishTime = time.UnixMicro(publishTime).UTC()
			due = append(due, m)
		}
		if err := rows.Close(); err != nil {
			return translate(err, "embedded queue: find due messages")
		}
		full = len(due) == limit
		lease := newLease()
		expiry := now.Add(q.opt.VisibilityTimeout).UnixMicro()
		for _, m := range due {
			if s.deadLetter != "" && m.msg.DeliveryAttempt >= s.policy.MaxAttempts {
				subs, err := deadLetter(ctx, tx, s, m, now)
				if err != nil {
					return err
				}
				woken = append(woken, subs...)
				continue
			}
			if _, err := tx.ExecContext(ctx, "UPDATE messages SET attempts = attempts + 1, due = ?, lease = ? WHERE seq = ?",
				expiry, lease, m.seq); err != nil {
				return translate(err, "embedded queue: lease message")
			}
			m.lease = lease
			m.msg.DeliveryAttempt++
			msgs = append(msgs, m)
		}
		var n sql.NullInt64
		if err := tx.QueryRowContext(ctx, "SELECT MIN(due) FROM messages WHERE subscription = ? AND due > ?",
			s.name, now.UnixMicro()).Scan(&n); err != nil {
			return translate(err, "embedded queue: find next due message")
		}
		if n.Valid {
			next = time.UnixMicro(n.Int64)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, false, err
	}
	q.notify(woken)
	return msgs, next, full, nil
}

// release returns leased messages that were never handed to a handler,
// without counting the attempt.
func (q *Queue) release(ctx context.Context, s *Subscription, msgs []leased) {
	if len(msgs) == 0 {
		return
	}
	now := q.opt.Clock.Now().UnixMicro()
	err := q.file.Write(ctx, func(tx *sql.Tx) error {
		for _, m := range msgs {
			if _, err := tx.ExecContext(ctx, "UPDATE messages SET attempts = attempts - 1, due = ?, lease = 0 WHERE seq = ? AND lease = ?",
				now, m.seq, m.lease); err != nil {
				return translate(err, "embedded queue: release message")
			}
		}
		return nil
	})
	if err != nil {
		q.opt.Logger.ErrorContext(ctx, "embedded queue: releasing unhandled messages failed; they will be delivered again when their leases expire",
			"subscription", s.name, "error", err)
	}
}

// ack deletes a handled message, if its lease still holds.
func (q *Queue) ack(ctx context.Context, m leased) error {
	_, err := q.db.ExecContext(ctx, "DELETE FROM messages WHERE seq = ? AND lease = ?", m.seq, m.lease)
	return translate(err, "embedded queue: acknowledge message")
}

// nack schedules the next attempt of a failed message, or dead-letters it
// after its last attempt, if its lease still holds.
func (q *Queue) nack(ctx context.Context, s *Subscription, m leased) error {
	now := q.opt.Clock.Now()
	var woken []string
	err := q.file.Write(ctx, func(tx *sql.Tx) error {
		if s.deadLetter != "" && m.msg.DeliveryAttempt >= s.policy.MaxAttempts {
			var held bool
			if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM messages WHERE seq = ? AND lease = ?)",
				m.seq, m.lease).Scan(&held); err != nil {
				return translate(err, "embedded queue: read lease")
			}
			if !held {
				return nil
			}
			var err error
			woken, err = deadLetter(ctx, tx, s, m, now)
			return err
		}
		due := now.Add(backoff(s.policy, m.msg.DeliveryAttempt, mrand.Float64()))
		_, err := tx.ExecContext(ctx, "UPDATE messages SET due = ?, lease = 0 WHERE seq = ? AND lease = ?",
			due.UnixMicro(), m.seq, m.lease)
		return translate(err, "embedded queue: schedule retry")
	})
	if err == nil {
		q.notify(woken)
	}
	return err
}

// deadLetter deletes m from s and publishes it to s's dead-letter topic
// with the attributes Pub/Sub adds. It returns the subscriptions that got
// it.
func deadLetter(ctx context.Context, tx *sql.Tx, s *Subscription, m leased, now time.Time) ([]string, error) {
	if _, err := tx.ExecContext(ctx, "DELETE FROM messages WHERE seq = ?", m.seq); err != nil {
		return nil, translate(err, "embedded queue: dead-letter message")
	}
	attrs := make(map[string]string, len(m.msg.Attributes)+3)
	for k, v := range m.msg.Attributes {
		attrs[k] = v
	}
	attrs["CloudPubSubDeadLetterSourceSubscription"] = s.name
	attrs["CloudPubSubDeadLetterSourceDeliveryCount"] = strconv.Itoa(m.msg.DeliveryAttempt)
	attrs["CloudPubSubDeadLetterSourceTopicPublishTime"] = m.msg.PublishTime.Format("2006-01-02T15:04:05.000Z07:00")
	return insert(ctx, tx, s.deadLetter, []queue.Message{{Data: m.msg.Data, Attributes: attrs}}, now)
}

// backoff returns the delay after failed attempt n (n ≥ 1):
// MinBackoff·2^(n-1) capped at MaxBackoff, plus up to 20% of it as jitter
// (j in [0, 1)); jitter that would pass MaxBackoff is taken off instead,
// never going below MinBackoff.
func backoff(p queue.RetryPolicy, n int, j float64) time.Duration {
	d := p.MinBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	jitter := time.Duration(j * 0.2 * float64(d))
	if d+jitter <= p.MaxBackoff {
		return d + jitter
	}
	return max(d-jitter, p.MinBackoff)
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newLease returns a random nonzero lease token; 0 means "not leased".
func newLease() int64 {
	for {
		var b [8]byte
		rand.Read(b[:])
		if v := int64(binary.LittleEndian.Uint64(b[:])); v != 0 {
			return v
		}
	}
}

// busy is the kind of error for a database another process keeps locked:
// Unavailable, as Publish documents.
const busy = errs.Unavailable

// translate classifies a database/sql or SQLite error (sqlitedb.Translate);
// msg says what failed and is safe to show.
func translate(err error, msg string) error { return sqlitedb.Translate(err, msg, busy) }
