package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/trackapi/trackapi"
)

// The delivery store: destinations, their cursors over the event log, and what did not go
// through (migration 0004 explains the tables). Every write is one transaction on the writer
// connection, never on the committer's path: a settlement or a retention batch waits for the
// writer between two commits of events, and commits of events wait for it in turn, which is why
// retention works in batches of a bounded size. Reads use the reader pool.

const (
	// maxIssueEventNames is how many event names an issue keeps: enough to see which events a
	// failure hits, few enough that the row stays small.
	maxIssueEventNames = 10
	// maxIssueSamples is how many samples an issue keeps, the newest.
	maxIssueSamples = 5
	// lagCountCap bounds DeliveryState's count of the events after the cursor: counting reads
	// every row counted (the event log has no index that would count a range of seqs without its
	// rows), so a destination a long way behind is reported as lagCountCap events behind.
	lagCountCap = 1_000_000
	// minRetentionWindow is the least number of events, from the oldest, that DeleteExpiredEvents
	// examines (see there).
	minRetentionWindow = 1000
)

var _ trackapi.DeliveryStore = (*DB)(nil)

// CreateDestination stores a new destination and returns it as stored, with its id. Its cursor
// starts at the end of the event log, in the same transaction: the highest seq ever handed out
// (the newest event's, or the floor when the newest events were deleted), so it receives the
// events committed from then on and none before. A zero CreatedAt means now, a zero UpdatedAt
// means CreatedAt, and an empty Status means active. Sources are kept without duplicates, in
// increasing order; an unknown source fails with an error wrapping trackapi.ErrNotFound.
func (d *DB) CreateDestination(ctx context.Context, dest trackapi.Destination) (trackapi.Destination, error) {
	op := fmt.Sprintf("create destination %q", dest.Name)
	if dest.CreatedAt.IsZero() {
		dest.CreatedAt = time.Now()
	}
	if dest.UpdatedAt.IsZero() {
		dest.UpdatedAt = dest.CreatedAt
	}
	if dest.Status == "" {
		dest.Status = trackapi.DestinationActive
	}
	config, filter, err := encodeDestination(dest)
	if err != nil {
		return trackapi.Destination{}, fmt.Errorf("%s: %w", op, err)
	}
	var created trackapi.Destination
	err = d.inWriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO destinations(name, type, config, consent_category, filter, batch_size, status, created_at, updated_at)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			dest.Name, dest.Type, config, dest.ConsentCategory, filter, dest.BatchSize, dest.Status,
			dest.CreatedAt.UnixMilli(), dest.UpdatedAt.UnixMilli())
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		if err := insertDestinationSources(ctx, tx, id, dest.Sources); err != nil {
			return err
		}
		// Under the write lock (BEGIN IMMEDIATE), so no commit of events can come in between.
		if _, err := tx.ExecContext(ctx, `INSERT INTO delivery_cursors(destination_id, seq)
SELECT ?, max(coalesce((SELECT max(seq) FROM events), 0), coalesce((SELECT max(value) FROM seq_floor), 0))`, id); err != nil {
			return err
		}
		created, err = destinationByID(ctx, tx, id)
		return err
	})
	if err != nil {
		return trackapi.Destination{}, d.classify(op, err)
	}
	return created, nil
}

// Destinations lists every destination, active or paused, oldest first. The list is empty, not
// nil, when there are none.
func (d *DB) Destinations(ctx context.Context) ([]trackapi.Destination, error) {
	var list []trackapi.Destination
	err := d.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		list, err = queryDestinations(ctx, tx, `SELECT `+destinationColumns+` FROM destinations ORDER BY id`)
		if err != nil {
			return err
		}
		sources, err := destinationSources(ctx, tx, `SELECT destination_id, source_id FROM destination_sources ORDER BY destination_id, source_id`)
		if err != nil {
			return err
		}
		for i := range list {
			list[i].Sources = sources[list[i].ID]
		}
		return nil
	})
	if err != nil {
		return nil, d.classify("list destinations", err)
	}
	return list, nil
}

// Destination returns one destination; an unknown id wraps trackapi.ErrNotFound.
func (d *DB) Destination(ctx context.Context, id int64) (trackapi.Destination, error) {
	var dest trackapi.Destination
	err := d.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		dest, err = destinationByID(ctx, tx, id)
		return err
	})
	if err != nil {
		return trackapi.Destination{}, d.classify(fmt.Sprintf("destination %d", id), err)
	}
	return dest, nil
}

// UpdateDestination changes every field of the destination dest.ID but its CreatedAt, sources
// included, and returns it as stored. UpdatedAt becomes now, and always later than before (by a
// millisecond at least), since running engines restart a destination's worker when it changes:
// a copy read earlier must not hide an update. The cursor, retries, dead
// letters, stats and issues stay: pausing keeps the cursor, and the events wait in the log. An
// unknown id, or an unknown source, wraps trackapi.ErrNotFound.
func (d *DB) UpdateDestination(ctx context.Context, dest trackapi.Destination) (trackapi.Destination, error) {
	op := fmt.Sprintf("update destination %d", dest.ID)
	dest.UpdatedAt = time.Now()
	config, filter, err := encodeDestination(dest)
	if err != nil {
		return trackapi.Destination{}, fmt.Errorf("%s: %w", op, err)
	}
	var updated trackapi.Destination
	err = d.inWriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE destinations
SET name = ?, type = ?, config = ?, consent_category = ?, filter = ?, batch_size = ?, status = ?,
    updated_at = max(?, updated_at + 1)
WHERE id = ?`,
			dest.Name, dest.Type, config, dest.ConsentCategory, filter, dest.BatchSize, dest.Status,
			dest.UpdatedAt.UnixMilli(), dest.ID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("no destination %d: %w", dest.ID, trackapi.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM destination_sources WHERE destination_id = ?`, dest.ID); err != nil {
			return err
		}
		if err := insertDestinationSources(ctx, tx, dest.ID, dest.Sources); err != nil {
			return err
		}
		updated, err = destinationByID(ctx, tx, dest.ID)
		return err
	})
	if err != nil {
		return trackapi.Destination{}, d.classify(op, err)
	}
	return updated, nil
}

// DeleteDestination removes a destination with its sources, cursor, retries, dead letters, stats,
// issues and their samples, in one statement (the tables cascade from destinations). An unknown
// id wraps trackapi.ErrNotFound.
func (d *DB) DeleteDestination(ctx context.Context, id int64) error {
	op := fmt.Sprintf("delete destination %d", id)
	res, err := d.writer.ExecContext(ctx, `DELETE FROM destinations WHERE id = ?`, id)
	if err != nil {
		return d.classify(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return d.classify(op, err)
	}
	if n == 0 {
		return d.classify(op, trackapi.ErrNotFound)
	}
	return nil
}

// encodeDestination checks what the schema would refuse anyway, with a clearer message, and
// returns the config as JSON and the filter as its text, or nil (NULL) when there is none.
func encodeDestination(dest trackapi.Destination) (config string, filter any, err error) {
	if dest.Status != trackapi.DestinationActive && dest.Status != trackapi.DestinationPaused {
		return "", nil, fmt.Errorf("status %q, want %q or %q", dest.Status, trackapi.DestinationActive, trackapi.DestinationPaused)
	}
	if dest.BatchSize < 0 {
		return "", nil, fmt.Errorf("batch size %d, want 0 (the sink's default) or more", dest.BatchSize)
	}
	c, err := json.Marshal(dest.Config)
	if err != nil {
		return "", nil, fmt.Errorf("encode config: %w", err)
	}
	if len(dest.Filter) > 0 {
		if !json.Valid(dest.Filter) {
			return "", nil, errors.New("the filter is not JSON")
		}
		filter = string(dest.Filter)
	}
	return string(c), filter, nil
}

// insertDestinationSources stores the sources of destination id; a source that does not exist
// fails with trackapi.ErrNotFound. Repeated ids are stored once.
func insertDestinationSources(ctx context.Context, tx *sql.Tx, id int64, sources []int64) error {
	for _, source := range sources {
		if err := sourceExists(ctx, tx, source); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO destination_sources(destination_id, source_id) VALUES(?, ?) ON CONFLICT DO NOTHING`,
			id, source); err != nil {
			return err
		}
	}
	return nil
}

const destinationColumns = `id, name, type, config, consent_category, filter, batch_size, status, created_at, updated_at`

// destinationByID reads one destination with its sources in tx; an unknown id is
// trackapi.ErrNotFound.
func destinationByID(ctx context.Context, tx *sql.Tx, id int64) (trackapi.Destination, error) {
	list, err := queryDestinations(ctx, tx, `SELECT `+destinationColumns+` FROM destinations WHERE id = ?`, id)
	if err != nil {
		return trackapi.Destination{}, err
	}
	if len(list) == 0 {
		return trackapi.Destination{}, fmt.Errorf("no destination %d: %w", id, trackapi.ErrNotFound)
	}
	sources, err := destinationSources(ctx, tx,
		`SELECT destination_id, source_id FROM destination_sources WHERE destination_id = ? ORDER BY source_id`, id)
	if err != nil {
		return trackapi.Destination{}, err
	}
	list[0].Sources = sources[id]
	return list[0], nil
}

// queryDestinations runs a query of destinationColumns; Sources are left nil. The list is empty,
// not nil, when there are none.
func queryDestinations(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]trackapi.Destination, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	list := []trackapi.Destination{}
	for rows.Next() {
		var dest trackapi.Destination
		var config string
		var filter sql.NullString
		var createdAt, updatedAt int64
		if err := rows.Scan(&dest.ID, &dest.Name, &dest.Type, &config, &dest.ConsentCategory, &filter,
			&dest.BatchSize, &dest.Status, &createdAt, &updatedAt); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(config), &dest.Config); err != nil {
			return nil, fmt.Errorf("config of destination %d: %w", dest.ID, err)
		}
		if filter.Valid {
			dest.Filter = json.RawMessage(filter.String)
		}
		dest.CreatedAt = time.UnixMilli(createdAt).UTC()
		dest.UpdatedAt = time.UnixMilli(updatedAt).UTC()
		list = append(list, dest)
	}
	return list, rows.Err()
}

// destinationSources runs a query of (destination_id, source_id) and groups the sources by
// destination, in the query's order.
func destinationSources(ctx context.Context, tx *sql.Tx, query string, args ...any) (map[int64][]int64, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	sources := map[int64][]int64{}
	for rows.Next() {
		var dest, source int64
		if err := rows.Scan(&dest, &source); err != nil {
			return nil, err
		}
		sources[dest] = append(sources[dest], source)
	}
	return sources, rows.Err()
}

// destinationExists fails with trackapi.ErrNotFound when there is no destination with this id.
// The listings call it only when they found nothing, to tell "none" from "no such destination".
func destinationExists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id int64) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM destinations WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("no destination %d: %w", id, trackapi.ErrNotFound)
	}
	return err
}

// DeliveryState returns where a destination stands, read in one snapshot: its cursor, its retry
// rows (how many, and the earliest NextAt), its dead letters, and its lag: the events after the
// cursor and the receive time of the first of them. The lag counts every event after the cursor,
// of any source (the engine reads them all, and filters), and at most lagCountCap (1,000,000) of
// them: counting reads each row counted, so a destination further behind reads as 1,000,000
// events behind, at the cost of one bounded scan. An unknown id wraps trackapi.ErrNotFound.
func (d *DB) DeliveryState(ctx context.Context, id int64) (trackapi.DeliveryState, error) {
	var st trackapi.DeliveryState
	err := d.inReadTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT seq FROM delivery_cursors WHERE destination_id = ?`, id).Scan(&st.Cursor)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no destination %d: %w", id, trackapi.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var nextAt sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT count(*), min(next_at) FROM delivery_retries WHERE destination_id = ?`, id).
			Scan(&st.Retries, &nextAt); err != nil {
			return err
		}
		st.NextRetryAt = timeOf(nextAt)
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM dead_letters WHERE destination_id = ?`, id).
			Scan(&st.DeadLetters); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM events WHERE seq > ? LIMIT ?)`,
			st.Cursor, lagCountCap).Scan(&st.LagEvents); err != nil {
			return err
		}
		var since sql.NullInt64
		err = tx.QueryRowContext(ctx, `SELECT received_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1`, st.Cursor).Scan(&since)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		st.LagSince = timeOf(since)
		return nil
	})
	if err != nil {
		return trackapi.DeliveryState{}, d.classify(fmt.Sprintf("delivery state of destination %d", id), err)
	}
	return st, nil
}

// SettleDelivery commits one Settlement in one transaction on the writer:
//   - the cursor moves to s.Cursor unless it is already there or further (it never moves back);
//   - Retries are added or replace the destination's row for their seq; then Delivered seqs lose
//     their retry rows, and DeadLetters are added or replaced and lose their retry rows: so when a
//     seq is in more than one, being delivered or dead wins over a retry;
//   - Stats are added into their minute's row (Minute is taken down to the start of its minute,
//     UTC); entries with nothing counted write nothing;
//   - Issues are counted into the destination's issue of their (Kind, Reason), made when it is
//     new: the count goes up by one a report, last_seen to the latest At, and up to 10 event
//     names are kept. A report's Sample is kept only when the issue has no sample yet in the
//     minute of its At (at most one new sample an issue a minute, so that a flood of failures
//     is not a flood of writes), and only the newest 5 samples of an issue are kept. A zero At
//     means now.
//
// DeadLetter.DestinationID is ignored (s.DestinationID applies). An unknown destination wraps
// trackapi.ErrNotFound and changes nothing.
func (d *DB) SettleDelivery(ctx context.Context, s trackapi.Settlement) error {
	op := fmt.Sprintf("settle delivery of destination %d", s.DestinationID)
	stats := mergeStats(s.Stats)
	issues, err := groupIssues(s.Issues, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err = d.inWriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE delivery_cursors SET seq = max(seq, ?) WHERE destination_id = ?`,
			s.Cursor, s.DestinationID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("no destination %d: %w", s.DestinationID, trackapi.ErrNotFound)
		}
		if err := upsertRetries(ctx, tx, s.DestinationID, s.Retries); err != nil {
			return err
		}
		if err := execEach(ctx, tx, `DELETE FROM delivery_retries WHERE destination_id = ? AND seq = ?`, len(s.Delivered),
			func(i int) []any { return []any{s.DestinationID, s.Delivered[i]} }); err != nil {
			return fmt.Errorf("delivered: %w", err)
		}
		if err := upsertDeadLetters(ctx, tx, s.DestinationID, s.DeadLetters); err != nil {
			return err
		}
		if err := addStats(ctx, tx, s.DestinationID, stats); err != nil {
			return err
		}
		for _, g := range issues {
			if err := recordIssue(ctx, tx, s.DestinationID, g); err != nil {
				return fmt.Errorf("issue %s/%s: %w", g.kind, g.reason, err)
			}
		}
		return nil
	})
	if err != nil {
		return d.classify(op, err)
	}
	return nil
}

// execEach runs query in tx n times, with the arguments args(i) for the i-th run, from one
// prepared statement.
func execEach(ctx context.Context, tx *sql.Tx, query string, n int, args func(i int) []any) error {
	if n == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i := range n {
		if _, err := stmt.ExecContext(ctx, args(i)...); err != nil {
			return err
		}
	}
	return nil
}

// upsertRetries adds retries to the destination's retry table, replacing the rows of their seqs.
func upsertRetries(ctx context.Context, tx *sql.Tx, destinationID int64, retries []trackapi.Retry) error {
	err := execEach(ctx, tx, `INSERT INTO delivery_retries(destination_id, seq, attempt, first_failed_at, next_at, reason, error)
VALUES(?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(destination_id, seq) DO UPDATE SET attempt = excluded.attempt, first_failed_at = excluded.first_failed_at,
	next_at = excluded.next_at, reason = excluded.reason, error = excluded.error`, len(retries),
		func(i int) []any {
			r := retries[i]
			return []any{destinationID, r.Seq, r.Attempt, r.FirstFailedAt.UnixMilli(), r.NextAt.UnixMilli(), r.Reason, r.Error}
		})
	if err != nil {
		return fmt.Errorf("retries: %w", err)
	}
	return nil
}

// upsertDeadLetters adds dead letters to the destination's, replacing those of their seqs, and
// removes the retry rows of their seqs.
func upsertDeadLetters(ctx context.Context, tx *sql.Tx, destinationID int64, dead []trackapi.DeadLetter) error {
	err := execEach(ctx, tx, `INSERT INTO dead_letters(destination_id, seq, kind, reason, error, attempts, first_failed_at, failed_at, event_name)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(destination_id, seq) DO UPDATE SET kind = excluded.kind, reason = excluded.reason, error = excluded.error,
	attempts = excluded.attempts, first_failed_at = excluded.first_failed_at, failed_at = excluded.failed_at,
	event_name = excluded.event_name`, len(dead),
		func(i int) []any {
			l := dead[i]
			return []any{destinationID, l.Seq, l.Kind, l.Reason, l.Error, l.Attempts, l.FirstFailedAt.UnixMilli(), l.FailedAt.UnixMilli(), l.EventName}
		})
	if err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	err = execEach(ctx, tx, `DELETE FROM delivery_retries WHERE destination_id = ? AND seq = ?`, len(dead),
		func(i int) []any { return []any{destinationID, dead[i].Seq} })
	if err != nil {
		return fmt.Errorf("dead letters' retries: %w", err)
	}
	return nil
}

// minuteOf is the start of t's minute in epoch milliseconds.
func minuteOf(t time.Time) int64 { return minuteStart(t.UnixMilli()) }

// minuteStart is the start of the minute of ms, epoch milliseconds, in epoch milliseconds.
func minuteStart(ms int64) int64 { return ms - ((ms%60000)+60000)%60000 }

// minuteCounts are the counts of one minute, its start in epoch milliseconds.
type minuteCounts struct {
	minute int64
	trackapi.DeliveryCounts
}

// mergeStats adds up the entries of the same minute, in the order of their first entry, and
// leaves out those with nothing counted.
func mergeStats(stats []trackapi.DeliveryStats) []minuteCounts {
	var merged []minuteCounts
	at := map[int64]int{}
	for _, s := range stats {
		if s.DeliveryCounts == (trackapi.DeliveryCounts{}) {
			continue
		}
		m := minuteOf(s.Minute)
		i, ok := at[m]
		if !ok {
			i = len(merged)
			at[m] = i
			merged = append(merged, minuteCounts{minute: m})
		}
		c := &merged[i].DeliveryCounts
		c.Delivered += s.Delivered
		c.DeliveredAfterRetry += s.DeliveredAfterRetry
		c.Retried += s.Retried
		c.FilteredConsent += s.FilteredConsent
		c.FilteredCondition += s.FilteredCondition
		c.Rejected += s.Rejected
		c.Failed += s.Failed
		c.Expired += s.Expired
		c.LatencyMillisSum += s.LatencyMillisSum
	}
	return merged
}

// addStats adds counts into the destination's minute rows.
func addStats(ctx context.Context, tx *sql.Tx, destinationID int64, stats []minuteCounts) error {
	err := execEach(ctx, tx, `INSERT INTO delivery_stats(destination_id, minute, delivered, delivered_after_retry, retried,
	filtered_consent, filtered_condition, rejected, failed, expired, latency_millis_sum)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(destination_id, minute) DO UPDATE SET
	delivered = delivered + excluded.delivered,
	delivered_after_retry = delivered_after_retry + excluded.delivered_after_retry,
	retried = retried + excluded.retried,
	filtered_consent = filtered_consent + excluded.filtered_consent,
	filtered_condition = filtered_condition + excluded.filtered_condition,
	rejected = rejected + excluded.rejected,
	failed = failed + excluded.failed,
	expired = expired + excluded.expired,
	latency_millis_sum = latency_millis_sum + excluded.latency_millis_sum`, len(stats),
		func(i int) []any {
			s := stats[i]
			return []any{destinationID, s.minute, s.Delivered, s.DeliveredAfterRetry, s.Retried,
				s.FilteredConsent, s.FilteredCondition, s.Rejected, s.Failed, s.Expired, s.LatencyMillisSum}
		})
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return nil
}

// issueGroup is the reports of one settlement for one (kind, reason): one write of the issue,
// however many reports.
type issueGroup struct {
	kind, reason string
	count        int64
	first, last  int64    // epoch milliseconds
	names        []string // distinct, in order of appearance, at most maxIssueEventNames
	samples      []issueSample
}

// issueSample is a report's sample, encoded, with its time in epoch milliseconds.
type issueSample struct {
	at      int64
	seq     int64
	attempt int
	sample  string
}

// groupIssues groups reports by (kind, reason), in the order of each group's first report, and
// encodes their samples. A zero At is now.
func groupIssues(reports []trackapi.IssueReport, now time.Time) ([]*issueGroup, error) {
	var groups []*issueGroup
	byKey := map[[2]string]*issueGroup{}
	for _, r := range reports {
		at := r.At
		if at.IsZero() {
			at = now
		}
		ms := at.UnixMilli()
		g := byKey[[2]string{r.Kind, r.Reason}]
		if g == nil {
			g = &issueGroup{kind: r.Kind, reason: r.Reason, first: ms, last: ms}
			byKey[[2]string{r.Kind, r.Reason}] = g
			groups = append(groups, g)
		}
		g.count++
		g.first = min(g.first, ms)
		g.last = max(g.last, ms)
		g.names = addEventName(g.names, r.EventName)
		if r.Sample != nil {
			sample, err := json.Marshal(r.Sample)
			if err != nil {
				return nil, fmt.Errorf("encode the sample of seq %d: %w", r.Seq, err)
			}
			g.samples = append(g.samples, issueSample{at: ms, seq: r.Seq, attempt: r.Attempt, sample: string(sample)})
		}
	}
	return groups, nil
}

// addEventName adds name to names unless it is empty, already there, or names is full.
func addEventName(names []string, name string) []string {
	if name == "" || len(names) >= maxIssueEventNames || slices.Contains(names, name) {
		return names
	}
	return append(names, name)
}

// recordIssue counts g into the destination's issue of its (kind, reason), making the issue when
// it is new, and keeps its samples as SettleDelivery says.
func recordIssue(ctx context.Context, tx *sql.Tx, destinationID int64, g *issueGroup) error {
	var id int64
	var stored string
	err := tx.QueryRowContext(ctx, `SELECT id, event_names FROM delivery_issues WHERE destination_id = ? AND kind = ? AND reason = ?`,
		destinationID, g.kind, g.reason).Scan(&id, &stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		names, err := json.Marshal(append([]string{}, g.names...))
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO delivery_issues(destination_id, kind, reason, count, first_seen, last_seen, event_names)
VALUES(?, ?, ?, ?, ?, ?, ?)`, destinationID, g.kind, g.reason, g.count, g.first, g.last, string(names))
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		var names []string
		if err := json.Unmarshal([]byte(stored), &names); err != nil {
			return fmt.Errorf("event names of issue %d: %w", id, err)
		}
		for _, n := range g.names {
			names = addEventName(names, n)
		}
		encoded, err := json.Marshal(append([]string{}, names...))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE delivery_issues
SET count = count + ?, first_seen = min(first_seen, ?), last_seen = max(last_seen, ?), event_names = ?
WHERE id = ?`, g.count, g.first, g.last, string(encoded), id); err != nil {
			return err
		}
	}

	added := false
	taken := map[int64]bool{} // minutes with a sample, stored or added now
	for _, s := range g.samples {
		minute := minuteStart(s.at)
		if taken[minute] {
			continue
		}
		taken[minute] = true
		var has bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM issue_samples WHERE issue_id = ? AND at >= ? AND at < ?)`,
			id, minute, minute+60000).Scan(&has); err != nil {
			return err
		}
		if has {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO issue_samples(issue_id, at, seq, attempt, sample) VALUES(?, ?, ?, ?, ?)`,
			id, s.at, s.seq, s.attempt, s.sample); err != nil {
			return err
		}
		added = true
	}
	if added {
		if _, err := tx.ExecContext(ctx, `DELETE FROM issue_samples WHERE issue_id = :id AND rowid NOT IN
	(SELECT rowid FROM issue_samples WHERE issue_id = :id ORDER BY at DESC, rowid DESC LIMIT :keep)`,
			sql.Named("id", id), sql.Named("keep", maxIssueSamples)); err != nil {
			return err
		}
	}
	return nil
}

// dueRetriesQuery is DueRetries' query. INDEXED BY, because the planner otherwise walks the
// primary key in seq order, which needs no sort but reads every row still backing off, however
// few are due.
const dueRetriesQuery = `SELECT seq, attempt, first_failed_at, next_at, reason, error FROM delivery_retries
WHERE destination_id = :dest AND seq IN
	(SELECT seq FROM delivery_retries INDEXED BY delivery_retries_due
	WHERE destination_id = :dest AND next_at <= :now ORDER BY seq LIMIT :limit)
ORDER BY seq`

// DueRetries returns up to limit retries of a destination whose NextAt is not after now, oldest
// seq first. The due rows are found on the (destination_id, next_at) index, which holds their
// seqs too: a destination with many retries still backing off costs nothing here, and one with
// many due ones costs a pass over their index entries (a few bytes each) to pick the lowest seqs,
// before the rows of just those are read. A limit below 1 is an error; an unknown destination
// wraps trackapi.ErrNotFound.
func (d *DB) DueRetries(ctx context.Context, destinationID int64, now time.Time, limit int) ([]trackapi.Retry, error) {
	op := fmt.Sprintf("due retries of destination %d", destinationID)
	if limit < 1 {
		return nil, fmt.Errorf("%s: limit %d, want at least 1", op, limit)
	}
	rows, err := d.reader.QueryContext(ctx, dueRetriesQuery,
		sql.Named("dest", destinationID), sql.Named("now", now.UnixMilli()), sql.Named("limit", limit))
	if err != nil {
		return nil, d.classify(op, err)
	}
	defer rows.Close()
	retries := []trackapi.Retry{}
	for rows.Next() {
		var r trackapi.Retry
		var firstFailedAt, nextAt int64
		if err := rows.Scan(&r.Seq, &r.Attempt, &firstFailedAt, &nextAt, &r.Reason, &r.Error); err != nil {
			return nil, d.classify(op, err)
		}
		r.FirstFailedAt = time.UnixMilli(firstFailedAt).UTC()
		r.NextAt = time.UnixMilli(nextAt).UTC()
		retries = append(retries, r)
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify(op, err)
	}
	if len(retries) == 0 {
		if err := destinationExists(ctx, d.reader, destinationID); err != nil {
			return nil, d.classify(op, err)
		}
	}
	return retries, nil
}

// EventsBySeq returns the stored events with these seqs, in seq order, each once; seqs no longer
// stored are left out. It reads on a read connection, in one query whatever the number of seqs
// (they are passed as one JSON array), each found by its seq.
func (d *DB) EventsBySeq(ctx context.Context, seqs []int64) ([]trackapi.StoredEvent, error) {
	op := fmt.Sprintf("read %d events by seq", len(seqs))
	events := make([]trackapi.StoredEvent, 0, len(seqs))
	if len(seqs) == 0 {
		return events, nil
	}
	rows, err := d.reader.QueryContext(ctx, `SELECT `+storedEventColumns+` FROM events
WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq`, seqsJSON(seqs))
	if err != nil {
		return nil, d.classify(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanStoredEvent(rows)
		if err != nil {
			return nil, d.classify(op, err)
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify(op, err)
	}
	return events, nil
}

// seqsJSON is seqs as a JSON array, for json_each: one bound value however many seqs.
func seqsJSON(seqs []int64) string {
	b := make([]byte, 0, 2+len(seqs)*8)
	b = append(b, '[')
	for i, s := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, s, 10)
	}
	return string(append(b, ']'))
}

// deadLetterWhere is the condition of dead_letters rows that a DeadLetterFilter picks for
// destination :dest, with its arguments (named, so that it combines with others).
func deadLetterWhere(destinationID int64, f trackapi.DeadLetterFilter) (string, []any) {
	where := `destination_id = :dest`
	args := []any{sql.Named("dest", destinationID)}
	if f.Reason != "" {
		where += ` AND (kind = :reason OR reason = :reason)`
		args = append(args, sql.Named("reason", f.Reason))
	}
	if !f.Since.IsZero() {
		where += ` AND failed_at >= :since`
		args = append(args, sql.Named("since", f.Since.UnixMilli()))
	}
	if !f.Until.IsZero() {
		where += ` AND failed_at < :until`
		args = append(args, sql.Named("until", f.Until.UnixMilli()))
	}
	if len(f.Seqs) > 0 {
		where += ` AND seq IN (SELECT value FROM json_each(:seqs))`
		args = append(args, sql.Named("seqs", seqsJSON(f.Seqs)))
	}
	return where, args
}

// DeadLetters lists a destination's dead letters with a seq above after that match f, oldest
// (lowest seq) first, up to limit, and the cursor to pass next: the last returned seq, or after
// when none was returned. f.Reason matches the kind or the reason; Since is inclusive and Until
// exclusive, on FailedAt. A limit below 1 is an error; an unknown destination wraps
// trackapi.ErrNotFound.
func (d *DB) DeadLetters(ctx context.Context, destinationID int64, f trackapi.DeadLetterFilter, after int64, limit int) ([]trackapi.DeadLetter, int64, error) {
	op := fmt.Sprintf("dead letters of destination %d", destinationID)
	if limit < 1 {
		return nil, after, fmt.Errorf("%s: limit %d, want at least 1", op, limit)
	}
	where, args := deadLetterWhere(destinationID, f)
	args = append(args, sql.Named("after", after), sql.Named("limit", limit))
	rows, err := d.reader.QueryContext(ctx, `SELECT seq, kind, reason, error, attempts, first_failed_at, failed_at, event_name
FROM dead_letters WHERE `+where+` AND seq > :after ORDER BY seq LIMIT :limit`, args...)
	if err != nil {
		return nil, after, d.classify(op, err)
	}
	defer rows.Close()
	letters := []trackapi.DeadLetter{}
	next := after
	for rows.Next() {
		l := trackapi.DeadLetter{DestinationID: destinationID}
		var firstFailedAt, failedAt int64
		if err := rows.Scan(&l.Seq, &l.Kind, &l.Reason, &l.Error, &l.Attempts, &firstFailedAt, &failedAt, &l.EventName); err != nil {
			return nil, after, d.classify(op, err)
		}
		l.FirstFailedAt = time.UnixMilli(firstFailedAt).UTC()
		l.FailedAt = time.UnixMilli(failedAt).UTC()
		letters = append(letters, l)
		next = l.Seq
	}
	if err := rows.Err(); err != nil {
		return nil, after, d.classify(op, err)
	}
	if len(letters) == 0 {
		if err := destinationExists(ctx, d.reader, destinationID); err != nil {
			return nil, after, d.classify(op, err)
		}
	}
	return letters, next, nil
}

// ReplayDeadLetters moves the dead letters of a destination that match f (as in DeadLetters)
// back to its retry table, in one transaction, and returns how many. A replay is a fresh start:
// each gets attempt 0, FirstFailedAt and NextAt now (so the retry budget counts from the replay,
// and DueRetries at now returns it), and keeps its last reason and error; a retry row the seq
// somehow already has is replaced. An unknown destination wraps trackapi.ErrNotFound.
func (d *DB) ReplayDeadLetters(ctx context.Context, destinationID int64, f trackapi.DeadLetterFilter, now time.Time) (int, error) {
	op := fmt.Sprintf("replay dead letters of destination %d", destinationID)
	where, args := deadLetterWhere(destinationID, f)
	var n int64
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		// "WHERE" is there already: an upsert's SELECT needs one, or ON CONFLICT would be read as
		// a join's.
		if _, err := tx.ExecContext(ctx, `INSERT INTO delivery_retries(destination_id, seq, attempt, first_failed_at, next_at, reason, error)
SELECT destination_id, seq, 0, :now, :now, reason, error FROM dead_letters WHERE `+where+`
ON CONFLICT(destination_id, seq) DO UPDATE SET attempt = 0, first_failed_at = excluded.first_failed_at,
	next_at = excluded.next_at, reason = excluded.reason, error = excluded.error`,
			append(args, sql.Named("now", now.UnixMilli()))...); err != nil {
			return err
		}
		var err error
		n, err = deleteDeadLetters(ctx, tx, destinationID, where, args)
		return err
	})
	if err != nil {
		return 0, d.classify(op, err)
	}
	return int(n), nil
}

// PurgeDeadLetters deletes the dead letters of a destination that match f (as in DeadLetters)
// and returns how many. An unknown destination wraps trackapi.ErrNotFound.
func (d *DB) PurgeDeadLetters(ctx context.Context, destinationID int64, f trackapi.DeadLetterFilter) (int, error) {
	op := fmt.Sprintf("purge dead letters of destination %d", destinationID)
	where, args := deadLetterWhere(destinationID, f)
	var n int64
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = deleteDeadLetters(ctx, tx, destinationID, where, args)
		return err
	})
	if err != nil {
		return 0, d.classify(op, err)
	}
	return int(n), nil
}

// deleteDeadLetters deletes the dead letters matching where (deadLetterWhere) and returns how
// many; none for an unknown destination wraps trackapi.ErrNotFound.
func deleteDeadLetters(ctx context.Context, tx *sql.Tx, destinationID int64, where string, args []any) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM dead_letters WHERE `+where, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, destinationExists(ctx, tx, destinationID)
	}
	return n, nil
}

// DeliveryStats returns the minutes of [start, end) that have counts, oldest first; Minute is
// the start of the minute, UTC. The list is empty, not nil, when there are none; an unknown
// destination wraps trackapi.ErrNotFound.
func (d *DB) DeliveryStats(ctx context.Context, destinationID int64, start, end time.Time) ([]trackapi.DeliveryStats, error) {
	op := fmt.Sprintf("delivery stats of destination %d", destinationID)
	rows, err := d.reader.QueryContext(ctx, `SELECT minute, delivered, delivered_after_retry, retried, filtered_consent,
	filtered_condition, rejected, failed, expired, latency_millis_sum
FROM delivery_stats WHERE destination_id = ? AND minute >= ? AND minute < ? ORDER BY minute`,
		destinationID, start.UnixMilli(), end.UnixMilli())
	if err != nil {
		return nil, d.classify(op, err)
	}
	defer rows.Close()
	stats := []trackapi.DeliveryStats{}
	for rows.Next() {
		var s trackapi.DeliveryStats
		var minute int64
		if err := rows.Scan(&minute, &s.Delivered, &s.DeliveredAfterRetry, &s.Retried, &s.FilteredConsent,
			&s.FilteredCondition, &s.Rejected, &s.Failed, &s.Expired, &s.LatencyMillisSum); err != nil {
			return nil, d.classify(op, err)
		}
		s.Minute = time.UnixMilli(minute).UTC()
		stats = append(stats, s)
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify(op, err)
	}
	if len(stats) == 0 {
		if err := destinationExists(ctx, d.reader, destinationID); err != nil {
			return nil, d.classify(op, err)
		}
	}
	return stats, nil
}

// DeliveryIssues lists a destination's issues, the most recently seen first. EventNames is empty,
// not nil, when no report named an event. The list is empty, not nil, when there are none; an
// unknown destination wraps trackapi.ErrNotFound.
func (d *DB) DeliveryIssues(ctx context.Context, destinationID int64) ([]trackapi.DeliveryIssue, error) {
	op := fmt.Sprintf("delivery issues of destination %d", destinationID)
	rows, err := d.reader.QueryContext(ctx, `SELECT id, kind, reason, count, first_seen, last_seen, event_names
FROM delivery_issues WHERE destination_id = ? ORDER BY last_seen DESC, id DESC`, destinationID)
	if err != nil {
		return nil, d.classify(op, err)
	}
	defer rows.Close()
	issues := []trackapi.DeliveryIssue{}
	for rows.Next() {
		i := trackapi.DeliveryIssue{DestinationID: destinationID}
		var firstSeen, lastSeen int64
		var names string
		if err := rows.Scan(&i.ID, &i.Kind, &i.Reason, &i.Count, &firstSeen, &lastSeen, &names); err != nil {
			return nil, d.classify(op, err)
		}
		i.FirstSeen = time.UnixMilli(firstSeen).UTC()
		i.LastSeen = time.UnixMilli(lastSeen).UTC()
		i.EventNames = []string{}
		if err := json.Unmarshal([]byte(names), &i.EventNames); err != nil {
			return nil, d.classify(op, fmt.Errorf("event names of issue %d: %w", i.ID, err))
		}
		issues = append(issues, i)
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify(op, err)
	}
	if len(issues) == 0 {
		if err := destinationExists(ctx, d.reader, destinationID); err != nil {
			return nil, d.classify(op, err)
		}
	}
	return issues, nil
}

// IssueSamples lists the kept samples of one of a destination's issues, newest first. An issue
// that is not the destination's wraps trackapi.ErrNotFound, like an unknown one.
func (d *DB) IssueSamples(ctx context.Context, destinationID, issueID int64) ([]trackapi.IssueSample, error) {
	op := fmt.Sprintf("samples of issue %d of destination %d", issueID, destinationID)
	rows, err := d.reader.QueryContext(ctx, `SELECT s.at, s.seq, s.attempt, s.sample
FROM issue_samples AS s JOIN delivery_issues AS i ON i.id = s.issue_id
WHERE i.id = ? AND i.destination_id = ? ORDER BY s.at DESC, s.rowid DESC`, issueID, destinationID)
	if err != nil {
		return nil, d.classify(op, err)
	}
	defer rows.Close()
	samples := []trackapi.IssueSample{}
	for rows.Next() {
		s := trackapi.IssueSample{IssueID: issueID}
		var at int64
		var sample string
		if err := rows.Scan(&at, &s.Seq, &s.Attempt, &sample); err != nil {
			return nil, d.classify(op, err)
		}
		s.At = time.UnixMilli(at).UTC()
		if err := json.Unmarshal([]byte(sample), &s.Sample); err != nil {
			return nil, d.classify(op, fmt.Errorf("sample of issue %d: %w", issueID, err))
		}
		samples = append(samples, s)
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify(op, err)
	}
	if len(samples) == 0 {
		var one int
		err := d.reader.QueryRowContext(ctx, `SELECT 1 FROM delivery_issues WHERE id = ? AND destination_id = ?`,
			issueID, destinationID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			err = fmt.Errorf("no issue %d of destination %d: %w", issueID, destinationID, trackapi.ErrNotFound)
		}
		if err != nil {
			return nil, d.classify(op, err)
		}
	}
	return samples, nil
}

// DeleteExpiredEvents applies retention, in one transaction on the writer: it deletes up to limit
// events received before `before`, lowest seq first, with their retry rows and dead letters, and
// the stats of minutes before statsBefore. Each destination that had not settled a deleted event
// gets it counted Expired in the minute of now, and expired[destinationID] says how many (the map
// is empty, not nil, when none): an event had not been settled when it is in the destination's
// retry table, or when its seq is above the destination's cursor and it is from one of the
// destination's sources (any source when it has none; an event of a source the destination does
// not take was never its to deliver). A limit below 1 is an error.
//
// The cost of a call is bounded by limit, not by the size of the log, and limit is also how long
// commits of events may wait, as the call holds the writer. (Measured with 1,000,000 events and
// five destinations behind: limit 10,000 took about 0.2 s, limit 1,000 under 0.1 s, and a call
// with limit 10,000 that found nothing to delete about 10 ms.) Events are examined in seq order
// from the oldest, and at most limit + max(limit, 1000) of them, as there is no index on
// received_at (it would cost every commit of events one more B-tree to write). Seq order is
// receive order but for the few milliseconds a commit takes, or a clock stepped back: an event
// received before `before` that sits behind more than that many newer ones waits for a later
// call, when the events ahead of it have expired too. The deleted seqs go into seq_floor (the
// trigger of migration 0003), so no seq is handed out again, even when every event is deleted.
//
// Why the file stops growing under steady load once retention applies: the pages of the deleted
// rows go onto SQLite's freelist when the transaction commits, and new rows (events, their
// index entries) are written into freelist pages before the file is extended. So once retention
// deletes about as much as is collected, the file keeps the size of the retained window at its
// peak. No VACUUM is needed, and none is run: it would rewrite the whole file while holding the
// write lock, stopping collection for as long. (The file does not shrink either; VACUUM, run by
// an operator at a quiet time, gives the free pages back to the file system.)
func (d *DB) DeleteExpiredEvents(ctx context.Context, before, statsBefore, now time.Time, limit int) (int, map[int64]int64, error) {
	op := "delete expired events"
	if limit < 1 {
		return 0, nil, fmt.Errorf("%s: limit %d, want at least 1", op, limit)
	}
	window := limit + max(limit, minRetentionWindow)
	expired := map[int64]int64{}
	deleted := 0
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		seqs, err := expiringSeqs(ctx, tx, before, window, limit)
		if err != nil {
			return err
		}
		deleted = len(seqs)
		if len(seqs) > 0 {
			if err := deleteEvents(ctx, tx, seqsJSON(seqs), minuteOf(now), expired); err != nil {
				return err
			}
		}
		// Per destination, on the primary key, rather than one pass over every destination's rows.
		if _, err := tx.ExecContext(ctx, `DELETE FROM delivery_stats WHERE destination_id IN (SELECT id FROM destinations) AND minute < ?`,
			minuteOf(statsBefore)); err != nil {
			return fmt.Errorf("delete old stats: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, nil, d.classify(op, err)
	}
	return deleted, expired, nil
}

// expiringSeqs returns the seqs of up to limit events received before `before`, among the window
// oldest ones, in seq order.
func expiringSeqs(ctx context.Context, tx *sql.Tx, before time.Time, window, limit int) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq FROM (SELECT seq, received_at FROM events ORDER BY seq LIMIT ?)
WHERE received_at < ? ORDER BY seq LIMIT ?`, window, before.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("find expired events: %w", err)
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, fmt.Errorf("find expired events: %w", err)
		}
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find expired events: %w", err)
	}
	return seqs, nil
}

// deleteEvents deletes the events of seqs (a JSON array) with their retry rows and dead letters,
// and counts into expired, and into the Expired stat of minute, those a destination had not
// settled (see DeleteExpiredEvents).
func deleteEvents(ctx context.Context, tx *sql.Tx, seqs string, minute int64, expired map[int64]int64) error {
	rows, err := tx.QueryContext(ctx, `SELECT c.destination_id, count(*)
FROM delivery_cursors AS c, events AS e
WHERE e.seq IN (SELECT value FROM json_each(:seqs))
	AND (EXISTS (SELECT 1 FROM delivery_retries AS r WHERE r.destination_id = c.destination_id AND r.seq = e.seq)
		OR (e.seq > c.seq AND (
			NOT EXISTS (SELECT 1 FROM destination_sources AS s WHERE s.destination_id = c.destination_id)
			OR EXISTS (SELECT 1 FROM destination_sources AS s WHERE s.destination_id = c.destination_id AND s.source_id = e.source_id))))
GROUP BY c.destination_id`, sql.Named("seqs", seqs))
	if err != nil {
		return fmt.Errorf("count unsettled expired events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var dest, n int64
		if err := rows.Scan(&dest, &n); err != nil {
			return fmt.Errorf("count unsettled expired events: %w", err)
		}
		expired[dest] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count unsettled expired events: %w", err)
	}
	rows.Close()

	for dest, n := range expired {
		if err := addStats(ctx, tx, dest, []minuteCounts{{minute: minute, DeliveryCounts: trackapi.DeliveryCounts{Expired: n}}}); err != nil {
			return err
		}
	}
	// destination_id IN (...) lets each delete find its rows on the (destination_id, seq) key.
	for _, table := range []string{"delivery_retries", "dead_letters"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE destination_id IN (SELECT id FROM destinations)
AND seq IN (SELECT value FROM json_each(:seqs))`, sql.Named("seqs", seqs)); err != nil {
			return fmt.Errorf("delete the %s of expired events: %w", table, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq IN (SELECT value FROM json_each(:seqs))`, sql.Named("seqs", seqs)); err != nil {
		return fmt.Errorf("delete expired events: %w", err)
	}
	return nil
}

// inReadTx runs fn in a transaction on a read connection, so that its queries see one snapshot.
func (d *DB) inReadTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := d.reader.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() // a read: nothing to commit
	return fn(tx)
}
